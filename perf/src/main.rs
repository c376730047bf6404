//! `polarc-perf`: parses the options, runs the mode they choose, prints its error.

mod error;
mod mode;

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let args = match polarc_perf::cli::parse() {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match mode::dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("polarc-perf: error: {e}");
            ExitCode::FAILURE
        }
    }
}
