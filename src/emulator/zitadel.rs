//! The emulator as JTL's Zitadel (SPEC §11, the app-token flow), on the same server as
//! the legacy endpoints so one emulator serves both flows. Its issuer is the emulator's
//! base URL (`http://127.0.0.1:PORT`).
//!
//! - `POST /oauth/v2/token`: client credentials, HTTP Basic only (credentials in the form
//!   body are `invalid_client`), decoded as RFC 6749 §2.3.1 says (each half
//!   form-urldecoded: a raw `+` is a space), `scope` must contain `openid` (else `invalid_scope`);
//!   answers an opaque access token (not a JWT) that the API echo and the legacy key set
//!   accept like the legacy tokens, and that [`Emulator::revoke_access_tokens`] revokes.
//! - `GET /oauth/v2/keys`: public (an `Authorization` header is ignored),
//!   `Cache-Control: max-age=300`, a mixed set as Zitadel publishes it: RS256 signing keys
//!   plus an EC P-256 and an OKP Ed25519 key, all with numeric-string kids.
//! - `GET /.well-known/openid-configuration`: the discovery document.
//! - `GET /_emulator/app-token`: mints app tokens (no Zitadel counterpart).
//!
//! The RSA keys are the fixed test-only keys in `src/emulator/keys/` (ring cannot
//! generate RSA keys); the EC and OKP keys are generated at start and only published,
//! never used to sign.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use serde_json::{Value, json};

use super::app_keys::{AppKey, FixedKeys, Material, fixed_keys};
use super::reply::{
    Endpoint, Reply, basic_credentials, call_counted, json_reply, query_pairs, query_param,
    read_body,
};
use super::{Emulator, EmulatorError, Failure, State, lock};
use crate::jose::base64url_encode;

/// Zitadel's token endpoint (JTL: `https://id.jtl-cloud.com/oauth/v2/token`).
pub const APP_TOKEN_PATH: &str = "/oauth/v2/token";
/// Zitadel's public key set (JTL: `https://id.jtl-cloud.com/oauth/v2/keys`).
pub const APP_KEYS_PATH: &str = "/oauth/v2/keys";
/// The OpenID Connect discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The emulator's own app-token minting endpoint (no JTL counterpart): `GET` with the
/// query parameters `tenantId` ([`super::DEV_TENANT_ID`]), `sub` ([`DEV_APP_USER_ID`]),
/// `aud` (repeatable; [`DEV_APP_ID`]; always sent as an array, as Zitadel does), `appId`
/// (the first `aud`; empty leaves the claim out), `kid` (the first signing key),
/// `lifetime_s` (3600) and `count` (1) answers fresh app tokens, one per line.
pub const APP_TOKEN_MINT_PATH: &str = "/_emulator/app-token";

/// The app id `dev` and the tests mint app tokens for (JTL's `appId`, which is also its
/// Zitadel project id: a numeric string).
pub const DEV_APP_ID: &str = "312909075212468632";
/// The `sub` of minted app tokens when none is asked for (Zitadel user ids are numeric
/// strings, not UUIDs).
pub const DEV_APP_USER_ID: &str = "312909186034567229";
/// Kid of the RSA key published at start (`rsa2048-1.pk8`), which app tokens are signed
/// with by default.
pub const APP_KEY_ID: &str = "312909097518325144";
/// Kid of the published EC P-256 key (never signs).
pub const APP_EC_KEY_ID: &str = "312909097518390680";
/// Kid of the published OKP Ed25519 key (never signs).
pub const APP_OKP_KEY_ID: &str = "312909097518456216";

/// How long clients may cache the key set, as Zitadel says.
const KEYS_MAX_AGE: &str = "max-age=300";

/// Most tokens one mint request answers.
const MAX_MINTED: usize = 100_000;

/// The Zitadel half of the emulator's state.
pub(crate) struct Zitadel {
    /// The emulator's base URL, known once it listens.
    issuer: OnceLock<String>,
    fixed: &'static FixedKeys,
    keys: Mutex<Vec<AppKey>>,
    /// Which fixed 2048-bit key [`Emulator::add_app_key`] publishes next.
    next_fixed: Mutex<usize>,
    token_failure: Mutex<Failure>,
    keys_failure: Mutex<Failure>,
    discovery_failure: Mutex<Failure>,
    /// A discovery document served instead of the real one.
    discovery_override: Mutex<Option<Value>>,
}

