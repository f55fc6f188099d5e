//! Tokens that act for someone (SPEC §14): JTL's account service exchanges the app's
//! access token (RFC 8693) for an on-behalf-of-user token, bounded by that user's
//! permissions, or a delegated token for the app's service identity in one tenant. Each
//! comes with a refresh token that JTL rotates on every refresh.
//!
//! [`TokenExchange::token_for`] hands out a cached token per (kind, tenant, user):
//! - at most one exchange or refresh per key is in flight: the key's slot holds an async
//!   lock across the call to JTL, so concurrent requests for one user wait for it and
//!   share its token;
//! - a token due for refresh is refreshed with its refresh token, which is taken out of
//!   the slot before it is sent: whatever happens to that call, the same refresh token
//!   is never sent twice (a refresh whose answer is lost mints afresh next time rather
//!   than risk a reuse, which JTL may punish by revoking the family);
//! - a refused refresh (`400`/`401`) drops the entry and mints afresh, once;
//! - the cache holds at most `egress.exchanged_tokens_max` keys (least recently used
//!   dropped).

mod answer;
mod metrics;
mod shared;

pub use answer::{ASSUMED_LIFETIME_S, ExchangedToken, LifetimeFrom};
pub use shared::exchanged_entry_key;

use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use quick_cache::sync::Cache;
use serde_json::json;
use tokio::sync::Mutex;

use super::access_token::{AccessTokens, TokenUnavailable};
use super::http::{CallError, JtlHttp, Response};
use crate::clock::{Clock, duration_ms};
use crate::config::Config;
use crate::secrets::Secret;
use crate::telemetry::trace::ChildSpan;
use answer::{Answer, read_answer};
pub use metrics::{Event, ExchangeCounts};
use opentelemetry::KeyValue;

/// Whom a request acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// An on-behalf-of-user token (`X-JTL-Act-As: user:<id>`).
    User,
    /// The delegated token of the app's installation in a tenant (`X-JTL-Act-As: tenant`).
    Tenant,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::User => "user",
            ExchangeKind::Tenant => "tenant",
        }
    }

    /// JTL's minting path, below `jtl.api_base_url`; `/refresh` appended refreshes.
    fn path(self) -> &'static str {
        match self {
            ExchangeKind::User => "/account/identity/act-as-user-token",
            ExchangeKind::Tenant => "/account/identity/delegated-token",
        }
    }
}

/// One cache key: the kind, the tenant (lowercase) and, for a user token, the user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExchangeKey {
    pub kind: ExchangeKind,
    pub tenant_id: String,
    /// Empty for [`ExchangeKind::Tenant`].
    pub user_id: String,
}

impl ExchangeKey {
    pub fn user(tenant_id: &str, user_id: &str) -> ExchangeKey {
        ExchangeKey {
            kind: ExchangeKind::User,
            tenant_id: tenant_id.to_ascii_lowercase(),
            user_id: user_id.to_owned(),
        }
    }

    pub fn tenant(tenant_id: &str) -> ExchangeKey {
        ExchangeKey {
            kind: ExchangeKind::Tenant,
            tenant_id: tenant_id.to_ascii_lowercase(),
            user_id: String::new(),
        }
    }

    fn mint_body(&self) -> serde_json::Value {
        match self.kind {
            ExchangeKind::User => json!({"userId": self.user_id, "tenantId": self.tenant_id}),
            ExchangeKind::Tenant => json!({"tenantId": self.tenant_id}),
        }
    }
}

/// Why no exchanged token could be had.
#[derive(Debug)]
pub enum ExchangeError {
    /// JTL refused the exchange (not installed, not enabled, not a member, or anything
    /// else it answers): its status, content type and body go back to the caller.
    Refused {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    /// JTL answered, but not with a usable token: what was missing (never a value).
    Unreadable(String),
    /// JTL could not be reached, or did not answer in time.
    Unreachable(CallError),
    /// The app's own access token, the bearer of the exchange, cannot be had.
    AppToken(TokenUnavailable),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Refused { status, .. } => {
                write!(
                    f,
                    "JTL refused the token exchange with HTTP {}",
                    status.as_u16()
                )
            }
            ExchangeError::Unreadable(what) => {
                write!(f, "JTL's token-exchange answer is unusable: {what}")
            }
            ExchangeError::Unreachable(error) => write!(f, "the token exchange failed: {error}"),
            ExchangeError::AppToken(unavailable) => write!(
                f,
                "the app's access token for the exchange is unavailable: {}",
                unavailable.cause
            ),
        }
    }
}

