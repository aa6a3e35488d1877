//! Function patterns, as users type them.
//!
//! A pattern is one or more terms separated by whitespace or commas. A term is
//! a glob (`*` any run of characters, `?` one character). Without `::` it is
//! matched against a function's own name (`parse_*`, `search_reader`: the
//! last segment of the path, without generic arguments and without the
//! suffix of a compiler clone such as `.isra.0`); with `::` against its full
//! path (`app::cache::*`), which also matches as the path reads without
//! parameters (`ns::f` for `ns::f(int)`), without generic arguments
//! (`app::Cache::get` for `<app::Cache<u8>>::get::<K>`), and with a
//! qualified self type read as that type (`<app::Db as app::Store>::get`
//! also matches `app::Db::get`, so `app::*` selects the methods and trait
//! impls of `app`'s types).
//!
//! A leading `!` removes what the term matches from the terms before it; a
//! pattern must add something before it removes (`'* !f'`, never `'!f'`
//! alone). A term in double quotes (`"<usize as core::fmt::Debug>::fmt"`) is
//! a name taken literally: no globbing, spaces and commas included; and a
//! whole pattern that is exactly a name `list` prints selects that function.
//! A term that matches nothing is an error naming the closest functions, as
//! is a pattern whose result is empty.

use std::collections::BTreeSet;
use std::fmt;

/// A function as patterns see it.
#[derive(Clone, Copy, Debug)]
pub struct Named<'a> {
    /// Full path: `app::cache::lookup`, `<app::Db as app::Store>::get`.
    pub path: &'a str,
    /// Own name: `lookup`, `get`.
    pub own: &'a str,
}

/// A pattern that selects nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternError {
    /// The pattern is empty.
    Empty,
    /// A term matches no function.
    NoMatch {
        /// The term.
        term: String,
        /// The closest function names, best first (at most five).
        closest: Vec<String>,
    },
    /// The terms together select no function (everything was removed).
    NothingLeft {
        /// The whole pattern.
        pattern: String,
    },
    /// The pattern only removes (`!f`): it would select everything else.
    OnlyRemovals {
        /// The whole pattern.
        pattern: String,
    },
    /// A `"` opens a literal name that is never closed.
    Unterminated {
        /// The whole pattern.
        pattern: String,
    },
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::Empty => f.write_str(
                "empty pattern: give a function name or a glob such as 'parse_*' or 'app::cache::*'",
            ),
            PatternError::NoMatch { term, closest } => {
                write!(f, "no function matches '{term}'")?;
                if closest.is_empty() {
                    f.write_str(" (no traceable functions are registered: mark functions with #[tracer::traceable], or build the program with compiler pads, e.g. -fpatchable-function-entry=5)")
                } else {
                    write!(f, "; closest: {}", closest.join(", "))
                }
            }
            PatternError::NothingLeft { pattern } => write!(
                f,
                "pattern '{pattern}' removes every function it adds; drop a '!' term"
            ),
            PatternError::OnlyRemovals { pattern } => write!(
                f,
                "pattern '{pattern}' only removes functions; say what to start from, e.g. '* {pattern}' for every function but those"
            ),
            PatternError::Unterminated { pattern } => write!(
                f,
                "pattern '{pattern}' opens a quoted name with '\"' that is never closed; close it, or drop the quote"
            ),
        }
    }
}

impl std::error::Error for PatternError {}

