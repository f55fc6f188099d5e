//! `SessionVerifier`: strict JOSE verification against JTL's key set, with a cache of
//! already verified tokens in front. This is the hot path of every ingress request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;
use ring::digest;

use crate::clock::Clock;
use crate::jose::{CompactJws, JoseError, Malformed, Session, TokenPolicy};
use crate::jtl::{KeySet, LoadedKeys};

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
}

/// Verified-cache lookups, for metrics and tests.
#[derive(Debug, Default)]
pub struct CacheCounts {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// A cached verification is reused for at most this long, however far away `exp` is.
const MAX_CACHE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The key that verified a token: its `kid` (when it has one) and its thumbprint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SignerId {
    kid: Option<Arc<str>>,
    thumbprint: Arc<str>,
}

impl SignerId {
    fn of(key: &crate::jose::Ed25519Key) -> Self {
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
    /// How long a cache entry may live: until `exp` plus leeway, as of insertion.
    lifetime: Duration,
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

/// Entries live until their token expires.
struct UntilTokenExpiry;

impl Expiry<[u8; 32], Arc<VerifiedSession>> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        value: &Arc<VerifiedSession>,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.lifetime)
    }
}

pub struct SessionVerifier {
    keys: KeySet,
    policy: TokenPolicy,
    clock: Clock,
    /// Keyed by the SHA-256 of the whole token, so memory stays small and the token
    /// itself is not kept.
    cache: Option<Cache<[u8; 32], Arc<VerifiedSession>>>,
    /// Claims a session keeps (those of `[ingress.claim_headers]`); `None` keeps all.
    kept_claims: Option<Vec<String>>,
    counts: CacheCounts,
}

impl SessionVerifier {
    /// `cache_entries` 0 disables the verified-token cache.
    pub fn new(keys: KeySet, policy: TokenPolicy, clock: Clock, cache_entries: u64) -> Self {
        let cache = (cache_entries > 0).then(|| {
            Cache::builder()
                .max_capacity(cache_entries)
                .expire_after(UntilTokenExpiry)
                .build()
        });
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
                cache.invalidate(&digest);
                self.counts.hits.fetch_add(1, Ordering::Relaxed);
                return Err(VerifyError::Rejected(JoseError::Expired));
            }
            let key_still_there = self.keys.usable_and(|loaded| cached.signer.is_in(loaded));
            if key_still_there {
                self.counts.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(cached);
            }
            cache.invalidate(&digest);
        }
        self.counts.misses.fetch_add(1, Ordering::Relaxed);
        let (session, signer) = self.verify_fully(token).await?;
        let verified = Arc::new(self.entry(session, signer));
        cache.insert(digest, Arc::clone(&verified));
        Ok(verified)
    }

    fn entry(&self, session: Session, signer: SignerId) -> VerifiedSession {
        let valid_until = session.expires_at.saturating_add(self.policy.leeway_s);
        let lifetime_s = valid_until.saturating_sub(self.clock.now_s()).max(1);
        VerifiedSession {
            session,
            signer,
            lifetime: Duration::from_secs(lifetime_s.unsigned_abs()).min(MAX_CACHE_LIFETIME),
        }
    }

    /// Parse, find the signing key (refetching the key set once, rate limited, when the
    /// token's key is not known), verify, check the claims.
    async fn verify_fully(&self, token: &str) -> Result<(Session, SignerId), VerifyError> {
        let jws =
            CompactJws::parse(token, self.policy.max_token_bytes).map_err(VerifyError::Rejected)?;
        let loaded = match self.keys.usable() {
            Some(loaded) => loaded,
            None => {
                let seen = self.keys.current().generation;
                self.keys.refetch(seen).await;
                self.keys.usable().ok_or(VerifyError::KeysUnavailable)?
            }
        };
        let signer = match signer_of(&jws, &loaded) {
            Ok(signer) => signer,
            Err(
                error @ (JoseError::UnknownKey { .. }
                | JoseError::NoKeyMatches { .. }
                | JoseError::NoKeys),
            ) => {
                // Perhaps JTL rotated its keys: look again, at most once per interval.
                let refreshed = self.keys.refetch(loaded.generation).await;
                if refreshed.generation == loaded.generation {
                    return Err(if self.keys.is_failing() {
                        VerifyError::KeysUnavailable
                    } else {
                        VerifyError::Rejected(error)
                    });
                }
                let refreshed = self.keys.usable().ok_or(VerifyError::KeysUnavailable)?;
                signer_of(&jws, &refreshed).map_err(VerifyError::Rejected)?
            }
            Err(error) => return Err(VerifyError::Rejected(error)),
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
