//! `check --online`: the real calls a running sidecar makes, each reported on one line
//! with a verdict, so an operator sees on day one what would otherwise surface as 503s
//! and 401s. The wording of each failure is the one the runtime logs use (the error
//! types' messages and [`crate::diagnose`]).
//!
//! Steps, in order: token endpoint reachable, credentials accepted, token lifetime, JWKS
//! reachable with the token, usable keys, tenant store, shared cache (Redis, SPEC §12;
//! skipped without `shared_cache.redis_url`), upstream, and optionally a pasted session
//! token. A step that needs a failed one is skipped with the reason. Every
//! network call is bounded by `jtl.timeout_ms`.
//!
//! The app-token flow (SPEC §11) differs where JTL's Zitadel does: the token endpoint line
//! shows the scope sent (and `invalid_scope` gets advice that fits it), the key
//! set is fetched without a bearer (so it is checked even when no token was had), the
//! usable keys are RSA ones (Zitadel's EC and OKP keys are skipped, as they should be), a
//! discovery step compares `{issuer}/.well-known/openid-configuration` with the config,
//! and a pasted token is an app token, explained by JTL's three checks.

pub mod app_token;
pub mod discovery;
mod exchange;
mod reach;
pub mod session_token;
pub mod shared_cache;

use std::fmt;

use crate::clock::Clock;
use crate::config::{ClientSecret, Config, FlowProfile};
use crate::diagnose::{self, kid_list, span};
use crate::jose::{CompactJws, JwkSet, TokenKind, VerifyingKey};
use crate::jtl::{
    AccessToken, FetchedKeys, Jtl, JtlHttp, JtlSetupError, KeySet, KeySetFetchError,
    LifetimeSource, TokenError,
};
use crate::secrets::{Secret, fingerprint};

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
    /// In `both`: the two key sets, each by its kind.
    pub const APP_TOKEN_JWKS: &str = "app-token JWKS";
    pub const APP_TOKEN_KEYS: &str = "app-token keys";
    pub const SESSION_TOKEN_JWKS: &str = "session-token JWKS";
    pub const SESSION_TOKEN_KEYS: &str = "session-token keys";
    pub const TENANT_STORE: &str = "tenant store";
    /// `[shared_cache]`: Redis, a test entry written and read back, this app's entry.
    pub const SHARED_CACHE: &str = "shared cache";
    pub const UPSTREAM: &str = "upstream";
    /// JTL's exchange endpoints for `X-JTL-Act-As` answer the app's token.
    pub const TOKEN_EXCHANGE: &str = "token exchange";
    pub const SESSION_TOKEN: &str = "session token";
    /// The app-token flow's OpenID Connect discovery document.
    pub const DISCOVERY: &str = "discovery";
    /// A pasted app token: its claims and the verdict.
    pub const APP_TOKEN: &str = "app token";
    /// JTL's three checks of an app token, in JTL's order.
    pub const SIGNATURE_AND_ISSUER: &str = "app token 1/3 signature and issuer";
    pub const AUDIENCE: &str = "app token 2/3 audience";
    pub const APP_ID: &str = "app token 3/3 app id";
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
    /// App tokens are accepted: the token endpoint line shows the scope sent.
    app_token: bool,
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
/// key set just fetched with the configured policy (an app token in the app-token flow).
pub async fn run_online(
    config: &Config,
    session_token: Option<&str>,
    emit: &mut dyn FnMut(&Line),
) -> Report {
    let app_token = config.session.flow.accepts(TokenKind::AppToken);
    let mut out = Recorder {
        report: Report::default(),
        emit,
        app_token,
    };
    let clock = Clock::system();
    let (keys, jtl) = check_jtl(config, &clock, &mut out).await;
    if app_token {
        let line = match JtlHttp::new(config.jtl.timeout, config.jtl.ca_file.as_deref()) {
            Ok(http) => discovery::check(config, &http).await,
            Err(error) => Line::new(
                Verdict::Skipped,
                step::DISCOVERY,
                format!("not fetched: {error}"),
            ),
        };
        out.push(line);
    }
    out.push(reach::tenant_store(config).await);
    out.push(shared_cache::check(config).await);
    out.push(exchange::check(config, jtl.as_ref()).await);
    out.push(reach::upstream(config).await);
    if let Some(token) = session_token {
        // In `both`, the pasted token is explained as the kind its `alg` says.
        let kind = pasted_kind(token, config);
        let keys = keys
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, set)| set.as_ref());
        match (config.session.profile(kind), keys, kind) {
            (Some(profile), Some(keys), TokenKind::SessionToken) => {
                for line in session_token::diagnose(token, keys, &profile.policy, clock.now_s()) {
                    out.push(line);
                }
            }
            (Some(profile), Some(keys), TokenKind::AppToken) => {
                for line in app_token::diagnose(token, keys, &profile.policy, clock.now_s()) {
                    out.push(line);
                }
            }
            (_, _, TokenKind::SessionToken) => out.line(
                Verdict::Skipped,
                step::SESSION_TOKEN,
                "not verified: no usable key set was fetched",
            ),
            (_, _, TokenKind::AppToken) => out.line(
                Verdict::Skipped,
                step::APP_TOKEN,
                "not verified: no usable RSA key set was fetched",
            ),
        }
    }
    out.report
}

