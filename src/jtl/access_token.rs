//! The app's OAuth2 client-credentials access token (SPEC §6): obtained from JTL's token
//! endpoint, cached, refreshed in the background before it expires, one request in flight
//! at a time, and never handed out once expired. With `[shared_cache]`, several replicas
//! share one token through Redis (SPEC §12, [`crate::shared_cache`]): the shared entry is
//! read before JTL is asked, and only then (at start, at refresh, after a 401), never per
//! request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use tokio::sync::Notify;

use super::backoff::Backoff;
use super::client_auth::basic_authorization;
use super::http::{CallError, JtlHttp, retry_after};
use super::token::{AccessToken, parse_token_response};
use crate::clock::{Clock, duration_ms};
use crate::config::{ClientSecret, JtlConfig};
use crate::diagnose::{SecretSource, credential_observations, observations_sentence};
use crate::secrets::{Secret, fingerprint};
use crate::shared_cache::{Acquired, Entry, Judgement, SealingKey, SharedCounts, SharedTokenStore};

/// How many refused tokens are remembered, so that a shared entry still holding one is
/// dropped rather than taken.
const REFUSED_REMEMBERED: usize = 8;

/// `invalid_client` is not retried faster than this (SPEC §6).
pub const INVALID_CLIENT_RETRY: Duration = Duration::from_secs(60);

thread_local! {
    /// This thread's copy of the current `Authorization` value, by token serial: cloning a
    /// header value shares its buffer, and a buffer shared by every worker thread turns
    /// each request into a cross-core reference-count update.
    static THREAD_AUTHORIZATION: std::cell::RefCell<Option<(u64, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// Why the token endpoint gave no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("{}", crate::diagnose::INVALID_CLIENT)]
    InvalidClient,
    #[error("the token endpoint answered HTTP {status}{}", oauth_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Status {
        status: u16,
        oauth_error: Option<String>,
    },
    #[error("the token endpoint could not be reached: {0}")]
    Call(CallError),
    #[error("the token endpoint's answer is unusable: {0}")]
    BadResponse(&'static str),
    #[error("jtl.client_secret_file cannot be read: {0}")]
    SecretFile(String),
}

/// No valid access token can be had now; the caller answers 503 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no valid JTL access token is available ({cause})")]
pub struct TokenUnavailable {
    /// Seconds until the next attempt, at least 1.
    pub retry_after_s: u64,
    pub cause: TokenError,
}

/// Counts of token requests by outcome, for metrics and tests.
#[derive(Debug, Default)]
pub struct TokenFetchCounts {
    pub succeeded: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
}

/// A cheap handle to the access token; clones share one token and one refresher.
#[derive(Clone)]
pub struct AccessTokens {
    inner: Arc<Inner>,
}

struct Inner {
    http: JtlHttp,
    clock: Clock,
    token_url: String,
    client_id: String,
    secret_source: ClientSecret,
    secret: Mutex<Secret>,
    scope: Option<String>,
    refresh_before_ms: i64,
    /// The token is opaque (app-token flow): its body is never read for a lifetime.
    opaque: bool,
    current: ArcSwapOption<AccessToken>,
    /// Held while a token request is in flight: the single flight.
    flight: tokio::sync::Mutex<Flight>,
    /// When the next request may be made (monotonic), readable without the lock.
    next_attempt_ms: std::sync::atomic::AtomicI64,
    wake_refresher: Notify,
    counts: TokenFetchCounts,
    /// `[shared_cache]`: the token shared with the other replicas through Redis.
    shared: Option<SharedTokenStore>,
    /// The values of the last tokens JTL refused (only kept with a shared store).
    refused: Mutex<VecDeque<Secret>>,
}

#[derive(Default)]
struct Flight {
    backoff: Backoff,
    last_error: Option<TokenError>,
}

/// What a caller needs from [`AccessTokens::obtain`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Any usable token.
    Usable,
    /// A token that is not yet due for refresh (the background refresher).
    Fresh,
}

