use std::process::ExitCode;

use clap::Parser as _;
use periscope::{
    check,
    config::{Cli, Command},
    run,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&cli.log_level)
        .format_target(false)
        .init();
    match cli.command {
        Command::Check => {
            if check::check() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Run(args) => {
            let result = (*args).resolve().and_then(run::run);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("periscope: error: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