/// Which kind a pasted token is checked as: the flow's, or in `both` the one its `alg`
/// names (app tokens when it names neither).
fn pasted_kind(token: &str, config: &Config) -> TokenKind {
    let kinds = config.session.flow.kinds();
    let algorithms: Vec<_> = kinds.iter().map(|kind| kind.algorithm()).collect();
    match CompactJws::parse_accepting(token, usize::MAX, &algorithms) {
        Ok(jws) => TokenKind::of(jws.algorithm()),
        Err(_) => kinds.first().copied().unwrap_or_default(),
    }
}

/// Steps 1–5: token endpoint, credentials, lifetime, and for each key set the flow
/// needs, JWKS and keys. Returns each kind's usable keys when there are any, and the
/// JTL client when it had an access token.
async fn check_jtl(
    config: &Config,
    clock: &Clock,
    out: &mut Recorder<'_>,
) -> (Vec<(TokenKind, Option<JwkSet>)>, Option<Jtl>) {
    let (jtl, token) = match Jtl::from_config(config, clock.clone()) {
        Ok(jtl) => {
            let token = check_token(config, &jtl, clock, out).await;
            (jtl, token)
        }
        Err(JtlSetupError::Http(error)) => {
            out.line(Verdict::Fail, step::TOKEN_ENDPOINT, error.to_string());
            skip_after_token_endpoint(out, "the HTTPS client could not be set up");
            return (
                skip_key_sets(config, out, "the HTTPS client could not be set up"),
                None,
            );
        }
        Err(JtlSetupError::NoKeySet) => return (Vec::new(), None),
        Err(JtlSetupError::Token(error)) => {
            out.line(
                Verdict::Skipped,
                step::TOKEN_ENDPOINT,
                "not called: there is no secret to send",
            );
            out.line(Verdict::Fail, step::CREDENTIALS, error.to_string());
            skip_after_credentials(out, "no secret");
            // A public key set needs no secret: a stand-in lets the key sets be built.
            let mut without_secret = config.clone();
            without_secret.jtl.client_secret = ClientSecret::Inline(Secret::new(""));
            match Jtl::from_config(&without_secret, clock.clone()) {
                Ok(jtl) => (jtl, Err("no secret")),
                Err(_) => return (skip_key_sets(config, out, "no secret"), None),
            }
        }
    };
    let both = config.session.profiles.len() > 1;
    let mut found = Vec::new();
    for (profile, keys) in config.session.profiles.iter().zip(&jtl.key_sets) {
        let steps = KeySteps::of(profile.kind(), both);
        let set = match token {
            Err(why) if profile.key_set_needs_bearer => {
                steps.skip(out, why);
                None
            }
            _ => check_keys(profile, keys, steps, out).await,
        };
        found.push((profile.kind(), set));
    }
    (found, token.is_ok().then_some(jtl))
}