impl Zitadel {
    pub(super) fn new() -> Result<Zitadel, EmulatorError> {
        let fixed = fixed_keys()?;
        let rng = SystemRandom::new();
        let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| EmulatorError::Keys("cannot generate the EC P-256 key".into()))?;
        let ec =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref(), &rng)
                .map_err(|e| EmulatorError::Keys(format!("the generated EC P-256 key: {e}")))?;
        // Uncompressed point: 0x04 || x || y.
        let point = ec.public_key().as_ref();
        let (x, y) = point
            .get(1..)
            .filter(|xy| xy.len() == 64)
            .map(|xy| xy.split_at(32))
            .ok_or_else(|| EmulatorError::Keys("unexpected EC P-256 public key".into()))?;
        let okp_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| EmulatorError::Keys("cannot generate the Ed25519 key".into()))?;
        let okp = Ed25519KeyPair::from_pkcs8(okp_pkcs8.as_ref())
            .map_err(|e| EmulatorError::Keys(format!("the generated Ed25519 key: {e}")))?;
        let keys = vec![
            AppKey {
                kid: APP_KEY_ID.into(),
                material: Material::Rsa(&fixed.rsa2048[0]),
                published: true,
            },
            AppKey {
                kid: APP_EC_KEY_ID.into(),
                material: Material::Jwk(json!({
                    "use": "sig", "kty": "EC", "kid": APP_EC_KEY_ID, "crv": "P-256",
                    "alg": "ES256", "x": base64url_encode(x), "y": base64url_encode(y),
                })),
                published: true,
            },
            AppKey {
                kid: APP_OKP_KEY_ID.into(),
                material: Material::Jwk(json!({
                    "use": "sig", "kty": "OKP", "kid": APP_OKP_KEY_ID, "crv": "Ed25519",
                    "alg": "EdDSA", "x": base64url_encode(okp.public_key().as_ref()),
                })),
                published: true,
            },
        ];
        Ok(Zitadel {
            issuer: OnceLock::new(),
            fixed,
            keys: Mutex::new(keys),
            next_fixed: Mutex::new(1),
            token_failure: Mutex::default(),
            keys_failure: Mutex::default(),
            discovery_failure: Mutex::default(),
            discovery_override: Mutex::default(),
        })
    }

    pub(super) fn set_issuer(&self, issuer: String) {
        let _ = self.issuer.set(issuer);
    }

    fn issuer(&self) -> &str {
        self.issuer.get().map_or("", String::as_str)
    }

    fn key_set(&self) -> Value {
        let keys: Vec<Value> = lock(&self.keys)
            .iter()
            .filter(|key| key.published)
            .map(AppKey::jwk)
            .collect();
        json!({ "keys": keys })
    }

    fn default_kid(&self) -> Option<String> {
        lock(&self.keys)
            .iter()
            .find(|key| key.signer().is_some())
            .map(|key| key.kid.clone())
    }

    fn discovery(&self) -> Value {
        let base = self.issuer();
        json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/oauth/v2/authorize"),
            "token_endpoint": format!("{base}{APP_TOKEN_PATH}"),
            "introspection_endpoint": format!("{base}/oauth/v2/introspect"),
            "userinfo_endpoint": format!("{base}/oidc/v1/userinfo"),
            "revocation_endpoint": format!("{base}/oauth/v2/revoke"),
            "end_session_endpoint": format!("{base}/oidc/v1/end_session"),
            "jwks_uri": format!("{base}{APP_KEYS_PATH}"),
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "response_types_supported": ["code", "id_token", "id_token token"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        })
    }

    fn claims(
        &self,
        now_s: i64,
        tenant_id: &str,
        sub: &str,
        audience: &Value,
        app_id: Option<&str>,
        lifetime: Duration,
    ) -> Value {
        let mut claims = json!({
            "iss": self.issuer(),
            "sub": sub,
            "aud": audience,
            "urn:jtl:tenant_id": tenant_id,
            "iat": now_s,
            "exp": now_s.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2)),
        });
        if let Some(app_id) = app_id {
            claims["urn:jtl:app_id"] = json!(app_id);
        }
        claims
    }

    fn sign(&self, header: &Value, claims: &Value, signing_kid: &str) -> Option<String> {
        let pair = lock(&self.keys)
            .iter()
            .find(|key| key.kid == signing_kid)
            .and_then(AppKey::signer)?;
        sign_rs256(pair, header, claims)
    }

    fn push(&self, kid: &str, material: Material) {
        lock(&self.keys).push(AppKey {
            kid: kid.to_owned(),
            material,
            published: true,
        });
    }
}

