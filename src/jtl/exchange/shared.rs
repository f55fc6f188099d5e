//! Exchanged tokens shared by the replicas through Redis (`[shared_cache]`), like the
//! access token ([`crate::shared_cache`]): one sealed entry per (kind, tenant, user),
//! under a key that is a digest (never the ids in clear), and one lock per entry.
//!
//! A rotating refresh token must be sent exactly once across all replicas, so:
//! - only the replica holding an entry's lock refreshes it, with the refresh token it
//!   reads from the entry under the lock;
//! - before it sends that refresh token, it writes the entry back without it: if it dies
//!   or its answer is lost, the next lock holder finds no refresh token and mints afresh
//!   rather than send the same one again;
//! - a refresh token read from the shared entry is never kept in a replica's own slot,
//!   so a replica cut off from Redis mints for itself instead of refreshing with a token
//!   another replica may use too.
//!
//! Redis unusable: [`through_redis`] says so (`None`) and the replica goes on alone.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::answer::{Answer, ExchangedToken, LifetimeFrom, Times};
use super::metrics::Event;
use super::{ExchangeError, ExchangeKey, SlotState, TokenExchange};
use crate::secrets::Secret;
use crate::shared_cache::{Acquired, Entry, Judgement, Place, SharedTokenStore, digest_key};

/// What the sealed entry's `token` holds for an exchanged token.
#[derive(Serialize, Deserialize)]
struct Stored {
    access: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh: Option<String>,
}

/// `{key_prefix}:exchanged-token:` and the hex SHA-256 of the client id, the kind, the
/// tenant and the user, so no two keys collide and Redis never holds an id in clear.
pub fn exchanged_entry_key(key_prefix: &str, client_id: &str, key: &ExchangeKey) -> String {
    digest_key(
        key_prefix,
        "exchanged-token",
        &[client_id, key.kind.as_str(), &key.tenant_id, &key.user_id],
    )
}

/// A token for `key` through the shared entry: another replica's, or one this replica
/// minted or refreshed under the lock and wrote there. `None` when Redis cannot be
/// used now: the caller goes on alone.
pub(super) async fn through_redis(
    exchange: &TokenExchange,
    store: &SharedTokenStore,
    key: &ExchangeKey,
    state: &mut SlotState,
) -> Option<Result<Arc<ExchangedToken>, ExchangeError>> {
    let inner = &exchange.inner;
    let place = Place::of(exchanged_entry_key(
        store.key_prefix(),
        &inner.client_id,
        key,
    ));
    let sealing = inner.app_tokens.sealing_key();
    let refused = state.refused.clone();
    let judge = |entry: &Entry| {
        let Some(stored) = decode(entry) else {
            return Judgement::Stale;
        };
        if refused
            .as_ref()
            .is_some_and(|refused| refused.expose() == stored.access)
        {
            return Judgement::Refused;
        }
        match exchange.token_of(entry, &stored.access) {
            Some(token) if exchange.is_fresh(&token) => Judgement::Use,
            _ => Judgement::Stale,
        }
    };
    match store.acquire_at(&place, &sealing, judge).await {
        Acquired::Entry(entry) => {
            let token =
                decode(&entry).and_then(|stored| exchange.token_of(&entry, &stored.access))?;
            inner.counts.count(key.kind, Event::Shared);
            tracing::debug!(
                kind = key.kind.as_str(),
                token = %token.fingerprint(),
                "took an exchanged token another replica shared through Redis"
            );
            // The other replicas' refresh token is never kept here.
            Some(Ok(state.hold(token, None)))
        }
        Acquired::Won(lock) => {
            // Under the lock: the stale entry's refresh token, if it has one and the
            // entry is not one JTL refused.
            let stale = store
                .read_at(&place, &sealing)
                .await
                .and_then(|entry| decode(&entry).map(|stored| (entry, stored)))
                .filter(|(_, stored)| {
                    refused
                        .as_ref()
                        .is_none_or(|refused| refused.expose() != stored.access)
                });
            let outcome = match stale {
                Some((
                    entry,
                    Stored {
                        access,
                        refresh: Some(refresh),
                    },
                )) => {
                    // Written back without its refresh token before that is sent.
                    let consumed = Entry {
                        token: encode(&access, None),
                        ..entry
                    };
                    store.publish_at(&place, &sealing, &consumed, None).await;
                    exchange.refresh_or_mint(key, &Secret::new(refresh)).await
                }
                _ => exchange
                    .mint(key)
                    .await
                    .map(|answer| (answer, Event::Minted)),
            };
            match outcome {
                Ok((answer, event)) => {
                    inner.counts.count(key.kind, event);
                    store
                        .publish_at(&place, &sealing, &entry_of(&answer), Some(lock))
                        .await;
                    Some(Ok(state.install(answer, false)))
                }
                Err(error) => {
                    store.release_at(&place, lock).await;
                    Some(exchange.failed(key, state, error))
                }
            }
        }
        // Another replica held the lock for `jtl.timeout_ms` without a result: mint
        // alone (never refresh without the lock) and share the result.
        Acquired::TimedOut => match exchange.mint(key).await {
            Ok(answer) => {
                inner.counts.count(key.kind, Event::Minted);
                store
                    .publish_at(&place, &sealing, &entry_of(&answer), None)
                    .await;
                Some(Ok(state.install(answer, false)))
            }
            Err(error) => Some(exchange.failed(key, state, error)),
        },
        Acquired::Unavailable => None,
    }
}

impl TokenExchange {
    /// The token a shared entry holds, as this replica reads it now.
    fn token_of(&self, entry: &Entry, access: &str) -> Option<ExchangedToken> {
        ExchangedToken::new(
            access,
            Times {
                expires_at_ms: entry.expires_at_ms,
                obtained_at_ms: entry.obtained_at_ms,
            },
            LifetimeFrom::from_byte(entry.lifetime_source),
            self.inner.clock.read(),
            self.inner.refresh_before_ms,
        )
        .ok()
    }
}

fn decode(entry: &Entry) -> Option<Stored> {
    serde_json::from_str(&entry.token).ok()
}

fn encode(access: &str, refresh: Option<&str>) -> String {
    serde_json::to_string(&Stored {
        access: access.to_owned(),
        refresh: refresh.map(str::to_owned),
    })
    .unwrap_or_default()
}

/// The entry for a fresh answer: both tokens, the expiry and when it was obtained.
fn entry_of(answer: &Answer) -> Entry {
    Entry {
        token: encode(
            answer.token.value.expose(),
            answer.refresh_token.as_ref().map(Secret::expose),
        ),
        expires_at_ms: answer.token.expires_at_ms,
        obtained_at_ms: answer.token.obtained_at_ms,
        lifetime_source: answer.token.lifetime_from.as_byte(),
    }
}
