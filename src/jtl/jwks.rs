//! A key set (SPEC §6 "JWKS"): JTL's session-token keys, fetched with the access token,
//! or Zitadel's app-token keys, fetched without;
//! swapped atomically so the hot path reads it without locking, refreshed in the
//! background, refetched at most once per `jwks_min_refetch_interval_s` for unknown keys,
//! and kept for up to `jwks_max_stale_s` while fetches fail.
//!
//! No false 401 through a rotation (SPEC §5): a token whose key is not in the set is
//! decided against a set fetched after it arrived. [`KeySet::newer_than`] waits for that
//! fetch when the rate limit forbids one now, so junk tokens that keep the limit spent
//! cannot lock out the users of a freshly rotated key.

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION};
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use super::access_token::{AccessTokens, TokenUnavailable};
use super::backoff::Backoff;
use super::http::{CallError, JtlHttp, Response};
use super::token::AccessToken;
use crate::clock::{Clock, duration_ms};
use crate::diagnose;
use crate::jose::{JwkSet, JwksParseError, KeyKind, SkippedKey, TokenKind};

/// A key set as loaded at one time. Generation 0 is the empty set before the first
/// successful fetch; each successful fetch adds one.
#[derive(Debug, Default)]
pub struct LoadedKeys {
    pub set: JwkSet,
    pub generation: u64,
    /// When it was fetched, on the monotonic clock: its age (`jwks_max_stale_s`, the
    /// refresh schedule) is a duration, which a wall-clock step must not move.
    pub fetched_at_mono_ms: i64,
    /// The number of the fetch that loaded it (see [`KeySet::fetches_started`]).
    pub fetch_number: u64,
}

/// Requests that may wait at once for a key-set fetch (an unknown key while the rate limit
/// forbids a fetch). Each holds little beyond its request (a token is at most
/// `max_token_bytes`), so the bound keeps a flood of forged tokens to a few MiB, while
/// 1024 over one interval (10 s by default) is ~100 requests per second carrying a new key
/// in the worst second of a rotation, and only while junk tokens keep the limit spent.
pub const MAX_WAITING_FOR_KEYS: usize = 1024;

/// Unusable keys remembered as warned about (see [`WarnedKeys`]): far more than a key set
/// holds, and a few KiB of fingerprints at most.
const MAX_WARNED_KEYS: usize = 1024;

/// Why no newer key set can be had for a waiting request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyWait {
    /// The fetch failed, or the endpoint is failing and backing off: answer 503.
    #[error("the key set cannot be fetched now")]
    Unavailable,
    /// [`MAX_WAITING_FOR_KEYS`] requests are waiting already: answer 503.
    #[error("too many requests are waiting for the key set")]
    Crowded,
}

/// Why fetching a key set failed: no access token, the endpoint unreachable or
/// answering an error, or a document that does not parse ([`JwksParseError`]) or holds no
/// usable key. The set in use, if any, is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetFetchError {
    #[error("{0}")]
    Token(TokenUnavailable),
    #[error("the JWKS endpoint could not be reached: {0}")]
    Call(CallError),
    #[error(
        "the access token was not accepted for the JWKS (HTTP 401, a fresh token too): do jtl.token_url and jtl.api_base_url / jtl.jwks_url belong to the same JTL environment?"
    )]
    Unauthorized,
    #[error("the JWKS endpoint answered HTTP 404: wrong jtl.api_base_url / jtl.jwks_url")]
    NotFound,
    #[error("the JWKS endpoint answered HTTP {0}")]
    Status(u16),
    /// A refusal with `Retry-After`: no fetch is made sooner (a `429` or `503`).
    #[error(
        "the JWKS endpoint answered HTTP {status} and asked for {retry_after_s} s of quiet (Retry-After)"
    )]
    StatusRetryAfter { status: u16, retry_after_s: u64 },
    #[error("the JWKS endpoint answered HTTP 200 with an empty body")]
    EmptyBody,
    #[error("the JWKS document is unusable: {0}")]
    Document(JwksParseError),
    #[error("the JWKS document holds no usable {kind} signing key ({skipped} skipped)")]
    NoUsableKeys { skipped: usize, kind: KeyKind },
}

/// A key-set document as fetched: the usable keys and those skipped, with why.
#[derive(Debug, Clone, Default)]
pub struct FetchedKeys {
    /// The kind of keys kept (the flow's); the others are in `skipped`.
    pub kind: KeyKind,
    pub set: JwkSet,
    pub skipped: Vec<SkippedKey>,
}

