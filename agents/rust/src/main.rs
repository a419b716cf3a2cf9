//! Thin entry point: parse arguments, run the jobs, map the outcome to an exit code.
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = langbench_agent::Opts::parse();
    match langbench_agent::run(&opts) {
        Ok(all_ok) => ExitCode::from(if all_ok { 0 } else { 1 }),
        Err(e) => {
            eprintln!("rust agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
