//! `TokenVerifier`: strict JOSE verification of JTL's app tokens, session tokens, or both
//! (dispatched by the header's `alg`), each kind against its own key set, with one cache
//! of already verified tokens in front. This is the hot path of every ingress request.
//!
//! It is the only composition of the `jose` steps (parse, find the signing key, check the
//! claims): tests, fuzz targets, benchmarks and tools verify through it too, with a fixed
//! key set ([`TokenVerifier::with_fixed_keys`], [`verify_with_keys`]), so what they check
//! is what the sidecar runs.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

// quick_cache, not moka (which the tenant recorder uses): this cache is read on every
// request and needs neither a TTL (`exp` is checked on each hit) nor a single flight.
// Measured with 100 000 entries (docs/benchmarks.md): a hit ~140 instructions against
// moka's ~1 020, ~72 bytes per entry against ~340.
use quick_cache::sync::Cache;
use ring::digest;

use crate::clock::Clock;
use crate::config::{Flow, FlowProfile};
use crate::jose::{
    Algorithm, CompactJws, JoseError, JwkSet, Malformed, Session, TokenKind, TokenPolicy, Worded,
};
use crate::jtl::{KeySet, KeyWait, LoadedKeys};
use crate::sharded::ShardedCounter;
use crate::telemetry::{Collector, DescriptorEncoder, Metrics, encode_counts};

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    /// The token is not valid: answer 401. The kind is the one it was checked as, when
    /// that was known (not for a token too malformed to say).
    #[error("{0}")]
    Rejected(JoseError, Option<TokenKind>),
    /// No key can be had to check it (the key endpoint is failing and no cached key
    /// fits): answer 503 with `Retry-After`.
    #[error("The token cannot be verified right now: JTL's signing keys are unavailable.")]
    KeysUnavailable(TokenKind),
    /// Too many requests are already waiting for a fresh key set (SPEC §5): answer 503
    /// with `Retry-After`.
    #[error(
        "The token cannot be verified right now: too many requests are waiting for JTL's signing keys."
    )]
    KeysCrowded(TokenKind),
}

impl VerifyError {
    /// The outcome of a request refused with this error, for its log line and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            VerifyError::Rejected(JoseError::OtherKind(_), _) => "other_flow_token",
            VerifyError::Rejected(..) => "invalid_token",
            VerifyError::KeysUnavailable(_) => "keys_unavailable",
            VerifyError::KeysCrowded(_) => "keys_crowded",
        }
    }

    fn keys(wait: KeyWait, kind: TokenKind) -> Self {
        match wait {
            KeyWait::Unavailable => VerifyError::KeysUnavailable(kind),
            KeyWait::Crowded => VerifyError::KeysCrowded(kind),
        }
    }
}

/// Verified-cache lookups, for metrics and tests (per-thread shards: every request
/// counts one).
#[derive(Default)]
pub struct CacheCounts {
    pub hits: ShardedCounter,
    pub misses: ShardedCounter,
}

/// Reads the verified-token cache's lookups at scrape time.
struct CacheCollector(Arc<TokenVerifier>);

impl std::fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheCollector")
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.cache_counts();
        encode_counts(
            &mut encoder,
            "verified_cache_lookups",
            "Verified-token cache lookups, by result",
            "result",
            [("hit", counts.hits.get()), ("miss", counts.misses.get())],
        )
    }
}

/// A cached verification is reused for at most this long (milliseconds), however far away
/// `exp` is.
const MAX_CACHE_LIFETIME_MS: i64 = 24 * 3600 * 1000;

/// The key that verified a token: its `kid` (when it has one) and its thumbprint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SignerId {
    kid: Option<Arc<str>>,
    thumbprint: Arc<str>,
}

impl SignerId {
    fn of(key: &crate::jose::VerifyingKey) -> Self {
        let (kid, thumbprint) = key.shared_ids();
        SignerId { kid, thumbprint }
    }

    /// Whether the set still holds this key under the same `kid`: a key that left the
    /// set, or a `kid` that now names other key material, ends cached verifications.
    fn is_in(&self, loaded: &LoadedKeys) -> bool {
        match &self.kid {
            Some(kid) => loaded
                .set
                .get(kid)
                .is_some_and(|key| key.thumbprint() == &*self.thumbprint),
            None => loaded.set.contains_thumbprint(&self.thumbprint),
        }
    }
}

