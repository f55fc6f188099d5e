//! A faithful local JTL for `dev` mode and the tests: a real HTTP(S) server on an
//! ephemeral port with JTL's token endpoint (HTTP Basic auth decoded as RFC 6749 §2.3.1
//! says, `invalid_client`,
//! `unsupported_grant_type`), the authenticated JWKS endpoint (401 without a valid
//! bearer), key rotation, an API echo, and minting of session tokens. Switches make each
//! endpoint fail or slow down; counters tell how often each was called.
//!
//! The same server is also JTL's Zitadel for the app-token flow (SPEC §11): its token
//! endpoint, public key set, discovery document and app-token minting are in
//! `src/emulator/zitadel.rs` ([`APP_TOKEN_PATH`], [`Emulator::mint_app_token`], ...).
//!
//! It is also JTL's account service for token exchange, under the API base
//! URL: `POST /account/identity/act-as-user-token` (`{"userId", "tenantId"}`) and
//! `POST /account/identity/delegated-token` (`{"tenantId"}`) answer an access token (an
//! RS256 JWT), a refresh token and a lifetime, spelled as [`Emulator::set_exchange_spelling`]
//! says; `…/refresh` (`{"refreshToken"}`) rotates both, and a refresh token presented twice
//! is `400 invalid_grant` and counted ([`Emulator::refresh_token_reuses`]). The app's
//! bearer token is required (401 like the API). Switches refuse as JTL does (app not
//! installed 404, capability not enabled 403, user not a member 403) or fail
//! ([`Emulator::set_exchange_failure`]). The API echo accepts a live exchanged token and
//! reports who acted under `"acting"`. See `src/emulator/exchange.rs`.

mod app_keys;
mod bearer;
mod describe;
mod exchange;
mod exchange_routes;
mod rate_limit;
mod reply;
mod routes;
mod server;
mod zitadel;

pub use describe::describe_request;
pub use exchange::{
    ACT_AS_USER_PATH, ACT_AS_USER_REFRESH_PATH, DEFAULT_EXCHANGED_TOKEN_LIFETIME_S, DELEGATED_PATH,
    DELEGATED_REFRESH_PATH, EXCHANGE_KEY_ID, ExchangeKind, ExchangeSpelling, service_user_id,
};
pub use zitadel::{
    APP_EC_KEY_ID, APP_KEY_ID, APP_KEYS_PATH, APP_OKP_KEY_ID, APP_TOKEN_MINT_PATH, APP_TOKEN_PATH,
    DEV_APP_ID, DEV_APP_USER_ID, DISCOVERY_PATH,
};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::jose::base64url_encode;

pub use server::EmulatorError;

/// Path of the token endpoint on the emulator (JTL: `https://auth.jtl-cloud.com/oauth2/token`).
pub const TOKEN_PATH: &str = "/oauth2/token";
/// Path of the emulator's own minting endpoint (no JTL counterpart): `GET` with the
/// query parameters `tenantId`, `userId`, `tenantSlug`, `lifetime_s` (3600) and `count`
/// (1) answers fresh session tokens, one per line.
pub const MINT_PATH: &str = "/_emulator/session-token";
/// Path of the key set (JTL: `{api_base}/account/.well-known/jwks.json`).
pub const JWKS_PATH: &str = "/account/.well-known/jwks.json";

/// The identity `dev` mints tokens for when none is asked for.
pub const DEV_TENANT_ID: &str = "4f6a3e2c-1b7d-4c9e-8a5f-2d3c4b5a6e7f";
pub const DEV_USER_ID: &str = "9b8a7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d";
pub const DEV_TENANT_SLUG: &str = "demo-shop";

/// How an endpoint misbehaves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Failure {
    /// Answers normally.
    #[default]
    None,
    /// Answers this status with a JSON error body.
    Status(u16),
    /// Answers this status with `Retry-After: seconds`.
    StatusRetryAfter(u16, u64),
    /// Answers normally after this (real) delay.
    Delay(Duration),
    /// Answers 200 with a body larger than 64 KiB.
    Oversize,
    /// Answers 429 with a JSON error body and `X-RateLimit-Limit` / `-Remaining: 0`.
    /// The API does it as JTL's does, without `Retry-After` and with
    /// `X-RateLimit-Interval-Length-Seconds: retry_after_s`; the token endpoints and key
    /// sets send `Retry-After: retry_after_s`.
    RateLimited { retry_after_s: u64 },
    /// Answers 200 `application/json` with a body that is not JSON (a proxy's HTML
    /// error page).
    Garbage,
    /// Answers 200 `application/json` with an empty body.
    Empty,
    /// Answers 200 with JSON that is valid except for the one field the client needs:
    /// no `access_token` at the token endpoints (legacy and Zitadel), no `keys` at the key
    /// sets (legacy JWKS and Zitadel's keys), `{}` elsewhere.
    MissingField,
    /// Answers nothing: the connection is closed with `SO_LINGER` 0, so the client sees a
    /// TCP reset (RST) after sending its request, not an orderly close. Other requests on
    /// that connection (HTTP/2) fail with it.
    Reset,
}

