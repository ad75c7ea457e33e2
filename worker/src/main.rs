//! `smsbus-worker`: parses flags, sets up logging, runs the worker library.

use std::io::IsTerminal;

use clap::Parser;
use smsbus_worker::config::{Args, Command};
use smsbus_worker::{shutdown, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let args = Args::parse();
    let check = matches!(args.command, Some(Command::Check));
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("invalid configuration: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if check {
        return match smsbus_worker::check::run(&config).await {
            Ok(0) => std::process::ExitCode::SUCCESS,
            Ok(_) => std::process::ExitCode::FAILURE,
            Err(e) => {
                println!("FAIL  {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let token = shutdown::on_signals();
    match smsbus_worker::run(config, token).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