/// A verified token, as cached and as handed to the proxy (it derefs to the
/// [`Session`]). One shared allocation per token: a cache hit costs one reference count.
pub struct VerifiedSession {
    session: Session,
    /// Which kind of token it was (in `both`, the header's `alg` decided).
    pub kind: TokenKind,
    signer: SignerId,
    /// From when a cached entry is verified again: a day after it was verified, on the
    /// monotonic clock (a duration; `exp` and `nbf` are absolute and checked on the wall
    /// clock, `exp` on every hit).
    reverify_at_mono_ms: i64,
}

impl std::ops::Deref for VerifiedSession {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

impl VerifiedSession {
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// RFC 7638 thumbprint of the key that verified the token.
    pub fn key_thumbprint(&self) -> &str {
        &self.signer.thumbprint
    }
}

impl std::fmt::Debug for VerifiedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.session.fmt(f)
    }
}

/// One kind of token the flow accepts: its claim rules and its key set.
struct KindVerifier {
    policy: TokenPolicy,
    keys: Keys,
}

/// Where one kind's keys come from.
enum Keys {
    /// JTL's key set, fetched and refreshed: the sidecar's.
    Fetched(KeySet),
    /// A set that never changes and is never fetched (tests, fuzzing, benchmarks, tools):
    /// nothing waits, and a token no key of it verifies is refused at once.
    Fixed(Arc<LoadedKeys>),
}

impl Keys {
    fn usable(&self) -> Option<Arc<LoadedKeys>> {
        match self {
            Keys::Fetched(keys) => keys.usable(),
            Keys::Fixed(loaded) => Some(Arc::clone(loaded)),
        }
    }

    fn usable_and(&self, check: impl FnOnce(&LoadedKeys) -> bool) -> bool {
        match self {
            Keys::Fetched(keys) => keys.usable_and(check),
            Keys::Fixed(loaded) => check(loaded),
        }
    }

    /// See [`KeySet::fetches_started`].
    fn fetches_started(&self) -> u64 {
        match self {
            Keys::Fetched(keys) => keys.fetches_started(),
            Keys::Fixed(_) => 0,
        }
    }

    /// Whether a set fetched after the token arrived (at `arrived`) may still come, so
    /// that a token `loaded` has no key for is decided against that one.
    fn may_have_newer(&self, loaded: &LoadedKeys, arrived: u64) -> bool {
        match self {
            Keys::Fetched(_) => loaded.fetch_number <= arrived,
            Keys::Fixed(_) => false,
        }
    }

    /// See [`KeySet::newer_than`]; a fixed set has none.
    async fn newer_than(&self, generation: u64, arrived: u64) -> Result<Arc<LoadedKeys>, KeyWait> {
        match self {
            Keys::Fetched(keys) => keys.newer_than(generation, arrived).await,
            Keys::Fixed(_) => Err(KeyWait::Unavailable),
        }
    }

    fn generation(&self) -> u64 {
        match self {
            Keys::Fetched(keys) => keys.current().generation,
            Keys::Fixed(loaded) => loaded.generation,
        }
    }

    /// See [`KeySet::retry_after`].
    fn retry_after_s(&self) -> u64 {
        match self {
            Keys::Fetched(keys) => keys.retry_after().as_secs().max(1),
            Keys::Fixed(_) => 1,
        }
    }
}

pub struct TokenVerifier {
    flow: Flow,
    /// In the order of [`Flow::kinds`]: app tokens first.
    kinds: Vec<KindVerifier>,
    /// The algorithms of those kinds: a token with any other `alg` is refused before
    /// anything else is looked at.
    algorithms: Vec<Algorithm>,
    /// The same for every kind (from `[session]`).
    max_token_bytes: usize,
    leeway_s: i64,
    clock: Clock,
    /// Keyed by the SHA-256 of the whole token, so memory stays small and the token
    /// itself is not kept. Bounded by its entry count (S3-FIFO eviction); an expired
    /// entry is dropped when it is next looked up, or evicted like any other.
    cache: Option<Cache<[u8; 32], Arc<VerifiedSession>>>,
    /// Claims a session keeps (those of `[ingress.claim_headers]`); `None` keeps all.
    kept_claims: Option<Vec<String>>,
    counts: CacheCounts,
}

