//! The access-token manager against the JTL emulator (SPEC §6 "Access token").

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::harness::{Extra, Harness, advance_waking_nothing, eventually, settled};
use jtl_auth_sidecar::config::load_str;
use jtl_auth_sidecar::emulator::{EmulatorOptions, Failure};
use jtl_auth_sidecar::jtl::token::EXPIRY_MARGIN;
use jtl_auth_sidecar::jtl::{Jtl, TokenError};

fn lasting(expires_in: u64) -> EmulatorOptions {
    EmulatorOptions {
        expires_in: Some(expires_in),
        ..EmulatorOptions::default()
    }
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let h = Harness::default().await;
    let mut callers = Vec::new();
    for _ in 0..200 {
        let tokens = h.jtl.tokens.clone();
        callers.push(tokio::spawn(async move { tokens.get().await }));
    }
    let mut values = Vec::new();
    for caller in callers {
        values.push(caller.await.unwrap().unwrap().value().to_owned());
    }
    assert_eq!(h.emulator.token_requests(), 1);
    assert!(values.iter().all(|v| *v == values[0]));
}

#[tokio::test]
async fn a_token_near_expiry_is_replaced_in_the_background() {
    let h = Harness::start(lasting(600), Extra::default()).await;
    let first = h.refreshed_token().await;
    assert_eq!(first.expires_at_ms() - h.clock.now_ms(), 600_000);

    // refresh_before_expiry_s defaults to 60: nothing happens before 540 s. The refresher
    // asleep on the clock is the barrier: once it has seen 539 s and slept on, no
    // request of its can be on its way.
    eventually("the refresher sleeps", || h.clock.asleep() == 1).await;
    advance_waking_nothing(&h.clock, Duration::from_secs(539), "nothing before 540 s").await;
    assert_eq!(h.emulator.token_requests(), 1);

    h.clock.advance(Duration::from_secs(2));
    h.replaced(&first, "the token is replaced").await;
    assert_eq!(h.emulator.token_requests(), 2);
    // The old token was still valid when it was replaced: no caller ever had to wait.
    assert!(first.expires_at_ms() > h.clock.now_ms());
}

#[tokio::test]
async fn short_tokens_are_refreshed_at_half_life() {
    let h = Harness::start(lasting(60), Extra::default()).await;
    h.refreshed_token().await;
    eventually("the refresher sleeps", || h.clock.asleep() == 1).await;
    advance_waking_nothing(&h.clock, Duration::from_secs(29), "nothing before 30 s").await;
    assert_eq!(h.emulator.token_requests(), 1);
    h.clock.advance(Duration::from_secs(1));
    eventually("refreshed at 30 s", || h.emulator.token_requests() == 2).await;
}

#[tokio::test]
async fn token_endpoint_down_cached_token_serves_until_expiry_then_unavailable_then_recovery() {
    let h = Harness::start(lasting(600), Extra::default()).await;
    let first = h.refreshed_token().await;

    h.emulator.set_token_failure(Failure::Status(503));
    h.clock.advance(Duration::from_secs(541));
    eventually("the refresh fails", || {
        h.jtl.tokens.counts().failed.load(Ordering::SeqCst) >= 1
    })
    .await;
    // The cached token keeps serving.
    let served = h.jtl.tokens.get().await.unwrap();
    assert!(Arc::ptr_eq(&served, &first));

    // Past its expiry (minus the safety margin) it is never handed out.
    let unusable_at = first.expires_at_ms() - EXPIRY_MARGIN.as_millis() as i64;
    h.clock.advance(Duration::from_millis(
        (unusable_at - h.clock.now_ms()) as u64,
    ));
    assert!(h.jtl.tokens.current().is_none());
    let error = h.jtl.tokens.get().await.unwrap_err();
    assert!(error.retry_after_s >= 1);
    assert!(
        matches!(error.cause, TokenError::Status { status: 503, .. }),
        "{error}"
    );

    // The endpoint comes back: the refresher's next attempt (backoff at most 60 s) gets a token.
    h.emulator.set_token_failure(Failure::None);
    h.clock.advance(Duration::from_secs(61));
    eventually("a new token arrives", || h.jtl.tokens.current().is_some()).await;
    let fresh = h.jtl.tokens.get().await.unwrap();
    assert_ne!(fresh.value(), first.value());
    assert!(fresh.expires_at_ms() > h.clock.now_ms());
}