/// Does `text` match the glob `pat` (`*`, `?`)?
pub fn glob(pat: &str, text: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Does one term (without its `!`) match a function?
pub fn term_matches(term: &str, f: &Named<'_>) -> bool {
    if term.contains("::") {
        glob(term, f.path)
            || without_params(f.path).is_some_and(|p| glob(term, p))
            || plain_path(f.path).is_some_and(|p| glob(term, &p))
    } else {
        glob(term, f.own)
    }
}

/// `path` as it reads without generic arguments, with a qualified self type
/// (`<T as Trait>::f`, `<T>::f`) read as that type (`T::f`) and without a
/// compiler clone's suffix; `None` when that is `path` itself.
///
/// `<grep_searcher::searcher::Searcher>::search_reader::<grep_printer::Sink>`
/// reads `grep_searcher::searcher::Searcher::search_reader`;
/// `<alloc::vec::Vec<u8> as core::fmt::Debug>::fmt` reads
/// `alloc::vec::Vec::fmt`.
pub fn plain_path(path: &str) -> Option<String> {
    if !path.contains(['<', '[', '.']) {
        return None;
    }
    let mut s = strip_clone(path).to_string();
    // A qualified self type: `<T as Trait>::rest` or `<T>::rest`.
    if s.starts_with('<') {
        if let Some(close) = matching(&s, 0) {
            let inner = &s[1..close];
            let self_ty = top_level_as(inner).map_or(inner, |i| &inner[..i]);
            let self_ty = self_ty.trim_start_matches('&').trim_start_matches("mut ");
            s = format!("{self_ty}{}", &s[close + 1..]);
        }
    }
    // Every generic argument list, with the `::` of a turbofish before it.
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '<' => {
                if depth == 0 && out.ends_with("::") {
                    out.truncate(out.len() - 2);
                }
                depth += 1;
            }
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    (out != path && !out.is_empty()).then_some(out)
}

/// The index of the `>` that closes the `<` at `open`.
fn matching(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in s[open..].char_indices() {
        match c {
            '<' => depth += 1,
            '>' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Where ` as ` splits `T as Trait` outside any nested `<...>`.
fn top_level_as(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ' ' if depth == 0 && s[i..].starts_with(" as ") => return Some(i),
            _ => {}
        }
    }
    None
}

/// A name without the suffix GCC and Clang give a function's clones and
/// parts (`f.isra.0`, `f.constprop.2`, `f.part.0`, `f.cold`,
/// `f.lto_priv.0`, `f.llvm.1234`, C++'s `f [clone .isra.0]`): the name of
/// the function they were made from.
pub fn strip_clone(name: &str) -> &str {
    let name = match name.find(" [clone .") {
        Some(i) => &name[..i],
        None => name,
    };
    let Some(dot) = name.find('.') else {
        return name;
    };
    let (head, tail) = (&name[..dot], &name[dot + 1..]);
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let head_ok = head
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '>' || c == ')');
    let known = [
        "isra",
        "constprop",
        "part",
        "cold",
        "lto_priv",
        "llvm",
        "localalias",
        "specialized",
        "clone",
        "str",
        "omp_fn",
    ];
    if head_ok
        && tail.split('.').all(ident)
        && tail.split('.').next().is_some_and(|p| known.contains(&p))
    {
        head
    } else {
        name
    }
}

/// A path named with its parameters (`ns::f(int)`, as C++ overloads are
/// told apart) without them (`ns::f`).
fn without_params(path: &str) -> Option<&str> {
    let mut path = path;
    // Trailing qualifiers of a member function: `f(int) const &`.
    while let Some(p) = [" const", " volatile", " &&", " &"]
        .iter()
        .find_map(|q| path.strip_suffix(q))
    {
        path = p;
    }
    if !path.ends_with(')') {
        return None;
    }
    let mut depth = 0i32;
    for (i, c) in path.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&path[..i]).filter(|p| !p.is_empty());
                }
            }
            _ => {}
        }
    }
    None
}

/// Split a pattern into its terms (a quoted name keeps its quotes).
pub fn terms(pattern: &str) -> impl Iterator<Item = &str> {
    let mut rest = pattern;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if rest.is_empty() {
            return None;
        }
        let body = rest.strip_prefix('!').unwrap_or(rest);
        let end = if body.starts_with('"') {
            // Through the closing quote (or the end, when unterminated).
            let skip = rest.len() - body.len() + 1;
            rest[skip..].find('"').map_or(rest.len(), |i| skip + i + 1)
        } else {
            rest.find(|c: char| c.is_whitespace() || c == ',')
                .unwrap_or(rest.len())
        };
        let (t, r) = rest.split_at(end);
        rest = r;
        Some(t)
    })
}

