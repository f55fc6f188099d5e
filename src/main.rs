//! Command line: parses arguments, runs the command, maps the outcome to an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use jtl_auth_sidecar::check;
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::config;
use jtl_auth_sidecar::config::Flow;
#[cfg(feature = "emulator")]
use jtl_auth_sidecar::dev::{self, DevError};
use jtl_auth_sidecar::server::Server;
use jtl_auth_sidecar::telemetry;
use url::Url;

/// Exit code for an invalid configuration (SPEC §2), as for a usage error (clap's), and
/// for `dev` in a binary built without it.
const EXIT_INVALID_CONFIG: u8 = 2;
/// Exit code for any other start-up failure (a port taken...).
const EXIT_START_FAILURE: u8 = 1;
/// Exit code of `check --online` when a step failed.
const EXIT_CHECK_FAILED: u8 = 1;

#[derive(Parser)]
#[command(
    name = "jtl-auth-sidecar",
    // The package version and, when known, the git commit it was built from (build.rs).
    version = env!("JTL_SIDECAR_VERSION"),
    about = "Reverse proxy that does all JTL Cloud App authentication for a backend in any language"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy. Exit 0 after a graceful shutdown (SIGTERM, SIGINT), 2 for an invalid
    /// config, 1 for another start-up failure.
    Run {
        /// The TOML config file.
        #[arg(long, value_name = "FILE", env = config::CONFIG_PATH_ENV)]
        config: PathBuf,
    },
    /// Validate a config file and print the effective config, secrets redacted.
    /// Exit 0 when valid, 2 when not (one line per problem, naming the key).
    /// With --online, then make the real calls and report each on one line; exit 1 when
    /// one fails.
    Check {
        /// The TOML config file.
        #[arg(long, value_name = "FILE", env = config::CONFIG_PATH_ENV)]
        config: PathBuf,
        /// After the offline checks, call JTL's token endpoint and JWKS with the configured
        /// credentials, and look at the tenant store and the upstream.
        #[arg(long)]
        online: bool,
        /// With --online: verify this session token (pasted from the browser; "-" reads
        /// it from stdin) against the fetched key set and explain the verdict.
        #[arg(long, value_name = "TOKEN", requires = "online")]
        session_token: Option<String>,
    },
    /// Run the proxy against a built-in JTL emulator with an embedded config, and print
    /// ready-to-paste curl commands with a fresh app token (the emulator acting as JTL's
    /// Zitadel), a legacy session token with --flow session-token, one of each with
    /// --flow both. Needs the `emulator` cargo feature (a default one; the container image
    /// is built without it).
    Dev {
        /// Your backend; without it a built-in echo backend answers with the request it got.
        #[arg(long, value_name = "URL")]
        upstream: Option<Url>,
        /// The token flow: the app token of JTL's current Cloud Apps (getAppToken), the
        /// legacy session token (getSessionToken), or both, as during a move.
        #[arg(long, value_name = "FLOW", value_enum, default_value_t = DevFlowArg::AppToken)]
        flow: DevFlowArg,
    },
}

/// `dev --flow`; anything else is a usage error (exit 2) that names the flag and the
/// possible values.
#[derive(Clone, Copy, ValueEnum)]
enum DevFlowArg {
    AppToken,
    SessionToken,
    Both,
}

impl From<DevFlowArg> for Flow {
    fn from(flow: DevFlowArg) -> Flow {
        match flow {
            DevFlowArg::AppToken => Flow::AppToken,
            DevFlowArg::SessionToken => Flow::SessionToken,
            DevFlowArg::Both => Flow::Both,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            config,
            online,
            session_token,
        } => check(&config, online, session_token),
        Command::Run { config } => run(&config),
        #[cfg(feature = "emulator")]
        Command::Dev { upstream, flow } => run_dev(upstream, flow.into()),
        #[cfg(not(feature = "emulator"))]
        Command::Dev { .. } => {
            eprintln!("{}", without_emulator());
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}

fn check(path: &Path, online: bool, session_token: Option<String>) -> ExitCode {
    let loaded = match config::load_file(path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            report_invalid(path, &errors);
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    print!("{}", loaded.to_redacted_toml());
    eprintln!("{}: valid", path.display());
    if !online {
        return ExitCode::SUCCESS;
    }
    let session_token = match session_token.as_deref() {
        Some("-") => match std::io::read_to_string(std::io::stdin()) {
            Ok(token) => Some(token),
            Err(error) => {
                eprintln!("error: cannot read the session token from stdin: {error}");
                return ExitCode::from(EXIT_CHECK_FAILED);
            }
        },
        _ => session_token,
    };
    block_on(async {
        let mut emit = |line: &check::Line| {
            println!("{line}");
        };
        let report = check::run_online(&loaded.config, session_token.as_deref(), &mut emit).await;
        eprintln!(
            "{}: online check {} ({} ok, {} failed, {} skipped)",
            path.display(),
            if report.passed() { "passed" } else { "FAILED" },
            report.count(check::Verdict::Ok),
            report.count(check::Verdict::Fail),
            report.count(check::Verdict::Skipped),
        );
        if report.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_CHECK_FAILED)
        }
    })
}

fn report_invalid(path: &Path, errors: &config::ConfigErrors) {
    eprintln!(
        "{}: invalid config ({} problem{}):",
        path.display(),
        errors.0.len(),
        if errors.0.len() == 1 { "" } else { "s" }
    );
    eprintln!("{errors}");
}

/// Runs `work` on a multi-threaded runtime (background tasks, admin; the ingress has
/// worker threads of its own).
fn block_on(work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::from(EXIT_START_FAILURE)
        }
    }
}

fn run(path: &Path) -> ExitCode {
    let loaded = match config::load_file(path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            report_invalid(path, &errors);
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    // Kept to the end: its drop writes the last lines ("stopped").
    let _log = telemetry::init_logging(&loaded.config.log, false);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    block_on(async {
        match Server::bind(loaded.config, Clock::system()).await {
            Ok(server) => {
                server.run(shutdown_signal()).await;
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!("cannot start: {error}");
                eprintln!("error: {error}");
                ExitCode::from(EXIT_START_FAILURE)
            }
        }
    })
}

/// What `dev` answers, on one line, in a binary built without the `emulator` feature (the
/// container image): the emulator, its test-only keys and `dev` are not in it.
#[cfg(any(not(feature = "emulator"), test))]
fn without_emulator() -> &'static str {
    "error: this binary was built without the `emulator` cargo feature, so it has no `dev`; \
     run dev from a source checkout with `cargo run -- dev`"
}

#[cfg(feature = "emulator")]
fn run_dev(upstream: Option<Url>, flow: Flow) -> ExitCode {
    let config = match dev::dev_config(flow) {
        Ok(config) => config,
        Err(DevError::Config(errors)) => {
            report_invalid(
                Path::new(&format!("{} (embedded)", dev::config_of(flow).1)),
                &errors,
            );
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_START_FAILURE);
        }
    };
    let _log = telemetry::init_logging(&config.log, true);
    block_on(async {
        match dev::run(config, upstream, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(EXIT_START_FAILURE)
            }
        }
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_without_the_emulator_is_one_line_that_says_how_to_run_dev() {
        let message = without_emulator();
        assert!(!message.contains('\n'), "one line: {message:?}");
        assert!(message.starts_with("error: "), "{message}");
        assert!(message.contains("`emulator` cargo feature"), "{message}");
        assert!(message.contains("`cargo run -- dev`"), "{message}");
    }
}
