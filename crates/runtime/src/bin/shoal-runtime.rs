//! A development driver for the runtime with the same subcommands as
//! `shoal`: the runtime's tests and `scripts/runtime-bench` use it, so they do
//! not depend on how the main binary is wired.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "shoal-runtime",
    about = "shoal's container runtime, standalone"
)]
struct Cli {
    #[command(subcommand)]
    command: runtime::Command,
}

fn main() -> ExitCode {
    if let Some(code) = runtime::reexec_dispatch() {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            if !error.use_stderr() {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            // One line that names the problem; `--help` has the rest.
            let rendered = error.render().to_string();
            eprintln!(
                "{}",
                rendered
                    .lines()
                    .next()
                    .unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    match runtime::run_command(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
