//! Every shape the attribute accepts compiles, with the items it generates
//! not clashing with the function's own (two traced fns in one module,
//! `unsafe fn`, `extern "C" fn`, `impl Trait` arguments, where clauses,
//! lifetimes, early return).
struct S(u32);

impl S {
    #[tracer::traceable]
    fn get(&self) -> u32 {
        self.0
    }

    #[tracer::traceable]
    fn set(&mut self, v: u32) -> &mut Self {
        self.0 = v;
        self
    }
}

#[tracer::traceable]
unsafe fn raw(p: *const u32) -> u32 {
    unsafe { *p }
}

#[tracer::traceable]
extern "C" fn c_abi(x: u32) -> u32 {
    x + 1
}

#[tracer::traceable]
fn generic<'a, T>(items: &'a [T], f: impl Fn(&T) -> bool) -> Option<&'a T>
where
    T: std::fmt::Debug,
{
    for i in items {
        if f(i) {
            return Some(i);
        }
    }
    None
}

#[tracer::traceable]
async fn later(x: u32) -> u32 {
    x * 2
}

fn main() {
    let mut s = S(1);
    s.set(2);
    assert_eq!(s.get(), 2);
    let v = 7;
    assert_eq!(unsafe { raw(&v) }, 7);
    assert_eq!(c_abi(1), 2);
    assert_eq!(generic(&[1, 2, 3], |x| *x > 1), Some(&2));
    let _ = later(1);
}
