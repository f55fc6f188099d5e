//! The emulator as JTL's account service for token exchange (RFC 8693): on-behalf-of-user
//! tokens and delegated (per-install service identity) tokens, each with a refresh token
//! that rotates on every refresh. The endpoints are in `exchange_routes.rs`; this file
//! holds what they issue and remember, and the switches and counters on [`Emulator`].
//!
//! Exchanged access tokens are RS256 JWTs signed with the first fixed test-only RSA key
//! (header `kid` [`EXCHANGE_KEY_ID`], published nowhere: nobody is meant to verify them)
//! with `iss`, `sub` (the user id, or [`service_user_id`] for a delegated token), `iat`
//! and `exp` on the emulator's clock, `tenantId`, `userId` (user tokens only), `kind`
//! (`"user"` or `"tenant"`), `act: {"sub": client id}` and a `jti`. Refresh tokens are
//! opaque. The API echo accepts an exchanged access token until it expires or
//! [`Emulator::revoke_exchanged_tokens`], and says who acted (`"acting"`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use serde_json::{Value, json};

use super::app_keys::{FixedRsa, fixed_keys};
use super::{Emulator, EmulatorError, Failure, State, lock};
use crate::jose::base64url_encode;

/// `POST` `{"userId", "tenantId"}`: an on-behalf-of-user token.
pub const ACT_AS_USER_PATH: &str = "/account/identity/act-as-user-token";
/// `POST` `{"refreshToken"}`: the user token refreshed (and its refresh token rotated).
pub const ACT_AS_USER_REFRESH_PATH: &str = "/account/identity/act-as-user-token/refresh";
/// `POST` `{"tenantId"}`: a delegated token for the app's service identity in a tenant.
pub const DELEGATED_PATH: &str = "/account/identity/delegated-token";
/// `POST` `{"refreshToken"}`: the delegated token refreshed.
pub const DELEGATED_REFRESH_PATH: &str = "/account/identity/delegated-token/refresh";
/// Header `kid` of exchanged access tokens.
pub const EXCHANGE_KEY_ID: &str = "emulator-account-1";
/// Lifetime of exchanged access tokens unless set otherwise: not the 300 s the sidecar
/// falls back to, so a reader that ignores the lifetime it was given shows.
pub const DEFAULT_EXCHANGED_TOKEN_LIFETIME_S: u64 = 600;

/// Which exchange: on behalf of a user, or the tenant installation's service identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// `act-as-user-token`.
    User,
    /// `delegated-token`.
    Tenant,
}

impl ExchangeKind {
    fn index(self) -> usize {
        match self {
            ExchangeKind::User => 0,
            ExchangeKind::Tenant => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::User => "user",
            ExchangeKind::Tenant => "tenant",
        }
    }
}

/// How the exchange endpoints spell their answer (JTL has not published it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExchangeSpelling {
    /// `accessToken`, `refreshToken`, `expiresIn` (seconds), `tokenType`.
    #[default]
    CamelCase,
    /// `access_token`, `refresh_token`, `expires_in` (seconds), `token_type`.
    SnakeCase,
    /// `accessToken`, `refreshToken`, `expiresAt` (RFC 3339, UTC).
    ExpiresAtRfc3339,
    /// `access_token`, `refresh_token`, `expires_at` (epoch seconds).
    ExpiresAtEpoch,
    /// `accessToken`, `refreshToken` and no lifetime: the access token's `exp` tells it.
    NoLifetime,
    /// `refreshToken` and `expiresIn` only: no access token.
    NoAccessToken,
}

/// Who a bearer token acts for, as the API echo reports it under `"acting"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Acting {
    /// The app's own access token: `{"kind": "app"}`.
    App,
    /// `{"kind": "user", "user_id", "tenant_id"}`.
    User { user_id: String, tenant_id: String },
    /// `{"kind": "tenant", "tenant_id"}`.
    Tenant { tenant_id: String },
}

impl Acting {
    pub(super) fn to_json(&self) -> Value {
        match self {
            Acting::App => json!({"kind": "app"}),
            Acting::User { user_id, tenant_id } => {
                json!({"kind": "user", "user_id": user_id, "tenant_id": tenant_id})
            }
            Acting::Tenant { tenant_id } => json!({"kind": "tenant", "tenant_id": tenant_id}),
        }
    }
}

/// The per-install service identity a delegated token for `tenant_id` names as `sub`.
pub fn service_user_id(tenant_id: &str) -> String {
    format!("service-{tenant_id}")
}