/// A token in a slot, and its refresh token when this replica may use it (one from the
/// shared entry is the other replicas' too, and is refreshed only under the lock).
struct Held {
    token: Arc<ExchangedToken>,
    refresh_token: Option<Secret>,
}

/// What a key's slot holds.
#[derive(Default)]
struct SlotState {
    held: Option<Held>,
    /// The last token JTL answered `401` to: a shared entry still holding it is dropped.
    refused: Option<Secret>,
}

impl SlotState {
    /// Puts a fresh answer in the slot (with its refresh token only when `own_refresh`)
    /// and hands out its token.
    fn install(&mut self, answer: Answer, own_refresh: bool) -> Arc<ExchangedToken> {
        self.hold(answer.token, answer.refresh_token.filter(|_| own_refresh))
    }

    /// Puts `token` (and the refresh token this replica may use, if any) in the slot.
    fn hold(
        &mut self,
        token: ExchangedToken,
        refresh_token: Option<Secret>,
    ) -> Arc<ExchangedToken> {
        let token = Arc::new(token);
        self.held = Some(Held {
            token: Arc::clone(&token),
            refresh_token,
        });
        self.refused = None;
        token
    }
}

/// A key's slot: its current token, read without a lock on every request, and the
/// state behind an async lock held across the call to JTL (the single flight).
#[derive(Default)]
struct Slot {
    current: ArcSwapOption<ExchangedToken>,
    state: Mutex<SlotState>,
}

impl Slot {
    /// After a change of `state`: what requests read without the lock.
    fn publish(&self, state: &SlotState) {
        self.current
            .store(state.held.as_ref().map(|held| Arc::clone(&held.token)));
    }
}

/// The exchanged tokens of every (kind, tenant, user), with their single flights.
#[derive(Clone)]
pub struct TokenExchange {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    /// `jtl.api_base_url` without its trailing slash.
    api_base: String,
    http: JtlHttp,
    app_tokens: AccessTokens,
    clock: Clock,
    refresh_before_ms: i64,
    /// `jtl.client_id`: part of a shared entry's key, so two apps sharing one Redis
    /// never see each other's tokens.
    client_id: String,
    // quick_cache, as for the verified tokens: a lookup on every request that acts for
    // someone, and its `get` is several times cheaper than moka's (docs/benchmarks.md).
    slots: Cache<ExchangeKey, Arc<Slot>>,
    counts: ExchangeCounts,
}

impl TokenExchange {
    pub fn new(config: &Config, http: JtlHttp, app_tokens: AccessTokens, clock: Clock) -> Self {
        TokenExchange {
            inner: Arc::new(Inner {
                enabled: config.egress.token_exchange,
                api_base: config
                    .jtl
                    .api_base_url
                    .as_str()
                    .trim_end_matches('/')
                    .to_owned(),
                http,
                app_tokens,
                clock,
                refresh_before_ms: duration_ms(config.jtl.refresh_before_expiry),
                client_id: config.jtl.client_id.clone(),
                slots: Cache::new(
                    usize::try_from(config.egress.exchanged_tokens_max).unwrap_or(usize::MAX),
                ),
                counts: ExchangeCounts::default(),
            }),
        }
    }

    /// `egress.token_exchange`.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The counts by kind and event, for metrics and tests.
    pub fn counts(&self) -> &ExchangeCounts {
        &self.inner.counts
    }

    /// Whether `token` is still before its refresh time (so it may be sent again
    /// without asking the cache).
    pub fn is_fresh(&self, token: &ExchangedToken) -> bool {
        self.inner.clock.mono_ms() < token.refresh_at_mono
    }

    /// The URL of a kind's minting endpoint (for `check --online`).
    pub fn mint_url(&self, kind: ExchangeKind) -> String {
        format!("{}{}", self.inner.api_base, kind.path())
    }

