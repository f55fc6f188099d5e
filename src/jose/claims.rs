//! Claim checks on a verified payload, and the typed session they produce.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::JoseError;
use super::kind::{Algorithm, TokenKind};

/// The claim naming the tenant in app tokens.
pub const APP_TOKEN_TENANT_CLAIM: &str = "urn:jtl:tenant_id";
/// The claim naming the app in app tokens (absent, or equal to the audience).
pub const APP_TOKEN_APP_ID_CLAIM: &str = "urn:jtl:app_id";

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    pub kind: TokenKind,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_s: i64,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When not empty, `aud` (a string or an array of strings) must contain one of these.
    /// In the app-token flow they are the app ids (several during a move to a new app
    /// registration), and `urn:jtl:app_id`, when present, must be one that `aud` holds.
    pub audience: Vec<String>,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            kind: TokenKind::SessionToken,
            max_token_bytes: 8192,
            leeway_s: 30,
            issuer: None,
            audience: Vec::new(),
        }
    }
}

/// Who a verified token speaks for: the same shape for both flows.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub tenant_id: Uuid,
    /// The user as forwarded: a session token's `userId` in canonical lowercase UUID
    /// form, an app token's `sub` (a Zitadel id, a numeric string) as it came.
    pub user_id: String,
    /// A session token's `tenantSlug`; app tokens carry none.
    pub tenant_slug: Option<String>,
    /// `exp` rounded up to whole seconds: for a whole-second `now`,
    /// `now < exp + leeway` holds exactly when `now < expires_at + leeway`.
    pub expires_at: i64,
    /// Every claim of the payload, for `[ingress.claim_headers]`.
    pub claims: Map<String, Value>,
}

impl Session {
    /// True once `now` (Unix seconds) is past `exp` plus `leeway_s`.
    pub fn is_expired(&self, now: i64, leeway_s: i64) -> bool {
        is_past_expiry(self.expires_at, now, leeway_s)
    }
}

fn is_past_expiry(expires_at: i64, now: i64, leeway_s: i64) -> bool {
    now >= expires_at.saturating_add(leeway_s)
}

/// The claims the checks read, found in one pass over the payload: looking each up in
/// the map compared its name with the keys one by one, every time.
#[derive(Default)]
struct Found<'c> {
    exp: Option<&'c Value>,
    nbf: Option<&'c Value>,
    iat: Option<&'c Value>,
    iss: Option<&'c Value>,
    aud: Option<&'c Value>,
    tenant_id: Option<&'c Value>,
    user_id: Option<&'c Value>,
    tenant_slug: Option<&'c Value>,
    app_tenant_id: Option<&'c Value>,
    sub: Option<&'c Value>,
    app_id: Option<&'c Value>,
}

impl<'c> Found<'c> {
    fn in_claims(claims: &'c Map<String, Value>) -> Self {
        let mut found = Found::default();
        for (name, value) in claims {
            let slot = match name.as_str() {
                "exp" => &mut found.exp,
                "nbf" => &mut found.nbf,
                "iat" => &mut found.iat,
                "iss" => &mut found.iss,
                "aud" => &mut found.aud,
                "tenantId" => &mut found.tenant_id,
                "userId" => &mut found.user_id,
                "tenantSlug" => &mut found.tenant_slug,
                APP_TOKEN_TENANT_CLAIM => &mut found.app_tenant_id,
                "sub" => &mut found.sub,
                APP_TOKEN_APP_ID_CLAIM => &mut found.app_id,
                _ => continue,
            };
            *slot = Some(value);
        }
        found
    }
}

impl TokenPolicy {
    /// Checks the claims of a payload whose signature has been verified, at time `now`
    /// (Unix seconds), and returns the session.
    pub fn session_from(&self, claims: Map<String, Value>, now: i64) -> Result<Session, JoseError> {
        let found = Found::in_claims(&claims);
        let expires_at = whole_seconds(found.exp, "exp")?.ok_or(JoseError::MissingClaim("exp"))?;
        if is_past_expiry(expires_at, now, self.leeway_s) {
            return Err(JoseError::Expired);
        }
        if let Some(not_before) = whole_seconds(found.nbf, "nbf")?
            && now < not_before.saturating_sub(self.leeway_s)
        {
            return Err(JoseError::NotYetValid);
        }
        if let Some(issued_at) = whole_seconds(found.iat, "iat")?
            && issued_at > now.saturating_add(self.leeway_s)
        {
            return Err(JoseError::IssuedInFuture);
        }
        // App tokens are always held to an issuer and an app id (the config requires
        // them); a policy without them refuses rather than skipping the check.
        let app_token = self.kind == TokenKind::AppToken;
        match &self.issuer {
            Some(issuer) => match found.iss {
                None => return Err(JoseError::MissingClaim("iss")),
                Some(Value::String(iss)) if iss == issuer => {}
                Some(_) => return Err(JoseError::WrongIssuer),
            },
            None if app_token => return Err(JoseError::WrongIssuer),
            None => {}
        }
        if !self.audience.is_empty() {
            match found.aud {
                None => return Err(JoseError::MissingClaim("aud")),
                Some(aud) if self.audience.iter().any(|app| aud_holds(aud, app)) => {}
                Some(_) => return Err(JoseError::WrongAudience),
            }
        } else if app_token {
            return Err(JoseError::WrongAudience);
        }
        let (tenant_id, user_id, tenant_slug) = match self.kind {
            TokenKind::SessionToken => (
                uuid_claim(found.tenant_id, "tenantId")?,
                uuid_claim(found.user_id, "userId")?
                    .hyphenated()
                    .to_string(),
                Some(text_claim(found.tenant_slug, "tenantSlug")?),
            ),
            TokenKind::AppToken => {
                self.check_app_id(found.app_id, found.aud)?;
                (
                    uuid_claim(found.app_tenant_id, APP_TOKEN_TENANT_CLAIM)?,
                    text_claim(found.sub, "sub")?,
                    None,
                )
            }
        };
        Ok(Session {
            tenant_id,
            user_id,
            tenant_slug,
            expires_at,
            claims,
        })
    }
}