/// What a token was exchanged for: the kind, the tenant and, for a user token, the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Grant {
    pub(super) kind: ExchangeKind,
    pub(super) tenant_id: String,
    pub(super) user_id: Option<String>,
}

impl Grant {
    fn acting(&self) -> Acting {
        match (&self.kind, &self.user_id) {
            (ExchangeKind::User, Some(user_id)) => Acting::User {
                user_id: user_id.clone(),
                tenant_id: self.tenant_id.clone(),
            },
            _ => Acting::Tenant {
                tenant_id: self.tenant_id.clone(),
            },
        }
    }

    fn subject(&self) -> String {
        match &self.user_id {
            Some(user_id) => user_id.clone(),
            None => service_user_id(&self.tenant_id),
        }
    }
}

/// Why JTL refuses an exchange (or, for a refresh, why the grant is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// 404 `app_not_installed`.
    NotInstalled,
    /// 403 `capability_not_enabled`.
    CapabilityDisabled,
    /// 403 `user_not_member`.
    NotMember,
}

impl Refusal {
    pub(super) fn status(self) -> StatusCode {
        match self {
            Refusal::NotInstalled => StatusCode::NOT_FOUND,
            Refusal::CapabilityDisabled | Refusal::NotMember => StatusCode::FORBIDDEN,
        }
    }

    pub(super) fn error(self) -> &'static str {
        match self {
            Refusal::NotInstalled => "app_not_installed",
            Refusal::CapabilityDisabled => "capability_not_enabled",
            Refusal::NotMember => "user_not_member",
        }
    }

    pub(super) fn description(self) -> &'static str {
        match self {
            Refusal::NotInstalled => "The app is not installed for this tenant",
            Refusal::CapabilityDisabled => {
                "The app does not have this token-exchange capability enabled"
            }
            Refusal::NotMember => "The user is not a member of this tenant",
        }
    }
}

/// A refresh token: what it refreshes, and whether it was already presented.
struct RefreshEntry {
    grant: Grant,
    used: bool,
}

/// The tokens an exchange or a refresh answers.
pub(super) struct Issued {
    pub(super) access_token: String,
    pub(super) refresh_token: String,
    pub(super) lifetime_s: u64,
    /// `exp` of the access token (epoch seconds).
    pub(super) expires_at_s: i64,
}

/// What a refresh token presented at a refresh endpoint turned out to be.
pub(super) enum Presented {
    /// Live and of this kind: rotated, here is the grant to issue for.
    Rotated(Grant),
    /// Already presented once.
    Reused,
    /// Never issued, or of the other kind.
    Unknown,
}

/// The exchange half of the emulator's state.
pub(crate) struct Exchange {
    key: &'static FixedRsa,
    spelling: Mutex<ExchangeSpelling>,
    lifetime_s: Mutex<u64>,
    pub(super) failure: Mutex<Failure>,
    not_installed: Mutex<HashSet<String>>,
    disabled: Mutex<HashSet<ExchangeKind>>,
    /// (tenant, user) pairs that are not members.
    not_members: Mutex<HashSet<(String, String)>>,
    /// Exchanged access tokens not revoked, with who they act for and expiry (ms).
    access: Mutex<HashMap<String, (Acting, i64)>>,
    refresh: Mutex<HashMap<String, RefreshEntry>>,
    /// Calls per kind of the minting endpoints, then of the refresh endpoints.
    pub(super) mint_calls: [AtomicU64; 2],
    pub(super) refresh_calls: [AtomicU64; 2],
    reuses: AtomicU64,
    last_body: Mutex<Option<Value>>,
}

impl Exchange {
    pub(super) fn new() -> Result<Exchange, EmulatorError> {
        let key = fixed_keys()?
            .rsa2048
            .first()
            .ok_or_else(|| EmulatorError::Keys("no RSA-2048 key".into()))?;
        Ok(Exchange {
            key,
            spelling: Mutex::default(),
            lifetime_s: Mutex::new(DEFAULT_EXCHANGED_TOKEN_LIFETIME_S),
            failure: Mutex::default(),
            not_installed: Mutex::default(),
            disabled: Mutex::default(),
            not_members: Mutex::default(),
            access: Mutex::default(),
            refresh: Mutex::default(),
            mint_calls: Default::default(),
            refresh_calls: Default::default(),
            reuses: AtomicU64::new(0),
            last_body: Mutex::default(),
        })
    }

