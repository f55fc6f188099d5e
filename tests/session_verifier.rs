//! The key set and `TokenVerifier` against the JTL emulator (SPEC §5 caching, §6 JWKS).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::harness::{Extra, Harness, TENANT, USER, eventually};
use jtl_auth_sidecar::emulator::{EmulatorOptions, Failure};
use jtl_auth_sidecar::jose::{JoseError, TokenKind};
use jtl_auth_sidecar::jtl::MAX_WAITING_FOR_KEYS;
use jtl_auth_sidecar::verify::{VerifiedSession, VerifyError};
use serde_json::json;

fn hour() -> Duration {
    Duration::from_secs(3600)
}

#[tokio::test]
async fn cold_start_200_concurrent_verifications_make_one_token_and_one_jwks_request() {
    let h = Harness::default().await;
    let tokens: Vec<String> = (0..200).map(|n| h.token_for(n)).collect();
    let mut checks = Vec::new();
    for token in tokens {
        let verifier = h.verifier.clone();
        checks.push(tokio::spawn(async move { verifier.verify(&token).await }));
    }
    for (n, check) in checks.into_iter().enumerate() {
        let session = check
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("token {n}: {e}"));
        assert_eq!(session.tenant_id.to_string(), TENANT);
    }
    assert_eq!(h.emulator.token_requests(), 1);
    assert_eq!(h.emulator.jwks_requests(), 1);
}

#[tokio::test]
async fn a_verified_token_is_served_from_the_cache() {
    let h = Harness::default().await;
    let token = h.token_for(1);
    h.verifier.verify(&token).await.unwrap();
    h.verifier.verify(&token).await.unwrap();
    let counts = h.verifier.cache_counts();
    assert_eq!(counts.misses.get(), 1);
    assert_eq!(counts.hits.get(), 1);
}

#[tokio::test]
async fn a_cached_token_still_expires() {
    let h = Harness::default().await;
    let claims = h
        .emulator
        .session_claims(TENANT, USER, "acme", Duration::from_secs(60));
    let token = h
        .emulator
        .mint(&claims, &h.emulator.default_kid().unwrap(), false)
        .unwrap();
    h.verifier.verify(&token).await.unwrap();
    // leeway_s defaults to 30: the token is refused from exp + 30 s, cache or not.
    h.clock.advance(Duration::from_secs(89));
    assert!(h.verifier.verify(&token).await.is_ok());
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(
        h.verifier.verify(&token).await.unwrap_err(),
        VerifyError::Rejected(JoseError::Expired, Some(TokenKind::SessionToken))
    );
}

#[tokio::test]
async fn the_cache_can_be_turned_off() {
    let h = Harness::start(
        EmulatorOptions::default(),
        Extra {
            session: "verified_cache_entries = 0",
            ..Extra::default()
        },
    )
    .await;
    let token = h.token_for(1);
    for _ in 0..3 {
        h.verifier.verify(&token).await.unwrap();
    }
    assert_eq!(h.verifier.cache_counts().hits.get(), 0);
}

/// Tokens signed with a real key of the emulator, each naming a random kid not in the set.
fn random_kid_tokens(h: &Harness, count: usize) -> Vec<String> {
    let kid = h.emulator.default_kid().unwrap();
    (0..count)
        .map(|n| {
            let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": format!("random-{n}-{}", rand_suffix())});
            let claims = h.emulator.session_claims(TENANT, USER, "acme", hour());
            h.emulator.mint_with_header(&header, &claims, &kid).unwrap()
        })
        .collect()
}

/// Tokens without a header kid, signed by a key the emulator never publishes.
fn unpublished_key_tokens(h: &Harness, count: usize) -> Vec<String> {
    h.emulator.add_key("never-published");
    h.emulator.set_published("never-published", false);
    (0..count)
        .map(|n| {
            let user = format!("00000000-0000-4000-8000-{n:012}");
            let claims = h.emulator.session_claims(TENANT, &user, "acme", hour());
            h.emulator.mint(&claims, "never-published", false).unwrap()
        })
        .collect()
}

