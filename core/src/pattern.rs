//! Function patterns, as users type them.
//!
//! A pattern is one or more terms separated by whitespace or commas. A term is
//! a glob (`*` any run of characters, `?` one character). Without `::` it is
//! matched against a function's own name (`parse_*`); with `::` against its
//! full path (`app::cache::*`). A leading `!` removes what the term matches
//! from the terms before it; a pattern made only of `!` terms starts from every
//! function. A term that matches nothing is an error naming the closest
//! functions, as is a pattern whose result is empty.

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
        glob(term, f.path) || without_params(f.path).is_some_and(|p| glob(term, p))
    } else {
        glob(term, f.own)
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

/// Split a pattern into its terms.
pub fn terms(pattern: &str) -> impl Iterator<Item = &str> {
    pattern
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
}

/// The indices (into `funcs`) of the functions a pattern selects, ascending.
pub fn resolve(pattern: &str, funcs: &[Named<'_>]) -> Result<Vec<usize>, PatternError> {
    let ts: Vec<&str> = terms(pattern).collect();
    if ts.is_empty() {
        return Err(PatternError::Empty);
    }
    let mut set: BTreeSet<usize> = if ts.iter().all(|t| t.starts_with('!')) {
        (0..funcs.len()).collect()
    } else {
        BTreeSet::new()
    };
    for t in ts {
        let (neg, body) = match t.strip_prefix('!') {
            Some(b) => (true, b),
            None => (false, t),
        };
        if body.is_empty() {
            return Err(PatternError::Empty);
        }
        let hits: Vec<usize> = funcs
            .iter()
            .enumerate()
            .filter(|(_, f)| term_matches(body, f))
            .map(|(i, _)| i)
            .collect();
        if hits.is_empty() {
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
        assert_eq!(resolve("!app::cache::*", F).unwrap(), vec![0, 1, 4]);
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
}
