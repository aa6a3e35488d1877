#[tracer::traceable(level = 3)]
fn f() {}

fn main() {
    f();
}