pub(super) fn sign_rs256(pair: &RsaKeyPair, header: &Value, claims: &Value) -> Option<String> {
    let signing_input = format!(
        "{}.{}",
        base64url_encode(header.to_string().as_bytes()),
        base64url_encode(claims.to_string().as_bytes())
    );
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .ok()?;
    Some(format!("{signing_input}.{}", base64url_encode(&signature)))
}

impl State {
    /// Issues an opaque access token (random, not a JWT, as Zitadel's service-account
    /// tokens are), remembered with the legacy ones until it expires or is revoked.
    fn issue_opaque_access_token(&self, lifetime_s: u64) -> String {
        let now_ms = self.clock.now_ms();
        let lifetime_ms = i64::try_from(lifetime_s.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
        let random: [u8; 32] = rand::random();
        let token = base64url_encode(&random);
        lock(&self.issued).insert(token.clone(), now_ms.saturating_add(lifetime_ms));
        token
    }
}

/// The Zitadel routes; the request back when `path` is not one of them.
pub(super) async fn route(
    state: &State,
    path: &str,
    request: Request<Incoming>,
) -> Result<Reply, Request<Incoming>> {
    let zitadel = &state.zitadel;
    let reply = match path {
        APP_TOKEN_PATH => {
            match call_counted(
                &state.counters.app_token_requests,
                &zitadel.token_failure,
                Endpoint::Token,
            )
            .await
            {
                Some(reply) => reply,
                None => token_endpoint(state, request).await,
            }
        }
        APP_KEYS_PATH => {
            match call_counted(
                &state.counters.app_keys_requests,
                &zitadel.keys_failure,
                Endpoint::Keys,
            )
            .await
            {
                Some(reply) => reply,
                None => keys_endpoint(zitadel, &request),
            }
        }
        DISCOVERY_PATH => {
            match call_counted(
                &state.counters.discovery_requests,
                &zitadel.discovery_failure,
                Endpoint::Other,
            )
            .await
            {
                Some(reply) => reply,
                None => discovery_endpoint(zitadel, &request),
            }
        }
        APP_TOKEN_MINT_PATH => mint_endpoint(state, &request),
        _ => return Err(request),
    };
    Ok(reply)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Reply {
    json_reply(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn invalid_client(description: &str) -> Reply {
    let mut reply = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    reply.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"zitadel\""),
    );
    reply
}

async fn token_endpoint(state: &State, request: Request<Incoming>) -> Reply {
    if request.method() != Method::POST {
        return oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "the token endpoint takes POST",
        );
    }
    let basic = basic_credentials(&request);
    let Some(body) = read_body(request.into_body()).await else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unreadable body",
        );
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    // JTL's service accounts authenticate with HTTP Basic only.
    if field("client_id").is_some() || field("client_secret").is_some() {
        return invalid_client(
            "client credentials in the request body are not allowed: use HTTP Basic",
        );
    }
    let authenticated = basic.is_some_and(|(id, secret)| {
        id == *lock(&state.client_id) && secret == *lock(&state.client_secret)
    });
    if !authenticated {
        return invalid_client("client authentication failed");
    }
    match field("grant_type").as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type missing",
            );
        }
    }
    let scope = field("scope");
    let has_openid = scope
        .as_deref()
        .is_some_and(|scope| scope.split(' ').any(|value| value == "openid"));
    if !has_openid {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope must contain openid",
        );
    }
    *lock(&state.last_scope) = scope;
    let expires_in = *lock(&state.expires_in);
    let access_token = state.issue_opaque_access_token(expires_in.unwrap_or(3600));
    let mut answer = json!({"access_token": access_token, "token_type": "Bearer"});
    if let Some(expires_in) = expires_in {
        answer["expires_in"] = json!(expires_in);
    }
    json_reply(StatusCode::OK, &answer)
}

fn get_only(request: &Request<Incoming>) -> Option<Reply> {
    (request.method() != Method::GET && request.method() != Method::HEAD).then(|| {
        oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "GET only",
        )
    })
}

fn keys_endpoint(zitadel: &Zitadel, request: &Request<Incoming>) -> Reply {
    if let Some(refused) = get_only(request) {
        return refused;
    }
    // Public: whatever `Authorization` came is ignored.
    let mut reply = json_reply(StatusCode::OK, &zitadel.key_set());
    reply
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static(KEYS_MAX_AGE));
    reply
}

