//! Both flows at once (SPEC §13, `session.flow = "both"`) over real sockets: the emulator
//! as JTL's legacy IdP (session tokens, the authenticated JWKS, the one service token) and
//! as JTL's Zitadel (app tokens, the public key set), the echo backend, and the sidecar
//! in between. Also the other-flow 401 of single-flow sidecars (SPEC §4), which is what
//! an operator sees after ending the move.
//!
//! Time is the manual clock: a key-set refetch is permitted only when a test moves it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::harness::{TENANT, USER, eventually_async};
use common::logs::Logs;
use common::proxy::{Answer, Proxy, get, send};
use http::Request;
use http_body_util::Full;
use jtl_auth_sidecar::config::Flow;
use jtl_auth_sidecar::emulator::{
    APP_KEY_ID, APP_OKP_KEY_ID, DEV_APP_ID, DEV_APP_USER_ID, Failure,
};
use jtl_auth_sidecar::jose::base64url_encode;
use jtl_auth_sidecar::tenants::TenantStore;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};
use uuid::Uuid;

const SPOOFED_TENANT: &str = "00000000-0000-4000-8000-000000000666";
/// A kid Zitadel rotates in.
const NEW_APP_KID: &str = "312909097518999999";

fn hour() -> Duration {
    Duration::from_secs(3600)
}

/// The sidecar in `flow`, once `/readyz` says 200 (access token and every key set).
async fn ready(flow: Flow, toml: &str) -> Proxy {
    let proxy = Proxy::builder().flow(flow).toml(toml).start().await;
    eventually_async("the sidecar is ready", || async {
        get(&proxy.admin_url("/readyz"), &[]).await.status == 200
    })
    .await;
    proxy
}

/// An app token for `sub` of the test tenant, for the emulator's app, signed by `kid`.
fn app_token(proxy: &Proxy, sub: &str, kid: &str) -> String {
    let claims = proxy.emulator.app_token_claims(
        TENANT,
        sub,
        &json!([DEV_APP_ID]),
        Some(DEV_APP_ID),
        hour(),
    );
    proxy
        .emulator
        .mint_app_token(&claims, kid)
        .expect("the emulator signs")
}

/// A session token of the test tenant for user number `n` (no header kid, as JTL sends).
fn session_token(proxy: &Proxy, n: u32) -> String {
    let user = format!("00000000-0000-4000-8000-{n:012}");
    proxy
        .emulator
        .mint_session_token(TENANT, &user, "acme", hour())
        .expect("the emulator signs")
}

/// A request through the ingress with `token`; one that waits for a key-set fetch that
/// never comes fails the test instead of hanging it.
async fn call(proxy: &Proxy, token: &str) -> Answer {
    let url = proxy.url("/orders?page=2");
    let bearer = format!("Bearer {token}");
    let headers = [("authorization", bearer.as_str())];
    let request = get(&url, &headers);
    tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("no answer within 20 s")
}

fn text(answer: &Answer) -> String {
    String::from_utf8_lossy(&answer.body).into_owned()
}

fn description(answer: &Answer) -> String {
    answer.json()["error_description"]
        .as_str()
        .unwrap_or_else(|| panic!("no error_description: {}", text(answer)))
        .to_owned()
}

/// Asserts a `401 invalid_token` whose WWW-Authenticate challenge carries the body's
/// description (a `"` may travel as `\"` or as `'` inside the quoted string); returns it.
fn refused(answer: &Answer, what: &str) -> String {
    assert_eq!(answer.status, 401, "{what}: {}", text(answer));
    assert_eq!(answer.json()["error"], "invalid_token", "{what}");
    let description = description(answer);
    let challenge = answer.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .replace("\\\"", "'");
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{what}: {challenge}"
    );
    assert!(
        challenge.contains(&description.replace('"', "'")),
        "{what}: the challenge {challenge:?} does not carry {description:?}"
    );
    description
}