/// Counts of key-set fetches by outcome.
#[derive(Debug, Default)]
pub struct KeyFetchCounts {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
}

/// Settings of the key set, from `[session]` and `jtl.jwks_url`.
#[derive(Debug, Clone)]
pub struct KeySetOptions {
    pub url: String,
    pub refresh_interval: Duration,
    pub min_refetch_interval: Duration,
    pub max_stale: Duration,
    /// The keys the flow verifies with; the others in the document are skipped.
    pub key_kind: KeyKind,
    /// Fetch with `Authorization: Bearer <access token>` (JTL's session-token JWKS);
    /// Zitadel's key set is public and fetched without it.
    pub authenticated: bool,
}

/// A cheap handle to the key set; clones share one set and one refresher.
#[derive(Clone)]
pub struct KeySet {
    inner: Arc<Inner>,
}

struct Inner {
    http: JtlHttp,
    tokens: AccessTokens,
    clock: Clock,
    options: KeySetOptions,
    current: ArcSwap<LoadedKeys>,
    /// Held while a fetch is in flight: concurrent refetches share one.
    flight: tokio::sync::Mutex<Backoff>,
    /// Earliest time of the next fetch (rate limit and backoff; monotonic), readable
    /// without the lock.
    next_fetch_ms: AtomicI64,
    last_fetch_failed: AtomicBool,
    /// Fetches started so far; the number of the latest one.
    fetches_started: AtomicU64,
    /// The number of the latest fetch that failed (0: none).
    last_failed_fetch: AtomicU64,
    /// Requests in [`KeySet::newer_than`], bounded by [`MAX_WAITING_FOR_KEYS`].
    waiting: AtomicUsize,
    counts: KeyFetchCounts,
    /// Unusable keys of the flow's type warned about already (SPEC §6: once per `kid`).
    warned: Mutex<WarnedKeys>,
}

impl KeySet {
    pub fn new(options: KeySetOptions, http: JtlHttp, tokens: AccessTokens, clock: Clock) -> Self {
        let backoff = Backoff::new(options.min_refetch_interval, options.refresh_interval);
        KeySet {
            inner: Arc::new(Inner {
                http,
                tokens,
                clock,
                options,
                current: ArcSwap::from_pointee(LoadedKeys::default()),
                flight: tokio::sync::Mutex::new(backoff),
                next_fetch_ms: AtomicI64::new(i64::MIN),
                last_fetch_failed: AtomicBool::new(false),
                fetches_started: AtomicU64::new(0),
                last_failed_fetch: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
                counts: KeyFetchCounts::default(),
                warned: Mutex::new(WarnedKeys::default()),
            }),
        }
    }

    /// The keys as last loaded, however old (generation 0: none yet).
    pub fn current(&self) -> Arc<LoadedKeys> {
        self.inner.current.load_full()
    }

    /// The keys when some have been loaded and the last successful fetch is at most
    /// `jwks_max_stale_s` old. The hot path's read: no lock, no wait.
    pub fn usable(&self) -> Option<Arc<LoadedKeys>> {
        let loaded = self.current();
        self.is_usable(&loaded).then_some(loaded)
    }

    /// Whether `check` holds for the usable keys, without taking a reference count on
    /// them: the cache-hit path of every request calls this from every worker thread.
    pub fn usable_and(&self, check: impl FnOnce(&LoadedKeys) -> bool) -> bool {
        let loaded = self.inner.current.load();
        self.is_usable(&loaded) && check(&loaded)
    }

    fn is_usable(&self, loaded: &LoadedKeys) -> bool {
        let age = self
            .inner
            .clock
            .mono_ms()
            .saturating_sub(loaded.fetched_at_mono_ms);
        loaded.generation > 0 && age <= duration_ms(self.inner.options.max_stale)
    }

    /// The kind of token this set's keys verify.
    pub fn token_kind(&self) -> TokenKind {
        match self.inner.options.key_kind {
            KeyKind::Rsa => TokenKind::AppToken,
            KeyKind::Ed25519 => TokenKind::SessionToken,
        }
    }

    /// True when the latest fetch failed (the set in use, if any, is stale).
    pub fn is_failing(&self) -> bool {
        self.inner.last_fetch_failed.load(Ordering::SeqCst)
    }

    pub fn counts(&self) -> &KeyFetchCounts {
        &self.inner.counts
    }

