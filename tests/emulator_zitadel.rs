//! The JTL emulator as JTL's Zitadel (SPEC §11), over real sockets: client credentials
//! with HTTP Basic only and `scope=openid`, opaque service tokens the API accepts, a
//! public mixed key set with numeric kids, the discovery document, RS256 app tokens that
//! verify against the published keys, rotation and removal. The legacy endpoints live on
//! beside them on the same server.

mod common;

use common::calls::{json, send, try_send};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Method, StatusCode};
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::emulator::{
    APP_EC_KEY_ID, APP_KEY_ID, APP_OKP_KEY_ID, DEV_APP_ID, DEV_APP_USER_ID, DEV_TENANT_ID,
    Emulator, EmulatorOptions, Failure,
};
use jtl_auth_sidecar::jtl::client_auth::basic_authorization;
use jtl_auth_sidecar::jtl::http::{CallError, Response};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use serde_json::{Value, json};

const NOW_MS: i64 = 1_790_000_000_000;
const TENANT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

async fn emulator() -> Emulator {
    Emulator::start(EmulatorOptions::default(), Clock::manual(NOW_MS))
        .await
        .unwrap()
}

/// RFC 6749 §2.3.1 credentials, as the sidecar sends them.
fn basic(id: &str, secret: &str) -> (&'static str, String) {
    ("authorization", basic_authorization(id, secret))
}

/// `id:secret` joined and base64-encoded without the form-urlencoding RFC 6749 asks for.
fn raw_basic(id: &str, secret: &str) -> (&'static str, String) {
    (
        "authorization",
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
    )
}

fn good_basic() -> (&'static str, String) {
    let options = EmulatorOptions::default();
    basic(&options.client_id, &options.client_secret)
}

fn form() -> (&'static str, String) {
    (
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )
}

async fn token_request(emulator: &Emulator, headers: &[(&str, String)], body: &str) -> Response {
    send(Method::POST, &emulator.app_token_url(), headers, body).await
}