    /// A token for `key`: cached while it is not due, else taken from the other
    /// replicas (with `[shared_cache]`), refreshed or minted.
    pub async fn token_for(&self, key: &ExchangeKey) -> Result<Arc<ExchangedToken>, ExchangeError> {
        let inner = &self.inner;
        let slot = match inner
            .slots
            .get_or_insert_with(key, || Ok::<_, Infallible>(Arc::new(Slot::default())))
        {
            Ok(slot) => slot,
            Err(never) => match never {},
        };
        // The common case: a token before its refresh time, read without a lock.
        if let Some(current) = slot.current.load_full()
            && self.is_fresh(&current)
        {
            inner.counts.count(key.kind, Event::Cached);
            return Ok(current);
        }
        let mut state = slot.state.lock().await;
        // Another request may have refreshed it while this one waited for the lock.
        if let Some(current) = &state.held
            && self.is_fresh(&current.token)
        {
            inner.counts.count(key.kind, Event::Cached);
            return Ok(Arc::clone(&current.token));
        }
        let result = match inner.app_tokens.shared_store() {
            Some(shared_store) => {
                match shared::through_redis(self, shared_store, key, &mut state).await {
                    Some(result) => result,
                    None => self.alone(key, &mut state).await,
                }
            }
            None => self.alone(key, &mut state).await,
        };
        slot.publish(&state);
        result
    }

    /// Without other replicas to ask: refresh with this replica's own refresh token, or
    /// mint.
    async fn alone(
        &self,
        key: &ExchangeKey,
        state: &mut SlotState,
    ) -> Result<Arc<ExchangedToken>, ExchangeError> {
        let inner = &self.inner;
        // The refresh token leaves the slot before it is sent: never twice.
        let refresh_token = state
            .held
            .as_mut()
            .and_then(|current| current.refresh_token.take());
        let outcome = match refresh_token {
            Some(refresh_token) => self.refresh_or_mint(key, &refresh_token).await,
            // No refresh token (none yet, JTL sent none, or the last refresh's answer
            // was lost): minted afresh.
            None => self.mint(key).await.map(|answer| (answer, Event::Minted)),
        };
        match outcome {
            Ok((answer, event)) => {
                inner.counts.count(key.kind, event);
                Ok(state.install(answer, true))
            }
            Err(error) => self.failed(key, state, error),
        }
    }

    /// Refreshes with `refresh_token`; a refused refresh (`400`/`401`) mints afresh,
    /// once.
    async fn refresh_or_mint(
        &self,
        key: &ExchangeKey,
        refresh_token: &Secret,
    ) -> Result<(Answer, Event), ExchangeError> {
        match self.refresh(key, refresh_token).await {
            Ok(answer) => Ok((answer, Event::Refreshed)),
            Err(ExchangeError::Refused { status, .. })
                if status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED =>
            {
                tracing::info!(
                    kind = key.kind.as_str(),
                    status = status.as_u16(),
                    "JTL refused the refresh of an exchanged token; exchanging afresh"
                );
                self.mint(key).await.map(|answer| (answer, Event::Minted))
            }
            Err(error) => Err(error),
        }
    }

    /// No new token: the current one serves while it is valid (unless JTL refused the
    /// exchange outright); else the error, and the slot is emptied.
    fn failed(
        &self,
        key: &ExchangeKey,
        state: &mut SlotState,
        error: ExchangeError,
    ) -> Result<Arc<ExchangedToken>, ExchangeError> {
        let refused = matches!(error, ExchangeError::Refused { .. });
        self.inner.counts.count(
            key.kind,
            if refused {
                Event::Refused
            } else {
                Event::Failed
            },
        );
        if !refused
            && let Some(current) = &state.held
            && current.token.is_usable_at(self.inner.clock.mono_ms())
        {
            tracing::warn!(
                kind = key.kind.as_str(),
                "no new exchanged token ({error}); the current one is used until it expires"
            );
            return Ok(Arc::clone(&current.token));
        }
        state.held = None;
        Err(error)
    }

    /// One dry exchange for a random tenant (and user), for `check --online`: JTL's
    /// status and the reason its body gives. A refusal is the expected answer: no app is
    /// installed for a tenant that does not exist.
    pub async fn probe(&self, kind: ExchangeKind) -> Result<(StatusCode, String), ExchangeError> {
        let tenant_id = uuid::Uuid::new_v4().to_string();
        let key = match kind {
            ExchangeKind::User => {
                ExchangeKey::user(&tenant_id, &format!("{}", rand::random::<u32>()))
            }
            ExchangeKind::Tenant => ExchangeKey::tenant(&tenant_id),
        };
        match self.call(&self.mint_url(kind), key.mint_body()).await {
            Ok(response) => Ok((response.status, String::new())),
            Err(ExchangeError::Refused { status, body, .. }) => Ok((status, refusal_reason(&body))),
            Err(error) => Err(error),
        }
    }

