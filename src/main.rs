//! Command line: parses arguments, runs the command, maps the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jtl_auth_sidecar::config;

/// Exit code for an invalid configuration (SPEC §2).
const EXIT_INVALID_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "jtl-auth-sidecar",
    version,
    about = "Reverse proxy that does all JTL Cloud App authentication for a backend in any language"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and print the effective config, secrets redacted.
    /// Exit 0 when valid, 2 when not (one line per problem, naming the key).
    Check {
        /// The TOML config file.
        #[arg(long, value_name = "FILE", env = config::CONFIG_PATH_ENV)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load_file(path) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", loaded.effective.to_redacted_toml());
            eprintln!("{}: valid", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!(
                "{}: invalid config ({} problem{}):",
                path.display(),
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" }
            );
            eprintln!("{errors}");
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}
