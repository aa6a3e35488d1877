//! Inner attributes in the body of a traced fn stay inner attributes of that
//! body (they used to be re-emitted before the fn, where they are rejected).
#![deny(unused_variables, unused_mut)]

#[tracer::traceable]
fn quiet(x: u32) -> u32 {
    #![allow(unused_variables)]
    let unused = x;
    7
}

#[tracer::traceable]
async fn quiet_async(x: u32) -> u32 {
    #![allow(unused_variables)]
    //! An inner doc comment is an inner attribute too.
    let unused = x;
    8
}

struct S;

impl S {
    /// Outer attributes stay outer.
    #[tracer::traceable]
    #[inline]
    fn method(&self) -> u32 {
        #![allow(unused_mut)]
        #![allow(unused_variables)]
        let mut unused = 1;
        9
    }
}

fn main() {
    assert_eq!(quiet(1), 7);
    let _ = quiet_async(1);
    assert_eq!(S.method(), 9);
}