impl AccessTokens {
    /// Reads `client_secret_file` when configured; the first token is fetched by the
    /// refresher or by the first caller.
    pub fn new(config: &JtlConfig, http: JtlHttp, clock: Clock) -> Result<Self, TokenError> {
        AccessTokens::with_shared_store(config, http, clock, None)
    }

    /// As [`AccessTokens::new`], sharing the token through `shared` when given.
    pub fn with_shared_store(
        config: &JtlConfig,
        http: JtlHttp,
        clock: Clock,
        shared: Option<SharedTokenStore>,
    ) -> Result<Self, TokenError> {
        let secret = match &config.client_secret {
            ClientSecret::Inline(secret) => secret.clone(),
            ClientSecret::File(path) => read_secret_file(path)?,
        };
        Ok(AccessTokens {
            inner: Arc::new(Inner {
                http,
                clock,
                token_url: config.token_url.to_string(),
                client_id: config.client_id.clone(),
                secret_source: config.client_secret.clone(),
                secret: Mutex::new(secret),
                scope: config.scope.clone(),
                refresh_before_ms: duration_ms(config.refresh_before_expiry),
                opaque: config.opaque_token,
                current: ArcSwapOption::empty(),
                flight: tokio::sync::Mutex::new(Flight::default()),
                next_attempt_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
                wake_refresher: Notify::new(),
                counts: TokenFetchCounts::default(),
                shared,
                refused: Mutex::new(VecDeque::new()),
            }),
        })
    }

    /// The current token when it is usable; never waits and never returns an expired
    /// token. This is what the hot path calls.
    pub fn current(&self) -> Option<Arc<AccessToken>> {
        let now = self.inner.clock.mono_ms();
        self.inner
            .current
            .load_full()
            .filter(|token| token.is_usable_at(now))
    }

    /// `Bearer <token>` of the current usable token, from a copy owned by this thread;
    /// `None` when no token is usable (then [`AccessTokens::get`] fetches or explains).
    pub fn current_authorization(&self) -> Option<HeaderValue> {
        let now = self.inner.clock.mono_ms();
        let guard = self.inner.current.load();
        let token = guard.as_ref().filter(|token| token.is_usable_at(now))?;
        THREAD_AUTHORIZATION.with(|cell| {
            let mut copy = cell.borrow_mut();
            match &*copy {
                Some((serial, value)) if *serial == token.serial => Some(value.clone()),
                _ => {
                    let mut value =
                        HeaderValue::from_bytes(token.authorization().as_bytes()).ok()?;
                    value.set_sensitive(true);
                    *copy = Some((token.serial, value.clone()));
                    Some(value)
                }
            }
        })
    }

    /// The current token, or a new one when none is usable. Concurrent callers share
    /// one request; after a failure, callers get [`TokenUnavailable`] at once until the
    /// backoff has passed.
    pub async fn get(&self) -> Result<Arc<AccessToken>, TokenUnavailable> {
        if let Some(token) = self.current() {
            return Ok(token);
        }
        self.obtain(Need::Usable).await
    }

