//! The app-token flow (SPEC §11) end to end over real sockets: the emulator as JTL's
//! Zitadel, the echo backend, the sidecar with `session.flow = "app-token"`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::harness::{TENANT, USER, eventually, eventually_async};
use common::proxy::{Answer, Proxy, get, send};
use http::Request;
use http_body_util::Full;
use jtl_auth_sidecar::config::Flow;
use jtl_auth_sidecar::emulator::{DEV_APP_ID, DEV_APP_USER_ID};
use serde_json::{Value, json};

const SPOOFED: &str = "00000000-0000-4000-8000-000000000666";

fn hour() -> Duration {
    Duration::from_secs(3600)
}

fn app_token(proxy: &Proxy) -> String {
    proxy
        .emulator
        .mint_app_token_for(TENANT, DEV_APP_USER_ID, hour())
        .expect("the emulator signs")
}

async fn get_with(proxy: &Proxy, token: &str) -> Answer {
    get(
        &proxy.url("/orders?page=2"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-tenant-id", SPOOFED),
            ("x-tenant-slug", "spoofed"),
            ("x_user_id", "spoofed"),
        ],
    )
    .await
}

/// What the echo backend saw of one header (`None` when it did not get it).
fn seen(answer: &Answer, name: &str) -> Option<String> {
    answer.json()["headers"][name][0]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn both_flows_give_the_backend_the_same_identity_headers() {
    let legacy = Proxy::builder().start().await;
    let legacy_token = legacy.token();
    let legacy_answer = get_with(&legacy, &legacy_token).await;
    let current = Proxy::builder().flow(Flow::AppToken).start().await;
    let current_token = app_token(&current);
    let current_answer = get_with(&current, &current_token).await;
    assert_eq!(legacy_answer.status, 200);
    assert_eq!(current_answer.status, 200, "{:?}", current_answer.json());

    for (answer, user, slug, sent) in [
        (&legacy_answer, USER, Some("acme"), &legacy_token),
        (&current_answer, DEV_APP_USER_ID, None, &current_token),
    ] {
        assert_eq!(seen(answer, "x-tenant-id").as_deref(), Some(TENANT));
        assert_eq!(seen(answer, "x-user-id").as_deref(), Some(user));
        // App tokens carry no slug: the header is not set, and the client's is stripped.
        assert_eq!(seen(answer, "x-tenant-slug").as_deref(), slug);
        assert_eq!(seen(answer, "x_user_id"), None);
        assert_eq!(answer.json()["path"], "/orders");
        assert_eq!(answer.json()["query"], "page=2");
        // The app's service token, never the user's token.
        let authorization = seen(answer, "authorization").expect("access token forwarded");
        assert!(authorization.starts_with("Bearer "), "{authorization}");
        assert!(!authorization.contains(sent.as_str()));
    }
    // Zitadel's service token is opaque (JTL's legacy one is a JWT), never the app token.
    let service_token = seen(&current_answer, "authorization").unwrap();
    assert!(!service_token.contains('.'), "{service_token}");
    // The Zitadel flow asked Zitadel's token endpoint, with openid.
    assert_eq!(current.emulator.app_token_requests(), 1);
    assert_eq!(current.emulator.token_requests(), 0);
    assert!(current.emulator.app_keys_requests() >= 1);
    assert_eq!(current.emulator.jwks_requests(), 0);
}

#[tokio::test]
async fn a_token_for_another_app_or_tenant_claim_is_401_naming_the_check_and_reaches_nothing() {
    let proxy = Proxy::builder().flow(Flow::AppToken).start().await;
    let emulator = &proxy.emulator;
    let kid = emulator.default_app_kid().unwrap();
    let cases: Vec<(Value, &str)> = vec![
        (
            emulator.app_token_claims(TENANT, "1", &json!(["312909075212460000"]), None, hour()),
            "another audience",
        ),
        (
            emulator.app_token_claims(
                TENANT,
                "1",
                &json!([DEV_APP_ID]),
                Some("312909075212460000"),
                hour(),
            ),
            "another app",
        ),
        (
            {
                let mut claims =
                    emulator.app_token_claims(TENANT, "1", &json!(DEV_APP_ID), None, hour());
                claims["iss"] = json!("https://id.jtl-cloud.com");
                claims
            },
            "unexpected issuer",
        ),
        (
            emulator.app_token_claims("acme", "1", &json!(DEV_APP_ID), None, hour()),
            "urn:jtl:tenant_id claim is not a UUID",
        ),
    ];
    for (claims, why) in cases {
        let token = emulator.mint_app_token(&claims, &kid).unwrap();
        let answer = get_with(&proxy, &token).await;
        assert_eq!(answer.status, 401, "{why}");
        assert_eq!(answer.json()["error"], "invalid_token");
        let description = answer.json()["error_description"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            description.contains(why),
            "{description:?} should say {why:?}"
        );
        let challenge = answer.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains(why), "{challenge}");
    }
    // A legacy session token is not an app token.
    let legacy = emulator
        .mint_session_token(TENANT, USER, "acme", hour())
        .unwrap();
    assert_eq!(get_with(&proxy, &legacy).await.status, 401);
    // No token at all: the 401 says which token is missing.
    let answer = get(&proxy.url("/orders"), &[]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"], "missing_token");
    assert!(
        answer.json()["error_description"]
            .as_str()
            .unwrap()
            .starts_with("An app token is required")
    );
    assert_eq!(proxy.backend_hits(), 0, "nothing was forwarded");
}

#[tokio::test]
async fn a_rotated_in_key_verifies_and_a_removed_key_ends_cached_verifications() {
    let proxy = Proxy::builder().flow(Flow::AppToken).start().await;
    let old_kid = proxy.emulator.default_app_kid().unwrap();
    let old_token = app_token(&proxy);
    assert_eq!(get_with(&proxy, &old_token).await.status, 200);
    assert_eq!(get_with(&proxy, &old_token).await.status, 200, "cached");

    // Zitadel rotates without notice: a new key, the old one gone.
    proxy.emulator.add_app_key("312909097518999999");
    proxy.emulator.remove_app_key(&old_kid);
    let claims = proxy.emulator.app_token_claims(
        TENANT,
        DEV_APP_USER_ID,
        &json!([DEV_APP_ID]),
        Some(DEV_APP_ID),
        hour(),
    );
    let new_token = proxy
        .emulator
        .mint_app_token(&claims, "312909097518999999")
        .unwrap();
    // The new kid is unknown to the cached set: the request waits for the next permitted
    // fetch (SPEC §5) and is then verified.
    let fetches = proxy.emulator.app_keys_requests();
    let answer = proxy
        .with_refetches_permitted(get_with(&proxy, &new_token))
        .await;
    assert_eq!(answer.status, 200);
    assert!(proxy.emulator.app_keys_requests() > fetches);

    // The old token, cached as verified, is refused once its key left the set.
    let answer = proxy
        .with_refetches_permitted(get_with(&proxy, &old_token))
        .await;
    assert_eq!(answer.status, 401);
    assert_eq!(proxy.backend_hits(), 3);
}

#[tokio::test]
async fn connect_tenant_answers_without_a_slug_in_the_app_token_flow() {
    let proxy = Proxy::builder().flow(Flow::AppToken).start().await;
    let token = app_token(&proxy);
    let request = Request::post(proxy.url("/api/connect-tenant"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({ "sessionToken": token }).to_string(),
        )))
        .unwrap();
    let answer = send(request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!({"success": true, "tenantId": TENANT, "userId": DEV_APP_USER_ID})
    );
    assert_eq!(proxy.backend_hits(), 0);
}

#[tokio::test]
async fn the_sidecar_becomes_ready_in_the_app_token_flow() {
    let proxy = Proxy::builder().flow(Flow::AppToken).start().await;
    let url = proxy.admin_url("/readyz");
    eventually_async("ready with Zitadel's service token and key set", || async {
        get(&url, &[]).await.status == 200
    })
    .await;
    eventually("the key set was fetched", || {
        proxy.emulator.app_keys_requests() >= 1
    })
    .await;
}