/// A wall-clock step (NTP, a resumed VM) of two hours either way neither expires nor
/// extends a token whose lifetime came from `expires_in`: the lifetime runs on the
/// monotonic clock.
#[tokio::test]
async fn a_wall_clock_step_neither_expires_nor_extends_a_token_from_expires_in() {
    const TWO_HOURS_MS: i64 = 2 * 3_600_000;
    let h = Harness::start(lasting(600), Extra::default()).await;
    let first = h.jtl.tokens.get().await.unwrap();
    // Forward: on the wall clock the token would have expired long ago.
    h.clock.step_wall(TWO_HOURS_MS);
    let current = h
        .jtl
        .tokens
        .current()
        .expect("usable after +2 h on the wall clock");
    assert!(Arc::ptr_eq(&current, &first));
    // Back: on the wall clock it would last two hours more.
    h.clock.step_wall(-2 * TWO_HOURS_MS);
    h.clock
        .advance(Duration::from_secs(600) - EXPIRY_MARGIN - Duration::from_millis(1));
    assert!(h.jtl.tokens.current().is_some());
    h.clock.advance(Duration::from_millis(1));
    assert!(h.jtl.tokens.current().is_none());
    assert_eq!(h.emulator.token_requests(), 1);
}

/// The background refresh keeps its schedule through wall-clock steps: +2 h does not
/// make it refresh early, -2 h does not delay it.
#[tokio::test]
async fn a_wall_clock_step_moves_no_refresh() {
    const TWO_HOURS_MS: i64 = 2 * 3_600_000;
    let h = Harness::start(lasting(600), Extra::default()).await;
    let first = h.refreshed_token().await;
    // The refresher asleep on the clock is the barrier: once it has seen each move and
    // slept on, no request of its can be on its way.
    eventually("the refresher sleeps", || h.clock.asleep() == 1).await;
    let before = h.clock.wakeups();
    h.clock.step_wall(TWO_HOURS_MS);
    settled(&h.clock, "after +2 h on the wall clock").await;
    assert_eq!(h.clock.wakeups(), before, "+2 h woke the refresher");
    assert_eq!(h.emulator.token_requests(), 1);
    h.clock.step_wall(-2 * TWO_HOURS_MS);
    // refresh_before_expiry_s defaults to 60: due 540 s after receipt.
    advance_waking_nothing(&h.clock, Duration::from_secs(539), "nothing before 540 s").await;
    assert_eq!(h.emulator.token_requests(), 1);
    h.clock.advance(Duration::from_secs(2));
    h.replaced(&first, "the token is replaced on schedule")
        .await;
    assert_eq!(h.emulator.token_requests(), 2);
}

#[tokio::test]
async fn no_token_is_ever_handed_out_after_its_expiry() {
    // Without a refresher, the clock moves past expiry: the cached token is gone for
    // callers, and get() fetches a new one rather than returning the old.
    let h = Harness::start(lasting(120), Extra::default()).await;
    let first = h.jtl.tokens.get().await.unwrap();
    h.clock.advance(Duration::from_secs(120));
    assert!(h.jtl.tokens.current().is_none());
    let second = h.jtl.tokens.get().await.unwrap();
    assert_ne!(first.value(), second.value());
    assert!(second.expires_at_ms() > h.clock.now_ms());
}

#[tokio::test]
async fn invalid_client_is_a_clear_error_and_is_not_retried_within_a_minute() {
    let options = EmulatorOptions::default();
    let h = Harness::start(options.clone(), Extra::default()).await;
    h.emulator.set_client_secret("rotated-secret");
    let error = h.jtl.tokens.get().await.unwrap_err();
    assert_eq!(error.cause, TokenError::InvalidClient);
    let message = error.to_string();
    assert!(
        message.contains("jtl.client_id") && message.contains("jtl.client_secret"),
        "{message}"
    );
    assert!(!message.contains(&options.client_secret));
    assert!(error.retry_after_s >= 59, "{}", error.retry_after_s);

    let again = h.jtl.tokens.get().await.unwrap_err();
    assert_eq!(again.cause, TokenError::InvalidClient);
    assert_eq!(h.emulator.token_requests(), 1, "no retry within a minute");
}

#[tokio::test]
async fn invalid_client_with_a_newline_in_the_secret_file_names_what_is_seen() {
    let h = Harness::start(
        EmulatorOptions::default(),
        Extra {
            secret_file: Some(format!("{}\n", EmulatorOptions::default().client_secret)),
            ..Extra::default()
        },
    )
    .await;
    let error = h.jtl.tokens.get().await.unwrap_err();
    assert_eq!(error.cause, TokenError::InvalidClient);
    // The clause the invalid_client log line and `check --online` both carry.
    let seen = h.jtl.tokens.credential_observations();
    assert!(
        seen.contains("jtl.client_secret_file") && seen.contains("ends with a trailing newline"),
        "{seen}"
    );
    assert!(seen.contains("secret fingerprint"), "{seen}");
    assert!(
        !seen.contains(&EmulatorOptions::default().client_secret),
        "{seen}"
    );
}