    /// Drops `token` because JTL refused it (a 401). A newer token is left alone.
    pub fn invalidate(&self, token: &Arc<AccessToken>) {
        let previous = self
            .inner
            .current
            .compare_and_swap(&Some(Arc::clone(token)), None);
        if previous
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, token))
        {
            tracing::info!(token = %token.fingerprint(), "access token refused by JTL; dropped");
            if self.inner.shared.is_some() {
                // The shared entry is looked at by the next fetch, not here: this runs on
                // the request path. It is dropped there if it still holds this token.
                let mut refused = self.refused();
                if refused.len() == REFUSED_REMEMBERED {
                    refused.pop_front();
                }
                refused.push_back(token.value.clone());
            }
            self.inner.wake_refresher.notify_one();
        }
    }

    pub fn counts(&self) -> &TokenFetchCounts {
        &self.inner.counts
    }

    /// The shared store's counts, when `[shared_cache]` is on.
    pub fn shared_counts(&self) -> Option<&SharedCounts> {
        self.inner.shared.as_ref().map(SharedTokenStore::counts)
    }

    /// The shared store, when `[shared_cache]` is on.
    pub fn shared_store(&self) -> Option<&SharedTokenStore> {
        self.inner.shared.as_ref()
    }

    fn refused(&self) -> std::sync::MutexGuard<'_, VecDeque<Secret>> {
        self.inner
            .refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The key shared entries are sealed with, derived from the client secret.
    pub(super) fn sealing_key(&self) -> SealingKey {
        let secret = self
            .inner
            .secret
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        SealingKey::derive(secret.expose().as_bytes())
    }

    /// Reads the shared entry, takes the lock or waits for the replica that holds it.
    /// `Ok` is a token to use (no JTL request); `Err` says how to ask JTL: with the lock,
    /// without it (the wait timed out), or as if there were no shared store.
    async fn take_shared(
        &self,
        shared: &SharedTokenStore,
        need: Need,
    ) -> Result<Arc<AccessToken>, Acquired> {
        let inner = &self.inner;
        let key = self.sealing_key();
        let judge = |entry: &Entry| {
            if self
                .refused()
                .iter()
                .any(|refused| refused.expose() == entry.token)
            {
                return Judgement::Refused;
            }
            let now = inner.clock.read();
            match AccessToken::from_entry(entry, inner.refresh_before_ms, now) {
                Some(token)
                    if token.is_usable_at(now.mono_ms)
                        && (need == Need::Usable || now.mono_ms < token.refresh_at_mono()) =>
                {
                    Judgement::Use
                }
                _ => Judgement::Stale,
            }
        };
        match shared.acquire(&key, judge).await {
            Acquired::Entry(entry) => {
                // The same token as the current one keeps its `Arc`: a 401 for it must
                // still invalidate it.
                if let Some(current) = inner.current.load_full()
                    && current.value() == entry.token
                {
                    return Ok(current);
                }
                let now = inner.clock.read();
                let token = AccessToken::from_entry(&entry, inner.refresh_before_ms, now)
                    .ok_or(Acquired::Unavailable)?;
                tracing::info!(
                    token = %token.fingerprint(),
                    expires_in_s = token.expires_at_mono().saturating_sub(now.mono_ms) / 1000,
                    "took the JTL access token another replica shared through Redis"
                );
                let token = Arc::new(token);
                inner.current.store(Some(Arc::clone(&token)));
                Ok(token)
            }
            other => Err(other),
        }
    }

    /// Refreshes the token ahead of expiry until `shutdown` completes.
    pub async fn run_refresher(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let due_ms = self
                .inner
                .current
                .load()
                .as_ref()
                .map(|token| token.refresh_at_mono())
                .unwrap_or(i64::MIN);
            let next_attempt_ms = self
                .inner
                .next_attempt_ms
                .load(std::sync::atomic::Ordering::SeqCst);
            let wake_at = due_ms.max(next_attempt_ms);
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.inner.wake_refresher.notified() => continue,
                _ = self.inner.clock.sleep_until(wake_at) => {}
            }
            // Errors are logged and scheduled for retry inside.
            let _ = self.obtain(Need::Fresh).await;
        }
    }

    async fn obtain(&self, need: Need) -> Result<Arc<AccessToken>, TokenUnavailable> {
        let inner = &self.inner;
        let mut flight = inner.flight.lock().await;
        // Schedules and backoff are on the monotonic clock.
        let now = inner.clock.mono_ms();
        // Another caller may have fetched while this one waited for the lock.
        if let Some(token) = self.current()
            && (need == Need::Usable || now < token.refresh_at_mono())
        {
            return Ok(token);
        }
        if now < flight.backoff.next_attempt_ms() {
            return self.current().ok_or_else(|| self.unavailable(&flight, now));
        }
        // With a shared store: the other replicas' token, or the lock to ask for all.
        let mut lock = None;
        let mut publish = false;
        if let Some(shared) = &inner.shared {
            match self.take_shared(shared, need).await {
                Ok(token) => {
                    flight.backoff.succeeded();
                    flight.last_error = None;
                    inner
                        .next_attempt_ms
                        .store(i64::MIN, std::sync::atomic::Ordering::SeqCst);
                    return Ok(token);
                }
                Err(Acquired::Won(won)) => {
                    lock = Some(won);
                    publish = true;
                }
                Err(Acquired::TimedOut) => publish = true,
                Err(_) => {}
            }
        }
        let result = self.request_token().await;
        let now = inner.clock.mono_ms();
        match result {
            Ok(token) => {
                inner
                    .counts
                    .succeeded
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    token = %token.fingerprint(),
                    expires_in_s = token.expires_at_mono().saturating_sub(now) / 1000,
                    "obtained a JTL access token"
                );
                flight.backoff.succeeded();
                flight.last_error = None;
                let token = Arc::new(token);
                inner.current.store(Some(Arc::clone(&token)));
                inner
                    .next_attempt_ms
                    .store(i64::MIN, std::sync::atomic::Ordering::SeqCst);
                if let (Some(shared), true) = (&inner.shared, publish) {
                    shared
                        .publish(&self.sealing_key(), &token.to_entry(), lock)
                        .await;
                }
                Ok(token)
            }
            Err((error, retry_after)) => {
                if let (Some(shared), Some(lock)) = (&inner.shared, lock) {
                    shared.release(lock).await;
                }
                inner
                    .counts
                    .failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let minimum = match (&error, retry_after) {
                    (TokenError::InvalidClient, _) => Some(INVALID_CLIENT_RETRY),
                    (_, retry_after) => retry_after,
                };
                let next = flight.backoff.failed(now, minimum);
                inner
                    .next_attempt_ms
                    .store(next, std::sync::atomic::Ordering::SeqCst);
                let retry_in_s = (next - now).max(0) / 1000;
                match error {
                    TokenError::InvalidClient => tracing::error!(
                        client_id = %inner.client_id,
                        retry_in_s,
                        "{error}; {}",
                        self.credential_observations()
                    ),
                    _ => tracing::warn!(retry_in_s, "access token request failed: {error}"),
                }
                flight.last_error = Some(error);
                self.current().ok_or_else(|| self.unavailable(&flight, now))
            }
        }
    }

    fn unavailable(&self, flight: &Flight, now: i64) -> TokenUnavailable {
        let wait_ms = flight.backoff.next_attempt_ms().saturating_sub(now).max(0);
        TokenUnavailable {
            retry_after_s: (wait_ms.unsigned_abs().div_ceil(1000)).max(1),
            cause: flight
                .last_error
                .clone()
                .unwrap_or(TokenError::BadResponse("no token has been obtained yet")),
        }
    }

    /// One request to the token endpoint. On failure, also the `Retry-After` it asked for.
    async fn request_token(&self) -> Result<AccessToken, (TokenError, Option<Duration>)> {
        let inner = &self.inner;
        let secret = self.secret_for_request().await.map_err(|e| (e, None))?;
        // RFC 6749 §2.3.1: id and secret each form-urlencoded, then joined (SPEC §6).
        let mut authorization =
            HeaderValue::from_str(&basic_authorization(&inner.client_id, secret.expose()))
                .map_err(|_| {
                    (
                        TokenError::BadResponse("credentials are not header-safe"),
                        None,
                    )
                })?;
        authorization.set_sensitive(true);
        let form = form_body(inner.scope.as_deref());
        let request = Request::builder()
            .method(Method::POST)
            .uri(inner.token_url.as_str())
            .header(AUTHORIZATION, authorization)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| {
                (
                    TokenError::BadResponse("jtl.token_url is not a valid URI"),
                    None,
                )
            })?;

        let mut span = crate::telemetry::trace::child("access-token fetch");
        let response = inner.http.call(request).await.map_err(|e| {
            span.fail(e.to_string());
            (TokenError::Call(e), None)
        })?;
        span.status(response.status.as_u16());
        drop(span);
        let now = inner.clock.read();
        if response.status != StatusCode::OK {
            let oauth_error = serde_json::from_slice::<Value>(&response.body)
                .ok()
                .and_then(|body| body.get("error").and_then(Value::as_str).map(str::to_owned));
            let error = if oauth_error.as_deref() == Some("invalid_client") {
                TokenError::InvalidClient
            } else {
                TokenError::Status {
                    status: response.status.as_u16(),
                    oauth_error: oauth_error
                        .map(|e| e.chars().filter(|c| !c.is_control()).take(80).collect()),
                }
            };
            return Err((error, retry_after(&response.headers)));
        }
        parse_token_response(&response.body, now, inner.refresh_before_ms, inner.opaque)
            .map_err(TokenError::BadResponse)
            .map_err(|e| (e, None))
    }

    /// What can be seen wrong with the configured credentials (a trailing newline in the
    /// secret file, swapped values...), as one clause naming the secret only by its
    /// fingerprint. Logged with `invalid_client`; `check --online` prints the same.
    pub fn credential_observations(&self) -> String {
        let inner = &self.inner;
        let secret = inner
            .secret
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let source = match &inner.secret_source {
            ClientSecret::Inline(_) => SecretSource::Inline,
            ClientSecret::File(path) => SecretSource::File(path),
        };
        let seen = credential_observations(&inner.client_id, secret.expose(), source);
        observations_sentence(&seen, &fingerprint(secret.expose()))
    }

    /// The secret to send. A secret file is read again before every token request (a few
    /// per hour), so a corrected or rotated Kubernetes Secret is picked up after an
    /// `invalid_client` without a restart.
    ///
    /// A token request can start on an ingress worker (a request that finds no token), so
    /// the file is read off the async worker (`tokio::fs`, a blocking-pool thread), and the
    /// lock is taken only after the read: a std mutex is never held across an await.
    async fn secret_for_request(&self) -> Result<Secret, TokenError> {
        let inner = &self.inner;
        let fresh = match &inner.secret_source {
            ClientSecret::File(path) => Some((path, read_secret_file_off_worker(path).await)),
            ClientSecret::Inline(_) => None,
        };
        let mut secret = inner
            .secret
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((path, fresh)) = fresh {
            match fresh {
                Ok(fresh) => {
                    if fresh != *secret {
                        tracing::info!(file = %path.display(), "read a changed client secret from jtl.client_secret_file");
                    }
                    *secret = fresh;
                }
                Err(error) => tracing::warn!("{error}; using the secret read before"),
            }
        }
        Ok(secret.clone())
    }
}

/// `grant_type=client_credentials`, plus `scope` when configured.
fn form_body(scope: Option<&str>) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if let Some(scope) = scope {
        form.append_pair("scope", scope);
    }
    form.finish()
}

/// At start (construction, not on a request's path): a blocking read is fine there.
fn read_secret_file(path: &std::path::Path) -> Result<Secret, TokenError> {
    // Used byte for byte: a trailing newline is part of the secret, as JTL will see it.
    std::fs::read_to_string(path)
        .map(Secret::new)
        .map_err(|e| secret_file_error(path, &e))
}

/// The same read for a token request, which may run on an ingress worker: on Tokio's
/// blocking pool, so the worker's thread never waits on the file system.
async fn read_secret_file_off_worker(path: &std::path::Path) -> Result<Secret, TokenError> {
    tokio::fs::read_to_string(path)
        .await
        .map(Secret::new)
        .map_err(|e| secret_file_error(path, &e))
}

fn secret_file_error(path: &std::path::Path, error: &std::io::Error) -> TokenError {
    TokenError::SecretFile(format!("{}: {error}", path.display()))
}