/// The value of one series on `/metrics` (`None` when it is not there).
async fn metric(proxy: &Proxy, series: &str) -> Option<u64> {
    let body = text(&get(&proxy.admin_url("/metrics"), &[]).await);
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

/// What `/readyz` says is missing (empty when ready).
async fn missing(proxy: &Proxy) -> Vec<String> {
    let answer = get(&proxy.admin_url("/readyz"), &[]).await;
    match answer.status {
        200 => Vec::new(),
        503 => serde_json::from_value(answer.json()["missing"].clone())
            .unwrap_or_else(|e| panic!("/readyz 503 without a list ({e}): {}", text(&answer))),
        other => panic!("/readyz answered {other}: {}", text(&answer)),
    }
}

/// `header.payload.signature` over the JSON texts, signed by `sign`.
fn signed(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        base64url_encode(header.to_string().as_bytes()),
        base64url_encode(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", base64url_encode(&signature))
}

#[tokio::test]
async fn both_kinds_give_the_backend_the_same_headers_and_the_one_service_token() {
    let proxy = ready(Flow::Both, "").await;
    // Upper-case UUIDs in the tokens: the backend gets them lowercase.
    let app_claims = proxy.emulator.app_token_claims(
        &TENANT.to_uppercase(),
        DEV_APP_USER_ID,
        &json!([DEV_APP_ID]),
        Some(DEV_APP_ID),
        hour(),
    );
    let app = proxy
        .emulator
        .mint_app_token(&app_claims, APP_KEY_ID)
        .unwrap();
    let session = proxy
        .emulator
        .mint_session_token(&TENANT.to_uppercase(), &USER.to_uppercase(), "acme", hour())
        .unwrap();

    let mut forwarded_tokens = Vec::new();
    for (token, user, slug) in [
        (&app, DEV_APP_USER_ID, None),
        (&session, USER, Some("acme")),
    ] {
        let answer = get(
            &proxy.url("/orders?page=2"),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-tenant-id", SPOOFED_TENANT),
                ("x_tenant_id", SPOOFED_TENANT),
                ("x-user-id", "spoofed"),
                ("x-tenant-slug", "spoofed"),
            ],
        )
        .await;
        let kind = if slug.is_some() { "session" } else { "app" };
        assert_eq!(answer.status, 200, "{kind} token: {}", text(&answer));
        assert_eq!(answer.echoed("x-tenant-id"), [TENANT], "{kind} token");
        assert!(answer.echoed("x_tenant_id").is_empty(), "{kind} token");
        assert_eq!(answer.echoed("x-user-id"), [user], "{kind} token");
        let slugs = answer.echoed("x-tenant-slug");
        assert_eq!(slugs, slug.into_iter().collect::<Vec<_>>(), "{kind} token");
        assert_eq!(answer.json()["path"], "/orders");
        assert_eq!(answer.json()["query"], "page=2");
        let authorization = answer.echoed("authorization");
        assert_eq!(authorization.len(), 1, "{kind} token: {authorization:?}");
        assert!(authorization[0].starts_with("Bearer "), "{authorization:?}");
        assert!(!authorization[0].contains(app.as_str()));
        assert!(!authorization[0].contains(session.as_str()));
        forwarded_tokens.push(authorization[0].clone());
    }
    assert_eq!(
        forwarded_tokens[0], forwarded_tokens[1],
        "both kinds forward the one service access token"
    );
    // That one token came from the legacy endpoint (derived in `both`), not from Zitadel.
    assert_eq!(proxy.emulator.token_requests(), 1);
    assert_eq!(proxy.emulator.app_token_requests(), 0);
    assert_eq!(proxy.backend_hits(), 2);
}

#[tokio::test]
async fn a_token_signed_by_the_other_kinds_key_is_refused_and_reaches_nothing() {
    let proxy = ready(Flow::Both, "").await;
    let emulator = &proxy.emulator;
    let session_kid = emulator.default_kid().unwrap();
    let app_claims =
        emulator.app_token_claims(TENANT, DEV_APP_USER_ID, &json!([DEV_APP_ID]), None, hour());
    let session_claims = emulator.session_claims(TENANT, USER, "acme", hour());
    let cases = [
        (
            "an RS256 header over an Ed25519 signature",
            emulator.mint_with_header(
                &json!({"alg": "RS256", "typ": "JWT", "kid": APP_KEY_ID}),
                &app_claims,
                &session_kid,
            ),
        ),
        (
            "an RS256 header naming the Ed25519 key that signed it",
            emulator.mint_with_header(
                &json!({"alg": "RS256", "typ": "JWT", "kid": session_kid}),
                &app_claims,
                &session_kid,
            ),
        ),
        (
            "an EdDSA header over an RSA signature",
            emulator.mint_app_token_with_header(
                &json!({"alg": "EdDSA", "typ": "JWT"}),
                &session_claims,
                APP_KEY_ID,
            ),
        ),
        (
            "an EdDSA header naming the RSA key that signed it",
            emulator.mint_app_token_with_header(
                &json!({"alg": "EdDSA", "typ": "JWT", "kid": APP_KEY_ID}),
                &session_claims,
                APP_KEY_ID,
            ),
        ),
    ];
    for (what, token) in cases {
        let token = token.expect("the emulator signs");
        let answer = proxy.with_refetches_permitted(call(&proxy, &token)).await;
        refused(&answer, what);
    }
    assert_eq!(proxy.backend_hits(), 0, "nothing reached the backend");
    // The genuine tokens of both kinds pass, so the refusals were about the signatures.
    assert_eq!(
        call(&proxy, &app_token(&proxy, "1", APP_KEY_ID))
            .await
            .status,
        200
    );
    assert_eq!(call(&proxy, &session_token(&proxy, 1)).await.status, 200);
}

#[tokio::test]
async fn a_kid_is_looked_up_only_in_its_own_kinds_key_set() {
    // No background refresh: every key-set fetch below is one a token caused.
    let proxy = ready(Flow::Both, "[session]\njwks_refresh_interval_s = 86400\n").await;
    let emulator = &proxy.emulator;
    let session_kid = emulator.default_kid().unwrap();

    // An RS256 token naming a kid that only the session-token key set holds.
    let (app_fetches, session_fetches) = (emulator.app_keys_requests(), emulator.jwks_requests());
    let claims =
        emulator.app_token_claims(TENANT, DEV_APP_USER_ID, &json!([DEV_APP_ID]), None, hour());
    let token = emulator
        .mint_app_token_with_header(
            &json!({"alg": "RS256", "typ": "JWT", "kid": session_kid}),
            &claims,
            APP_KEY_ID,
        )
        .unwrap();
    let answer = proxy.with_refetches_permitted(call(&proxy, &token)).await;
    let said = refused(&answer, "an RS256 token with a session-token kid");
    assert!(
        said.contains("The app token was signed by an unknown key"),
        "{said}"
    );
    assert!(
        emulator.app_keys_requests() > app_fetches,
        "the app set was refetched"
    );
    assert_eq!(
        emulator.jwks_requests(),
        session_fetches,
        "the session-token key set is never consulted for an RS256 token"
    );

    // EdDSA tokens naming kids that only the app-token key set holds: an RSA key, and the
    // Ed25519 (OKP) key Zitadel publishes beside its RSA keys.
    for kid in [APP_KEY_ID, APP_OKP_KEY_ID] {
        let (app_fetches, session_fetches) =
            (emulator.app_keys_requests(), emulator.jwks_requests());
        let claims = emulator.session_claims(TENANT, USER, "acme", hour());
        let token = emulator
            .mint_with_header(
                &json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
                &claims,
                &session_kid,
            )
            .unwrap();
        let answer = proxy.with_refetches_permitted(call(&proxy, &token)).await;
        let said = refused(
            &answer,
            &format!("an EdDSA token with the app-token kid {kid}"),
        );
        assert!(
            said.contains("The session token was signed by an unknown key"),
            "{said}"
        );
        assert!(
            emulator.jwks_requests() > session_fetches,
            "the session set was refetched"
        );
        assert_eq!(
            emulator.app_keys_requests(),
            app_fetches,
            "the app-token key set is never consulted for an EdDSA token"
        );
    }
    assert_eq!(proxy.backend_hits(), 0);
}

#[tokio::test]
async fn an_algorithm_of_neither_kind_is_refused_naming_both_kinds() {
    let proxy = ready(Flow::Both, "").await;
    let emulator = &proxy.emulator;
    let claims =
        emulator.app_token_claims(TENANT, DEV_APP_USER_ID, &json!([DEV_APP_ID]), None, hour());
    // HS256 keyed with the published RSA key (the classic algorithm confusion).
    let public_key = emulator.app_keys()["keys"][0].to_string();
    let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public_key.as_bytes());
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let cases = [
        (
            "alg none",
            signed(&json!({"alg": "none", "typ": "JWT"}), &claims, |_| {
                Vec::new()
            }),
        ),
        (
            "HS256 keyed with a public key",
            signed(
                &json!({"alg": "HS256", "typ": "JWT", "kid": APP_KEY_ID}),
                &claims,
                |input| ring::hmac::sign(&hmac_key, input).as_ref().to_vec(),
            ),
        ),
        (
            "ES256",
            signed(
                &json!({"alg": "ES256", "typ": "JWT", "kid": APP_KEY_ID}),
                &claims,
                |input| ec.sign(&rng, input).unwrap().as_ref().to_vec(),
            ),
        ),
    ];
    for (what, token) in cases {
        let answer = proxy.with_refetches_permitted(call(&proxy, &token)).await;
        let said = refused(&answer, what);
        for named in ["app token", "session token", "RS256", "EdDSA"] {
            assert!(
                said.contains(named),
                "{what}: {said:?} does not name {named}"
            );
        }
    }
    assert_eq!(proxy.backend_hits(), 0);
}

