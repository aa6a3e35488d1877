#[tracer::traceable]
struct S;

fn main() {}