/// What the emulator starts with.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    pub client_id: String,
    pub client_secret: String,
    /// `expires_in` of issued access tokens; `None` leaves it out (the token's own `exp`
    /// then tells its lifetime).
    pub expires_in: Option<u64>,
    /// Serve HTTPS with a self-signed certificate (see [`Emulator::ca_pem`]).
    pub tls: bool,
    /// Kids of the session-token keys published at start.
    pub key_ids: Vec<String>,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            client_id: "emulated-client".into(),
            client_secret: "emulated-secret".into(),
            expires_in: Some(3600),
            tls: false,
            key_ids: vec!["emulator-key-1".into()],
        }
    }
}

/// Calls per endpoint.
#[derive(Debug, Default)]
pub struct Counters {
    pub token_requests: AtomicU64,
    pub jwks_requests: AtomicU64,
    pub api_requests: AtomicU64,
    /// Zitadel's `POST /oauth/v2/token`.
    pub app_token_requests: AtomicU64,
    /// Zitadel's `GET /oauth/v2/keys`.
    pub app_keys_requests: AtomicU64,
    /// `GET /.well-known/openid-configuration`.
    pub discovery_requests: AtomicU64,
}

struct SigningKey {
    kid: String,
    pair: Ed25519KeyPair,
    published: bool,
}

impl SigningKey {
    fn generate(kid: &str) -> Self {
        let seed: [u8; 32] = rand::random();
        // A fresh random 32-byte seed is always a valid Ed25519 seed.
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .unwrap_or_else(|_| unreachable!("32-byte seed"));
        SigningKey {
            kid: kid.to_owned(),
            pair,
            published: true,
        }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
            "kid": self.kid,
            "x": base64url_encode(self.pair.public_key().as_ref()),
        })
    }
}