impl TokenVerifier {
    /// A verifier for `flow`, one key set per profile (in the same order).
    /// `cache_entries` 0 disables the verified-token cache.
    pub fn new(
        flow: Flow,
        profiles: &[FlowProfile],
        key_sets: &[KeySet],
        clock: Clock,
        cache_entries: u64,
    ) -> Self {
        let kinds: Vec<KindVerifier> = profiles
            .iter()
            .zip(key_sets)
            .map(|(profile, keys)| KindVerifier {
                policy: profile.policy.clone(),
                keys: Keys::Fetched(keys.clone()),
            })
            .collect();
        Self::with_kinds(flow, kinds, clock, cache_entries)
    }

    /// A verifier of one kind of token, with `policy` against `keys` (tests, tools).
    pub fn single(keys: KeySet, policy: TokenPolicy, clock: Clock, cache_entries: u64) -> Self {
        Self::of_one_kind(Keys::Fetched(keys), policy, clock, cache_entries)
    }

    /// A verifier of one kind of token, with `policy` against a key set that never
    /// changes (tests, fuzzing, benchmarks, tools): see [`TokenVerifier::verify_now`].
    pub fn with_fixed_keys(
        keys: JwkSet,
        policy: TokenPolicy,
        clock: Clock,
        cache_entries: u64,
    ) -> Self {
        let loaded = LoadedKeys {
            set: keys,
            generation: 1,
            ..LoadedKeys::default()
        };
        Self::of_one_kind(Keys::Fixed(Arc::new(loaded)), policy, clock, cache_entries)
    }

    fn of_one_kind(keys: Keys, policy: TokenPolicy, clock: Clock, cache_entries: u64) -> Self {
        let flow = match policy.kind {
            TokenKind::AppToken => Flow::AppToken,
            TokenKind::SessionToken => Flow::SessionToken,
        };
        Self::with_kinds(
            flow,
            vec![KindVerifier { policy, keys }],
            clock,
            cache_entries,
        )
    }

    fn with_kinds(flow: Flow, kinds: Vec<KindVerifier>, clock: Clock, cache_entries: u64) -> Self {
        let cache = (cache_entries > 0)
            .then(|| Cache::new(usize::try_from(cache_entries).unwrap_or(usize::MAX)));
        let first = kinds.first().map(|kind| &kind.policy);
        TokenVerifier {
            flow,
            algorithms: kinds.iter().map(|kind| kind.policy.algorithm()).collect(),
            max_token_bytes: first.map_or(8192, |policy| policy.max_token_bytes),
            leeway_s: first.map_or(30, |policy| policy.leeway_s),
            kinds,
            clock,
            cache,
            kept_claims: None,
            counts: CacheCounts::default(),
        }
    }

    /// Keeps only these claims in each session (besides the typed identity), so a cache
    /// of many tokens holds only what the proxy forwards.
    pub fn keeping_claims(mut self, names: Vec<String>) -> Self {
        self.kept_claims = Some(names);
        self
    }

    pub fn flow(&self) -> Flow {
        self.flow
    }