/// The step names of one key set: plain in a one-kind flow, with the kind in `both`.
#[derive(Clone, Copy)]
struct KeySteps {
    jwks: &'static str,
    keys: &'static str,
}

impl KeySteps {
    fn of(kind: TokenKind, both: bool) -> KeySteps {
        match (both, kind) {
            (false, _) => KeySteps {
                jwks: step::JWKS,
                keys: step::KEYS,
            },
            (true, TokenKind::AppToken) => KeySteps {
                jwks: step::APP_TOKEN_JWKS,
                keys: step::APP_TOKEN_KEYS,
            },
            (true, TokenKind::SessionToken) => KeySteps {
                jwks: step::SESSION_TOKEN_JWKS,
                keys: step::SESSION_TOKEN_KEYS,
            },
        }
    }

    fn skip(self, out: &mut Recorder<'_>, why: &str) {
        for name in [self.jwks, self.keys] {
            out.line(Verdict::Skipped, name, format!("not checked: {why}"));
        }
    }
}

fn skip_key_sets(
    config: &Config,
    out: &mut Recorder<'_>,
    why: &str,
) -> Vec<(TokenKind, Option<JwkSet>)> {
    let both = config.session.profiles.len() > 1;
    config
        .session
        .profiles
        .iter()
        .map(|profile| {
            KeySteps::of(profile.kind(), both).skip(out, why);
            (profile.kind(), None)
        })
        .collect()
}

/// Steps 1–3: token endpoint, credentials, lifetime. `Ok` when a token was had, else why
/// not (for the key sets that need one); the lines of the steps that could not run are
/// there either way.
async fn check_token(
    config: &Config,
    jtl: &Jtl,
    clock: &Clock,
    out: &mut Recorder<'_>,
) -> Result<(), &'static str> {
    let token_url = config.jtl.token_url.as_str();
    let answered = |url: &str| {
        if out.app_token {
            format!("{} ({} sent)", answered(url), scope_text(config))
        } else {
            answered(url)
        }
    };
    let token = match jtl.tokens.get().await {
        Ok(token) => token,
        Err(unavailable) => match &unavailable.cause {
            TokenError::Call(error) => {
                out.line(
                    Verdict::Fail,
                    step::TOKEN_ENDPOINT,
                    format!("{token_url}: {error}"),
                );
                skip_after_token_endpoint(out, "the token endpoint was not reached");
                return Err("the token endpoint was not reached");
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
                return Err("no usable access token");
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
                return Err("the credentials were not accepted");
            }
            TokenError::Status {
                status,
                oauth_error,
            } if out.app_token && oauth_error.as_deref() == Some("invalid_scope") => {
                out.line(
                    Verdict::Fail,
                    step::TOKEN_ENDPOINT,
                    format!(
                        "{token_url} refused the scope: {} sent, HTTP {status} invalid_scope; {}",
                        scope_text(config),
                        diagnose::invalid_scope_advice(config.jtl.scope.as_deref())
                    ),
                );
                out.line(
                    Verdict::Skipped,
                    step::CREDENTIALS,
                    "not known: the scope was refused before a token was handed out",
                );
                skip_after_credentials(out, "no access token");
                return Err("no access token");
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
                return Err("no access token");
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
                return Err("no secret");
            }
        },
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
    Ok(())
}