impl TokenPolicy {
    pub fn algorithm(&self) -> Algorithm {
        self.kind.algorithm()
    }

    /// JTL's third check of an app token: `urn:jtl:app_id` absent, or a string equal to
    /// one of the app ids (the audience values) that the token's `aud` holds.
    fn check_app_id(&self, app_id: Option<&Value>, aud: Option<&Value>) -> Result<(), JoseError> {
        match app_id {
            None => Ok(()),
            Some(Value::String(app_id)) => {
                let accepted = self.audience.iter().any(|app| app == app_id)
                    && aud.is_some_and(|aud| aud_holds(aud, app_id));
                if accepted {
                    Ok(())
                } else {
                    Err(JoseError::WrongAppId)
                }
            }
            Some(_) => Err(JoseError::InvalidClaim {
                claim: APP_TOKEN_APP_ID_CLAIM,
                reason: "is not a string",
            }),
        }
    }
}

/// Whether an `aud` claim (a string, or an array of strings) holds `app` exactly.
fn aud_holds(aud: &Value, app: &str) -> bool {
    match aud {
        Value::String(one) => one == app,
        Value::Array(values) => values.iter().any(|value| value.as_str() == Some(app)),
        _ => false,
    }
}

/// A NumericDate claim rounded up to whole seconds (`None` when absent). Rounding up
/// keeps every comparison with a whole-second `now` exact.
fn whole_seconds(claim: Option<&Value>, name: &'static str) -> Result<Option<i64>, JoseError> {
    match claim {
        None => Ok(None),
        Some(Value::Number(number)) => {
            if let Some(seconds) = number.as_i64() {
                Ok(Some(seconds))
            } else if let Some(seconds) = number.as_f64() {
                // Saturating float-to-int cast; serde_json never yields NaN or infinity.
                Ok(Some(seconds.ceil() as i64))
            } else {
                Err(JoseError::InvalidClaim {
                    claim: name,
                    reason: "is not a number",
                })
            }
        }
        Some(_) => Err(JoseError::InvalidClaim {
            claim: name,
            reason: "is not a number",
        }),
    }
}

/// A UUID claim in its hyphenated form (any case); other UUID spellings are refused so
/// that one tenant has one spelling.
fn uuid_claim(claim: Option<&Value>, name: &'static str) -> Result<Uuid, JoseError> {
    let text = match claim {
        None => return Err(JoseError::MissingClaim(name)),
        Some(Value::String(text)) => text,
        Some(_) => {
            return Err(JoseError::InvalidClaim {
                claim: name,
                reason: "is not a string",
            });
        }
    };
    hyphenated_uuid(text).ok_or(JoseError::InvalidClaim {
        claim: name,
        reason: "is not a UUID",
    })
}

/// A UUID in its hyphenated form only (any case), the one spelling JTL uses for tenants,
/// users and client ids; the simple, braced and URN forms `Uuid::try_parse` also takes
/// are refused.
pub fn hyphenated_uuid(text: &str) -> Option<Uuid> {
    if text.len() != uuid::fmt::Hyphenated::LENGTH {
        return None;
    }
    Uuid::try_parse(text).ok()
}

/// A text claim forwarded as a header (a slug, an app token's `sub`): a string of 1–255
/// characters, none of them a control character.
fn text_claim(claim: Option<&Value>, name: &'static str) -> Result<String, JoseError> {
    let slug = match claim {
        None => return Err(JoseError::MissingClaim(name)),
        Some(Value::String(slug)) => slug,
        Some(_) => {
            return Err(JoseError::InvalidClaim {
                claim: name,
                reason: "is not a string",
            });
        }
    };
    let length = slug.chars().count();
    if length == 0 {
        return Err(JoseError::InvalidClaim {
            claim: name,
            reason: "is empty",
        });
    }
    if length > 255 {
        return Err(JoseError::InvalidClaim {
            claim: name,
            reason: "is longer than 255 characters",
        });
    }
    if slug.chars().any(char::is_control) {
        return Err(JoseError::InvalidClaim {
            claim: name,
            reason: "contains a control character",
        });
    }
    Ok(slug.clone())
}