/// Makes the key set `failing` (`jwks_session_token` or `jwks_app_token`) answer 503;
/// what `/readyz` then says is missing.
fn fail_key_set(proxy: &Proxy, failing: &str) -> Vec<String> {
    match failing {
        "jwks_session_token" => proxy.emulator.set_jwks_failure(Failure::Status(503)),
        _ => proxy.emulator.set_app_keys_failure(Failure::Status(503)),
    }
    vec!["jwks".to_owned(), failing.to_owned()]
}

#[tokio::test]
async fn a_key_set_failing_from_the_start_leaves_the_other_kind_verifying() {
    for failing in ["jwks_session_token", "jwks_app_token"] {
        let proxy = Proxy::builder().flow(Flow::Both).start().await;
        // Before the refresher's first fetch: the sidecar has not run yet on this thread.
        let expected = fail_key_set(&proxy, failing);
        eventually_async(
            "the access token and the other key set are loaded",
            || async { missing(&proxy).await == expected },
        )
        .await;
        let (working, broken) = match failing {
            "jwks_session_token" => (app_token(&proxy, "1", APP_KEY_ID), session_token(&proxy, 1)),
            _ => (session_token(&proxy, 1), app_token(&proxy, "1", APP_KEY_ID)),
        };
        let answer = call(&proxy, &working).await;
        assert_eq!(answer.status, 200, "{failing}: {}", text(&answer));
        let answer = call(&proxy, &broken).await;
        assert_eq!(answer.status, 503, "{failing}: {}", text(&answer));
        assert_eq!(answer.json()["error"], "temporarily_unavailable");
        assert!(answer.headers.contains_key("retry-after"), "{failing}");
        assert_eq!(proxy.backend_hits(), 1, "{failing}");
    }
}