pub(crate) struct State {
    clock: Clock,
    client_id: Mutex<String>,
    client_secret: Mutex<String>,
    expires_in: Mutex<Option<u64>>,
    /// Signs the emulator's access tokens (JWTs, like JTL's).
    access_token_key: Ed25519KeyPair,
    /// Access tokens handed out and not revoked, with their expiry (ms).
    issued: Mutex<HashMap<String, i64>>,
    keys: Mutex<Vec<SigningKey>>,
    token_failure: Mutex<Failure>,
    jwks_failure: Mutex<Failure>,
    api_failure: Mutex<Failure>,
    /// `scope` of the latest successful token request.
    last_scope: Mutex<Option<String>>,
    counters: Counters,
    /// The API's rate limits per tenant, and the API requests each tenant sent.
    rate_limits: rate_limit::RateLimits,
    /// The app-token flow's identity provider.
    zitadel: zitadel::Zitadel,
    /// The account service's token exchange.
    exchange: exchange::Exchange,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running emulator; stops when dropped.
pub struct Emulator {
    state: Arc<State>,
    server: server::Running,
}

impl Emulator {
    /// Starts on `127.0.0.1` on an ephemeral port.
    pub async fn start(options: EmulatorOptions, clock: Clock) -> Result<Emulator, EmulatorError> {
        Self::start_on(options, clock, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(
        options: EmulatorOptions,
        clock: Clock,
        addr: SocketAddr,
    ) -> Result<Emulator, EmulatorError> {
        let seed: [u8; 32] = rand::random();
        let access_token_key = Ed25519KeyPair::from_seed_unchecked(&seed)
            .unwrap_or_else(|_| unreachable!("32-byte seed"));
        let state = Arc::new(State {
            clock,
            client_id: Mutex::new(options.client_id),
            client_secret: Mutex::new(options.client_secret),
            expires_in: Mutex::new(options.expires_in),
            access_token_key,
            issued: Mutex::new(HashMap::new()),
            keys: Mutex::new(
                options
                    .key_ids
                    .iter()
                    .map(|kid| SigningKey::generate(kid))
                    .collect(),
            ),
            token_failure: Mutex::default(),
            jwks_failure: Mutex::default(),
            api_failure: Mutex::default(),
            last_scope: Mutex::default(),
            counters: Counters::default(),
            rate_limits: rate_limit::RateLimits::default(),
            zitadel: zitadel::Zitadel::new()?,
            exchange: exchange::Exchange::new()?,
        });
        let server = server::Running::start(Arc::clone(&state), addr, options.tls).await?;
        let emulator = Emulator { state, server };
        emulator.state.zitadel.set_issuer(emulator.base_url());
        Ok(emulator)
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`.
    pub fn base_url(&self) -> String {
        match self.server.ca_pem {
            Some(_) => format!("https://localhost:{}", self.server.addr.port()),
            None => format!("http://{}", self.server.addr),
        }
    }

    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base_url())
    }

    pub fn api_base_url(&self) -> String {
        self.base_url()
    }

    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.base_url())
    }

    /// The PEM certificate to trust (`jtl.ca_file`) when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.server.ca_pem.as_deref()
    }

    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    pub fn token_requests(&self) -> u64 {
        self.state.counters.token_requests.load(Ordering::SeqCst)
    }

    pub fn jwks_requests(&self) -> u64 {
        self.state.counters.jwks_requests.load(Ordering::SeqCst)
    }

    pub fn api_requests(&self) -> u64 {
        self.state.counters.api_requests.load(Ordering::SeqCst)
    }

    /// Gives each tenant (by `X-Tenant-ID`; requests without one share a bucket of their
    /// own) `limit` API requests per `interval` on the emulator's clock, then `429` until
    /// the interval ends; the interval starts with the tenant's first request in it.
    /// Every API answer reports the budget in `X-RateLimit-*`, as JTL's does.
    pub fn set_rate_limit(&self, limit: u64, interval: Duration) {
        self.state.rate_limits.set(limit, interval);
    }

    /// API requests that reached the emulator for this tenant (`None`: without
    /// `X-Tenant-ID`), refused ones included.
    pub fn api_requests_for(&self, tenant: Option<&str>) -> u64 {
        self.state.rate_limits.received(tenant)
    }

    /// The `scope` sent with the latest successful token request (legacy or Zitadel).
    pub fn last_token_scope(&self) -> Option<String> {
        lock(&self.state.last_scope).clone()
    }

    pub fn set_token_failure(&self, failure: Failure) {
        *lock(&self.state.token_failure) = failure;
    }

    pub fn set_jwks_failure(&self, failure: Failure) {
        *lock(&self.state.jwks_failure) = failure;
    }

    pub fn set_api_failure(&self, failure: Failure) {
        *lock(&self.state.api_failure) = failure;
    }

    /// Changes the secret the token endpoint accepts (a rotated credential).
    pub fn set_client_secret(&self, secret: &str) {
        *lock(&self.state.client_secret) = secret.to_owned();
    }

    pub fn set_expires_in(&self, expires_in: Option<u64>) {
        *lock(&self.state.expires_in) = expires_in;
    }

    /// Forgets every access token issued so far (the legacy JWTs and Zitadel's opaque
    /// tokens alike): JWKS and API calls with them get 401.
    pub fn revoke_access_tokens(&self) {
        lock(&self.state.issued).clear();
    }

    /// Adds and publishes a new session-token key.
    pub fn add_key(&self, kid: &str) {
        lock(&self.state.keys).push(SigningKey::generate(kid));
    }

    /// Removes a key: no longer published, and no longer usable for minting.
    pub fn remove_key(&self, kid: &str) {
        lock(&self.state.keys).retain(|key| key.kid != kid);
    }

    /// Publishes the key `kid` under the name `new_kid` from now on.
    pub fn rename_key(&self, kid: &str, new_kid: &str) {
        for key in lock(&self.state.keys)
            .iter_mut()
            .filter(|key| key.kid == kid)
        {
            key.kid = new_kid.to_owned();
        }
    }

    /// Publishes or withdraws a key while keeping it for minting (an empty key set, or a
    /// token signed by a key JTL never published).
    pub fn set_published(&self, kid: &str, published: bool) {
        for key in lock(&self.state.keys)
            .iter_mut()
            .filter(|key| key.kid == kid)
        {
            key.published = published;
        }
    }

    /// The published key set, as the JWKS endpoint serves it.
    pub fn jwks(&self) -> Value {
        self.state.jwks()
    }

    /// The kid of the first key, which [`Emulator::mint_session_token`] signs with.
    pub fn default_kid(&self) -> Option<String> {
        self.state.default_kid()
    }

    /// Claims of a session token for this tenant and user, valid for `lifetime` from now
    /// on the emulator's clock. The payload `kid` is a customer id, as in JTL's tokens.
    pub fn session_claims(
        &self,
        tenant_id: &str,
        user_id: &str,
        tenant_slug: &str,
        lifetime: Duration,
    ) -> Value {
        self.state
            .session_claims(tenant_id, user_id, tenant_slug, lifetime)
    }

    /// Signs `claims` with the key `kid`, as JTL does: header `{"alg":"EdDSA","typ":"JWT"}`,
    /// plus the `kid` when `header_kid` is set. `None` when there is no such key.
    pub fn mint(&self, claims: &Value, kid: &str, header_kid: bool) -> Option<String> {
        let header = if header_kid {
            json!({"alg": "EdDSA", "typ": "JWT", "kid": kid})
        } else {
            json!({"alg": "EdDSA", "typ": "JWT"})
        };
        self.mint_with_header(&header, claims, kid)
    }

    /// Signs `claims` under any `header` with the key `signing_kid` (a token that names
    /// one key and is signed by another, say).
    pub fn mint_with_header(
        &self,
        header: &Value,
        claims: &Value,
        signing_kid: &str,
    ) -> Option<String> {
        let keys = lock(&self.state.keys);
        let key = keys.iter().find(|key| key.kid == signing_kid)?;
        Some(sign_compact(&key.pair, header, claims))
    }

    /// A fresh session token for the given identity, signed with the first key, without
    /// a header `kid` (JTL's documented form). `None` when the emulator has no key.
    pub fn mint_session_token(
        &self,
        tenant_id: &str,
        user_id: &str,
        tenant_slug: &str,
        lifetime: Duration,
    ) -> Option<String> {
        let claims = self.session_claims(tenant_id, user_id, tenant_slug, lifetime);
        self.mint(&claims, &self.default_kid()?, false)
    }
}

impl State {
    fn session_claims(
        &self,
        tenant_id: &str,
        user_id: &str,
        tenant_slug: &str,
        lifetime: Duration,
    ) -> Value {
        let now = self.clock.now_s();
        json!({
            "exp": now + i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2),
            "iat": now,
            "userId": user_id,
            "tenantId": tenant_id,
            "tenantSlug": tenant_slug,
            "kid": "emulated-customer",
        })
    }

    fn default_kid(&self) -> Option<String> {
        lock(&self.keys).first().map(|key| key.kid.clone())
    }

    fn mint_with_header(
        &self,
        header: &Value,
        claims: &Value,
        signing_kid: &str,
    ) -> Option<String> {
        let keys = lock(&self.keys);
        let key = keys.iter().find(|key| key.kid == signing_kid)?;
        Some(sign_compact(&key.pair, header, claims))
    }

    fn jwks(&self) -> Value {
        let keys: Vec<Value> = lock(&self.keys)
            .iter()
            .filter(|key| key.published)
            .map(SigningKey::jwk)
            .collect();
        json!({ "keys": keys })
    }

    /// Issues an access token: a JWT signed by the emulator, remembered until it expires.
    fn issue_access_token(&self, lifetime_s: u64) -> String {
        let now_ms = self.clock.now_ms();
        let lifetime_ms = i64::try_from(lifetime_s.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
        let claims = json!({
            "iss": "jtl-emulator",
            "sub": *lock(&self.client_id),
            "iat": now_ms / 1000,
            "exp": (now_ms + lifetime_ms) / 1000,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let token = sign_compact(
            &self.access_token_key,
            &json!({"alg": "EdDSA", "typ": "JWT"}),
            &claims,
        );
        lock(&self.issued).insert(token.clone(), now_ms + lifetime_ms);
        token
    }

    fn is_valid_access_token(&self, token: &str) -> bool {
        let now = self.clock.now_ms();
        lock(&self.issued)
            .get(token)
            .is_some_and(|&expires_at| now < expires_at)
    }
}

fn sign_compact(pair: &Ed25519KeyPair, header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        base64url_encode(header.to_string().as_bytes()),
        base64url_encode(claims.to_string().as_bytes())
    );
    let signature = pair.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", base64url_encode(signature.as_ref()))
}
