//! `check --online`: the real calls a running sidecar makes, each reported on one line
//! with a verdict, so an operator sees on day one what would otherwise surface as 503s
//! and 401s. The wording of each failure is the one the runtime logs use (the error
//! types' messages and [`crate::diagnose`]).
//!
//! Steps, in order: token endpoint reachable, credentials accepted, token lifetime, JWKS
//! reachable with the token, usable keys, tenant store, upstream, and optionally a pasted
//! session token. A step that needs a failed one is skipped with the reason. Every
//! network call is bounded by `jtl.timeout_ms`.

mod reach;
pub mod session_token;

use std::fmt;

use crate::clock::Clock;
use crate::config::Config;
use crate::diagnose::{self, kid_list, span};
use crate::jose::JwkSet;
use crate::jtl::{AccessToken, Jtl, KeysError, LifetimeSource, SetupError, TokenError};
use crate::secrets::fingerprint;

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Fail,
    /// Not run: a step it needs failed, or the config turns it off.
    Skipped,
    /// Not a step: what was read (the claims of a pasted token).
    Info,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Padded so the step names line up.
        f.pad(match self {
            Verdict::Ok => "ok",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "skipped",
            Verdict::Info => "info",
        })
    }
}

/// One line of the report: `FAIL    credentials: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub verdict: Verdict,
    pub step: &'static str,
    pub message: String,
}

impl Line {
    pub fn new(verdict: Verdict, step: &'static str, message: impl Into<String>) -> Line {
        Line {
            verdict,
            step,
            message: message.into(),
        }
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8}{}: {}", self.verdict, self.step, self.message)
    }
}

/// Step names, as printed.
pub mod step {
    pub const TOKEN_ENDPOINT: &str = "token endpoint";
    pub const CREDENTIALS: &str = "credentials";
    pub const TOKEN_LIFETIME: &str = "token lifetime";
    pub const JWKS: &str = "JWKS";
    pub const KEYS: &str = "keys";
    pub const TENANT_STORE: &str = "tenant store";
    pub const UPSTREAM: &str = "upstream";
    pub const SESSION_TOKEN: &str = "session token";
}

/// Every line of a run.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub lines: Vec<Line>,
}

impl Report {
    /// True when no step failed (skipped steps only follow failed ones, or are off).
    pub fn passed(&self) -> bool {
        !self.lines.iter().any(|line| line.verdict == Verdict::Fail)
    }

    pub fn count(&self, verdict: Verdict) -> usize {
        self.lines.iter().filter(|l| l.verdict == verdict).count()
    }
}

/// Collects lines and hands each to `emit` as it is known, so a slow step shows where
/// the run is.
struct Recorder<'a> {
    report: Report,
    emit: &'a mut dyn FnMut(&Line),
}

impl Recorder<'_> {
    fn push(&mut self, line: Line) {
        (self.emit)(&line);
        self.report.lines.push(line);
    }

    fn line(&mut self, verdict: Verdict, step: &'static str, message: impl Into<String>) {
        self.push(Line::new(verdict, step, message));
    }
}

/// Runs the online checks against `config` and returns the report; `emit` sees each
/// line as soon as it is known. `session_token`, when given, is verified against the
/// key set just fetched with the configured policy.
pub async fn run_online(
    config: &Config,
    session_token: Option<&str>,
    emit: &mut dyn FnMut(&Line),
) -> Report {
    let mut out = Recorder {
        report: Report::default(),
        emit,
    };
    let clock = Clock::system();
    let keys = check_jtl(config, &clock, &mut out).await;
    out.push(reach::tenant_store(config).await);
    out.push(reach::upstream(config).await);
    if let Some(token) = session_token {
        match &keys {
            Some(keys) => {
                let policy = config.session.token_policy();
                for line in session_token::diagnose(token, keys, &policy, clock.now_s()) {
                    out.push(line);
                }
            }
            None => out.line(
                Verdict::Skipped,
                step::SESSION_TOKEN,
                "not verified: no usable key set was fetched",
            ),
        }
    }
    out.report
}