#[tokio::test]
async fn a_failing_session_key_set_keeps_its_keys_and_the_app_keys_still_rotate() {
    let proxy = ready(Flow::Both, "").await;
    let emulator = &proxy.emulator;
    let (app_fetches, session_fetches) = (emulator.app_keys_requests(), emulator.jwks_requests());
    emulator.set_jwks_failure(Failure::Status(503));
    // The background refresh (every 300 s) of both sets: the session set's fails.
    proxy.clock.advance(Duration::from_secs(300));
    eventually_async("both sets were refreshed once more", || async {
        emulator.jwks_requests() > session_fetches && emulator.app_keys_requests() > app_fetches
    })
    .await;
    eventually_async("the failed fetch is counted", || async {
        metric(&proxy, "jtl_sidecar_jwks_fetches_total{result=\"failure\"}").await >= Some(1)
    })
    .await;

    // Zitadel rotates now: a new kid, the old key gone. New app tokens verify.
    emulator.add_app_key(NEW_APP_KID);
    emulator.remove_app_key(APP_KEY_ID);
    let fetches = emulator.app_keys_requests();
    let answer = proxy
        .with_refetches_permitted(call(&proxy, &app_token(&proxy, "2", NEW_APP_KID)))
        .await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    assert_eq!(answer.echoed("x-user-id"), ["2"]);
    assert!(emulator.app_keys_requests() > fetches);
    // Session tokens verify with the last good session-token keys.
    let answer = call(&proxy, &session_token(&proxy, 2)).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    assert_eq!(missing(&proxy).await, Vec::<String>::new());
}

/// An answer without moving the clock: the request did not wait for a permitted fetch.
async fn at_once(proxy: &Proxy, token: &str) -> Answer {
    tokio::time::timeout(Duration::from_secs(5), call(proxy, token))
        .await
        .expect("answered without waiting for a permitted key-set fetch")
}