#[tokio::test]
async fn a_corrected_secret_file_is_picked_up_after_invalid_client() {
    let h = Harness::start(
        EmulatorOptions::default(),
        Extra {
            secret_file: Some("wrong-secret".into()),
            ..Extra::default()
        },
    )
    .await;
    h.spawn_token_refresher();
    eventually("the first attempt fails", || {
        h.jtl.tokens.counts().failed.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        h.jtl.tokens.get().await.unwrap_err().cause,
        TokenError::InvalidClient
    );

    // The operator fixes the mounted secret; the next attempt (a minute later) reads it.
    std::fs::write(
        h.dir.path().join("client-secret"),
        EmulatorOptions::default().client_secret,
    )
    .unwrap();
    h.clock.advance(Duration::from_secs(61));
    eventually("a token is obtained", || h.jtl.tokens.current().is_some()).await;
    assert_eq!(h.emulator.token_requests(), 2);
}

#[tokio::test]
async fn a_secret_file_is_used_byte_for_byte() {
    // A trailing newline is part of the secret as JTL sees it, so it fails: the same
    // result a hand-written client would get, which `check --online` will point out.
    let secret = format!("{}\n", EmulatorOptions::default().client_secret);
    let h = Harness::start(
        EmulatorOptions::default(),
        Extra {
            secret_file: Some(secret),
            ..Extra::default()
        },
    )
    .await;
    assert_eq!(
        h.jtl.tokens.get().await.unwrap_err().cause,
        TokenError::InvalidClient
    );
}

#[tokio::test]
async fn invalidate_drops_only_the_token_it_names() {
    let h = Harness::default().await;
    let first = h.jtl.tokens.get().await.unwrap();
    h.jtl.tokens.invalidate(&first);
    assert!(h.jtl.tokens.current().is_none());
    let second = h.jtl.tokens.get().await.unwrap();
    assert_ne!(first.value(), second.value());
    // A late 401 for the old token must not drop the new one.
    h.jtl.tokens.invalidate(&first);
    assert!(Arc::ptr_eq(&h.jtl.tokens.current().unwrap(), &second));
    assert_eq!(h.emulator.token_requests(), 2);
}

#[tokio::test]
async fn many_callers_hitting_one_401_cause_one_new_token_request() {
    let h = Harness::default().await;
    let first = h.jtl.tokens.get().await.unwrap();
    let mut callers = Vec::new();
    for _ in 0..50 {
        let tokens = h.jtl.tokens.clone();
        let refused = Arc::clone(&first);
        callers.push(tokio::spawn(async move {
            tokens.invalidate(&refused);
            tokens.get().await.map(|token| token.value().to_owned())
        }));
    }
    for caller in callers {
        assert_ne!(caller.await.unwrap().unwrap(), first.value());
    }
    assert_eq!(h.emulator.token_requests(), 2);
}

#[tokio::test]
async fn retry_after_from_the_token_endpoint_is_honoured() {
    let h = Harness::default().await;
    h.emulator
        .set_token_failure(Failure::StatusRetryAfter(429, 30));
    let error = h.jtl.tokens.get().await.unwrap_err();
    assert!(error.retry_after_s >= 30, "{}", error.retry_after_s);
    h.clock.advance(Duration::from_secs(29));
    assert!(h.jtl.tokens.get().await.is_err());
    assert_eq!(h.emulator.token_requests(), 1);
    h.emulator.set_token_failure(Failure::None);
    h.clock.advance(Duration::from_secs(2));
    assert!(h.jtl.tokens.get().await.is_ok());
    assert_eq!(h.emulator.token_requests(), 2);
}

#[tokio::test]
async fn lifetime_falls_back_to_the_tokens_own_exp() {
    let h = Harness::start(
        EmulatorOptions {
            expires_in: None,
            ..EmulatorOptions::default()
        },
        Extra::default(),
    )
    .await;
    let token = h.jtl.tokens.get().await.unwrap();
    // The emulator's tokens are JWTs valid for an hour.
    assert_eq!(token.expires_at_ms() - h.clock.now_ms(), 3_600_000);
}

#[tokio::test]
async fn a_slow_token_endpoint_times_out() {
    let h = Harness::start(
        EmulatorOptions::default(),
        Extra {
            jtl: "timeout_ms = 300",
            ..Extra::default()
        },
    )
    .await;
    h.emulator
        .set_token_failure(Failure::Delay(Duration::from_secs(3)));
    let error = h.jtl.tokens.get().await.unwrap_err();
    assert!(matches!(error.cause, TokenError::Call(_)), "{error}");
    assert!(
        error.to_string().contains("no response within 300 ms"),
        "{error}"
    );
}

#[tokio::test]
async fn an_oversize_token_response_is_an_error() {
    let h = Harness::default().await;
    h.emulator.set_token_failure(Failure::Oversize);
    let error = h.jtl.tokens.get().await.unwrap_err();
    assert!(
        error.to_string().contains("larger than 65536 bytes"),
        "{error}"
    );
}

#[tokio::test]
async fn scope_is_sent_when_configured() {
    let h = Harness::start(
        EmulatorOptions::default(),
        Extra {
            jtl: "scope = \"openid\"",
            ..Extra::default()
        },
    )
    .await;
    assert!(h.jtl.tokens.get().await.is_ok());
    assert_eq!(h.emulator.last_token_scope().as_deref(), Some("openid"));
    let without = Harness::default().await;
    assert!(without.jtl.tokens.get().await.is_ok());
    assert_eq!(without.emulator.last_token_scope(), None);
}

#[tokio::test]
async fn tls_to_jtl_uses_ca_file_roots() {
    let tls = EmulatorOptions {
        tls: true,
        ..EmulatorOptions::default()
    };
    let trusted = Harness::start(
        tls.clone(),
        Extra {
            trust_emulator_ca: true,
            ..Extra::default()
        },
    )
    .await;
    assert!(trusted.emulator.token_url().starts_with("https://"));
    assert!(trusted.jtl.tokens.get().await.is_ok());

    // The connection negotiates HTTP/2 through ALPN.
    let token = trusted.jtl.tokens.get().await.unwrap();
    let http = jtl_auth_sidecar::jtl::JtlHttp::new(
        Duration::from_secs(5),
        trusted.config.jtl.ca_file.as_deref(),
    )
    .unwrap();
    let request = http::Request::get(format!("{}/echo", trusted.emulator.api_base_url()))
        .header("authorization", token.authorization().clone())
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let echo: serde_json::Value =
        serde_json::from_slice(&http.call(request).await.unwrap().body).unwrap();
    assert_eq!(echo["version"], "HTTP/2.0");

    let untrusted = Harness::start(tls, Extra::default()).await;
    let error = untrusted.jtl.tokens.get().await.unwrap_err();
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
}

#[tokio::test]
async fn the_per_thread_authorization_copy_follows_the_current_token() {
    let h = Harness::default().await;
    assert!(
        h.jtl.tokens.current_authorization().is_none(),
        "no token yet"
    );
    let first = h.jtl.tokens.get().await.unwrap();
    assert_eq!(
        h.jtl.tokens.current_authorization().as_ref(),
        Some(first.authorization())
    );
    h.jtl.tokens.invalidate(&first);
    assert!(h.jtl.tokens.current_authorization().is_none());
    let second = h.jtl.tokens.get().await.unwrap();
    let value = h.jtl.tokens.current_authorization().unwrap();
    assert_eq!(&value, second.authorization());
    assert_ne!(&value, first.authorization());
    assert!(value.is_sensitive());
    // Expired: no copy is handed out either.
    h.clock.advance(Duration::from_secs(3600));
    assert!(h.jtl.tokens.current_authorization().is_none());
}

/// RFC 6749 §2.3.1 (SPEC §6): the id and the secret are form-urlencoded before the join,
/// so a secret holding `+ / % : =` gets a token from both of JTL's token endpoints (the
/// emulator decodes them as JTL does; the same secret joined raw is `invalid_client`, see
/// tests/emulator.rs and tests/emulator_zitadel.rs).
#[tokio::test]
async fn a_secret_holding_reserved_characters_gets_a_token_from_both_token_endpoints() {
    let options = EmulatorOptions {
        client_secret: "a+b/c%d:e=f".to_owned(),
        ..EmulatorOptions::default()
    };
    // The legacy endpoint (the harness's token_url).
    let h = Harness::start(options.clone(), Extra::default()).await;
    assert!(h.jtl.tokens.get().await.is_ok());
    assert_eq!(h.emulator.token_requests(), 1);

    // Zitadel's endpoint on the same emulator, with the scope it requires.
    let toml = format!(
        "[jtl]\nclient_id = {:?}\nclient_secret = {:?}\ntoken_url = {:?}\nscope = \"openid\"\napi_base_url = {:?}\n[session]\naudience = \"app-1\"\n",
        options.client_id,
        options.client_secret,
        h.emulator.app_token_url(),
        h.emulator.api_base_url(),
    );
    let config = load_str(&toml, Vec::new()).unwrap().config;
    let zitadel = Jtl::from_config(&config, h.clock.clone()).unwrap();
    let token = zitadel.tokens.get().await;
    assert!(token.is_ok(), "{:?}", token.err());
    assert_eq!(
        h.emulator
            .counters()
            .app_token_requests
            .load(Ordering::SeqCst),
        1
    );
}
