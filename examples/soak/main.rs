//! Soak benchmark driver (not in CI): `bash benches/soak.sh [MINUTES]` builds and runs it.
//!
//!   target/release/examples/soak [MINUTES] [--results FILE] [--bin SIDECAR]
//!
//! In this process: the JTL emulator (access tokens living `EXPIRES_IN_S`), a backend that
//! answers 200 to everything, and `CONNECTIONS` keep-alive HTTP/1.1 connections sending
//! requests without pause, each with a freshly minted session token. The sidecar is the
//! release binary, started as `run --config FILE` (log level warn) in a process of its own.
//!
//! Timeline, t = 0 when the sidecar's /readyz first answers 200 (it then holds an access
//! token and the key set): load from 0 to D = 60 * MINUTES s; a key rotation every
//! `ROTATION_EVERY_S` at 60, 120, ..., D - 60 (rotation k publishes kid k, switches minting
//! to it, withdraws kid k-2 from the published set and deletes kid k-3, so kid k-1 stays as
//! the overlap); the sidecar's VmRSS sampled every `SAMPLE_EVERY_S`; the emulator's counters
//! read at t = D + `SETTLE_S`; then /metrics, one request with the kid withdrawn last (it
//! must get 401), and a SIGTERM (the sidecar must exit 0).
//!
//! Expectations (the exit status is 1 when one fails):
//! - every request is answered 200 (a non-200 or a transport error is a failure): the
//!   driver switches minting to the new kid before the previous one leaves the set, and a
//!   token of a kid the sidecar has not fetched yet waits for the refetch it triggers;
//! - VmRSS after the warm-up (the first `WARM_UP_S` of load, in which the verified-token
//!   cache fills up, since every token is new) stays within 10 %: max <= 1.10 x min;
//! - access-token and key-set requests counted by the emulator equal the predictions of
//!   [`predict_token_requests`] and [`predict_key_set_requests`], which follow from the
//!   configured intervals and SPEC §6.
//!
//! Why the predictions are exact with this configuration (MINUTES = N, read at
//! t_read = 60N + 10 s):
//! - Access token: requested once at start, then refreshed min(refresh_before_expiry_s,
//!   expires_in / 2) before it expires, counted from each response: every
//!   30 - min(10, 15) = 20 s. Requests by t_read: 1 + floor(t_read / 20) = 1 + 3N. t_read is
//!   10 s from the refreshes either side, so the few ms each refresh adds (its own latency)
//!   cannot move one across it.
//! - Key set: one fetch at start; a periodic refresh `jwks_refresh_interval_s` = 40 s after
//!   the latest fetch; at each rotation the first token of the new kid names a kid the
//!   sidecar does not hold, which triggers one refetch (concurrent misses share it): the
//!   latest fetch was the periodic one 20 s before, more than `jwks_min_refetch_interval_s`
//!   = 10 s, so it is permitted at once, and it restarts the 40 s period. Every minute thus
//!   has one periodic fetch (at +40 s) and every minute after the first one refetch (at its
//!   start): 1 + N + (N - 1) = 2N by t_read (the next periodic one is due at 60N + 20). No
//!   two of these events are closer than 10 s, so nothing depends on ms of jitter.
//!
//! The prediction functions simulate that schedule for any constants and refuse (panic)
//! when an event falls within `MARGIN_S` of another it must be ordered against.
//!
//! [`predict_token_requests`]: predict::predict_token_requests
//! [`predict_key_set_requests`]: predict::predict_key_set_requests

mod load;
mod measure;
mod predict;
mod run;

use std::path::{Path, PathBuf};
use std::time::Duration;

use run::soak;

const CONNECTIONS: usize = 32;
/// `expires_in` of the emulator's access tokens.
const EXPIRES_IN_S: u64 = 30;
const REFRESH_BEFORE_EXPIRY_S: u64 = 10;
const JWKS_REFRESH_INTERVAL_S: u64 = 40;
const JWKS_MIN_REFETCH_INTERVAL_S: u64 = 10;
const ROTATION_EVERY_S: u64 = 60;
const SAMPLE_EVERY_S: u64 = 5;
/// Load time excluded from the RSS expectation (the verified cache fills, arenas grow).
const WARM_UP_S: u64 = 60;
/// The emulator's counters are read this long after the load ends.
const SETTLE_S: u64 = 10;
/// How far (s) an event must be from another it is ordered against for an exact count.
const MARGIN_S: f64 = 5.0;
/// Lifetime of the session tokens minted for the load.
const SESSION_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_MINUTES: u64 = 120;
const RSS_TOLERANCE: f64 = 0.10;

const TENANT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const SLUG: &str = "soak-shop";

fn kid(n: u64) -> String {
    format!("soak-key-{n}")
}

struct Args {
    minutes: u64,
    results: Option<PathBuf>,
    bin: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut minutes = 10;
    let mut results = None;
    let mut bin = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--results" => results = Some(PathBuf::from(args.next().ok_or("--results FILE")?)),
            "--bin" => bin = Some(PathBuf::from(args.next().ok_or("--bin SIDECAR")?)),
            number => {
                minutes = number
                    .parse()
                    .ok()
                    .filter(|m| (1..=MAX_MINUTES).contains(m))
                    .ok_or(format!("MINUTES must be 1..={MAX_MINUTES}, not {number:?}"))?
            }
        }
    }
    // target/release/examples/soak -> target/release/jtl-auth-sidecar
    let bin = match bin {
        Some(bin) => bin,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .and_then(Path::parent)
            .ok_or("no target directory")?
            .join("jtl-auth-sidecar"),
    };
    Ok(Args {
        minutes,
        results,
        bin,
    })
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("usage: soak [MINUTES] [--results FILE] [--bin SIDECAR]: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler");
        tokio::select! {
            code = soak(args) => code,
            _ = tokio::signal::ctrl_c() => { eprintln!("interrupted"); 130 }
            _ = terminate.recv() => { eprintln!("terminated"); 143 }
        }
    });
    // When a signal wins the select, `soak`'s future is dropped there, and with it the
    // sidecar process (killed by `Sidecar`'s Drop).
    drop(runtime);
    std::process::exit(code);
}
