//! Benchmark suite (being written): `cargo bench --bench suite`.
fn main() {}