async fn app_service_token(emulator: &Emulator) -> String {
    let response = token_request(
        emulator,
        &[good_basic(), form()],
        "grant_type=client_credentials&scope=openid",
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    json(&response)["access_token"].as_str().unwrap().to_owned()
}

async fn keys(emulator: &Emulator) -> Vec<Value> {
    let response = send(Method::GET, &emulator.app_keys_url(), &[], "").await;
    assert_eq!(response.status, StatusCode::OK);
    json(&response)["keys"].as_array().unwrap().clone()
}

fn kids(keys: &[Value]) -> Vec<String> {
    keys.iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn b64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

/// Verifies an RS256 compact JWS with ring against the published `n`/`e` of `kid`, and
/// answers its header and claims.
fn verify_rs256(token: &str, published: &[Value], kid: &str) -> (Value, Value) {
    let key = published
        .iter()
        .find(|key| key["kid"] == kid)
        .unwrap_or_else(|| panic!("{kid} is not published"));
    assert_eq!(key["kty"], "RSA");
    let public = RsaPublicKeyComponents {
        n: b64(key["n"].as_str().unwrap()),
        e: b64(key["e"].as_str().unwrap()),
    };
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    public
        .verify(
            &RSA_PKCS1_2048_8192_SHA256,
            signing_input.as_bytes(),
            &b64(signature),
        )
        .expect("the signature verifies against the published key");
    let (header, claims) = signing_input.split_once('.').unwrap();
    (
        serde_json::from_slice(&b64(header)).unwrap(),
        serde_json::from_slice(&b64(claims)).unwrap(),
    )
}

fn is_numeric_string(kid: &str) -> bool {
    !kid.is_empty() && kid.bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test]
async fn the_token_endpoint_issues_opaque_tokens_for_basic_credentials_and_openid() {
    let emulator = emulator().await;
    let response = token_request(
        &emulator,
        &[good_basic(), form()],
        "grant_type=client_credentials&scope=openid%20urn%3Azitadel%3Aiam%3Aorg%3Aproject%3Aid%3Azitadel%3Aaud",
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    let body = json(&response);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();
    assert!(token.len() >= 32, "{token}");
    assert!(!token.contains('.'), "opaque, not a JWT: {token}");
    assert_eq!(
        emulator.last_token_scope().as_deref(),
        Some("openid urn:zitadel:iam:org:project:id:zitadel:aud")
    );
    assert_eq!(
        (emulator.app_token_requests(), emulator.token_requests()),
        (1, 0)
    );

    // Two requests, two tokens.
    assert_ne!(app_service_token(&emulator).await, token);

    // `expires_in` follows the switch; leaving it out leaves the token opaque all the same.
    emulator.set_expires_in(None);
    let response = token_request(
        &emulator,
        &[good_basic(), form()],
        "grant_type=client_credentials&scope=openid",
    )
    .await;
    assert_eq!(json(&response).get("expires_in"), None);
}

#[tokio::test]
async fn opaque_tokens_are_accepted_by_the_api_until_revoked_or_expired() {
    let clock = Clock::manual(NOW_MS);
    let emulator = Emulator::start(
        EmulatorOptions {
            expires_in: Some(60),
            ..EmulatorOptions::default()
        },
        clock.clone(),
    )
    .await
    .unwrap();
    let url = format!("{}/erp/v1/orders", emulator.api_base_url());
    let bearer = (
        "authorization",
        format!("Bearer {}", app_service_token(&emulator).await),
    );
    let tenant = ("x-tenant-id", TENANT.to_owned());
    let response = send(Method::GET, &url, &[bearer.clone(), tenant.clone()], "").await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    assert_eq!(json(&response)["path"], "/erp/v1/orders");

    emulator.revoke_access_tokens();
    let response = send(Method::GET, &url, &[bearer, tenant.clone()], "").await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);

    let bearer = (
        "authorization",
        format!("Bearer {}", app_service_token(&emulator).await),
    );
    clock.advance(Duration::from_secs(60));
    let response = send(Method::GET, &url, &[bearer, tenant], "").await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn credentials_in_the_form_body_are_invalid_client_even_beside_good_basic() {
    let emulator = emulator().await;
    let options = EmulatorOptions::default();
    let in_body = format!(
        "grant_type=client_credentials&scope=openid&client_id={}&client_secret={}",
        options.client_id, options.client_secret
    );
    for headers in [vec![form()], vec![good_basic(), form()]] {
        let response = token_request(&emulator, &headers, &in_body).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
        let body = json(&response);
        assert_eq!(body["error"], "invalid_client");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("HTTP Basic")
        );
    }
    let only_id = format!(
        "grant_type=client_credentials&scope=openid&client_id={}",
        options.client_id
    );
    let response = token_request(&emulator, &[good_basic(), form()], &only_id).await;
    assert_eq!(json(&response)["error"], "invalid_client");
}

#[tokio::test]
async fn wrong_or_missing_basic_credentials_are_invalid_client() {
    let emulator = emulator().await;
    for headers in [
        vec![basic("emulated-client", "wrong"), form()],
        vec![basic("someone-else", "emulated-secret"), form()],
        vec![form()],
        vec![("authorization", "Bearer x".to_owned()), form()],
    ] {
        let response = token_request(
            &emulator,
            &headers,
            "grant_type=client_credentials&scope=openid",
        )
        .await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(json(&response)["error"], "invalid_client");
        assert!(response.headers.contains_key("www-authenticate"));
    }
    // A rotated secret is honoured.
    emulator.set_client_secret("rotated");
    let response = token_request(
        &emulator,
        &[basic("emulated-client", "rotated"), form()],
        "grant_type=client_credentials&scope=openid",
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
}

/// Zitadel decodes Basic credentials as RFC 6749 §2.3.1 says: each half form-urldecoded.
/// A secret holding `+ / % : =` works encoded, and the same secret sent raw is refused.
#[tokio::test]
async fn basic_credentials_are_form_urldecoded_so_a_raw_reserved_secret_is_invalid_client() {
    let emulator = emulator().await;
    let secret = "a+b/c%d:e=f";
    emulator.set_client_secret(secret);
    let body = "grant_type=client_credentials&scope=openid";
    let raw = token_request(
        &emulator,
        &[raw_basic("emulated-client", secret), form()],
        body,
    )
    .await;
    assert_eq!(raw.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&raw)["error"], "invalid_client");
    let encoded = token_request(&emulator, &[basic("emulated-client", secret), form()], body).await;
    assert_eq!(encoded.status, StatusCode::OK, "{:?}", encoded.body);
}

#[tokio::test]
async fn a_scope_without_openid_is_invalid_scope() {
    let emulator = emulator().await;
    for body in [
        "grant_type=client_credentials",
        "grant_type=client_credentials&scope=",
        "grant_type=client_credentials&scope=profile",
        "grant_type=client_credentials&scope=openidx",
        "grant_type=client_credentials&scope=OPENID",
    ] {
        let response = token_request(&emulator, &[good_basic(), form()], body).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(json(&response)["error"], "invalid_scope", "{body}");
    }
    let response = token_request(
        &emulator,
        &[good_basic(), form()],
        "grant_type=client_credentials&scope=profile+openid",
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    // Other grants are refused as the legacy endpoint refuses them.
    let response = token_request(
        &emulator,
        &[good_basic(), form()],
        "grant_type=password&scope=openid",
    )
    .await;
    assert_eq!(json(&response)["error"], "unsupported_grant_type");
    let response = send(Method::GET, &emulator.app_token_url(), &[], "").await;
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_key_set_is_public_cacheable_and_mixed_with_numeric_kids() {
    let emulator = emulator().await;
    let bogus = ("authorization", "Bearer made-up".to_owned());
    for headers in [vec![], vec![bogus]] {
        let response = send(Method::GET, &emulator.app_keys_url(), &headers, "").await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.headers["cache-control"], "max-age=300");
        assert_eq!(response.headers["content-type"], "application/json");
    }
    assert_eq!(emulator.app_keys_requests(), 2);
    assert_eq!(
        emulator.jwks_requests(),
        0,
        "the legacy key set counts apart"
    );

    let keys = keys(&emulator).await;
    assert_eq!(kids(&keys), [APP_KEY_ID, APP_EC_KEY_ID, APP_OKP_KEY_ID]);
    assert!(kids(&keys).iter().all(|kid| is_numeric_string(kid)));
    let rsa = &keys[0];
    assert_eq!(
        (&rsa["kty"], &rsa["use"], &rsa["alg"], &rsa["e"]),
        (
            &json!("RSA"),
            &json!("sig"),
            &json!("RS256"),
            &json!("AQAB")
        )
    );
    assert_eq!(b64(rsa["n"].as_str().unwrap()).len() * 8, 2048);
    let ec = &keys[1];
    assert_eq!(
        (&ec["kty"], &ec["crv"], &ec["alg"]),
        (&json!("EC"), &json!("P-256"), &json!("ES256"))
    );
    assert_eq!(b64(ec["x"].as_str().unwrap()).len(), 32);
    assert_eq!(b64(ec["y"].as_str().unwrap()).len(), 32);
    let okp = &keys[2];
    assert_eq!(
        (&okp["kty"], &okp["crv"], &okp["alg"]),
        (&json!("OKP"), &json!("Ed25519"), &json!("EdDSA"))
    );
    assert_eq!(b64(okp["x"].as_str().unwrap()).len(), 32);
    assert_eq!(emulator.app_keys(), json!({ "keys": keys }));
}

#[tokio::test]
async fn failure_switches_apply_to_the_zitadel_endpoints_only() {
    let emulator = emulator().await;
    emulator.set_app_keys_failure(Failure::StatusRetryAfter(503, 7));
    let response = send(Method::GET, &emulator.app_keys_url(), &[], "").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers["retry-after"], "7");
    emulator.set_app_keys_failure(Failure::Oversize);
    let oversize = try_send(Method::GET, &emulator.app_keys_url(), &[], "").await;
    assert!(matches!(oversize, Err(CallError::TooLarge)), "{oversize:?}");
    emulator.set_app_keys_failure(Failure::None);
    assert_eq!(keys(&emulator).await.len(), 3);
    assert_eq!(emulator.app_keys_requests(), 3);

    emulator.set_app_token_failure(Failure::Status(500));
    let response = token_request(
        &emulator,
        &[good_basic(), form()],
        "grant_type=client_credentials&scope=openid",
    )
    .await;
    assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
    emulator.set_discovery_failure(Failure::Status(404));
    let response = send(Method::GET, &emulator.discovery_url(), &[], "").await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(emulator.discovery_requests(), 1);

    // The legacy token endpoint is unaffected.
    let response = send(
        Method::POST,
        &emulator.token_url(),
        &[good_basic(), form()],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn the_discovery_document_names_the_issuer_keys_and_token_endpoint() {
    let emulator = emulator().await;
    assert_eq!(emulator.issuer(), emulator.base_url());
    let response = send(Method::GET, &emulator.discovery_url(), &[], "").await;
    assert_eq!(response.status, StatusCode::OK);
    let document = json(&response);
    let base = emulator.base_url();
    assert_eq!(document["issuer"], base);
    assert_eq!(document["jwks_uri"], format!("{base}/oauth/v2/keys"));
    assert_eq!(document["token_endpoint"], format!("{base}/oauth/v2/token"));
    assert_eq!(document["jwks_uri"], emulator.app_keys_url());
    assert_eq!(document["token_endpoint"], emulator.app_token_url());
    assert!(
        document["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("client_credentials"))
    );
    assert_eq!(document, emulator.discovery_document());

    let mut wrong = emulator.discovery_document();
    wrong["issuer"] = json!("https://id.example.com");
    emulator.set_discovery_document(Some(wrong));
    let response = send(Method::GET, &emulator.discovery_url(), &[], "").await;
    assert_eq!(json(&response)["issuer"], "https://id.example.com");
    emulator.set_discovery_document(None);
    let response = send(Method::GET, &emulator.discovery_url(), &[], "").await;
    assert_eq!(json(&response)["issuer"], base);
}

#[tokio::test]
async fn a_minted_app_token_verifies_with_ring_against_the_published_key() {
    let emulator = emulator().await;
    let token = emulator
        .mint_app_token_for(TENANT, DEV_APP_USER_ID, Duration::from_secs(600))
        .unwrap();
    let (header, claims) = verify_rs256(&token, &keys(&emulator).await, APP_KEY_ID);
    assert_eq!(
        header,
        json!({"alg": "RS256", "typ": "JWT", "kid": APP_KEY_ID})
    );
    let now = NOW_MS / 1000;
    assert_eq!(
        claims,
        json!({
            "iss": emulator.base_url(),
            "sub": DEV_APP_USER_ID,
            "aud": [DEV_APP_ID],
            "urn:jtl:tenant_id": TENANT,
            "urn:jtl:app_id": DEV_APP_ID,
            "iat": now,
            "exp": now + 600,
        })
    );
    assert_eq!(emulator.default_app_kid().as_deref(), Some(APP_KEY_ID));

    // Explicit claims: a string audience, no app id.
    let claims = emulator.app_token_claims(
        TENANT,
        "42",
        &json!("other-app"),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(claims["aud"], "other-app");
    assert_eq!(claims.get("urn:jtl:app_id"), None);
    let token = emulator.mint_app_token(&claims, APP_KEY_ID).unwrap();
    let (_, verified) = verify_rs256(&token, &keys(&emulator).await, APP_KEY_ID);
    assert_eq!(verified, claims);

    // Keys that cannot sign, and kids nobody has, mint nothing.
    for kid in [APP_EC_KEY_ID, APP_OKP_KEY_ID, "1"] {
        assert!(emulator.mint_app_token(&claims, kid).is_none(), "{kid}");
    }
}

#[tokio::test]
async fn any_header_can_be_signed_by_an_rsa_key() {
    let emulator = emulator().await;
    let claims = emulator.app_token_claims(
        TENANT,
        "42",
        &json!(DEV_APP_ID),
        None,
        Duration::from_secs(60),
    );
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": APP_EC_KEY_ID});
    let token = emulator
        .mint_app_token_with_header(&header, &claims, APP_KEY_ID)
        .unwrap();
    let (signed_header, _) = verify_rs256(&token, &keys(&emulator).await, APP_KEY_ID);
    assert_eq!(signed_header, header);
}

#[tokio::test]
async fn the_mint_endpoint_answers_app_tokens_one_per_line() {
    let emulator = emulator().await;
    let url = format!(
        "{}/_emulator/app-token?tenantId={TENANT}&sub=99&aud=a1&aud=a2&lifetime_s=120&count=3",
        emulator.base_url()
    );
    let response = send(Method::GET, &url, &[], "").await;
    assert_eq!(response.status, StatusCode::OK);
    let text = String::from_utf8(response.body.to_vec()).unwrap();
    let tokens: Vec<&str> = text.lines().collect();
    assert_eq!(tokens.len(), 3);
    assert!(tokens[0] != tokens[1] && tokens[1] != tokens[2]);
    let published = keys(&emulator).await;
    for token in &tokens {
        let (_, claims) = verify_rs256(token, &published, APP_KEY_ID);
        assert_eq!(claims["sub"], "99");
        assert_eq!(claims["aud"], json!(["a1", "a2"]));
        assert_eq!(claims["urn:jtl:app_id"], "a1");
        assert_eq!(claims["urn:jtl:tenant_id"], TENANT);
        assert_eq!(claims["exp"], NOW_MS / 1000 + 120);
    }

    // The defaults, and an empty appId leaves the claim out.
    let url = format!("{}/_emulator/app-token?appId=", emulator.base_url());
    let response = send(Method::GET, &url, &[], "").await;
    let text = String::from_utf8(response.body.to_vec()).unwrap();
    let (_, claims) = verify_rs256(text.trim(), &published, APP_KEY_ID);
    assert_eq!(claims["sub"], DEV_APP_USER_ID);
    assert_eq!(claims["aud"], json!([DEV_APP_ID]));
    assert_eq!(claims["urn:jtl:tenant_id"], DEV_TENANT_ID);
    assert_eq!(claims.get("urn:jtl:app_id"), None);

    // A kid that cannot sign.
    let url = format!(
        "{}/_emulator/app-token?kid={APP_EC_KEY_ID}",
        emulator.base_url()
    );
    assert_eq!(
        send(Method::GET, &url, &[], "").await.status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn rotation_and_removal_show_in_the_key_set() {
    let emulator = emulator().await;
    let first_n = keys(&emulator).await[0]["n"].clone();

    emulator.add_app_key("312909097518500002");
    let published = keys(&emulator).await;
    assert_eq!(
        kids(&published),
        [
            APP_KEY_ID,
            APP_EC_KEY_ID,
            APP_OKP_KEY_ID,
            "312909097518500002"
        ]
    );
    assert_ne!(published[3]["n"], first_n, "a different key");
    let claims = emulator.app_token_claims(
        TENANT,
        "42",
        &json!(DEV_APP_ID),
        None,
        Duration::from_secs(60),
    );
    let token = emulator
        .mint_app_token(&claims, "312909097518500002")
        .unwrap();
    verify_rs256(&token, &published, "312909097518500002");

    emulator.remove_app_key(APP_KEY_ID);
    assert_eq!(
        kids(&keys(&emulator).await),
        [APP_EC_KEY_ID, APP_OKP_KEY_ID, "312909097518500002"]
    );
    assert!(emulator.mint_app_token(&claims, APP_KEY_ID).is_none());
    assert_eq!(
        emulator.default_app_kid().as_deref(),
        Some("312909097518500002")
    );

    // Withdrawn but kept for minting: a token signed by a key Zitadel does not publish.
    emulator.set_app_key_published("312909097518500002", false);
    assert_eq!(
        kids(&keys(&emulator).await),
        [APP_EC_KEY_ID, APP_OKP_KEY_ID]
    );
    assert!(
        emulator
            .mint_app_token(&claims, "312909097518500002")
            .is_some()
    );
    emulator.set_app_key_published("312909097518500002", true);
    emulator.remove_app_key(APP_EC_KEY_ID);
    emulator.remove_app_key(APP_OKP_KEY_ID);
    assert_eq!(kids(&keys(&emulator).await), ["312909097518500002"]);

    // The third fixed key, then the first again under a new kid.
    emulator.add_app_key("3");
    emulator.add_app_key("4");
    let published = keys(&emulator).await;
    assert_eq!(kids(&published), ["312909097518500002", "3", "4"]);
    assert_ne!(published[1]["n"], published[0]["n"]);
    assert_eq!(published[2]["n"], first_n);
}

#[tokio::test]
async fn the_small_key_is_published_but_cannot_sign_and_the_4096_bit_key_signs() {
    let emulator = emulator().await;
    emulator.publish_small_rsa_key("1024");
    emulator.publish_rsa4096_key("4096");
    let published = keys(&emulator).await;
    let small = published.iter().find(|key| key["kid"] == "1024").unwrap();
    assert_eq!(
        (&small["kty"], &small["alg"], &small["e"]),
        (&json!("RSA"), &json!("RS256"), &json!("AQAB"))
    );
    assert_eq!(b64(small["n"].as_str().unwrap()).len() * 8, 1024);
    let claims = emulator.app_token_claims(
        TENANT,
        "42",
        &json!(DEV_APP_ID),
        None,
        Duration::from_secs(60),
    );
    assert!(emulator.mint_app_token(&claims, "1024").is_none());

    let large = published.iter().find(|key| key["kid"] == "4096").unwrap();
    assert_eq!(b64(large["n"].as_str().unwrap()).len() * 8, 4096);
    let token = emulator.mint_app_token(&claims, "4096").unwrap();
    verify_rs256(&token, &published, "4096");

    // Any JWK can be published as it is, and removed by its kid.
    emulator
        .publish_app_jwk(json!({"kty": "RSA", "use": "enc", "kid": "5", "n": "AQAB", "e": "AQAB"}));
    assert_eq!(keys(&emulator).await.last().unwrap()["use"], "enc");
    emulator.remove_app_key("5");
    assert_eq!(kids(&keys(&emulator).await).last().unwrap(), "4096");
}

#[tokio::test]
async fn the_legacy_flow_lives_on_beside_zitadel() {
    let emulator = emulator().await;
    let response = send(
        Method::POST,
        &emulator.token_url(),
        &[good_basic(), form()],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "no openid needed there");
    let legacy = json(&response)["access_token"].as_str().unwrap().to_owned();
    assert_eq!(legacy.split('.').count(), 3, "still a JWT");
    let response = send(
        Method::GET,
        &emulator.jwks_url(),
        &[("authorization", format!("Bearer {legacy}"))],
        "",
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(json(&response)["keys"][0]["alg"], "EdDSA");
    assert!(
        emulator
            .mint_session_token(TENANT, DEV_APP_USER_ID, "acme", Duration::from_secs(60))
            .is_some()
    );
    assert_eq!(emulator.token_requests(), 1);
    assert_eq!(emulator.app_token_requests(), 0);
}

/// The sidecar's own key-set parser and verifier take what the emulator publishes and
/// mints: the RSA keys are kept, the EC, OKP and 1024-bit keys skipped, and a minted app
/// token verifies for the emulator's issuer and the dev app id.
#[tokio::test]
async fn the_sidecars_verifier_accepts_the_emulators_keys_and_app_tokens() {
    use jtl_auth_sidecar::jose::{JwkSet, KeyKind, TokenKind, TokenPolicy};
    use jtl_auth_sidecar::verify::verify_with_keys;

    let emulator = emulator().await;
    emulator.publish_small_rsa_key("1024");
    let response = send(Method::GET, &emulator.app_keys_url(), &[], "").await;
    let (set, skipped) = JwkSet::from_json_of(&response.body, KeyKind::Rsa).unwrap();
    assert_eq!(set.len(), 1);
    let mut skipped_kids: Vec<String> = skipped.into_iter().filter_map(|s| s.kid).collect();
    skipped_kids.sort();
    assert_eq!(skipped_kids, ["1024", APP_EC_KEY_ID, APP_OKP_KEY_ID]);

    let token = emulator
        .mint_app_token_for(TENANT, DEV_APP_USER_ID, Duration::from_secs(60))
        .unwrap();
    let policy = TokenPolicy {
        kind: TokenKind::AppToken,
        issuer: Some(emulator.issuer()),
        audience: vec![DEV_APP_ID.into()],
        ..TokenPolicy::default()
    };
    let verified = verify_with_keys(&token, &set, &policy, NOW_MS / 1000).unwrap();
    assert_eq!(verified.session().tenant_id.to_string(), TENANT);
    assert_eq!(verified.session().user_id, DEV_APP_USER_ID);
    assert_eq!(verified.session().tenant_slug, None);
}
