//! The `fabraix-sched` binary: parse, run, exit with the run's code.
use std::process::ExitCode;

use clap::Parser;
use fabraix_sched::{run, Opts};

fn main() -> ExitCode {
    let opts = Opts::parse(); // usage errors: clap prints them and exits with 2
    fabraix_sched::logging::init(opts.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(opts)).into()
}