/// Steps 4–5: one key set and its usable keys.
async fn check_keys(
    profile: &FlowProfile,
    keys: &KeySet,
    steps: KeySteps,
    out: &mut Recorder<'_>,
) -> Option<JwkSet> {
    let jwks_url = profile.key_set_url.as_str();
    let app_token = profile.kind() == TokenKind::AppToken;
    let fetched = match keys.fetch_document().await {
        Ok(fetched) => fetched,
        Err(KeySetFetchError::Document(error)) => {
            out.line(Verdict::Ok, steps.jwks, jwks_answered(jwks_url, app_token));
            out.line(
                Verdict::Fail,
                steps.keys,
                KeySetFetchError::Document(error).to_string(),
            );
            return None;
        }
        Err(error) => {
            let message = match (&error, app_token) {
                (KeySetFetchError::Call(_), _) => format!("{jwks_url}: {error}"),
                // The runtime's words assume JTL's authenticated JWKS; Zitadel's is public.
                (KeySetFetchError::Unauthorized, true) => format!(
                    "{jwks_url} answered HTTP 401 to a request without a bearer; Zitadel's key \
                     set is public, so this is not it: check jtl.jwks_url (default \
                     {{session.issuer}}/oauth/v2/keys)"
                ),
                (KeySetFetchError::NotFound, true) => format!(
                    "the key set endpoint answered HTTP 404: wrong session.issuer / \
                     jtl.jwks_url ({jwks_url})"
                ),
                _ => format!("{error} ({jwks_url})"),
            };
            out.line(Verdict::Fail, steps.jwks, message);
            out.line(
                Verdict::Skipped,
                steps.keys,
                "not counted: the key set was not fetched",
            );
            return None;
        }
    };
    out.line(Verdict::Ok, steps.jwks, jwks_answered(jwks_url, app_token));
    let (verdict, message) = if app_token {
        rsa_keys_text(&fetched)
    } else {
        ed25519_keys_text(&fetched)
    };
    out.line(verdict, steps.keys, message);
    (verdict == Verdict::Ok).then_some(fetched.set)
}

/// The keys line of the session-token flow.
fn ed25519_keys_text(fetched: &FetchedKeys) -> (Verdict, String) {
    let skipped: Vec<String> = fetched.skipped.iter().map(diagnose::skipped_key).collect();
    let skipped_text = if skipped.is_empty() {
        "none skipped".to_owned()
    } else {
        format!("{} skipped: {}", skipped.len(), skipped.join("; "))
    };
    if fetched.set.is_empty() {
        let error = KeySetFetchError::NoUsableKeys {
            skipped: skipped.len(),
            kind: fetched.kind,
        };
        let detail = if skipped.is_empty() {
            "the document's \"keys\" array is empty".to_owned()
        } else {
            skipped_text
        };
        return (Verdict::Fail, format!("{error}: {detail}"));
    }
    let count = fetched.set.len();
    (
        Verdict::Ok,
        format!(
            "{count} usable Ed25519 key{} ({}); {skipped_text}",
            plural(count),
            kid_list(fetched.set.keys().iter().map(|key| key.kid()))
        ),
    )
}

