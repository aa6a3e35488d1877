//! The forms whose values the attribute captures (integers, floats, bool,
//! char, pointers and references, lengths of `&str`, slices, `String` and
//! `Vec`; `Result`/`Option` returns with each payload kind), beside what it
//! shows by name only (structs, generics, `impl Trait`, patterns), compile
//! together: early `return`, `?`, elided and named lifetimes in the return
//! type, `Self`, generic payloads, more parameters than it captures;
//! `#[traceable(ret)]` (return values taken by address) and without;
//! `async fn` with `#[traceable(values)]`: `?` and `return` in its body,
//! borrowed parameters and return values, `&self`, generics, a `Send`
//! future.
use std::collections::HashMap;

#[derive(Clone, Copy)]
pub struct Config {
    pub level: u32,
}

pub struct Store {
    map: HashMap<String, u64>,
}

impl Store {
    #[tracer::traceable(ret)]
    pub fn get(&self, key: &str) -> Option<u64> {
        self.map.get(key).copied()
    }

    #[tracer::traceable(ret)]
    pub fn key_of(&self, v: u64) -> Option<&str> {
        self.map.iter().find(|(_, x)| **x == v).map(|(k, _)| k.as_str())
    }

    #[tracer::traceable(ret)]
    pub fn put(&mut self, key: String, v: u64) -> Result<&mut Self, String> {
        if key.is_empty() {
            return Err(key);
        }
        self.map.insert(key, v);
        Ok(self)
    }

    #[tracer::traceable]
    pub fn into_len(self) -> usize {
        self.map.len()
    }
}

#[tracer::traceable]
fn scalars(a: i8, b: u8, c: i16, d: u16, e: i32, f: u32, g: i64, h: u64, i: isize, j: usize) -> i128 {
    a as i128 + b as i128 + c as i128 + d as i128 + e as i128 + f as i128 + g as i128
        + h as i128 + i as i128 + j as i128
}

#[tracer::traceable]
fn others(x: f32, y: f64, on: bool, c: char, p: *mut u8, q: *const [u8], r: &mut u32) -> char {
    let _ = (x, y, on, p, q);
    *r += 1;
    c
}

#[tracer::traceable]
fn lengths<'a>(s: &'a str, v: &mut [u8], o: String, w: Vec<Vec<u8>>, cfg: Config) -> &'a str {
    let _ = (v, o, w, cfg);
    s
}

#[tracer::traceable(ret)]
fn parse(s: &str) -> Result<u32, std::num::ParseIntError> {
    let v: u32 = s.parse()?;
    Ok(v + 1)
}

#[tracer::traceable(ret)]
fn io() -> std::io::Result<Vec<u8>> {
    Ok(Vec::new())
}

#[tracer::traceable(ret)]
fn generic_payload<T: Clone, E>(r: &Result<T, E>, t: T) -> Result<T, ()> {
    match r {
        Ok(_) => Ok(t),
        Err(_) => Err(()),
    }
}

#[tracer::traceable(ret)]
fn first<'a, T>(items: &'a [T]) -> Option<&'a T> {
    items.first()
}

#[tracer::traceable]
fn patterns((a, b): (u32, u32), _: u8, impl_arg: impl Fn() -> u32) -> impl Fn() -> u32 {
    let s = a + b + impl_arg();
    move || s
}

#[tracer::traceable]
fn many(
    a: u64, b: u64, c: u64, d: u64, e: u64, f: u64, g: u64, h: u64, i: u64, j: u64, k: u64,
    l: u64, m: u64, n: u64, o: u64, p: u64, q: u64, r: u64,
) -> u64 {
    a + b + c + d + e + f + g + h + i + j + k + l + m + n + o + p + q + r
}

#[tracer::traceable]
fn raw_ret(p: *const u8) -> *const u8 {
    p
}

#[tracer::traceable]
fn not_asked(s: &str) -> Result<String, ()> {
    Ok(s.to_string())
}

#[tracer::traceable]
#[allow(unsafe_op_in_unsafe_fn)]
unsafe fn deref(p: *const u32) -> u32 {
    *p
}

#[tracer::traceable]
#[track_caller]
fn located(x: u32) -> u32 {
    assert!(x > 0, "x must be positive");
    x
}

#[tracer::traceable]
fn unit(x: u32) {
    if x == 0 {
        return;
    }
    std::hint::black_box(x);
}

impl Store {
    #[tracer::traceable(values)]
    pub async fn lookup(&self, key: &str) -> Option<u64> {
        self.map.get(key).copied()
    }

    #[tracer::traceable(values)]
    pub async fn key_len<'a>(&'a self, key: &'a str) -> &'a str {
        let _ = &self.map;
        key
    }
}

#[tracer::traceable(values)]
async fn fetch(id: u32, key: &str) -> Result<u32, std::num::ParseIntError> {
    if id == 0 {
        return Ok(0);
    }
    let v: u32 = key.parse()?;
    Ok(id + v)
}

#[tracer::traceable(values)]
async fn generic_async<T: Send>(t: T, n: usize) -> (T, usize) {
    (t, n)
}

#[tracer::traceable(values)]
async fn no_values(cfg: Config) {
    let _ = cfg.level;
}

fn assert_send<F: std::future::Future + Send>(f: F) -> F {
    f
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn main() {
    let mut s = Store { map: HashMap::new() };
    let _ = block_on(assert_send(fetch(1, "2")));
    let _ = block_on(s.lookup("a"));
    let _ = block_on(s.key_len("k"));
    let _ = block_on(assert_send(generic_async(1u8, 2)));
    block_on(no_values(Config { level: 1 }));
    let _ = s.put("a".into(), 1);
    let _ = s.get("a");
    let _ = s.key_of(1);
    let _ = scalars(1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    let mut r = 0;
    let _ = others(1.0, 2.0, true, 'x', std::ptr::null_mut(), &[1u8][..] as *const [u8], &mut r);
    let _ = lengths("a", &mut [1], String::new(), vec![], Config { level: 1 });
    let _ = parse("1");
    let _ = io();
    let _ = generic_payload::<u8, ()>(&Ok(1), 2);
    let _ = first(&[1]);
    let _ = patterns((1, 2), 3, || 4)();
    let _ = many(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18);
    let _ = raw_ret(std::ptr::null());
    unit(1);
    // SAFETY: a live u32.
    let _ = unsafe { deref(&1) };
    let _ = located(1);
    let _ = not_asked("x");
    let _ = s.into_len();
}