/// Steps 1–5: token endpoint, credentials, lifetime, JWKS, keys. Returns the usable
/// keys when there are any.
async fn check_jtl(config: &Config, clock: &Clock, out: &mut Recorder<'_>) -> Option<JwkSet> {
    let token_url = config.jtl.token_url.as_str();
    let jtl = match Jtl::from_config(config, clock.clone()) {
        Ok(jtl) => jtl,
        Err(SetupError::Http(error)) => {
            out.line(Verdict::Fail, step::TOKEN_ENDPOINT, error.to_string());
            skip_after_token_endpoint(out, "the HTTPS client could not be set up");
            return None;
        }
        Err(SetupError::Token(error)) => {
            out.line(
                Verdict::Skipped,
                step::TOKEN_ENDPOINT,
                "not called: there is no secret to send",
            );
            out.line(Verdict::Fail, step::CREDENTIALS, error.to_string());
            skip_after_credentials(out, "no secret");
            return None;
        }
    };

    let token = match jtl.tokens.get().await {
        Ok(token) => token,
        Err(unavailable) => {
            match &unavailable.cause {
                TokenError::Call(error) => {
                    out.line(
                        Verdict::Fail,
                        step::TOKEN_ENDPOINT,
                        format!("{token_url}: {error}"),
                    );
                    skip_after_token_endpoint(out, "the token endpoint was not reached");
                }
                TokenError::BadResponse(_) => {
                    out.line(Verdict::Ok, step::TOKEN_ENDPOINT, answered(token_url));
                    out.line(
                        Verdict::Ok,
                        step::CREDENTIALS,
                        accepted(&config.jtl.client_id),
                    );
                    out.line(
                        Verdict::Fail,
                        step::TOKEN_LIFETIME,
                        unavailable.cause.to_string(),
                    );
                    skip_after_credentials(out, "no usable access token");
                }
                TokenError::InvalidClient => {
                    out.line(Verdict::Ok, step::TOKEN_ENDPOINT, answered(token_url));
                    out.line(
                        Verdict::Fail,
                        step::CREDENTIALS,
                        format!(
                            "{}; {}",
                            unavailable.cause,
                            jtl.tokens.credential_observations()
                        ),
                    );
                    skip_after_credentials(out, "the credentials were not accepted");
                }
                TokenError::Status { status, .. } => {
                    out.line(Verdict::Ok, step::TOKEN_ENDPOINT, answered(token_url));
                    let hint = if *status == 404 {
                        " (wrong jtl.token_url?)"
                    } else {
                        ""
                    };
                    out.line(
                        Verdict::Fail,
                        step::CREDENTIALS,
                        format!("{}{hint}", unavailable.cause),
                    );
                    skip_after_credentials(out, "no access token");
                }
                TokenError::SecretFile(_) => {
                    out.line(
                        Verdict::Skipped,
                        step::TOKEN_ENDPOINT,
                        "not called: there is no secret to send",
                    );
                    out.line(
                        Verdict::Fail,
                        step::CREDENTIALS,
                        unavailable.cause.to_string(),
                    );
                    skip_after_credentials(out, "no secret");
                }
            }
            return None;
        }
    };
    out.line(Verdict::Ok, step::TOKEN_ENDPOINT, answered(token_url));
    out.line(
        Verdict::Ok,
        step::CREDENTIALS,
        accepted(&config.jtl.client_id),
    );
    out.line(
        Verdict::Ok,
        step::TOKEN_LIFETIME,
        lifetime(&token, clock.now_ms()),
    );

    let jwks_url = config.jtl.jwks_url.as_str();
    let fetched = match jtl.keys.fetch_document().await {
        Ok(fetched) => fetched,
        Err(KeysError::Document(error)) => {
            out.line(Verdict::Ok, step::JWKS, jwks_answered(jwks_url));
            out.line(
                Verdict::Fail,
                step::KEYS,
                KeysError::Document(error).to_string(),
            );
            return None;
        }
        Err(error) => {
            let message = match &error {
                KeysError::Call(_) => format!("{jwks_url}: {error}"),
                _ => format!("{error} ({jwks_url})"),
            };
            out.line(Verdict::Fail, step::JWKS, message);
            out.line(
                Verdict::Skipped,
                step::KEYS,
                "not counted: the key set was not fetched",
            );
            return None;
        }
    };
    out.line(Verdict::Ok, step::JWKS, jwks_answered(jwks_url));
    let skipped: Vec<String> = fetched.skipped.iter().map(diagnose::skipped_key).collect();
    let skipped_text = if skipped.is_empty() {
        "none skipped".to_owned()
    } else {
        format!("{} skipped: {}", skipped.len(), skipped.join("; "))
    };
    if fetched.set.is_empty() {
        let error = KeysError::NoUsableKeys {
            skipped: skipped.len(),
            kind: fetched.kind,
        };
        let detail = if skipped.is_empty() {
            "the document's \"keys\" array is empty".to_owned()
        } else {
            skipped_text
        };
        out.line(Verdict::Fail, step::KEYS, format!("{error}: {detail}"));
        return None;
    }
    let count = fetched.set.len();
    out.line(
        Verdict::Ok,
        step::KEYS,
        format!(
            "{count} usable Ed25519 key{} ({}); {skipped_text}",
            if count == 1 { "" } else { "s" },
            kid_list(fetched.set.keys().iter().map(|key| key.kid()))
        ),
    );
    Some(fetched.set)
}

fn skip_after_token_endpoint(out: &mut Recorder<'_>, why: &str) {
    out.line(
        Verdict::Skipped,
        step::CREDENTIALS,
        format!("not checked: {why}"),
    );
    skip_after_credentials(out, why);
}

fn skip_after_credentials(out: &mut Recorder<'_>, why: &str) {
    for name in [step::TOKEN_LIFETIME, step::JWKS, step::KEYS] {
        // The lifetime line may already be there (an unusable answer).
        if out.report.lines.iter().any(|line| line.step == name) {
            continue;
        }
        out.line(Verdict::Skipped, name, format!("not checked: {why}"));
    }
}

fn answered(url: &str) -> String {
    format!("{url} answered")
}

fn accepted(client_id: &str) -> String {
    format!("accepted for client_id {client_id:?}")
}

fn jwks_answered(url: &str) -> String {
    format!("{url} answered HTTP 200 to the access token")
}

fn lifetime(token: &AccessToken, now_ms: i64) -> String {
    // Rounded: a few milliseconds have passed since the answer arrived.
    let seconds = ((token.expires_at_ms() - now_ms).max(0) + 500) / 1000;
    let from = match token.lifetime_from() {
        LifetimeSource::ExpiresIn => "expires_in",
        LifetimeSource::JwtExp => "the token's exp (no expires_in)",
        LifetimeSource::Assumed => "assumed 300 s (an opaque token without expires_in)",
    };
    format!(
        "{seconds} s ({}) as received in {from}; access token {}",
        span(seconds),
        fingerprint(token.value())
    )
}