/// The indices (into `funcs`) of the functions a pattern selects, ascending.
pub fn resolve(pattern: &str, funcs: &[Named<'_>]) -> Result<Vec<usize>, PatternError> {
    // A whole pattern that is exactly a listed name selects that function.
    let whole = pattern.trim();
    if whole.contains([' ', ',', '*', '?', '!', '"']) {
        let exact: Vec<usize> = (0..funcs.len())
            .filter(|&i| funcs[i].path == whole)
            .collect();
        if !exact.is_empty() {
            return Ok(exact);
        }
    }
    let ts: Vec<&str> = terms(pattern).collect();
    if ts.is_empty() {
        return Err(PatternError::Empty);
    }
    if ts.iter().all(|t| t.starts_with('!')) {
        return Err(PatternError::OnlyRemovals {
            pattern: whole.to_string(),
        });
    }
    let mut set: BTreeSet<usize> = BTreeSet::new();
    // Quoted names are looked up, not scanned for: a pattern of 10^4 names
    // (the tracer program disabling what it enabled) stays linear.
    let mut by_name: Option<ByName<'_>> = None;
    for t in ts {
        let (neg, body) = match t.strip_prefix('!') {
            Some(b) => (true, b),
            None => (false, t),
        };
        if body.is_empty() {
            return Err(PatternError::Empty);
        }
        let hits: Vec<usize> = if let Some(quoted) = body.strip_prefix('"') {
            let Some(name) = quoted.strip_suffix('"') else {
                return Err(PatternError::Unterminated {
                    pattern: whole.to_string(),
                });
            };
            let index = by_name.get_or_insert_with(|| ByName::new(funcs));
            let mut hits = index.get(name);
            hits.sort_unstable();
            hits.dedup();
            hits
        } else {
            funcs
                .iter()
                .enumerate()
                .filter(|(_, f)| term_matches(body, f))
                .map(|(i, _)| i)
                .collect()
        };
        if hits.is_empty() {
            let body = body.trim_matches('"');
            return Err(PatternError::NoMatch {
                term: body.to_string(),
                closest: closest(body, funcs, 5),
            });
        }
        for h in hits {
            if neg {
                set.remove(&h);
            } else {
                set.insert(h);
            }
        }
    }
    if set.is_empty() {
        return Err(PatternError::NothingLeft {
            pattern: pattern.to_string(),
        });
    }
    Ok(set.into_iter().collect())
}

/// The functions by full path and by own name, for quoted names: one
/// table entry per name and one chain of the functions that carry it, in
/// two allocations (a `Vec` per name was 10^6 allocations and frees for
/// every `disable` of a session's functions in a program of 10^6).
struct ByName<'a> {
    /// A name's last entry in `chain`.
    head: std::collections::HashMap<&'a str, usize>,
    /// `(function, the name's entry before this one)`; `usize::MAX`: none.
    chain: Vec<(usize, usize)>,
}

