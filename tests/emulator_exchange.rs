//! The emulator as JTL's account service for token exchange: on-behalf-of-user and
//! delegated tokens, rotating refresh tokens, JTL's refusals, the answer's spellings, and
//! the API echo accepting an exchanged token and saying who acted. Real HTTP throughout.

mod common;

use common::calls::{json, send};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Method, StatusCode};
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::emulator::{
    DEFAULT_EXCHANGED_TOKEN_LIFETIME_S, EXCHANGE_KEY_ID, Emulator, EmulatorOptions, ExchangeKind,
    ExchangeSpelling, Failure, service_user_id,
};
use jtl_auth_sidecar::jtl::client_auth::basic_authorization;
use jtl_auth_sidecar::jtl::http::Response;
use serde_json::{Value, json};

const START_MS: i64 = 1_790_000_000_000;
const TENANT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const OTHER_TENANT: &str = "1d2c3b4a-5f6e-4a7b-8c9d-0e1f2a3b4c5d";
const USER: &str = "0a1b2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d";

struct Jtl {
    emulator: Emulator,
    clock: Clock,
    app_token: String,
}

async fn jtl() -> Jtl {
    let clock = Clock::manual(START_MS);
    let emulator = Emulator::start(EmulatorOptions::default(), clock.clone())
        .await
        .unwrap();
    let options = EmulatorOptions::default();
    let response = send(
        Method::POST,
        &emulator.token_url(),
        &[
            (
                "authorization",
                basic_authorization(&options.client_id, &options.client_secret),
            ),
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
        ],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    let app_token = json(&response)["access_token"].as_str().unwrap().to_owned();
    Jtl {
        emulator,
        clock,
        app_token,
    }
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

const JSON: (&str, &str) = ("content-type", "application/json");

impl Jtl {
    /// POSTs `body` as JSON to `url` with the app's token.
    async fn post(&self, url: &str, body: &Value) -> Response {
        send(
            Method::POST,
            url,
            &[bearer(&self.app_token), (JSON.0, JSON.1.into())],
            &body.to_string(),
        )
        .await
    }

    async fn mint_user(&self, tenant_id: &str, user_id: &str) -> Response {
        let url = self.emulator.exchange_url(ExchangeKind::User);
        self.post(&url, &json!({"userId": user_id, "tenantId": tenant_id}))
            .await
    }

    async fn mint_tenant(&self, tenant_id: &str) -> Response {
        let url = self.emulator.exchange_url(ExchangeKind::Tenant);
        self.post(&url, &json!({"tenantId": tenant_id})).await
    }

    async fn refresh(&self, kind: ExchangeKind, refresh_token: &str) -> Response {
        let url = self.emulator.exchange_refresh_url(kind);
        self.post(&url, &json!({"refreshToken": refresh_token}))
            .await
    }

    async fn echo(&self, token: &str) -> Response {
        let url = format!("{}/erp/v1/orders", self.emulator.api_base_url());
        send(Method::GET, &url, &[bearer(token)], "").await
    }
}

/// The (unverified) claims of a JWT.
fn claims(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

fn header(jwt: &str) -> Value {
    let first = jwt.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(first).unwrap()).unwrap()
}

fn field<'v>(body: &'v Value, name: &str) -> &'v str {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

fn assert_error(response: &Response, status: StatusCode, error: &str) {
    assert_eq!(
        response.status,
        status,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let body = json(response);
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}

#[tokio::test]
async fn user_exchange_answers_a_jwt_for_the_user_on_the_emulators_clock() {
    let jtl = jtl().await;
    let response = jtl.mint_user(TENANT, USER).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.headers["content-type"], "application/json");
    let body = json(&response);
    let access = field(&body, "accessToken");
    assert!(!field(&body, "refreshToken").is_empty());
    assert_eq!(body["expiresIn"], DEFAULT_EXCHANGED_TOKEN_LIFETIME_S);
    assert_eq!(header(access)["alg"], "RS256");
    assert_eq!(header(access)["kid"], EXCHANGE_KEY_ID);
    let claims = claims(access);
    let now_s = START_MS / 1000;
    assert_eq!(claims["iat"], now_s);
    assert_eq!(
        claims["exp"],
        now_s + i64::try_from(DEFAULT_EXCHANGED_TOKEN_LIFETIME_S).unwrap()
    );
    assert_eq!(claims["sub"], USER);
    assert_eq!(claims["userId"], USER);
    assert_eq!(claims["tenantId"], TENANT);
    assert_eq!(claims["kind"], "user");
    assert_eq!(claims["act"]["sub"], EmulatorOptions::default().client_id);
    assert_eq!(jtl.emulator.exchange_calls(ExchangeKind::User), 1);
    assert_eq!(jtl.emulator.exchange_calls(ExchangeKind::Tenant), 0);
    assert_eq!(
        jtl.emulator.last_exchange_body(),
        Some(json!({"userId": USER, "tenantId": TENANT}))
    );
}

#[tokio::test]
async fn delegated_exchange_names_the_installations_service_identity() {
    let jtl = jtl().await;
    jtl.emulator.set_exchanged_token_lifetime(90);
    let response = jtl.mint_tenant(TENANT).await;
    assert_eq!(response.status, StatusCode::OK);
    let body = json(&response);
    assert_eq!(body["expiresIn"], 90);
    let claims = claims(field(&body, "accessToken"));
    assert_eq!(claims["sub"], service_user_id(TENANT));
    assert_eq!(claims["tenantId"], TENANT);
    assert_eq!(claims["kind"], "tenant");
    assert!(claims.get("userId").is_none());
    assert_eq!(claims["exp"], START_MS / 1000 + 90);
    assert_ne!(service_user_id(TENANT), service_user_id(OTHER_TENANT));
    assert_eq!(jtl.emulator.exchange_calls(ExchangeKind::Tenant), 1);
    assert_eq!(jtl.emulator.exchange_calls(ExchangeKind::User), 0);
}

#[tokio::test]
async fn exchange_endpoints_demand_the_apps_bearer_like_the_api() {
    let jtl = jtl().await;
    let exchanged = json(&jtl.mint_tenant(TENANT).await)["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"tenantId": TENANT}).to_string();
    let url = jtl.emulator.exchange_url(ExchangeKind::Tenant);
    let refresh_url = jtl.emulator.exchange_refresh_url(ExchangeKind::User);
    for (url, headers) in [
        (&url, vec![(JSON.0, JSON.1.to_owned())]),
        (&url, vec![bearer("not-a-token"), (JSON.0, JSON.1.into())]),
        // An exchanged token does not exchange.
        (&url, vec![bearer(&exchanged), (JSON.0, JSON.1.into())]),
        (&refresh_url, vec![(JSON.0, JSON.1.to_owned())]),
    ] {
        let response = send(Method::POST, url, &headers, &body).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "invalid_token");
        assert_eq!(
            response.headers["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }
    assert_eq!(jtl.emulator.exchange_calls(ExchangeKind::Tenant), 4);
    assert_eq!(jtl.emulator.refresh_calls(ExchangeKind::User), 1);
    // The app's token is refused once revoked, as at the API.
    jtl.emulator.revoke_access_tokens();
    let response = jtl.mint_tenant(TENANT).await;
    assert_error(&response, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn refresh_rotates_both_tokens_and_refuses_a_refresh_token_used_twice() {
    let jtl = jtl().await;
    for kind in [ExchangeKind::User, ExchangeKind::Tenant] {
        let first = match kind {
            ExchangeKind::User => json(&jtl.mint_user(TENANT, USER).await),
            ExchangeKind::Tenant => json(&jtl.mint_tenant(TENANT).await),
        };
        jtl.clock.advance(Duration::from_secs(30));
        let response = jtl.refresh(kind, field(&first, "refreshToken")).await;
        assert_eq!(response.status, StatusCode::OK);
        let second = json(&response);
        assert_ne!(field(&second, "accessToken"), field(&first, "accessToken"));
        assert_ne!(
            field(&second, "refreshToken"),
            field(&first, "refreshToken")
        );
        let refreshed = claims(field(&second, "accessToken"));
        assert_eq!(refreshed["iat"], jtl.clock.now_s());
        assert_ne!(jtl.clock.now_s(), START_MS / 1000);
        assert_eq!(refreshed["tenantId"], TENANT);
        assert_eq!(refreshed["kind"], kind.as_str());
        assert_eq!(
            jtl.emulator.last_exchange_body(),
            Some(json!({"refreshToken": field(&first, "refreshToken")}))
        );

        let reuses = jtl.emulator.refresh_token_reuses();
        let again = jtl.refresh(kind, field(&first, "refreshToken")).await;
        assert_error(&again, StatusCode::BAD_REQUEST, "invalid_grant");
        assert_eq!(jtl.emulator.refresh_token_reuses(), reuses + 1);

        // The rotated-in token works, once.
        let third = jtl.refresh(kind, field(&second, "refreshToken")).await;
        assert_eq!(third.status, StatusCode::OK);
        jtl.clock.advance(Duration::from_secs(30));
    }
    assert_eq!(jtl.emulator.refresh_calls(ExchangeKind::User), 3);
    assert_eq!(jtl.emulator.refresh_calls(ExchangeKind::Tenant), 3);
    assert_eq!(jtl.emulator.refresh_token_reuses(), 2);
}

#[tokio::test]
async fn unknown_or_other_kind_refresh_tokens_are_invalid_grant_but_no_reuse() {
    let jtl = jtl().await;
    let user = json(&jtl.mint_user(TENANT, USER).await);
    let refresh_token = field(&user, "refreshToken");
    let wrong_kind = jtl.refresh(ExchangeKind::Tenant, refresh_token).await;
    assert_error(&wrong_kind, StatusCode::BAD_REQUEST, "invalid_grant");
    let unknown = jtl.refresh(ExchangeKind::User, "never-issued").await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, "invalid_grant");
    // An access token is no refresh token.
    let access = jtl
        .refresh(ExchangeKind::User, field(&user, "accessToken"))
        .await;
    assert_error(&access, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(jtl.emulator.refresh_token_reuses(), 0);
    // Presented at the wrong endpoint, the token was not used up.
    let right = jtl.refresh(ExchangeKind::User, refresh_token).await;
    assert_eq!(right.status, StatusCode::OK);
}

#[tokio::test]
async fn each_spelling_names_the_fields_it_promises() {
    let jtl = jtl().await;
    jtl.emulator.set_exchanged_token_lifetime(120);
    let exp = START_MS / 1000 + 120;
    let spellings = [
        (
            ExchangeSpelling::CamelCase,
            vec!["accessToken", "refreshToken", "expiresIn", "tokenType"],
        ),
        (
            ExchangeSpelling::SnakeCase,
            vec!["access_token", "refresh_token", "expires_in", "token_type"],
        ),
        (
            ExchangeSpelling::ExpiresAtRfc3339,
            vec!["accessToken", "refreshToken", "expiresAt"],
        ),
        (
            ExchangeSpelling::ExpiresAtEpoch,
            vec!["access_token", "refresh_token", "expires_at"],
        ),
        (
            ExchangeSpelling::NoLifetime,
            vec!["accessToken", "refreshToken"],
        ),
        (
            ExchangeSpelling::NoAccessToken,
            vec!["refreshToken", "expiresIn"],
        ),
    ];
    for (spelling, fields) in spellings {
        jtl.emulator.set_exchange_spelling(spelling);
        let minted = json(&jtl.mint_user(TENANT, USER).await);
        let mut keys: Vec<&str> = minted
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = fields.clone();
        want.sort_unstable();
        assert_eq!(keys, want, "{spelling:?}");
        let access = minted
            .get("accessToken")
            .or_else(|| minted.get("access_token"))
            .and_then(Value::as_str);
        if let Some(access) = access {
            assert_eq!(claims(access)["exp"], exp, "{spelling:?}");
        }
        match spelling {
            ExchangeSpelling::CamelCase | ExchangeSpelling::NoAccessToken => {
                assert_eq!(minted["expiresIn"], 120);
            }
            ExchangeSpelling::SnakeCase => assert_eq!(minted["expires_in"], 120),
            // 1_790_000_120 s after the epoch.
            ExchangeSpelling::ExpiresAtRfc3339 => {
                assert_eq!(minted["expiresAt"], "2026-09-21T14:15:20Z");
            }
            ExchangeSpelling::ExpiresAtEpoch => assert_eq!(minted["expires_at"], exp),
            ExchangeSpelling::NoLifetime => {}
        }
        // Refreshes are spelled the same way.
        let refresh_token = minted
            .get("refreshToken")
            .or_else(|| minted.get("refresh_token"))
            .and_then(Value::as_str)
            .unwrap();
        let refreshed = json(&jtl.refresh(ExchangeKind::User, refresh_token).await);
        let mut refreshed_keys: Vec<&str> = refreshed
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        refreshed_keys.sort_unstable();
        assert_eq!(refreshed_keys, want, "{spelling:?} refreshed");
    }
}

#[tokio::test]
async fn refusals_name_their_reason_and_end_the_grant_at_refresh() {
    let jtl = jtl().await;
    let before = json(&jtl.mint_user(TENANT, USER).await);

    jtl.emulator.set_app_installed(TENANT, false);
    assert_error(
        &jtl.mint_user(TENANT, USER).await,
        StatusCode::NOT_FOUND,
        "app_not_installed",
    );
    assert_error(
        &jtl.mint_tenant(TENANT).await,
        StatusCode::NOT_FOUND,
        "app_not_installed",
    );
    assert_eq!(jtl.mint_tenant(OTHER_TENANT).await.status, StatusCode::OK);
    // The grant is gone with the installation: its refresh token too.
    let refused = jtl
        .refresh(ExchangeKind::User, field(&before, "refreshToken"))
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "invalid_grant");
    jtl.emulator.set_app_installed(TENANT, true);
    let dead = jtl
        .refresh(ExchangeKind::User, field(&before, "refreshToken"))
        .await;
    assert_error(&dead, StatusCode::BAD_REQUEST, "invalid_grant");

    jtl.emulator
        .set_exchange_capability(ExchangeKind::User, false);
    assert_error(
        &jtl.mint_user(TENANT, USER).await,
        StatusCode::FORBIDDEN,
        "capability_not_enabled",
    );
    assert_eq!(jtl.mint_tenant(TENANT).await.status, StatusCode::OK);
    jtl.emulator
        .set_exchange_capability(ExchangeKind::User, true);
    jtl.emulator
        .set_exchange_capability(ExchangeKind::Tenant, false);
    assert_error(
        &jtl.mint_tenant(TENANT).await,
        StatusCode::FORBIDDEN,
        "capability_not_enabled",
    );
    jtl.emulator
        .set_exchange_capability(ExchangeKind::Tenant, true);

    jtl.emulator.set_user_member(TENANT, USER, false);
    assert_error(
        &jtl.mint_user(TENANT, USER).await,
        StatusCode::FORBIDDEN,
        "user_not_member",
    );
    // Membership is per tenant, and a delegated token has no user.
    assert_eq!(
        jtl.mint_user(OTHER_TENANT, USER).await.status,
        StatusCode::OK
    );
    assert_eq!(jtl.mint_tenant(TENANT).await.status, StatusCode::OK);
    jtl.emulator.set_user_member(TENANT, USER, true);
    assert_eq!(jtl.mint_user(TENANT, USER).await.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_requests_are_refused_like_jtl() {
    let jtl = jtl().await;
    let user_url = jtl.emulator.exchange_url(ExchangeKind::User);
    let tenant_url = jtl.emulator.exchange_url(ExchangeKind::Tenant);
    let refresh_url = jtl.emulator.exchange_refresh_url(ExchangeKind::Tenant);
    for (url, body) in [
        (&tenant_url, "not json".to_owned()),
        (&tenant_url, "[]".to_owned()),
        (&tenant_url, "{}".to_owned()),
        (&tenant_url, json!({"tenantId": 7}).to_string()),
        (&tenant_url, json!({"tenantId": "demo-shop"}).to_string()),
        (
            &tenant_url,
            json!({"tenantId": TENANT.replace('-', "")}).to_string(),
        ),
        (&user_url, json!({"tenantId": TENANT}).to_string()),
        (
            &user_url,
            json!({"tenantId": TENANT, "userId": ""}).to_string(),
        ),
        (
            &user_url,
            json!({"tenantId": TENANT, "userId": 42}).to_string(),
        ),
        (
            &user_url,
            json!({"tenantId": null, "userId": USER}).to_string(),
        ),
        (&refresh_url, "{}".to_owned()),
        (&refresh_url, json!({"refreshToken": ["x"]}).to_string()),
    ] {
        let response = send(
            Method::POST,
            url,
            &[bearer(&jtl.app_token), (JSON.0, JSON.1.into())],
            &body,
        )
        .await;
        assert_error(&response, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let form = send(
        Method::POST,
        &tenant_url,
        &[
            bearer(&jtl.app_token),
            ("content-type", "application/x-www-form-urlencoded".into()),
        ],
        &format!("tenantId={TENANT}"),
    )
    .await;
    assert_error(&form, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request");
    let charset = send(
        Method::POST,
        &tenant_url,
        &[
            bearer(&jtl.app_token),
            ("content-type", "application/json; charset=utf-8".into()),
        ],
        &json!({"tenantId": TENANT}).to_string(),
    )
    .await;
    assert_eq!(charset.status, StatusCode::OK);
    let get = send(Method::GET, &tenant_url, &[bearer(&jtl.app_token)], "").await;
    assert_error(&get, StatusCode::METHOD_NOT_ALLOWED, "invalid_request");
    assert_eq!(jtl.emulator.live_exchanged_tokens(), 1);
}

#[tokio::test]
async fn the_failure_switch_applies_to_all_four_endpoints() {
    let jtl = jtl().await;
    let minted = json(&jtl.mint_tenant(TENANT).await);
    jtl.emulator.set_exchange_failure(Failure::Status(503));
    assert_eq!(jtl.mint_user(TENANT, USER).await.status, 503);
    assert_eq!(jtl.mint_tenant(TENANT).await.status, 503);
    let refresh = jtl
        .refresh(ExchangeKind::Tenant, field(&minted, "refreshToken"))
        .await;
    assert_eq!(refresh.status, 503);
    // Checked before the bearer.
    let url = jtl.emulator.exchange_refresh_url(ExchangeKind::User);
    assert_eq!(send(Method::POST, &url, &[], "").await.status, 503);

    jtl.emulator.set_exchange_failure(Failure::Garbage);
    let garbage = jtl.mint_tenant(TENANT).await;
    assert_eq!(garbage.status, StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&garbage.body).is_err());
    jtl.emulator.set_exchange_failure(Failure::Empty);
    assert!(jtl.mint_tenant(TENANT).await.body.is_empty());
    jtl.emulator.set_exchange_failure(Failure::MissingField);
    let missing = json(&jtl.mint_tenant(TENANT).await);
    assert!(missing.get("accessToken").is_none() && missing.get("access_token").is_none());

    // The refresh token was never looked at while failing: it still rotates.
    jtl.emulator.set_exchange_failure(Failure::None);
    let refresh = jtl
        .refresh(ExchangeKind::Tenant, field(&minted, "refreshToken"))
        .await;
    assert_eq!(refresh.status, StatusCode::OK);
    assert_eq!(jtl.emulator.exchange_calls(ExchangeKind::Tenant), 5);
    assert_eq!(jtl.emulator.exchange_calls(ExchangeKind::User), 1);
    assert_eq!(jtl.emulator.refresh_calls(ExchangeKind::Tenant), 2);
    assert_eq!(jtl.emulator.refresh_calls(ExchangeKind::User), 1);
    assert_eq!(jtl.emulator.refresh_token_reuses(), 0);
}

#[tokio::test]
async fn the_api_echo_accepts_exchanged_tokens_and_says_who_acted() {
    let jtl = jtl().await;
    let app = jtl.echo(&jtl.app_token).await;
    assert_eq!(app.status, StatusCode::OK);
    assert_eq!(json(&app)["acting"], json!({"kind": "app"}));

    let user = json(&jtl.mint_user(TENANT, USER).await);
    let echoed = jtl.echo(field(&user, "accessToken")).await;
    assert_eq!(echoed.status, StatusCode::OK);
    assert_eq!(
        json(&echoed)["acting"],
        json!({"kind": "user", "user_id": USER, "tenant_id": TENANT})
    );

    let tenant = json(&jtl.mint_tenant(OTHER_TENANT).await);
    let echoed = jtl.echo(field(&tenant, "accessToken")).await;
    assert_eq!(echoed.status, StatusCode::OK);
    assert_eq!(
        json(&echoed)["acting"],
        json!({"kind": "tenant", "tenant_id": OTHER_TENANT})
    );
    // A refresh token is no bearer token.
    let refused = jtl.echo(field(&tenant, "refreshToken")).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "invalid_token");
    // The legacy key set still wants the app's own token.
    let jwks = send(
        Method::GET,
        &jtl.emulator.jwks_url(),
        &[bearer(field(&user, "accessToken"))],
        "",
    )
    .await;
    assert_eq!(jwks.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn exchanged_tokens_expire_on_the_emulators_clock() {
    let jtl = jtl().await;
    jtl.emulator.set_exchanged_token_lifetime(60);
    let minted = json(&jtl.mint_user(TENANT, USER).await);
    let access = field(&minted, "accessToken");
    jtl.clock.advance(Duration::from_secs(59));
    assert_eq!(jtl.echo(access).await.status, StatusCode::OK);
    assert_eq!(jtl.emulator.live_exchanged_tokens(), 1);
    jtl.clock.advance(Duration::from_secs(1));
    assert_error(
        &jtl.echo(access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_eq!(jtl.emulator.live_exchanged_tokens(), 0);
    // The refresh token outlives its access token.
    let refreshed = json(
        &jtl.refresh(ExchangeKind::User, field(&minted, "refreshToken"))
            .await,
    );
    assert_eq!(
        jtl.echo(field(&refreshed, "accessToken")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revoked_exchanged_tokens_are_refused_but_their_refresh_tokens_work() {
    let jtl = jtl().await;
    let user = json(&jtl.mint_user(TENANT, USER).await);
    let tenant = json(&jtl.mint_tenant(TENANT).await);
    jtl.emulator.revoke_exchanged_tokens();
    for minted in [&user, &tenant] {
        assert_error(
            &jtl.echo(field(minted, "accessToken")).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );
    }
    // The app's own token is not an exchanged one.
    assert_eq!(jtl.echo(&jtl.app_token).await.status, StatusCode::OK);
    let refreshed = json(
        &jtl.refresh(ExchangeKind::Tenant, field(&tenant, "refreshToken"))
            .await,
    );
    let echoed = jtl.echo(field(&refreshed, "accessToken")).await;
    assert_eq!(echoed.status, StatusCode::OK);
    assert_eq!(json(&echoed)["acting"]["kind"], "tenant");
    assert_eq!(jtl.emulator.refresh_token_reuses(), 0);
}

#[tokio::test]
async fn a_refresh_token_sent_twice_at_once_rotates_once_and_counts_one_reuse() {
    let jtl = jtl().await;
    let minted = json(&jtl.mint_tenant(TENANT).await);
    let refresh_token = field(&minted, "refreshToken");
    let (a, b) = tokio::join!(
        jtl.refresh(ExchangeKind::Tenant, refresh_token),
        jtl.refresh(ExchangeKind::Tenant, refresh_token),
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400]);
    assert_eq!(jtl.emulator.refresh_token_reuses(), 1);
    assert_eq!(jtl.emulator.refresh_calls(ExchangeKind::Tenant), 2);
}