fn discovery_endpoint(zitadel: &Zitadel, request: &Request<Incoming>) -> Reply {
    if let Some(refused) = get_only(request) {
        return refused;
    }
    let document = lock(&zitadel.discovery_override)
        .clone()
        .unwrap_or_else(|| zitadel.discovery());
    json_reply(StatusCode::OK, &document)
}

fn mint_endpoint(state: &State, request: &Request<Incoming>) -> Reply {
    let query = query_pairs(request);
    let param = |name: &str| query_param(&query, name);
    let tenant_id = param("tenantId").unwrap_or(super::DEV_TENANT_ID);
    let sub = param("sub").unwrap_or(DEV_APP_USER_ID);
    let mut audience: Vec<&str> = query
        .iter()
        .filter(|(key, _)| key == "aud")
        .map(|(_, value)| value.as_str())
        .collect();
    if audience.is_empty() {
        audience.push(DEV_APP_ID);
    }
    let app_id = match param("appId") {
        Some("") => None,
        Some(app_id) => Some(app_id),
        None => audience.first().copied(),
    };
    let lifetime = param("lifetime_s")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3600u64);
    let count = param("count")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .clamp(1, MAX_MINTED);
    let Some(kid) = param("kid")
        .map(str::to_owned)
        .or_else(|| state.zitadel.default_kid())
    else {
        return json_reply(
            StatusCode::CONFLICT,
            &json!({"error": "the emulator has no app-token signing key"}),
        );
    };
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let audience = json!(audience);
    let mut tokens = String::new();
    for _ in 0..count {
        let mut claims = state.zitadel.claims(
            state.clock.now_s(),
            tenant_id,
            sub,
            &audience,
            app_id,
            Duration::from_secs(lifetime),
        );
        if count > 1 {
            // Distinct tokens for the same identity.
            claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
        }
        match state.zitadel.sign(&header, &claims, &kid) {
            Some(token) => {
                tokens.push_str(&token);
                tokens.push('\n');
            }
            None => {
                return json_reply(
                    StatusCode::CONFLICT,
                    &json!({"error": "no RSA signing key with this kid"}),
                );
            }
        }
    }
    let mut reply = Response::new(Full::new(Bytes::from(tokens)));
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    reply
}

/// The app-token flow (SPEC §11): the emulator as JTL's Zitadel.
impl Emulator {
    /// The Zitadel issuer: the emulator's base URL (`http://127.0.0.1:PORT`).
    pub fn issuer(&self) -> String {
        self.state.zitadel.issuer().to_owned()
    }

    /// `{issuer}/oauth/v2/token`.
    pub fn app_token_url(&self) -> String {
        format!("{}{APP_TOKEN_PATH}", self.issuer())
    }