    /// How many fetches have started so far. Read when a token's key is missing: a set
    /// whose [`LoadedKeys::fetch_number`] is larger was fetched after that moment.
    pub fn fetches_started(&self) -> u64 {
        self.inner.fetches_started.load(Ordering::SeqCst)
    }

    /// The wait until the next key-set fetch is permitted (the rate limit, the backoff
    /// after failures, a `Retry-After` of the endpoint), in whole seconds rounded up and
    /// at least 1: the `Retry-After` of a `503` for keys that cannot be had now.
    pub fn retry_after(&self) -> Duration {
        let next_fetch_ms = self.inner.next_fetch_ms.load(Ordering::SeqCst);
        let wait_ms = next_fetch_ms.saturating_sub(self.inner.clock.mono_ms());
        let wait_s = u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000);
        Duration::from_secs(wait_s.max(1))
    }

    /// Requests waiting in [`KeySet::newer_than`] now.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::SeqCst)
    }

    /// Fetches the set again unless that happened since `seen_generation` was read, or
    /// the rate limit (`jwks_min_refetch_interval_s`) or the backoff after failures says
    /// not yet. Concurrent callers share one fetch. Returns the keys now current.
    pub async fn refetch(&self, seen_generation: u64) -> Arc<LoadedKeys> {
        let mut backoff = self.inner.flight.lock().await;
        let current = self.current();
        if current.generation != seen_generation {
            return current;
        }
        if self.inner.clock.mono_ms() < self.inner.next_fetch_ms.load(Ordering::SeqCst) {
            return current;
        }
        self.fetch_locked(&mut backoff, &current)
            .await
            .unwrap_or(current)
    }

    /// A key set newer than `generation`, for a token that no key of that generation
    /// verifies and that arrived when [`KeySet::fetches_started`] read `arrived`: the
    /// current set when it is newer already, else the outcome of the fetch in flight,
    /// else of the next fetch the rate limit permits, at most
    /// `jwks_min_refetch_interval_s` away. Every waiter shares that one fetch. A set
    /// fetched before the token arrived may come back; the caller asks again while its
    /// token fails and the set's `fetch_number` is not above `arrived`.
    ///
    /// No waiting through an outage: when a fetch made after `arrived` failed, or the
    /// endpoint is failing and backing off, the answer is [`KeyWait::Unavailable`].
    pub async fn newer_than(
        &self,
        generation: u64,
        arrived: u64,
    ) -> Result<Arc<LoadedKeys>, KeyWait> {
        let current = self.current();
        if current.generation > generation {
            return Ok(current);
        }
        let _slot = WaitSlot::take(&self.inner.waiting).ok_or(KeyWait::Crowded)?;
        loop {
            let mut backoff = self.inner.flight.lock().await;
            let current = self.current();
            if current.generation > generation {
                return Ok(current);
            }
            if self.inner.last_failed_fetch.load(Ordering::SeqCst) > arrived {
                return Err(KeyWait::Unavailable);
            }
            let next_fetch_ms = self.inner.next_fetch_ms.load(Ordering::SeqCst);
            if self.inner.clock.mono_ms() >= next_fetch_ms {
                return self
                    .fetch_locked(&mut backoff, &current)
                    .await
                    .ok_or(KeyWait::Unavailable);
            }
            if self.is_failing() {
                return Err(KeyWait::Unavailable);
            }
            // Rate limited: wait for the permitted moment without holding the lock, then
            // the first waiter in fetches and the rest find its set.
            drop(backoff);
            self.inner.clock.sleep_until(next_fetch_ms).await;
        }
    }

    /// One fetch, with the flight lock held (its guard gives `backoff`): the new set on
    /// success, stored as current; `None` on failure, the current set kept.
    async fn fetch_locked(
        &self,
        backoff: &mut Backoff,
        current: &LoadedKeys,
    ) -> Option<Arc<LoadedKeys>> {
        let fetch_number = self.inner.fetches_started.fetch_add(1, Ordering::SeqCst) + 1;
        let result = self.fetch().await;
        let now = self.inner.clock.mono_ms();
        let min_interval = duration_ms(self.inner.options.min_refetch_interval);
        match result {
            Ok(set) => {
                self.inner.counts.succeeded.fetch_add(1, Ordering::Relaxed);
                self.inner.last_fetch_failed.store(false, Ordering::SeqCst);
                backoff.succeeded();
                let loaded = Arc::new(LoadedKeys {
                    set,
                    generation: current.generation + 1,
                    fetched_at_mono_ms: now,
                    fetch_number,
                });
                let kind = self.token_kind();
                tracing::info!(
                    flow = kind.label(),
                    keys = loaded.set.len(),
                    generation = loaded.generation,
                    "loaded the JTL {} key set",
                    kind.name()
                );
                self.inner.current.store(Arc::clone(&loaded));
                self.inner
                    .next_fetch_ms
                    .store(now.saturating_add(min_interval), Ordering::SeqCst);
                Some(loaded)
            }
            Err(error) => {
                self.inner.counts.failed.fetch_add(1, Ordering::Relaxed);
                self.inner.last_fetch_failed.store(true, Ordering::SeqCst);
                self.inner
                    .last_failed_fetch
                    .store(fetch_number, Ordering::SeqCst);
                // Never sooner than the rate limit, nor than a Retry-After.
                let minimum = match &error {
                    KeySetFetchError::StatusRetryAfter { retry_after_s, .. } => self
                        .inner
                        .options
                        .min_refetch_interval
                        .max(Duration::from_secs(*retry_after_s)),
                    _ => self.inner.options.min_refetch_interval,
                };
                let next = backoff
                    .failed(now, Some(minimum))
                    .max(now.saturating_add(min_interval));
                self.inner.next_fetch_ms.store(next, Ordering::SeqCst);
                let stale_for_s =
                    (current.generation > 0).then(|| (now - current.fetched_at_mono_ms) / 1000);
                tracing::warn!(
                    flow = self.token_kind().label(),
                    url = self.inner.options.url.as_str(),
                    retry_in_s = (next - now) / 1000,
                    stale_for_s,
                    usable = self.usable().is_some(),
                    "JTL key set fetch failed: {error}"
                );
                None
            }
        }
    }

    /// Refreshes the set every `jwks_refresh_interval_s` (sooner while none is loaded,
    /// with backoff while fetches fail) until `shutdown` completes.
    pub async fn run_refresher(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let current = self.current();
            let due_ms = if current.generation == 0 || self.is_failing() {
                i64::MIN
            } else {
                current
                    .fetched_at_mono_ms
                    .saturating_add(duration_ms(self.inner.options.refresh_interval))
            };
            let wake_at = due_ms.max(self.inner.next_fetch_ms.load(Ordering::SeqCst));
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.inner.clock.sleep_until(wake_at) => {}
            }
            self.refetch(current.generation).await;
        }
    }

    /// One fetch of the usable keys, skipped keys logged; an empty set is an error.
    ///
    /// A key of a type the flow does not use (Zitadel's EC and OKP keys beside its RSA
    /// keys) is skipped at debug level: it is expected at every refresh. An unusable key
    /// of the flow's type is a warning, once per `kid` for the life of this key set.
    async fn fetch(&self) -> Result<JwkSet, KeySetFetchError> {
        // A child of the request's span when a request waits for it (an unknown kid).
        let mut span = crate::telemetry::trace::child("key-set fetch");
        span.set(opentelemetry::KeyValue::new(
            "jtl.token_kind",
            self.token_kind().label(),
        ));
        let fetched = self.fetch_document().await;
        if let Err(error) = &fetched {
            span.fail(error.to_string());
        }
        let FetchedKeys { set, skipped, .. } = fetched?;
        for key in &skipped {
            let first_time = !key.is_of_another_type()
                && self
                    .inner
                    .warned
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .first_time(key);
            if first_time {
                tracing::warn!(
                    flow = self.token_kind().label(),
                    "skipped a key of the JTL key set (said once per kid): {}",
                    diagnose::skipped_key(key)
                );
            } else {
                tracing::debug!(
                    "skipped a key of the JTL key set: {}",
                    diagnose::skipped_key(key)
                );
            }
        }
        if set.is_empty() {
            // Replacing a good set with an empty one would refuse every user; treat it as
            // a failed fetch and keep the last good set.
            return Err(KeySetFetchError::NoUsableKeys {
                skipped: skipped.len(),
                kind: self.inner.options.key_kind,
            });
        }
        Ok(set)
    }

    /// Fetches and parses the key set once, without touching the set in use (what
    /// `check --online` looks at): with the access token; a 401 invalidates that token
    /// and the fetch is made once more with a fresh one. An empty set is not an error here.
    pub async fn fetch_document(&self) -> Result<FetchedKeys, KeySetFetchError> {
        let response = if self.inner.options.authenticated {
            let tokens = &self.inner.tokens;
            let token = tokens.get().await.map_err(KeySetFetchError::Token)?;
            let response = self.get_with(Some(&token)).await?;
            if response.status == StatusCode::UNAUTHORIZED {
                tokens.invalidate(&token);
                let fresh = tokens.get().await.map_err(KeySetFetchError::Token)?;
                self.get_with(Some(&fresh)).await?
            } else {
                response
            }
        } else {
            self.get_with(None).await?
        };
        match response.status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED => return Err(KeySetFetchError::Unauthorized),
            StatusCode::NOT_FOUND => return Err(KeySetFetchError::NotFound),
            other => {
                return Err(match super::http::retry_after(&response.headers) {
                    Some(wait) => KeySetFetchError::StatusRetryAfter {
                        status: other.as_u16(),
                        retry_after_s: wait.as_secs(),
                    },
                    None => KeySetFetchError::Status(other.as_u16()),
                });
            }
        }
        if super::http::is_blank(&response.body) {
            return Err(KeySetFetchError::EmptyBody);
        }
        let (set, skipped) = JwkSet::from_json_of(&response.body, self.inner.options.key_kind)
            .map_err(KeySetFetchError::Document)?;
        Ok(FetchedKeys {
            kind: self.inner.options.key_kind,
            set,
            skipped,
        })
    }

    async fn get_with(&self, token: Option<&AccessToken>) -> Result<Response, KeySetFetchError> {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(self.inner.options.url.as_str())
            .header(ACCEPT, "application/json");
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, token.authorization().clone());
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|_| KeySetFetchError::Status(0))?;
        self.inner
            .http
            .call(request)
            .await
            .map_err(KeySetFetchError::Call)
    }
}