#[tokio::test]
async fn a_rotation_refetches_only_its_own_key_set_under_its_own_rate_limit() {
    let proxy = ready(Flow::Both, "[session]\njwks_refresh_interval_s = 86400\n").await;
    let emulator = &proxy.emulator;
    // Both sets were loaded at the start; from now on each permits one refetch.
    proxy.clock.advance(Duration::from_secs(11));
    let (app_fetches, session_fetches) = (emulator.app_keys_requests(), emulator.jwks_requests());

    // Zitadel rotates: new app tokens verify after one refetch of the app-token keys.
    emulator.add_app_key(NEW_APP_KID);
    emulator.remove_app_key(APP_KEY_ID);
    let answer = at_once(&proxy, &app_token(&proxy, "1", NEW_APP_KID)).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    assert_eq!(emulator.app_keys_requests(), app_fetches + 1);
    assert_eq!(
        emulator.jwks_requests(),
        session_fetches,
        "session keys left alone"
    );
    let answer = at_once(&proxy, &session_token(&proxy, 1)).await;
    assert_eq!(
        answer.status,
        200,
        "session tokens unaffected: {}",
        text(&answer)
    );
    assert_eq!(emulator.jwks_requests(), session_fetches);

    // JTL rotates in a session-token key. The app set just spent its refetch; the
    // session set's rate limit is its own.
    emulator.add_key("emulator-key-2");
    let claims = emulator.session_claims(TENANT, USER, "acme", hour());
    let token = emulator.mint(&claims, "emulator-key-2", true).unwrap();
    let answer = at_once(&proxy, &token).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    assert_eq!(emulator.jwks_requests(), session_fetches + 1);
    assert_eq!(
        emulator.app_keys_requests(),
        app_fetches + 1,
        "app keys left alone"
    );
    let answer = at_once(&proxy, &app_token(&proxy, "2", NEW_APP_KID)).await;
    assert_eq!(
        answer.status,
        200,
        "app tokens unaffected: {}",
        text(&answer)
    );
}

async fn connect(proxy: &Proxy, token: &str) -> Answer {
    let request = Request::post(proxy.url("/api/connect-tenant"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({ "sessionToken": token }).to_string(),
        )))
        .unwrap();
    send(request).await
}

#[tokio::test]
async fn connect_tenant_accepts_both_kinds_into_one_store() {
    let proxy = ready(Flow::Both, "").await;
    let url = format!(
        "sqlite://{}",
        proxy.store_dir.path().join("jtl-tenants.db").display()
    );
    let tenant = Uuid::parse_str(TENANT).unwrap();

    let answer = connect(&proxy, &app_token(&proxy, DEV_APP_USER_ID, APP_KEY_ID)).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    assert_eq!(
        answer.json(),
        json!({"success": true, "tenantId": TENANT, "userId": DEV_APP_USER_ID}),
        "no tenantSlug for an app token"
    );
    let store = TenantStore::open(&url).await.unwrap();
    let row = store
        .tenant(tenant)
        .await
        .unwrap()
        .expect("the tenant is stored");
    assert_eq!(
        (row.tenant_slug.as_str(), row.installed_by.as_str()),
        ("", DEV_APP_USER_ID)
    );

    // The same tenant connected with a session token: one row, updated.
    let answer = connect(&proxy, &proxy.token()).await;
    assert_eq!(answer.status, 200, "{}", text(&answer));
    assert_eq!(
        answer.json(),
        json!({"success": true, "tenantId": TENANT, "userId": USER, "tenantSlug": "acme"})
    );
    let row = store
        .tenant(tenant)
        .await
        .unwrap()
        .expect("the tenant is stored");
    assert_eq!(
        (row.tenant_slug.as_str(), row.installed_by.as_str()),
        ("acme", USER)
    );
    assert_eq!(store.count().await.unwrap(), 1);
    store.close().await;

    // A token of neither kind is the connect-tenant 401.
    let none = signed(&json!({"alg": "none"}), &json!({}), |_| Vec::new());
    let answer = connect(&proxy, &none).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.json(),
        json!({"error": "Failed to verify session token"})
    );
    assert_eq!(proxy.backend_hits(), 0);
}

