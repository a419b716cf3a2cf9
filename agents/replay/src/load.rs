//! The bench's load generator (`langbench-replay --bench-client URL`): N raw HTTP/1.1 streams on
//! one current-thread runtime, each request on its own connection, chunks counted by their stamps.
pub fn main(_url: &str, _a: &LoadArgs) -> i32 {
    0
}

#[derive(clap::Args, Debug)]
pub struct LoadArgs {}
