//! `SessionVerifier`: strict JOSE verification against JTL's key set, with a cache of
//! already verified tokens in front. This is the hot path of every ingress request.

use std::sync::Arc;

use quick_cache::sync::Cache;
use ring::digest;

use crate::clock::Clock;
use crate::jose::{CompactJws, JoseError, Malformed, Session, TokenPolicy};
use crate::jtl::{KeySet, KeyWait, LoadedKeys};
use crate::sharded::ShardedCounter;

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    /// The token is not valid: answer 401.
    #[error("{0}")]
    Rejected(JoseError),
    /// No key can be had to check it (the key endpoint is failing and no cached key
    /// fits): answer 503 with `Retry-After`.
    #[error("The session token cannot be verified right now: JTL's signing keys are unavailable.")]
    KeysUnavailable,
    /// Too many requests are already waiting for a fresh key set (SPEC §5): answer 503
    /// with `Retry-After`.
    #[error("The session token cannot be verified right now: too many requests are waiting for JTL's signing keys.")]
    KeysCrowded,
}

impl VerifyError {
    /// The outcome of a request refused with this error, for its log line and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            VerifyError::Rejected(_) => "invalid_token",
            VerifyError::KeysUnavailable => "keys_unavailable",
            VerifyError::KeysCrowded => "keys_crowded",
        }
    }
}

impl From<KeyWait> for VerifyError {
    fn from(wait: KeyWait) -> Self {
        match wait {
            KeyWait::Unavailable => VerifyError::KeysUnavailable,
            KeyWait::Crowded => VerifyError::KeysCrowded,
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

/// A cached verification is reused for at most this long (seconds), however far away
/// `exp` is.
const MAX_CACHE_LIFETIME_S: i64 = 24 * 3600;

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

/// A verified session, as cached and as handed to the proxy (it derefs to the
/// [`Session`]). One shared allocation per token: a cache hit costs one reference count.
pub struct VerifiedSession {
    session: Session,
    signer: SignerId,
    /// Unix second from which a cached entry is verified again (at most a day after
    /// it was verified; `exp` is checked on every hit anyway).
    reverify_at: i64,
}

impl std::ops::Deref for VerifiedSession {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

impl std::fmt::Debug for VerifiedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.session.fmt(f)
    }
}

pub struct SessionVerifier {
    keys: KeySet,
    policy: TokenPolicy,
    clock: Clock,
    /// Keyed by the SHA-256 of the whole token, so memory stays small and the token
    /// itself is not kept. Bounded by its entry count (S3-FIFO eviction); an expired
    /// entry is dropped when it is next looked up, or evicted like any other.
    cache: Option<Cache<[u8; 32], Arc<VerifiedSession>>>,
    /// Claims a session keeps (those of `[ingress.claim_headers]`); `None` keeps all.
    kept_claims: Option<Vec<String>>,
    counts: CacheCounts,
}

impl SessionVerifier {
    /// `cache_entries` 0 disables the verified-token cache.
    pub fn new(keys: KeySet, policy: TokenPolicy, clock: Clock, cache_entries: u64) -> Self {
        let cache = (cache_entries > 0)
            .then(|| Cache::new(usize::try_from(cache_entries).unwrap_or(usize::MAX)));
        SessionVerifier {
            keys,
            policy,
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

    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn cache_counts(&self) -> &CacheCounts {
        &self.counts
    }

    /// Verifies a session token. A cached verification is used only while the token has
    /// not expired and the key that verified it is still in the key set.
    pub async fn verify(&self, token: &str) -> Result<Arc<VerifiedSession>, VerifyError> {
        let max = self.policy.max_token_bytes;
        if token.len() > max {
            // Refused before hashing or parsing anything.
            return Err(VerifyError::Rejected(JoseError::Malformed(
                Malformed::TooLarge { max },
            )));
        }
        let Some(cache) = &self.cache else {
            return self
                .verify_fully(token)
                .await
                .map(|(session, signer)| Arc::new(self.entry(session, signer)));
        };
        let digest = sha256(token);
        if let Some(cached) = cache.get(&digest) {
            let now = self.clock.now_s();
            if cached.session.is_expired(now, self.policy.leeway_s) {
                cache.remove(&digest);
                self.counts.hits.inc();
                return Err(VerifyError::Rejected(JoseError::Expired));
            }
            let key_still_there = self.keys.usable_and(|loaded| cached.signer.is_in(loaded));
            if key_still_there && now < cached.reverify_at {
                self.counts.hits.inc();
                return Ok(cached);
            }
            cache.remove(&digest);
        }
        self.counts.misses.inc();
        let (session, signer) = self.verify_fully(token).await?;
        let verified = Arc::new(self.entry(session, signer));
        cache.insert(digest, Arc::clone(&verified));
        Ok(verified)
    }

    fn entry(&self, session: Session, signer: SignerId) -> VerifiedSession {
        VerifiedSession {
            session,
            signer,
            reverify_at: self.clock.now_s().saturating_add(MAX_CACHE_LIFETIME_S),
        }
    }

    /// Parse, find the signing key, verify, check the claims. A token that no cached key
    /// verifies is decided against a key set fetched after it arrived (SPEC §5: no false
    /// 401 through a rotation), waiting for the next permitted fetch when need be.
    async fn verify_fully(&self, token: &str) -> Result<(Session, SignerId), VerifyError> {
        let jws = CompactJws::parse_as(token, self.policy.max_token_bytes, self.policy.algorithm())
            .map_err(VerifyError::Rejected)?;
        let arrived = self.keys.fetches_started();
        let mut loaded = match self.keys.usable() {
            Some(loaded) => loaded,
            None => {
                let stale = self.keys.current().generation;
                // Boxed: a fetch is rare, and inlined it would enlarge every request's
                // future (see proxy::ingress).
                Box::pin(self.keys.newer_than(stale, arrived)).await?;
                self.keys.usable().ok_or(VerifyError::KeysUnavailable)?
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
                ) if loaded.fetch_number <= arrived => {
                    loaded = Box::pin(self.keys.newer_than(loaded.generation, arrived)).await?;
                }
                Err(error) => return Err(VerifyError::Rejected(error)),
            }
        };
        let mut session = self
            .policy
            .session_from(jws.into_payload(), self.clock.now_s())
            .map_err(VerifyError::Rejected)?;
        if let Some(kept) = &self.kept_claims {
            if kept.is_empty() {
                session.claims = serde_json::Map::new();
            } else {
                session.claims.retain(|name, _| kept.contains(name));
            }
        }
        Ok((session, signer))
    }
}

fn signer_of(jws: &CompactJws<'_>, loaded: &LoadedKeys) -> Result<SignerId, JoseError> {
    jws.find_signer(&loaded.set).map(SignerId::of)
}

fn sha256(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}