impl<'a> ByName<'a> {
    fn new(funcs: &[Named<'a>]) -> ByName<'a> {
        let mut b = ByName {
            head: std::collections::HashMap::with_capacity(funcs.len() * 2),
            chain: Vec::with_capacity(funcs.len() * 2),
        };
        for (i, f) in funcs.iter().enumerate() {
            b.add(f.path, i);
            if f.own != f.path {
                b.add(f.own, i);
            }
        }
        b
    }

    fn add(&mut self, name: &'a str, func: usize) {
        let k = self.chain.len();
        let before = self.head.insert(name, k).unwrap_or(usize::MAX);
        self.chain.push((func, before));
    }

    /// The functions called `name` (in no order).
    fn get(&self, name: &str) -> Vec<usize> {
        let mut v = Vec::new();
        let mut k = self.head.get(name).copied().unwrap_or(usize::MAX);
        while let Some(&(f, before)) = self.chain.get(k) {
            v.push(f);
            k = before;
        }
        v
    }
}

/// A pattern that selects exactly the functions named (each quoted).
pub fn exact_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for n in names {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push('"');
        out.push_str(n);
        out.push('"');
    }
    out
}

/// The `n` function names closest to `term`, best first.
pub fn closest(term: &str, funcs: &[Named<'_>], n: usize) -> Vec<String> {
    let full = term.contains("::");
    let needle: String = term.chars().filter(|c| *c != '*' && *c != '?').collect();
    let needle = needle.to_lowercase();
    let mut scored: Vec<(usize, &str)> = funcs
        .iter()
        .map(|f| {
            let hay = if full { f.path } else { f.own }.to_lowercase();
            let mut d = levenshtein(&needle, &hay);
            if !needle.is_empty() && (hay.contains(&needle) || needle.contains(&hay)) {
                d = d.min(1);
            }
            (d, f.path)
        })
        .collect();
    scored.sort();
    scored.dedup_by_key(|s| s.1);
    scored
        .into_iter()
        .take(n)
        .map(|(_, p)| p.to_string())
        .collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_with_parameters_match_without_them() {
        let f = |path| Named { path, own: "f" };
        for p in [
            "ns::f(int)",
            "ns::f(char const*, double)",
            "ns::f() const",
            "ns::f(std::function<void (int)>) const &&",
        ] {
            assert!(term_matches("ns::f", &f(p)), "{p}");
            assert!(term_matches("ns::*", &f(p)), "{p}");
            assert!(!term_matches("ns::g", &f(p)), "{p}");
        }
        assert!(term_matches("ns::f(int)", &f("ns::f(int)")));
        assert!(!term_matches("ns::f(int)", &f("ns::f(double)")));
        assert!(term_matches(
            "(anonymous namespace)::f",
            &f("(anonymous namespace)::f(int)")
        ));
        assert_eq!(without_params("app::cache::lookup"), None);
    }

    use super::*;

    const F: &[Named<'static>] = &[
        Named {
            path: "app::parse_header",
            own: "parse_header",
        },
        Named {
            path: "app::parse_body",
            own: "parse_body",
        },
        Named {
            path: "app::cache::lookup",
            own: "lookup",
        },
        Named {
            path: "app::cache::insert",
            own: "insert",
        },
        Named {
            path: "<app::Db as app::Store>::get",
            own: "get",
        },
    ];

    #[test]
    fn globs() {
        assert!(glob("parse_*", "parse_header"));
        assert!(glob("*", ""));
        assert!(glob("p?rse", "parse"));
        assert!(!glob("parse", "parse_header"));
        assert!(glob("*cache*", "app::cache::lookup"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
    }

    #[test]
    fn own_name_vs_full_path() {
        assert_eq!(resolve("parse_*", F).unwrap(), vec![0, 1]);
        assert_eq!(resolve("app::cache::*", F).unwrap(), vec![2, 3]);
        // Without `::` the path is not consulted.
        assert!(resolve("cache", F).is_err());
        assert_eq!(resolve("get", F).unwrap(), vec![4]);
    }

    #[test]
    fn negation_and_lists() {
        assert_eq!(resolve("parse_* !parse_body", F).unwrap(), vec![0]);
        assert_eq!(resolve("lookup,insert", F).unwrap(), vec![2, 3]);
        assert_eq!(resolve("* !app::cache::*", F).unwrap(), vec![0, 1, 4]);
        let only = resolve("!app::cache::*", F).unwrap_err();
        assert!(matches!(only, PatternError::OnlyRemovals { .. }));
        assert!(only.to_string().contains("'* !app::cache::*'"), "{only}");
        assert!(matches!(
            resolve("lookup !lookup", F),
            Err(PatternError::NothingLeft { .. })
        ));
    }

    #[test]
    fn no_match_names_the_closest() {
        match resolve("parse_headr", F) {
            Err(PatternError::NoMatch { term, closest }) => {
                assert_eq!(term, "parse_headr");
                assert_eq!(closest[0], "app::parse_header");
            }
            other => panic!("{other:?}"),
        }
        let msg = resolve("lokup", F).unwrap_err().to_string();
        assert!(msg.contains("app::cache::lookup"), "{msg}");
        assert_eq!(resolve("  ", F), Err(PatternError::Empty));
    }

    #[test]
    fn clones_are_named_after_their_function() {
        for (n, want) in [
            ("sqlite3BtreeClose.isra.0", "sqlite3BtreeClose"),
            ("f.constprop.12", "f"),
            ("f.part.0", "f"),
            ("f.cold", "f"),
            ("f.lto_priv.0", "f"),
            ("f.constprop.0.isra.0", "f"),
            ("ns::f [clone .isra.0]", "ns::f"),
            ("plain", "plain"),
            ("not.a.clone", "not.a.clone"),
            ("a.b", "a.b"),
        ] {
            assert_eq!(strip_clone(n), want, "{n}");
        }
    }

    #[test]
    fn rust_paths_read_without_generics_and_qualified_self() {
        let cases = [
            (
                "<grep_searcher::searcher::Searcher>::search_reader::<grep_printer::Sink>",
                "grep_searcher::searcher::Searcher::search_reader",
            ),
            (
                "<alloc::vec::Vec<u8> as core::fmt::Debug>::fmt",
                "alloc::vec::Vec::fmt",
            ),
            ("<&mut app::W as std::io::Write>::write", "app::W::write"),
            ("app::f::<[u8; 4]>", "app::f"),
        ];
        for (path, want) in cases {
            assert_eq!(plain_path(path).as_deref(), Some(want), "{path}");
        }
        assert_eq!(plain_path("app::cache::lookup"), None);
        let fs = [
            Named {
                path: cases[0].0,
                own: "search_reader",
            },
            Named {
                path: "<grep_searcher::searcher::Searcher as core::fmt::Debug>::fmt",
                own: "fmt",
            },
            Named {
                path: "grep_searcher::line_buffer::alloc_error",
                own: "alloc_error",
            },
            Named {
                path: "<usize as core::fmt::Debug>::fmt",
                own: "fmt",
            },
            Named {
                path: "<[u8; 4] as x::T>::g",
                own: "g",
            },
        ];
        assert_eq!(resolve("grep_searcher::*", &fs).unwrap(), vec![0, 1, 2]);
        assert_eq!(
            resolve("grep_searcher::searcher::*", &fs).unwrap(),
            vec![0, 1]
        );
        assert_eq!(resolve("search_reader", &fs).unwrap(), vec![0]);
        // Every name round-trips: whole, or quoted among others.
        for (i, f) in fs.iter().enumerate() {
            assert_eq!(resolve(f.path, &fs).unwrap(), vec![i], "{}", f.path);
            let q = exact_names([f.path]);
            assert_eq!(resolve(&q, &fs).unwrap(), vec![i], "{q}");
        }
        let two = exact_names([fs[3].path, fs[4].path]);
        assert_eq!(resolve(&two, &fs).unwrap(), vec![3, 4]);
        // A quoted own name selects every function that has it.
        assert_eq!(resolve("\"fmt\"", &fs).unwrap(), vec![1, 3]);
        assert_eq!(resolve("\"fmt\" \"g\"", &fs).unwrap(), vec![1, 3, 4]);
        assert!(matches!(
            resolve("\"nothing_has_this\"", &fs),
            Err(PatternError::NoMatch { .. })
        ));
        assert_eq!(
            resolve(&format!("fmt !{}", exact_names([fs[3].path])), &fs).unwrap(),
            vec![1]
        );
        assert!(matches!(
            resolve("\"<usize", &fs),
            Err(PatternError::Unterminated { .. })
        ));
    }
}