/// The keys line of the app-token flow. Zitadel publishes EC and OKP keys beside its RSA
/// ones; those are skipped as they should be and said so calmly. Other skipped keys (an
/// RSA key too small, or not for signatures) are listed with why.
fn rsa_keys_text(fetched: &FetchedKeys) -> (Verdict, String) {
    let (other_types, refused): (Vec<_>, Vec<_>) = fetched
        .skipped
        .iter()
        .partition(|key| key.is_of_another_type());
    let other_kids = kid_list(other_types.iter().map(|key| key.kid.as_deref()));
    let refused_text = (!refused.is_empty()).then(|| {
        let each: Vec<String> = refused
            .iter()
            .map(|key| diagnose::skipped_key(key))
            .collect();
        format!(
            "{} RSA key{} skipped: {}",
            refused.len(),
            plural(refused.len()),
            each.join("; ")
        )
    });
    if fetched.set.is_empty() {
        let error = KeySetFetchError::NoUsableKeys {
            skipped: fetched.skipped.len(),
            kind: fetched.kind,
        };
        let mut detail = Vec::new();
        if fetched.skipped.is_empty() {
            detail.push("the document's \"keys\" array is empty".to_owned());
        }
        if !other_types.is_empty() {
            detail.push(format!(
                "only keys of other types ({other_kids}), while app tokens are signed with \
                 RSA, so none could be verified (is jtl.jwks_url Zitadel's key set?)"
            ));
        }
        detail.extend(refused_text);
        return (Verdict::Fail, format!("{error}: {}", detail.join("; ")));
    }
    let count = fetched.set.len();
    let usable: Vec<String> = fetched
        .set
        .keys()
        .iter()
        .map(|key| {
            let kid = kid_list([key.kid()]);
            match key {
                VerifyingKey::Rsa(rsa) => format!("{kid} {} bits", rsa.modulus_bits()),
                VerifyingKey::Ed25519(_) => kid,
            }
        })
        .collect();
    let mut text = format!(
        "{count} usable RSA key{} ({})",
        plural(count),
        usable.join(", ")
    );
    if fetched.skipped.is_empty() {
        text.push_str("; none skipped");
    }
    if !other_types.is_empty() {
        text.push_str(&format!(
            "; {} key{} of other types skipped ({other_kids}), as expected: Zitadel publishes \
             EC and OKP keys beside the RSA keys that sign app tokens",
            other_types.len(),
            plural(other_types.len())
        ));
    }
    if let Some(refused_text) = refused_text {
        text.push_str(&format!("; {refused_text}"));
    }
    (Verdict::Ok, text)
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

fn skip_after_token_endpoint(out: &mut Recorder<'_>, why: &str) {
    out.line(
        Verdict::Skipped,
        step::CREDENTIALS,
        format!("not checked: {why}"),
    );
    skip_after_credentials(out, why);
}

/// Skips the lifetime, which needs a token (the key sets that need one are skipped by
/// [`check_jtl`]; a public one is still checked).
fn skip_after_credentials(out: &mut Recorder<'_>, why: &str) {
    // The lifetime line may already be there (an unusable answer).
    if out
        .report
        .lines
        .iter()
        .any(|line| line.step == step::TOKEN_LIFETIME)
    {
        return;
    }
    out.line(
        Verdict::Skipped,
        step::TOKEN_LIFETIME,
        format!("not checked: {why}"),
    );
}

fn answered(url: &str) -> String {
    format!("{url} answered")
}

/// `scope "openid"`, or `no scope`.
fn scope_text(config: &Config) -> String {
    match config.jtl.scope.as_deref() {
        Some(scope) => format!("scope {:?}", scope),
        None => "no scope".to_owned(),
    }
}

fn accepted(client_id: &str) -> String {
    format!("accepted for client_id {client_id:?}")
}

fn jwks_answered(url: &str, app_token: bool) -> String {
    if app_token {
        format!("{url} answered HTTP 200 without a bearer (Zitadel's key set is public)")
    } else {
        format!("{url} answered HTTP 200 to the access token")
    }
}

fn lifetime(token: &AccessToken, now_ms: i64) -> String {
    // Rounded: a few milliseconds have passed since the answer arrived.
    let seconds = token
        .expires_at_ms()
        .saturating_sub(now_ms)
        .max(0)
        .saturating_add(500)
        / 1000;
    let from = match token.lifetime_from() {
        LifetimeSource::ExpiresIn => "as received in expires_in",
        LifetimeSource::JwtExp => "as received in the token's exp (no expires_in)",
        LifetimeSource::Assumed => {
            "assumed 300 s: the opaque token came without expires_in (a short guess: a wrong \
             one costs an early refresh)"
        }
    };
    format!(
        "{seconds} s ({}) {from}; access token {}",
        span(seconds),
        fingerprint(token.value())
    )
}