    /// `{issuer}/oauth/v2/keys`.
    pub fn app_keys_url(&self) -> String {
        format!("{}{APP_KEYS_PATH}", self.issuer())
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}{DISCOVERY_PATH}", self.issuer())
    }

    /// Calls of `POST /oauth/v2/token` (the legacy token endpoint counts apart).
    pub fn app_token_requests(&self) -> u64 {
        self.state
            .counters
            .app_token_requests
            .load(Ordering::SeqCst)
    }

    /// Calls of `GET /oauth/v2/keys`.
    pub fn app_keys_requests(&self) -> u64 {
        self.state.counters.app_keys_requests.load(Ordering::SeqCst)
    }

    /// Calls of the discovery document.
    pub fn discovery_requests(&self) -> u64 {
        self.state
            .counters
            .discovery_requests
            .load(Ordering::SeqCst)
    }

    pub fn set_app_token_failure(&self, failure: Failure) {
        *lock(&self.state.zitadel.token_failure) = failure;
    }

    pub fn set_app_keys_failure(&self, failure: Failure) {
        *lock(&self.state.zitadel.keys_failure) = failure;
    }

    pub fn set_discovery_failure(&self, failure: Failure) {
        *lock(&self.state.zitadel.discovery_failure) = failure;
    }

    /// The discovery document as served by default.
    pub fn discovery_document(&self) -> Value {
        self.state.zitadel.discovery()
    }

    /// Serves `document` as the discovery document (say, one whose `issuer` is wrong);
    /// `None` goes back to the real one.
    pub fn set_discovery_document(&self, document: Option<Value>) {
        *lock(&self.state.zitadel.discovery_override) = document;
    }

    /// The published app-token key set, as `/oauth/v2/keys` serves it.
    pub fn app_keys(&self) -> Value {
        self.state.zitadel.key_set()
    }

    /// The kid of the first RSA key that can sign (published or not), which
    /// [`Emulator::mint_app_token_for`] and the mint endpoint sign with.
    pub fn default_app_kid(&self) -> Option<String> {
        self.state.zitadel.default_kid()
    }

    /// Publishes the next fixed 2048-bit RSA key under `kid` (a rotation). At start the
    /// first of the three is published as [`APP_KEY_ID`]; the second and third come next,
    /// after which they are handed out again in turn (a new kid on known material).
    pub fn add_app_key(&self, kid: &str) {
        let zitadel = &self.state.zitadel;
        let fixed = {
            let mut next = lock(&zitadel.next_fixed);
            let fixed = &zitadel.fixed.rsa2048[*next % zitadel.fixed.rsa2048.len()];
            *next += 1;
            fixed
        };
        zitadel.push(kid, Material::Rsa(fixed));
    }

    /// Publishes the fixed 1024-bit RSA key under `kid`: too small to be trusted, so the
    /// sidecar must skip it. It cannot sign (ring refuses it).
    pub fn publish_small_rsa_key(&self, kid: &str) {
        let zitadel = &self.state.zitadel;
        zitadel.push(kid, Material::Rsa(&zitadel.fixed.rsa1024));
    }

    /// Publishes the fixed 4096-bit RSA key under `kid`; it signs like the others.
    pub fn publish_rsa4096_key(&self, kid: &str) {
        let zitadel = &self.state.zitadel;
        zitadel.push(kid, Material::Rsa(&zitadel.fixed.rsa4096));
    }

    /// Publishes `jwk` as it is (say, an RSA key with `"use":"enc"`); it never signs and
    /// is removed by its `kid` like any other.
    pub fn publish_app_jwk(&self, jwk: Value) {
        let kid = jwk["kid"].as_str().unwrap_or_default().to_owned();
        self.state.zitadel.push(&kid, Material::Jwk(jwk));
    }

    /// Removes a key: no longer published, and no longer usable for minting.
    pub fn remove_app_key(&self, kid: &str) {
        lock(&self.state.zitadel.keys).retain(|key| key.kid != kid);
    }

    /// Publishes or withdraws a key while keeping it for minting (a token signed by a
    /// key Zitadel does not publish).
    pub fn set_app_key_published(&self, kid: &str, published: bool) {
        for key in lock(&self.state.zitadel.keys)
            .iter_mut()
            .filter(|key| key.kid == kid)
        {
            key.published = published;
        }
    }

    /// Claims of an app token, valid for `lifetime` from now on the emulator's clock:
    /// `iss` (the issuer), `sub`, `aud` (a string or an array, as given),
    /// `urn:jtl:tenant_id`, `urn:jtl:app_id` when `app_id` is given, `iat`, `exp`.
    pub fn app_token_claims(
        &self,
        tenant_id: &str,
        sub: &str,
        audience: &Value,
        app_id: Option<&str>,
        lifetime: Duration,
    ) -> Value {
        self.state.zitadel.claims(
            self.state.clock.now_s(),
            tenant_id,
            sub,
            audience,
            app_id,
            lifetime,
        )
    }

    /// Signs `claims` as Zitadel does: RS256, header `{"alg":"RS256","typ":"JWT","kid":kid}`,
    /// with the RSA key `kid`. `None` when there is no such key or it cannot sign.
    pub fn mint_app_token(&self, claims: &Value, kid: &str) -> Option<String> {
        self.mint_app_token_with_header(
            &json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
            claims,
            kid,
        )
    }

    /// Signs `claims` under any `header` (RS256) with the RSA key `signing_kid`: a header
    /// naming the EC key, another `alg`, a missing `kid`, and so on.
    pub fn mint_app_token_with_header(
        &self,
        header: &Value,
        claims: &Value,
        signing_kid: &str,
    ) -> Option<String> {
        self.state.zitadel.sign(header, claims, signing_kid)
    }

    /// A fresh app token for `tenant_id` and `sub`, for [`DEV_APP_ID`] (`aud` `[DEV_APP_ID]`
    /// and `urn:jtl:app_id`), signed with [`Emulator::default_app_kid`].
    pub fn mint_app_token_for(
        &self,
        tenant_id: &str,
        sub: &str,
        lifetime: Duration,
    ) -> Option<String> {
        let claims = self.app_token_claims(
            tenant_id,
            sub,
            &json!([DEV_APP_ID]),
            Some(DEV_APP_ID),
            lifetime,
        );
        self.mint_app_token(&claims, &self.default_app_kid()?)
    }
}
