//! Project tasks, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).

mod bench;
mod run;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Periscope project tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Check for and install the toolchain pieces, Debian packages and workloads the build,
    /// tests and benchmarks need (idempotent; seconds when all is present).
    Setup {
        /// Only what building the agent needs (rust-src, LLVM dev packages, bpf-linker).
        #[arg(long)]
        only_build_deps: bool,
    },
    /// Set up, then run rustfmt, clippy, the agent build and every test (unit and end-to-end).
    Test,
    /// Set up the toolchain, build the agent (release) and run it with the given arguments
    /// (default `run`), as root.
    Run {
        /// Arguments for `periscope`, after `--`: e.g. `cargo xtask run -- run --exe nginx`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Performance benchmark: traced vs untraced rounds, reported as ratios.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup { only_build_deps } => setup::setup(if only_build_deps {
            setup::Scope::BUILD
        } else {
            setup::Scope::ALL
        }),
        Task::Test => match test::test() {
            // Failed steps are reported in the summary, which stays the last output.
            Ok(false) => return ExitCode::FAILURE,
            other => other.map(drop),
        },
        Task::Run { args } => run::run(args),
        Task::Bench(args) => bench::bench(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