    /// The kind of token a verification was about, as a metric label: the verified or
    /// refused token's kind, the flow's one kind when the token was too malformed to
    /// say, or `unknown` where both are accepted.
    pub fn flow_label(&self, result: &Result<Arc<VerifiedSession>, VerifyError>) -> &'static str {
        let kind = match result {
            Ok(verified) => Some(verified.kind),
            Err(VerifyError::Rejected(JoseError::OtherKind(kind), _)) => Some(*kind),
            Err(VerifyError::Rejected(_, kind)) => *kind,
            Err(VerifyError::KeysUnavailable(kind) | VerifyError::KeysCrowded(kind)) => Some(*kind),
        };
        match (kind, self.flow) {
            (Some(kind), _) => kind.label(),
            (None, Flow::AppToken) => TokenKind::AppToken.label(),
            (None, Flow::SessionToken) => TokenKind::SessionToken.label(),
            (None, Flow::Both) => "unknown",
        }
    }

    pub fn cache_counts(&self) -> &CacheCounts {
        &self.counts
    }

    /// Registers the collector of the verified-token cache's lookups.
    pub fn register_metrics(self: &Arc<Self>, metrics: &Metrics) {
        metrics.register(CacheCollector(Arc::clone(self)));
    }

    fn kind(&self, kind: TokenKind) -> Option<&KindVerifier> {
        self.kinds
            .iter()
            .find(|verifier| verifier.policy.kind == kind)
    }

    /// The human sentence for a refusal, naming the token as the flow names it ("The app
    /// token has expired."), and for a token of a flow not accepted here, what to set.
    pub fn describe(&self, error: &VerifyError) -> String {
        let flow = self.flow;
        match error {
            VerifyError::Rejected(JoseError::OtherKind(kind), _) => other_flow_advice(*kind, flow),
            VerifyError::Rejected(error, kind) => Worded {
                error,
                token: kind.map_or(flow.token_name(), TokenKind::name),
                algorithms: match flow {
                    Flow::AppToken => "RS256",
                    Flow::SessionToken => "EdDSA",
                    Flow::Both => "RS256 for app tokens, EdDSA for session tokens",
                },
            }
            .to_string(),
            VerifyError::KeysUnavailable(kind) => format!(
                "The {} cannot be verified right now: JTL's signing keys are unavailable.",
                kind.name()
            ),
            VerifyError::KeysCrowded(kind) => format!(
                "The {} cannot be verified right now: too many requests are waiting for JTL's signing keys.",
                kind.name()
            ),
        }
    }

    /// For a `503` of key trouble: seconds until the next fetch the refused kind's key
    /// set permits (at least 1).
    pub fn retry_after_s(&self, error: &VerifyError) -> u64 {
        let kind = match error {
            VerifyError::KeysUnavailable(kind) | VerifyError::KeysCrowded(kind) => Some(*kind),
            VerifyError::Rejected(_, kind) => *kind,
        };
        kind.and_then(|kind| self.kind(kind))
            .or_else(|| self.kinds.first())
            .map_or(1, |verifier| verifier.keys.retry_after_s())
    }

    /// Verifies a token. A cached verification is used only while the token has not
    /// expired and the key that verified it is still in its key set.
    pub async fn verify(&self, token: &str) -> Result<Arc<VerifiedSession>, VerifyError> {
        let max = self.max_token_bytes;
        if token.len() > max {
            // Refused before hashing or parsing anything.
            return Err(VerifyError::Rejected(
                JoseError::Malformed(Malformed::TooLarge { max }),
                None,
            ));
        }
        let Some(cache) = &self.cache else {
            return self.verify_fully(token).await.map(Arc::new);
        };
        let digest = sha256(token);
        if let Some(cached) = cache.get(&digest) {
            let now = self.clock.now_s();
            if cached.session.is_expired(now, self.leeway_s) {
                cache.remove(&digest);
                self.counts.hits.inc();
                return Err(VerifyError::Rejected(JoseError::Expired, Some(cached.kind)));
            }
            let key_still_there = self.kind(cached.kind).is_some_and(|verifier| {
                verifier
                    .keys
                    .usable_and(|loaded| cached.signer.is_in(loaded))
            });
            if key_still_there && self.clock.mono_ms() < cached.reverify_at_mono_ms {
                self.counts.hits.inc();
                return Ok(cached);
            }
            cache.remove(&digest);
        }
        self.counts.misses.inc();
        let verified = Arc::new(self.verify_fully(token).await?);
        cache.insert(digest, Arc::clone(&verified));
        Ok(verified)
    }

    /// [`TokenVerifier::verify`] without a runtime, for a verifier
    /// [`with_fixed_keys`](TokenVerifier::with_fixed_keys): nothing in it waits, so one
    /// poll decides. A verifier whose key set must first be fetched answers
    /// [`VerifyError::KeysUnavailable`] instead of waiting.
    pub fn verify_now(&self, token: &str) -> Result<Arc<VerifiedSession>, VerifyError> {
        let mut verification = std::pin::pin!(self.verify(token));
        match verification
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(result) => result,
            Poll::Pending => {
                let kind = self
                    .kinds
                    .first()
                    .map_or(TokenKind::SessionToken, |verifier| verifier.policy.kind);
                Err(VerifyError::KeysUnavailable(kind))
            }
        }
    }

    /// Parse, dispatch on `alg` to the kind's rules and keys, find the signing key,
    /// verify, check the claims. A token that no cached key verifies is decided against
    /// a key set fetched after it arrived (SPEC §5: no false 401 through a rotation),
    /// waiting for the next permitted fetch when need be.
    async fn verify_fully(&self, token: &str) -> Result<VerifiedSession, VerifyError> {
        let jws = CompactJws::parse_accepting(token, self.max_token_bytes, &self.algorithms)
            .map_err(|error| VerifyError::Rejected(error, None))?;
        let kind = TokenKind::of(jws.algorithm());
        // `parse_accepting` took only the algorithms of the kinds held here.
        let Some(verifier) = self.kind(kind) else {
            return Err(VerifyError::Rejected(JoseError::OtherKind(kind), None));
        };
        let rejected = |error| VerifyError::Rejected(error, Some(kind));
        let keys = &verifier.keys;
        let arrived = keys.fetches_started();
        // Read before the set is looked at: a fetch that lands in between then makes the
        // wait below return at once. Read after, it would name the new set as stale, and
        // the wait would be for the fetch after it (a full refetch interval).
        let stale = keys.generation();
        let mut loaded = match keys.usable() {
            Some(loaded) => loaded,
            None => {
                // Boxed: a fetch is rare, and inlined it would enlarge every request's
                // future (see proxy::ingress).
                Box::pin(keys.newer_than(stale, arrived))
                    .await
                    .map_err(|wait| VerifyError::keys(wait, kind))?;
                keys.usable().ok_or(VerifyError::KeysUnavailable(kind))?
            }
        };
        let signer = loop {
            match signer_of(&jws, &loaded) {
                Ok(signer) => break signer,
                // Perhaps JTL rotated its keys: look at a newer set, until one fetched
                // after this token arrived has been tried.
                Err(
                    JoseError::UnknownKey { .. }
                    | JoseError::NoKeyMatches { .. }
                    | JoseError::NoKeys,
                ) if keys.may_have_newer(&loaded, arrived) => {
                    loaded = Box::pin(keys.newer_than(loaded.generation, arrived))
                        .await
                        .map_err(|wait| VerifyError::keys(wait, kind))?;
                }
                Err(error) => return Err(rejected(error)),
            }
        };
        let mut session = verifier
            .policy
            .session_from(jws.into_payload(), self.clock.now_s())
            .map_err(rejected)?;
        if let Some(kept) = &self.kept_claims {
            if kept.is_empty() {
                session.claims = serde_json::Map::new();
            } else {
                session.claims.retain(|name, _| kept.contains(name));
            }
        }
        Ok(VerifiedSession {
            session,
            kind,
            signer,
            reverify_at_mono_ms: self.clock.mono_ms().saturating_add(MAX_CACHE_LIFETIME_MS),
        })
    }
}