    /// JTL answered `401` to a request sent with `token`: that token goes (a newer one
    /// of the key is left alone), so the next request exchanges afresh.
    pub async fn invalidate(&self, key: &ExchangeKey, token: &ExchangedToken) {
        let Some(slot) = self.inner.slots.get(key) else {
            return;
        };
        let mut state = slot.state.lock().await;
        if state
            .held
            .as_ref()
            .is_some_and(|current| current.token.serial == token.serial)
        {
            state.held = None;
            // A shared entry still holding it is dropped by the next exchange.
            state.refused = Some(token.value.clone());
            slot.publish(&state);
        }
    }

    async fn mint(&self, key: &ExchangeKey) -> Result<Answer, ExchangeError> {
        let url = format!("{}{}", self.inner.api_base, key.kind.path());
        let mut span = exchange_span(key, "mint");
        let answer = self.call(&url, key.mint_body()).await;
        finish_span(&mut span, &answer);
        self.read(key, answer?)
    }

    async fn refresh(
        &self,
        key: &ExchangeKey,
        refresh_token: &Secret,
    ) -> Result<Answer, ExchangeError> {
        let url = format!("{}{}/refresh", self.inner.api_base, key.kind.path());
        let body = json!({"refreshToken": refresh_token.expose()});
        let mut span = exchange_span(key, "refresh");
        let answer = self.call(&url, body).await;
        finish_span(&mut span, &answer);
        self.read(key, answer?)
    }

    fn read(&self, key: &ExchangeKey, response: Response) -> Result<Answer, ExchangeError> {
        let now = self.inner.clock.read();
        read_answer(&response.body, now, self.inner.refresh_before_ms).map_err(|what| {
            tracing::warn!(
                kind = key.kind.as_str(),
                "JTL's token-exchange answer is unusable: {what}"
            );
            ExchangeError::Unreadable(what)
        })
    }

    /// POSTs `body` to `url` with the app's access token; a `401` drops that token and
    /// the call is made once more with a fresh one (SPEC §6). A success is any `2xx`;
    /// anything else is JTL's refusal, passed back.
    async fn call(&self, url: &str, body: serde_json::Value) -> Result<Response, ExchangeError> {
        let body = Bytes::from(body.to_string());
        let mut retried = false;
        loop {
            let app_token = self
                .inner
                .app_tokens
                .get()
                .await
                .map_err(ExchangeError::AppToken)?;
            let request = Request::builder()
                .method(Method::POST)
                .uri(url)
                .header(AUTHORIZATION, app_token.authorization().clone())
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
                .map_err(|_| ExchangeError::Unreadable("the exchange URL is not valid".into()))?;
            let response = self
                .inner
                .http
                .call(request)
                .await
                .map_err(|error| match error {
                    CallError::TooLarge => {
                        ExchangeError::Unreadable("the answer is larger than 64 KiB".into())
                    }
                    error => ExchangeError::Unreachable(error),
                })?;
            if response.status.is_success() {
                return Ok(response);
            }
            if response.status == StatusCode::UNAUTHORIZED && !retried {
                self.inner.app_tokens.invalidate(&app_token);
                retried = true;
                continue;
            }
            tracing::warn!(
                status = response.status.as_u16(),
                reason = %refusal_reason(&response.body),
                "JTL refused a token exchange"
            );
            return Err(ExchangeError::Refused {
                status: response.status,
                content_type: response.headers.get(CONTENT_TYPE).cloned(),
                body: response.body,
            });
        }
    }
}

/// The reason in JTL's error body, for the log: its `error` and `error_description`
/// (or `message`), at most 200 characters; never the whole body.
fn refusal_reason(body: &[u8]) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
        return "(no JSON error body)".into();
    };
    let pick = |name: &str| fields.get(name).and_then(serde_json::Value::as_str);
    let reason = [pick("error"), pick("error_description").or(pick("message"))]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    reason.chars().take(200).collect()
}

/// The span of one exchange call (a child of the request waiting for it): the kind,
/// the call and the tenant, never the user or a token.
fn exchange_span(key: &ExchangeKey, call: &'static str) -> ChildSpan {
    let mut span = crate::telemetry::trace::child("token exchange");
    span.set(KeyValue::new("jtl.exchange.kind", key.kind.as_str()));
    span.set(KeyValue::new("jtl.exchange.call", call));
    span.set(KeyValue::new("jtl.tenant_id", key.tenant_id.clone()));
    span
}

fn finish_span(span: &mut ChildSpan, answer: &Result<Response, ExchangeError>) {
    match answer {
        Ok(response) => span.status(response.status.as_u16()),
        Err(ExchangeError::Refused { status, .. }) => span.status(status.as_u16()),
        Err(error) => span.fail(error.to_string()),
    }
}