#[tokio::test]
async fn readiness_waits_for_both_key_sets() {
    for failing in ["jwks_session_token", "jwks_app_token"] {
        let proxy = Proxy::builder().flow(Flow::Both).start().await;
        let expected = fail_key_set(&proxy, failing);
        eventually_async("only the failing key set is missing", || async {
            missing(&proxy).await == expected
        })
        .await;
        let answer = get(&proxy.admin_url("/readyz"), &[]).await;
        assert_eq!(answer.status, 503, "{failing}");
        assert_eq!(answer.json()["missing"], json!(expected), "{failing}");

        // The key endpoint recovers; the next permitted fetch loads the set.
        proxy.emulator.set_jwks_failure(Failure::None);
        proxy.emulator.set_app_keys_failure(Failure::None);
        eventually_async("ready once both key sets are loaded", || async {
            proxy.clock.advance(Duration::from_secs(5));
            missing(&proxy).await.is_empty()
        })
        .await;
    }
}

#[tokio::test]
async fn verifications_are_counted_by_kind() {
    let proxy = ready(Flow::Both, "").await;
    for n in 1..=2 {
        let answer = call(&proxy, &app_token(&proxy, &n.to_string(), APP_KEY_ID)).await;
        assert_eq!(answer.status, 200, "{}", text(&answer));
    }
    for n in 1..=3 {
        let answer = call(&proxy, &session_token(&proxy, n)).await;
        assert_eq!(answer.status, 200, "{}", text(&answer));
    }
    // One refused session token: an expired one.
    let claims = proxy.emulator.session_claims(TENANT, USER, "acme", hour());
    let mut expired = claims.clone();
    expired["exp"] = json!(claims["iat"].as_i64().unwrap() - 3600);
    let kid = proxy.emulator.default_kid().unwrap();
    let token = proxy.emulator.mint(&expired, &kid, false).unwrap();
    assert_eq!(call(&proxy, &token).await.status, 401);

    let series = |flow: &str, outcome: &str| {
        format!("jtl_sidecar_verifications_total{{flow=\"{flow}\",outcome=\"{outcome}\"}}")
    };
    for (flow, outcome, count) in [
        ("app-token", "verified", 2),
        ("session-token", "verified", 3),
        ("session-token", "invalid_token", 1),
    ] {
        let series = series(flow, outcome);
        assert_eq!(metric(&proxy, &series).await, Some(count), "{series}");
    }
    assert_eq!(
        metric(&proxy, &series("app-token", "invalid_token"))
            .await
            .unwrap_or(0),
        0
    );
}

impl Logs {
    /// The line of the request with this `X-Request-ID`.
    fn request_line(&self, request_id: &str) -> Option<Value> {
        self.lines()
            .into_iter()
            .find(|line| line["request_id"] == request_id)
    }
}

#[tokio::test]
async fn a_single_flow_sidecar_refuses_the_other_kind_saying_what_to_set() {
    let logs = Logs::global();

    for (flow, token_flow, is, also) in [
        (
            Flow::AppToken,
            "session-token",
            "This is a session token (getSessionToken)",
            "session.flow = \"app-token\"",
        ),
        (
            Flow::SessionToken,
            "app-token",
            "This is an app token (getAppToken)",
            "session.flow = \"session-token\"",
        ),
    ] {
        let proxy = Proxy::builder().flow(flow).start().await;
        let token = match flow {
            Flow::AppToken => proxy.token(),
            _ => app_token(&proxy, DEV_APP_USER_ID, APP_KEY_ID),
        };
        let answer = call(&proxy, &token).await;
        let said = refused(&answer, token_flow);
        for part in [is, "session.flow = \"both\"", also] {
            assert!(
                said.contains(part),
                "{flow:?}: {said:?} does not say {part:?}"
            );
        }
        assert!(!said.contains(&token), "the token is never echoed");
        assert_eq!(proxy.backend_hits(), 0, "{flow:?}");
        // The metric an operator watches before ending the move counts it by its kind.
        let series = format!(
            "jtl_sidecar_verifications_total{{flow=\"{token_flow}\",outcome=\"other_flow_token\"}}"
        );
        assert_eq!(metric(&proxy, &series).await, Some(1), "{series}");
        // And the 401's log line (found by the request id the 401 carries) says the same.
        let request_id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
        eventually_async("the 401 is logged", || async {
            logs.request_line(&request_id).is_some()
        })
        .await;
        let line = logs.request_line(&request_id).unwrap();
        assert_eq!(line["status"], 401, "{line}");
        assert_eq!(line["outcome"], "other_flow_token", "{line}");
        assert_eq!(line["reason"].as_str(), Some(said.as_str()), "{line}");
    }
}
