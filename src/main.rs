//! `hashgate`: the command line. Each subcommand is a thin front-end over the
//! `hashgate-authority` (build, inspect) and `hashgate-host` (scan) crates.

mod cli;
mod demo;
mod gateway;
mod icap;
mod publish;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
