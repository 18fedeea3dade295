//! Runs `shoal bench` standalone, for trying the crate before it is wired into
//! the `shoal` binary: `cargo run -p bench --example bench -- put --total 1000`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "bench")]
struct Cli {
    #[command(flatten)]
    bench: bench::BenchArgs,
}

fn main() -> std::process::ExitCode {
    match bench::run(Cli::parse().bench) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