    pub(super) fn spelling(&self) -> ExchangeSpelling {
        *lock(&self.spelling)
    }

    pub(super) fn record_body(&self, body: Value) {
        *lock(&self.last_body) = Some(body);
    }

    /// Why JTL would refuse to issue for `grant` now, if it would.
    pub(super) fn refusal(&self, grant: &Grant) -> Option<Refusal> {
        if lock(&self.not_installed).contains(&grant.tenant_id) {
            return Some(Refusal::NotInstalled);
        }
        if lock(&self.disabled).contains(&grant.kind) {
            return Some(Refusal::CapabilityDisabled);
        }
        let not_member = grant.user_id.as_ref().is_some_and(|user_id| {
            lock(&self.not_members).contains(&(grant.tenant_id.clone(), user_id.clone()))
        });
        not_member.then_some(Refusal::NotMember)
    }

    /// Takes a refresh token presented at the refresh endpoint of `kind`: a live one is
    /// used up (it never works again), a used one is counted as a reuse.
    pub(super) fn present(&self, kind: ExchangeKind, refresh_token: &str) -> Presented {
        let mut refresh = lock(&self.refresh);
        match refresh.get_mut(refresh_token) {
            Some(entry) if entry.grant.kind != kind => Presented::Unknown,
            Some(entry) if entry.used => {
                self.reuses.fetch_add(1, Ordering::SeqCst);
                Presented::Reused
            }
            Some(entry) => {
                entry.used = true;
                Presented::Rotated(entry.grant.clone())
            }
            None => Presented::Unknown,
        }
    }

    /// Who a bearer token acts for, if it is a live exchanged access token.
    pub(super) fn acting(&self, token: &str, now_ms: i64) -> Option<Acting> {
        lock(&self.access)
            .get(token)
            .filter(|(_, expires_ms)| now_ms < *expires_ms)
            .map(|(acting, _)| acting.clone())
    }
}

impl State {
    /// Issues a fresh access token and refresh token for `grant`.
    pub(super) fn issue_exchanged(&self, grant: &Grant) -> Issued {
        let exchange = &self.exchange;
        let lifetime_s = *lock(&exchange.lifetime_s);
        let now_ms = self.clock.now_ms();
        let now_s = now_ms.div_euclid(1000);
        let lifetime = i64::try_from(lifetime_s).unwrap_or(i64::MAX / 4000);
        let expires_at_s = now_s.saturating_add(lifetime);
        let mut claims = json!({
            "iss": "jtl-emulator-account",
            "sub": grant.subject(),
            "iat": now_s,
            "exp": expires_at_s,
            "jti": uuid::Uuid::new_v4().to_string(),
            "tenantId": grant.tenant_id,
            "kind": grant.kind.as_str(),
            "act": {"sub": *lock(&self.client_id)},
        });
        if let Some(user_id) = &grant.user_id {
            claims["userId"] = json!(user_id);
        }
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": EXCHANGE_KEY_ID});
        let access_token = exchange
            .key
            .pair
            .as_ref()
            .and_then(|pair| super::zitadel::sign_rs256(pair, &header, &claims))
            // ring signs with a 2048-bit key it loaded; should it not, any signature
            // will do: nobody verifies these tokens.
            .unwrap_or_else(|| {
                format!(
                    "{}.{}.{}",
                    base64url_encode(header.to_string().as_bytes()),
                    base64url_encode(claims.to_string().as_bytes()),
                    base64url_encode(b"unsigned")
                )
            });
        let random: [u8; 32] = rand::random();
        let refresh_token = base64url_encode(&random);
        lock(&exchange.access).insert(
            access_token.clone(),
            (grant.acting(), expires_at_s.saturating_mul(1000)),
        );
        lock(&exchange.refresh).insert(
            refresh_token.clone(),
            RefreshEntry {
                grant: grant.clone(),
                used: false,
            },
        );
        Issued {
            access_token,
            refresh_token,
            lifetime_s,
            expires_at_s,
        }
    }
}

/// Token exchange (JTL's account service): switches and counters.
impl Emulator {
    /// `{api_base}/account/identity/act-as-user-token` or `…/delegated-token`.
    pub fn exchange_url(&self, kind: ExchangeKind) -> String {
        let path = match kind {
            ExchangeKind::User => ACT_AS_USER_PATH,
            ExchangeKind::Tenant => DELEGATED_PATH,
        };
        format!("{}{path}", self.api_base_url())
    }