/// The refusal of a token of a kind this flow does not accept: what it is, and what to
/// set (SPEC §4).
fn other_flow_advice(token: TokenKind, flow: Flow) -> String {
    let accepted = match flow {
        Flow::AppToken => TokenKind::AppToken,
        Flow::SessionToken | Flow::Both => TokenKind::SessionToken,
    };
    let change = match token {
        TokenKind::SessionToken => format!(
            "set session.flow = \"both\" while the frontend moves to {}",
            accepted.getter()
        ),
        TokenKind::AppToken => format!(
            "set session.flow = \"both\" while the frontend moves to {}, and \"app-token\" once it has",
            token.getter()
        ),
    };
    format!(
        "This is {} {} ({}), but this sidecar accepts {}s (session.flow = \"{}\"); {change}.",
        token.article(),
        token.name(),
        token.getter(),
        accepted.name(),
        flow.label()
    )
}

/// Verifies `token` of `policy`'s kind against `keys` at `now` (Unix seconds) exactly as
/// the sidecar does, with a key set that is never fetched and no cache: for tests, fuzzing
/// and tools. A refusal is the token's [`JoseError`].
pub fn verify_with_keys(
    token: &str,
    keys: &JwkSet,
    policy: &TokenPolicy,
    now: i64,
) -> Result<Arc<VerifiedSession>, JoseError> {
    let clock = Clock::manual(now.saturating_mul(1000));
    TokenVerifier::with_fixed_keys(keys.clone(), policy.clone(), clock, 0)
        .verify_now(token)
        .map_err(|error| match error {
            VerifyError::Rejected(error, _) => error,
            // A fixed key set is always at hand: no verification waits for keys.
            VerifyError::KeysUnavailable(_) | VerifyError::KeysCrowded(_) => JoseError::NoKeys,
        })
}

fn signer_of(jws: &CompactJws<'_>, loaded: &LoadedKeys) -> Result<SignerId, JoseError> {
    jws.find_signer(&loaded.set).map(SignerId::of)
}

fn sha256(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}
