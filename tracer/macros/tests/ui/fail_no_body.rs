trait Store {
    #[tracer::traceable]
    fn get(&self) -> u32;
}

fn main() {}