    /// The refresh endpoint of `kind`: the exchange URL plus `/refresh`.
    pub fn exchange_refresh_url(&self, kind: ExchangeKind) -> String {
        format!("{}/refresh", self.exchange_url(kind))
    }

    /// How the exchange and refresh answers are spelled from now on (default
    /// [`ExchangeSpelling::CamelCase`]).
    pub fn set_exchange_spelling(&self, spelling: ExchangeSpelling) {
        *lock(&self.state.exchange.spelling) = spelling;
    }

    /// Lifetime of access tokens exchanged or refreshed from now on (default
    /// [`DEFAULT_EXCHANGED_TOKEN_LIFETIME_S`]).
    pub fn set_exchanged_token_lifetime(&self, seconds: u64) {
        *lock(&self.state.exchange.lifetime_s) = seconds;
    }

    /// Makes the four exchange endpoints misbehave (checked before anything else, the
    /// bearer included; the call is counted).
    pub fn set_exchange_failure(&self, failure: Failure) {
        *lock(&self.state.exchange.failure) = failure;
    }

    /// Whether the app is installed for `tenant_id` (all tenants are, by default). Not
    /// installed: exchanges for it answer `404 app_not_installed`, refreshes `400
    /// invalid_grant`.
    pub fn set_app_installed(&self, tenant_id: &str, installed: bool) {
        let mut not_installed = lock(&self.state.exchange.not_installed);
        if installed {
            not_installed.remove(tenant_id);
        } else {
            not_installed.insert(tenant_id.to_owned());
        }
    }

    /// Whether the app has the capability for `kind` (both, by default). Without it:
    /// exchanges answer `403 capability_not_enabled`, refreshes `400 invalid_grant`.
    pub fn set_exchange_capability(&self, kind: ExchangeKind, enabled: bool) {
        let mut disabled = lock(&self.state.exchange.disabled);
        if enabled {
            disabled.remove(&kind);
        } else {
            disabled.insert(kind);
        }
    }

    /// Whether `user_id` is a member of `tenant_id` (every user is, by default). Not a
    /// member: user exchanges answer `403 user_not_member`, refreshes `400 invalid_grant`.
    pub fn set_user_member(&self, tenant_id: &str, user_id: &str, member: bool) {
        let key = (tenant_id.to_owned(), user_id.to_owned());
        let mut not_members = lock(&self.state.exchange.not_members);
        if member {
            not_members.remove(&key);
        } else {
            not_members.insert(key);
        }
    }

    /// Forgets every exchanged access token issued so far: the API echo answers 401 to
    /// them. Refresh tokens stay valid.
    pub fn revoke_exchanged_tokens(&self) {
        lock(&self.state.exchange.access).clear();
    }

    /// Calls of the minting endpoint of `kind`, whatever the answer.
    pub fn exchange_calls(&self, kind: ExchangeKind) -> u64 {
        self.state.exchange.mint_calls[kind.index()].load(Ordering::SeqCst)
    }

    /// Calls of the refresh endpoint of `kind`, whatever the answer.
    pub fn refresh_calls(&self, kind: ExchangeKind) -> u64 {
        self.state.exchange.refresh_calls[kind.index()].load(Ordering::SeqCst)
    }

    /// Refresh requests that presented a refresh token already presented once (rotated,
    /// or refused with `invalid_grant` because its grant was gone). A correct client
    /// keeps this at 0.
    pub fn refresh_token_reuses(&self) -> u64 {
        self.state.exchange.reuses.load(Ordering::SeqCst)
    }

    /// The body of the latest exchange or refresh request that got past the bearer
    /// check and was a JSON object (before its fields were checked).
    pub fn last_exchange_body(&self) -> Option<Value> {
        lock(&self.state.exchange.last_body).clone()
    }

    /// Exchanged access tokens currently accepted by the API echo (not expired on the
    /// emulator's clock, not revoked).
    pub fn live_exchanged_tokens(&self) -> usize {
        let now = self.state.clock.now_ms();
        lock(&self.state.exchange.access)
            .values()
            .filter(|(_, expires_ms)| now < *expires_ms)
            .count()
    }
}

impl Exchange {
    pub(super) fn mint_counter(&self, kind: ExchangeKind) -> &AtomicU64 {
        &self.mint_calls[kind.index()]
    }

    pub(super) fn refresh_counter(&self, kind: ExchangeKind) -> &AtomicU64 {
        &self.refresh_calls[kind.index()]
    }
}