type Check = tokio::task::JoinHandle<Result<std::sync::Arc<VerifiedSession>, VerifyError>>;

fn spawn_checks(h: &Harness, tokens: Vec<String>) -> Vec<Check> {
    tokens
        .into_iter()
        .map(|token| {
            let verifier = h.verifier.clone();
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect()
}

async fn all_refused(checks: Vec<Check>) {
    for check in checks {
        let error = check.await.unwrap().unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::Rejected(
                    JoseError::UnknownKey { .. } | JoseError::NoKeyMatches { .. },
                    _
                )
            ),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn unknown_kid_storm_makes_at_most_one_jwks_fetch_per_interval() {
    let h = Harness::default().await;
    h.verifier.verify(&h.token_for(0)).await.unwrap();
    assert_eq!(h.emulator.jwks_requests(), 1);

    for round in 1..=2u64 {
        // jwks_min_refetch_interval_s defaults to 10: the storm waits for the next
        // permitted fetch, which decides every token of it.
        let checks = spawn_checks(&h, random_kid_tokens(&h, 500));
        eventually("the storm waits for the key set", || {
            h.jtl.keys().waiting() == 500
        })
        .await;
        assert_eq!(
            h.emulator.jwks_requests(),
            round,
            "no fetch before the interval"
        );
        h.clock.advance(Duration::from_secs(10));
        all_refused(checks).await;
        assert_eq!(
            h.emulator.jwks_requests(),
            1 + round,
            "one fetch in round {round}"
        );
    }
}

#[tokio::test]
async fn under_a_forged_token_flood_a_rotated_in_key_verifies_within_one_interval() {
    let h = Harness::default().await;
    h.verifier.verify(&h.token_for(0)).await.unwrap();
    let forged_no_kid = unpublished_key_tokens(&h, 400);
    let mut forged_no_kid = forged_no_kid.into_iter();

    for (round, new_kid) in ["rotated-1", "rotated-2", "rotated-3"].iter().enumerate() {
        // Junk keeps arriving (random kids, and no kid at all), so the refetch limit is
        // always spent when the genuinely new key shows up.
        let mut flood = spawn_checks(&h, random_kid_tokens(&h, 100));
        flood.extend(spawn_checks(&h, forged_no_kid.by_ref().take(100).collect()));
        eventually("the flood waits", || h.jtl.keys().waiting() == 200).await;

        h.emulator.add_key(new_kid);
        let user = format!("00000000-0000-4000-8000-{:012}", 100 + round);
        let claims = h.emulator.session_claims(TENANT, &user, "acme", hour());
        let named = h.emulator.mint(&claims, new_kid, true).unwrap();
        let unnamed = h.emulator.mint(&claims, new_kid, false).unwrap();
        let genuine = spawn_checks(&h, vec![named, unnamed]);
        // Counted as waiting: each check is parked on the next fetch, which only the
        // clock's move below permits.
        eventually("the genuine tokens wait too", || {
            h.jtl.keys().waiting() == 202
        })
        .await;
        assert!(
            genuine.iter().all(|check| !check.is_finished()),
            "no 401 before the fetch"
        );

        h.clock.advance(Duration::from_secs(10));
        for check in genuine {
            let session = check.await.unwrap().expect("the rotated-in key verifies");
            assert_eq!(session.user_id.to_string(), user);
        }
        all_refused(flood).await;
        assert_eq!(
            h.emulator.jwks_requests(),
            2 + round as u64,
            "one fetch per interval, flood or not"
        );
    }
}

#[tokio::test]
async fn a_token_that_arrives_during_a_fetch_is_decided_by_a_later_fetch_unless_that_one_verifies_it()
 {
    let h = Harness::default().await;
    h.verifier.verify(&h.token_for(0)).await.unwrap();
    h.emulator.add_key("rotated");
    h.emulator
        .set_jwks_failure(Failure::Delay(Duration::from_millis(300)));
    h.clock.advance(Duration::from_secs(10));
    let claims = h.emulator.session_claims(TENANT, USER, "acme", hour());
    let first = h.emulator.mint(&claims, "rotated", true).unwrap();
    let mut checks = spawn_checks(&h, vec![first]);
    eventually("the fetch is in flight", || {
        h.jtl.keys().fetches_started() == 2
    })
    .await;

    // Arrives while that fetch runs: its key is in the fetched set, so that set decides it.
    let during = h.emulator.mint(&claims, "rotated", false).unwrap();
    checks.extend(spawn_checks(&h, vec![during]));
    // A forged token arriving during the fetch: the set fetched may predate its key, so
    // it waits for the next fetch instead of a 401 now.
    let forged = spawn_checks(&h, random_kid_tokens(&h, 1));
    for check in checks {
        check
            .await
            .unwrap()
            .expect("verified by the fetch in flight");
    }
    // Parked on the next fetch (counted as waiting), which only a move of the clock permits.
    eventually("the forged token waits", || h.jtl.keys().waiting() == 1).await;
    assert!(
        !forged[0].is_finished(),
        "waits for a fetch made after it arrived"
    );
    assert_eq!(h.emulator.jwks_requests(), 2);
    h.emulator.set_jwks_failure(Failure::None);
    h.clock.advance(Duration::from_secs(10));
    all_refused(forged).await;
    assert_eq!(h.emulator.jwks_requests(), 3);
}

#[tokio::test]
async fn beyond_the_bound_of_waiting_requests_the_answer_is_503() {
    let h = Harness::default().await;
    h.verifier.verify(&h.token_for(0)).await.unwrap();
    let waiting = spawn_checks(&h, random_kid_tokens(&h, MAX_WAITING_FOR_KEYS));
    eventually("the bound is reached", || {
        h.jtl.keys().waiting() == MAX_WAITING_FOR_KEYS
    })
    .await;
    let one_more = random_kid_tokens(&h, 1).remove(0);
    assert_eq!(
        h.verifier.verify(&one_more).await.unwrap_err(),
        VerifyError::KeysCrowded(TokenKind::SessionToken)
    );
    // A token whose key is cached is not affected by the queue.
    assert!(h.verifier.verify(&h.token_for(1)).await.is_ok());
    h.clock.advance(Duration::from_secs(10));
    all_refused(waiting).await;
    assert_eq!(h.jtl.keys().waiting(), 0);
    assert_eq!(h.emulator.jwks_requests(), 2);
}

#[tokio::test]
async fn while_the_key_endpoint_fails_an_unknown_key_is_503_at_once_not_a_wait() {
    let h = Harness::default().await;
    h.verifier.verify(&h.token_for(0)).await.unwrap();
    h.emulator.set_jwks_failure(Failure::Status(500));
    h.clock.advance(Duration::from_secs(10));
    let tokens = random_kid_tokens(&h, 3);
    // The first makes the (failing) fetch; the others find the endpoint failing.
    for token in &tokens {
        assert_eq!(
            h.verifier.verify(token).await.unwrap_err(),
            VerifyError::KeysUnavailable(TokenKind::SessionToken)
        );
    }
    assert_eq!(h.emulator.jwks_requests(), 2);
    assert_eq!(h.jtl.keys().waiting(), 0);
    // Known keys keep verifying from the stale set meanwhile.
    assert!(h.verifier.verify(&h.token_for(1)).await.is_ok());
}

fn rand_suffix() -> u32 {
    rand::random()
}

#[tokio::test]
async fn a_new_kid_verifies_on_first_sight() {
    let h = Harness::default().await;
    h.verifier.verify(&h.token_for(0)).await.unwrap();
    h.emulator.add_key("rotated-key-2");
    h.clock.advance(Duration::from_secs(10));
    let claims = h.emulator.session_claims(TENANT, USER, "acme", hour());
    let named = h.emulator.mint(&claims, "rotated-key-2", true).unwrap();
    assert!(h.verifier.verify(&named).await.is_ok());
    assert_eq!(h.emulator.jwks_requests(), 2);

    // Without a header kid (JTL's documented form) the new key is found the same way.
    h.emulator.add_key("rotated-key-3");
    h.clock.advance(Duration::from_secs(10));
    let claims = h.emulator.session_claims(
        TENANT,
        "00000000-0000-4000-8000-000000000003",
        "acme",
        hour(),
    );
    let unnamed = h.emulator.mint(&claims, "rotated-key-3", false).unwrap();
    assert!(h.verifier.verify(&unnamed).await.is_ok());
    assert_eq!(h.emulator.jwks_requests(), 3);
}

#[tokio::test]
async fn a_removed_key_stops_verifying_after_the_next_refresh_cached_tokens_included() {
    let h = Harness::default().await;
    let old_kid = h.emulator.default_kid().unwrap();
    let token = h.token_for(1);
    h.verifier.verify(&token).await.unwrap();
    assert!(
        h.verifier.verify(&token).await.is_ok(),
        "served from the cache"
    );

    h.emulator.add_key("successor");
    h.emulator.remove_key(&old_kid);
    h.spawn_key_refresher();
    // jwks_refresh_interval_s defaults to 300.
    h.clock.advance(Duration::from_secs(300));
    eventually("the key set is refreshed", || {
        h.jtl.keys().current().generation == 2
    })
    .await;

    // The refresh ran before this request arrived, so the request waits for the next
    // permitted fetch (SPEC §5) and is refused by it.
    let check = spawn_checks(&h, vec![token]);
    eventually("the request waits for a fetch", || {
        h.jtl.keys().waiting() == 1
    })
    .await;
    h.clock.advance(Duration::from_secs(10));
    let error = check
        .into_iter()
        .next()
        .unwrap()
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            error,
            VerifyError::Rejected(JoseError::NoKeyMatches { .. }, _)
        ),
        "{error:?}"
    );
    assert_eq!(h.emulator.jwks_requests(), 3);
    // The successor's tokens verify.
    let claims = h.emulator.session_claims(TENANT, USER, "acme", hour());
    let fresh = h.emulator.mint(&claims, "successor", false).unwrap();
    assert!(h.verifier.verify(&fresh).await.is_ok());
}

#[tokio::test]
async fn jwks_down_stale_keys_keep_verifying_until_max_stale() {
    let h = Harness::start(
        EmulatorOptions::default(),
        Extra {
            session: "jwks_max_stale_s = 900",
            ..Extra::default()
        },
    )
    .await;
    h.verifier.verify(&h.token_for(0)).await.unwrap();
    h.emulator.set_jwks_failure(Failure::Status(500));
    h.spawn_key_refresher();
    h.clock.advance(Duration::from_secs(300));
    eventually("the refresh fails", || {
        h.jtl.keys().counts().failed.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert!(h.jtl.keys().is_failing());
    // A token never seen before still verifies against the stale keys.
    assert!(h.verifier.verify(&h.token_for(1)).await.is_ok());

    // Past jwks_max_stale_s the keys are no longer used: 503, not 401.
    h.clock.advance(Duration::from_secs(601));
    assert_eq!(
        h.verifier.verify(&h.token_for(2)).await.unwrap_err(),
        VerifyError::KeysUnavailable(TokenKind::SessionToken)
    );

    // The endpoint comes back and the refresher recovers by itself.
    h.emulator.set_jwks_failure(Failure::None);
    h.clock.advance(Duration::from_secs(300));
    eventually("the key set is loaded again", || {
        h.jtl.keys().usable().is_some()
    })
    .await;
    assert!(h.verifier.verify(&h.token_for(3)).await.is_ok());
}

#[tokio::test]
async fn unknown_key_while_jwks_is_down_is_temporarily_unavailable() {
    let h = Harness::default().await;
    h.verifier.verify(&h.token_for(0)).await.unwrap();
    h.emulator.add_key("new-key");
    h.emulator.set_jwks_failure(Failure::Status(502));
    h.clock.advance(Duration::from_secs(10));
    let claims = h.emulator.session_claims(TENANT, USER, "acme", hour());
    let token = h.emulator.mint(&claims, "new-key", true).unwrap();
    assert_eq!(
        h.verifier.verify(&token).await.unwrap_err(),
        VerifyError::KeysUnavailable(TokenKind::SessionToken)
    );
}

#[tokio::test]
async fn no_keys_at_all_is_unavailable_not_invalid() {
    let h = Harness::default().await;
    h.emulator.set_jwks_failure(Failure::Status(503));
    assert_eq!(
        h.verifier.verify(&h.token_for(0)).await.unwrap_err(),
        VerifyError::KeysUnavailable(TokenKind::SessionToken)
    );
    // A malformed token is still a plain rejection.
    assert!(matches!(
        h.verifier.verify("not-a-token").await.unwrap_err(),
        VerifyError::Rejected(..)
    ));
}

#[tokio::test]
async fn jwks_401_refreshes_the_access_token_and_retries_once() {
    let h = Harness::default().await;
    h.verifier.verify(&h.token_for(0)).await.unwrap();
    let first_token = h.jtl.tokens.current().unwrap();
    h.emulator.revoke_access_tokens();
    h.clock.advance(Duration::from_secs(10));
    let loaded = h
        .jtl
        .keys()
        .refetch(h.jtl.keys().current().generation)
        .await;
    assert_eq!(loaded.generation, 2);
    assert_eq!(h.emulator.token_requests(), 2);
    assert_eq!(
        h.emulator.jwks_requests(),
        3,
        "first load, the 401, the retry"
    );
    assert_ne!(h.jtl.tokens.current().unwrap().value(), first_token.value());
}

#[tokio::test]
async fn an_empty_key_set_does_not_replace_a_good_one() {
    let h = Harness::default().await;
    h.verifier.verify(&h.token_for(0)).await.unwrap();
    h.emulator
        .set_published(&h.emulator.default_kid().unwrap(), false);
    h.clock.advance(Duration::from_secs(10));
    let loaded = h.jtl.keys().refetch(1).await;
    assert_eq!(loaded.generation, 1);
    assert!(h.jtl.keys().is_failing());
    assert!(h.verifier.verify(&h.token_for(1)).await.is_ok());
}

#[tokio::test]
async fn refetches_are_rate_limited_even_when_they_fail() {
    let h = Harness::default().await;
    h.emulator.set_jwks_failure(Failure::Status(500));
    for _ in 0..20 {
        assert_eq!(
            h.verifier.verify(&h.token_for(0)).await.unwrap_err(),
            VerifyError::KeysUnavailable(TokenKind::SessionToken)
        );
    }
    assert_eq!(h.emulator.jwks_requests(), 1);
    h.clock.advance(Duration::from_secs(10));
    let _ = h.verifier.verify(&h.token_for(0)).await;
    assert_eq!(h.emulator.jwks_requests(), 2);
}

#[tokio::test]
async fn a_kid_that_now_names_other_key_material_ends_cached_verifications() {
    let h = Harness::default().await;
    let kid = h.emulator.default_kid().unwrap();
    let claims = h.emulator.session_claims(TENANT, USER, "acme", hour());
    let token = h.emulator.mint(&claims, &kid, true).unwrap();
    h.verifier.verify(&token).await.unwrap();
    // JTL re-publishes the old key under another kid and a new key under the old kid.
    h.emulator.rename_key(&kid, "retired");
    h.emulator.add_key(&kid);
    h.clock.advance(Duration::from_secs(10));
    h.jtl.keys().refetch(1).await;
    assert_eq!(h.jtl.keys().current().generation, 2);
    assert_eq!(
        h.verifier.verify(&token).await.unwrap_err(),
        VerifyError::Rejected(JoseError::BadSignature, Some(TokenKind::SessionToken))
    );
}

#[tokio::test]
async fn a_token_with_a_far_future_exp_is_cached_without_overflow() {
    let h = Harness::default().await;
    let mut claims = h.emulator.session_claims(TENANT, USER, "acme", hour());
    claims["exp"] = json!(1e300);
    let token = h
        .emulator
        .mint(&claims, &h.emulator.default_kid().unwrap(), false)
        .unwrap();
    let session = h.verifier.verify(&token).await.unwrap();
    assert_eq!(session.expires_at, i64::MAX);
    assert!(h.verifier.verify(&token).await.is_ok());
    assert_eq!(h.verifier.cache_counts().hits.get(), 1);
}

#[tokio::test]
async fn a_long_lived_token_is_verified_afresh_after_a_day_in_the_cache() {
    let h = Harness::default().await;
    let claims = h
        .emulator
        .session_claims(TENANT, USER, "acme", Duration::from_secs(48 * 3600));
    let token = h
        .emulator
        .mint(&claims, &h.emulator.default_kid().unwrap(), false)
        .unwrap();
    h.verifier.verify(&token).await.unwrap();
    h.clock.advance(Duration::from_secs(23 * 3600));
    h.verifier.verify(&token).await.unwrap();
    assert_eq!(h.verifier.cache_counts().misses.get(), 1);
    h.clock.advance(Duration::from_secs(3600));
    h.verifier.verify(&token).await.unwrap();
    assert_eq!(h.verifier.cache_counts().misses.get(), 2);
    assert_eq!(h.verifier.cache_counts().hits.get(), 1);
}

/// `exp` and `nbf` are absolute and checked on the wall clock, cached or not; the key
/// set's age (`jwks_max_stale_s`) is a duration and ignores a wall-clock step.
#[tokio::test]
async fn exp_and_nbf_follow_a_wall_clock_step_and_key_age_does_not() {
    const TWO_HOURS_MS: i64 = 2 * 3_600_000;
    let h = Harness::start(
        EmulatorOptions::default(),
        Extra {
            session: "jwks_max_stale_s = 900",
            ..Extra::default()
        },
    )
    .await;
    let kid = h.emulator.default_kid().unwrap();
    let expiring = h
        .emulator
        .mint(
            &h.emulator
                .session_claims(TENANT, USER, "acme", Duration::from_secs(600)),
            &kid,
            false,
        )
        .unwrap();
    let mut later = h
        .emulator
        .session_claims(TENANT, USER, "acme", Duration::from_secs(4 * 3600));
    later["nbf"] = json!(h.clock.now_s() + 3600);
    let not_yet = h.emulator.mint(&later, &kid, false).unwrap();
    h.verifier.verify(&expiring).await.unwrap();
    assert_eq!(
        h.verifier.verify(&not_yet).await.unwrap_err(),
        VerifyError::Rejected(JoseError::NotYetValid, Some(TokenKind::SessionToken))
    );

    h.clock.step_wall(TWO_HOURS_MS);
    // The cached token is past its exp now.
    assert_eq!(
        h.verifier.verify(&expiring).await.unwrap_err(),
        VerifyError::Rejected(JoseError::Expired, Some(TokenKind::SessionToken))
    );
    // The other is past its nbf, and the keys loaded "two hours ago" on the wall clock
    // are still fresh: they were loaded no time ago.
    assert!(h.verifier.verify(&not_yet).await.is_ok());
    assert_eq!(h.emulator.jwks_requests(), 1);
}