/// The unusable keys warned about already, each named by a fingerprint of its `kid` and
/// the reason it was skipped (a `kid` whose key turns unusable in another way is news).
/// Bounded by [`MAX_WARNED_KEYS`]: when full it starts over, so a document with more
/// unusable keys than that is warned about again, never worse than at every refresh.
#[derive(Debug, Default)]
struct WarnedKeys(HashSet<u64>);

impl WarnedKeys {
    /// True the first time `key` is seen (and remembers it).
    fn first_time(&mut self, key: &SkippedKey) -> bool {
        let mut hasher = DefaultHasher::new();
        key.kid.hash(&mut hasher);
        // The variant and its fields, not the message: the words may change.
        format!("{:?}", key.reason).hash(&mut hasher);
        let id = hasher.finish();
        if self.0.contains(&id) {
            return false;
        }
        if self.0.len() >= MAX_WARNED_KEYS {
            self.0.clear();
        }
        self.0.insert(id)
    }
}

/// One of the bounded places in [`KeySet::newer_than`]; given back when dropped (also
/// when the waiting request is abandoned by its client).
struct WaitSlot<'a>(&'a AtomicUsize);

impl<'a> WaitSlot<'a> {
    fn take(waiting: &'a AtomicUsize) -> Option<WaitSlot<'a>> {
        waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_WAITING_FOR_KEYS).then_some(n + 1)
            })
            .ok()
            .map(|_| WaitSlot(waiting))
    }
}

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::JwkError;

    fn skipped(kid: Option<&str>, reason: JwkError) -> SkippedKey {
        SkippedKey {
            index: 0,
            kid: kid.map(str::to_owned),
            reason,
        }
    }

    #[test]
    fn an_unusable_key_is_warned_about_once_per_kid_and_reason() {
        let mut warned = WarnedKeys::default();
        let small = skipped(Some("1"), JwkError::ModulusTooSmall { bits: 1024 });
        assert!(warned.first_time(&small));
        assert!(!warned.first_time(&small));
        assert!(!warned.first_time(&SkippedKey { index: 3, ..small }));
        assert!(warned.first_time(&skipped(
            Some("2"),
            JwkError::ModulusTooSmall { bits: 1024 }
        )));
        assert!(warned.first_time(&skipped(Some("1"), JwkError::WrongAlgorithm)));
        assert!(warned.first_time(&skipped(None, JwkError::WrongAlgorithm)));
        assert!(!warned.first_time(&skipped(None, JwkError::WrongAlgorithm)));
    }

    #[test]
    fn the_memory_of_warned_keys_is_bounded() {
        let mut warned = WarnedKeys::default();
        for n in 0..3 * MAX_WARNED_KEYS {
            let kid = n.to_string();
            assert!(warned.first_time(&skipped(Some(&kid), JwkError::WrongAlgorithm)));
            assert!(warned.0.len() <= MAX_WARNED_KEYS);
        }
    }
}
