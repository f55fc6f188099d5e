//! The JTL emulator behaves like JTL where the sidecar depends on it: Basic auth and
//! OAuth errors on the token endpoint, a key set that demands a bearer token, rotation.

mod common;

use common::calls::{json, send};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Method, StatusCode};
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::emulator::{Emulator, EmulatorOptions, Failure};
use jtl_auth_sidecar::jose::JwkSet;
use jtl_auth_sidecar::jtl::client_auth::basic_authorization;
use jtl_auth_sidecar::jtl::http::Response;

async fn emulator() -> Emulator {
    Emulator::start(EmulatorOptions::default(), Clock::manual(1_790_000_000_000))
        .await
        .unwrap()
}

/// RFC 6749 §2.3.1 credentials, as the sidecar sends them.
fn basic(id: &str, secret: &str) -> (&'static str, String) {
    ("authorization", basic_authorization(id, secret))
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// A token request with the emulator's own credentials.
async fn token_response(emulator: &Emulator) -> Response {
    let options = EmulatorOptions::default();
    send(
        Method::POST,
        &emulator.token_url(),
        &[
            basic(&options.client_id, &options.client_secret),
            (FORM.0, FORM.1.into()),
        ],
        "grant_type=client_credentials",
    )
    .await
}

async fn token(emulator: &Emulator) -> String {
    let response = token_response(emulator).await;
    assert_eq!(response.status, StatusCode::OK);
    json(&response)["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn token_endpoint_issues_bearer_tokens_for_good_basic_credentials() {
    let emulator = emulator().await;
    let response = token_response(&emulator).await;
    assert_eq!(response.status, StatusCode::OK);
    let body = json(&response);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(
        body["access_token"].as_str().unwrap().split('.').count(),
        3,
        "a JWT, like JTL's"
    );
}

#[tokio::test]
async fn token_endpoint_answers_invalid_client_for_bad_or_missing_credentials() {
    let emulator = emulator().await;
    for headers in [
        vec![basic("emulated-client", "wrong"), (FORM.0, FORM.1.into())],
        vec![
            basic("someone-else", "emulated-secret"),
            (FORM.0, FORM.1.into()),
        ],
        vec![(FORM.0, FORM.1.into())],
        vec![
            ("authorization", "Bearer x".to_owned()),
            (FORM.0, FORM.1.into()),
        ],
    ] {
        let response = send(
            Method::POST,
            &emulator.token_url(),
            &headers,
            "grant_type=client_credentials",
        )
        .await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
        assert_eq!(json(&response)["error"], "invalid_client");
        assert_eq!(response.headers["www-authenticate"], "Basic realm=\"jtl\"");
    }
}

/// The legacy IdP decodes Basic credentials as RFC 6749 §2.3.1 says, as JTL's Zitadel does:
/// a secret holding `+ / % : =` works form-urlencoded and is refused sent raw.
#[tokio::test]
async fn token_endpoint_form_urldecodes_basic_credentials() {
    let emulator = emulator().await;
    let secret = "a+b/c%d:e=f";
    emulator.set_client_secret(secret);
    let raw = (
        "authorization",
        format!(
            "Basic {}",
            STANDARD.encode(format!("emulated-client:{secret}"))
        ),
    );
    for (authorization, status) in [
        (raw, StatusCode::UNAUTHORIZED),
        (basic("emulated-client", secret), StatusCode::OK),
    ] {
        let response = send(
            Method::POST,
            &emulator.token_url(),
            &[authorization, (FORM.0, FORM.1.into())],
            "grant_type=client_credentials",
        )
        .await;
        assert_eq!(response.status, status, "{:?}", response.body);
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(json(&response)["error"], "invalid_client");
        }
    }
}

#[tokio::test]
async fn token_endpoint_refuses_other_grant_types() {
    let emulator = emulator().await;
    let options = EmulatorOptions::default();
    let auth = basic(&options.client_id, &options.client_secret);
    let response = send(
        Method::POST,
        &emulator.token_url(),
        std::slice::from_ref(&auth),
        "grant_type=password",
    )
    .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&response)["error"], "unsupported_grant_type");
    let response = send(Method::POST, &emulator.token_url(), &[auth], "").await;
    assert_eq!(json(&response)["error"], "invalid_request");
    let response = send(Method::GET, &emulator.token_url(), &[], "").await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn jwks_demands_a_valid_bearer_token() {
    let emulator = emulator().await;
    let response = send(Method::GET, &emulator.jwks_url(), &[], "").await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    let response = send(
        Method::GET,
        &emulator.jwks_url(),
        &[("authorization", "Bearer made-up".into())],
        "",
    )
    .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);

    let bearer = (
        "authorization",
        format!("Bearer {}", token(&emulator).await),
    );
    let response = send(
        Method::GET,
        &emulator.jwks_url(),
        std::slice::from_ref(&bearer),
        "",
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    let (set, skipped) = JwkSet::from_json(&response.body).unwrap();
    assert_eq!((set.len(), skipped.len()), (1, 0));

    emulator.revoke_access_tokens();
    let response = send(Method::GET, &emulator.jwks_url(), &[bearer], "").await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_access_tokens_are_refused() {
    let clock = Clock::manual(1_790_000_000_000);
    let emulator = Emulator::start(
        EmulatorOptions {
            expires_in: Some(60),
            ..EmulatorOptions::default()
        },
        clock.clone(),
    )
    .await
    .unwrap();
    let bearer = (
        "authorization",
        format!("Bearer {}", token(&emulator).await),
    );
    assert_eq!(
        send(
            Method::GET,
            &emulator.jwks_url(),
            std::slice::from_ref(&bearer),
            ""
        )
        .await
        .status,
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        send(Method::GET, &emulator.jwks_url(), &[bearer], "")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn keys_rotate_and_minted_tokens_name_them() {
    let emulator = emulator().await;
    emulator.add_key("k2");
    emulator.remove_key("emulator-key-1");
    let kids: Vec<String> = emulator.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kids, ["k2"]);
    assert!(
        emulator
            .mint_session_token(
                "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                "2f1b8d2c-5c1e-4a7e-9b3f-1d2e3f4a5b6c",
                "acme",
                Duration::from_secs(60)
            )
            .is_some()
    );
    assert!(
        emulator
            .mint(&serde_json::json!({}), "emulator-key-1", true)
            .is_none()
    );
}

#[tokio::test]
async fn api_echo_reflects_the_request_and_demands_a_bearer() {
    let emulator = emulator().await;
    let url = format!("{}/erp/v1/orders?page=2&x=%2F", emulator.api_base_url());
    assert_eq!(
        send(Method::POST, &url, &[], "{}").await.status,
        StatusCode::UNAUTHORIZED
    );
    let bearer = (
        "authorization",
        format!("Bearer {}", token(&emulator).await),
    );
    let tenant = (
        "x-tenant-id",
        "7c9e6679-7425-40de-944b-e07fc1f90ae7".to_owned(),
    );
    let response = send(Method::POST, &url, &[bearer, tenant], "{\"a\":1}").await;
    assert_eq!(response.status, StatusCode::OK);
    let echo = json(&response);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/erp/v1/orders");
    assert_eq!(echo["query"], "page=2&x=%2F");
    assert_eq!(
        echo["headers"]["x-tenant-id"],
        serde_json::json!(["7c9e6679-7425-40de-944b-e07fc1f90ae7"])
    );
    assert_eq!(echo["body"], "{\"a\":1}");
    assert_eq!(response.headers["x-ratelimit-remaining"], "999");
    assert_eq!(emulator.api_requests(), 2);
}

#[tokio::test]
async fn failure_switches_apply_per_endpoint() {
    let emulator = emulator().await;
    emulator.set_jwks_failure(Failure::StatusRetryAfter(503, 7));
    let response = send(Method::GET, &emulator.jwks_url(), &[], "").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers["retry-after"], "7");
    // The token endpoint is unaffected.
    assert!(!token(&emulator).await.is_empty());
    assert_eq!(emulator.jwks_requests(), 1);
    assert_eq!(emulator.token_requests(), 1);
}
