//! `check --online --session-token`: a token pasted from the browser, verified against
//! the key set just fetched with the configured policy, explained in words. The token
//! itself is never printed; it is named by its fingerprint.

use serde_json::{Map, Value};

use super::{Line, Verdict, step};
use crate::diagnose::{kid_list, relative, utc};
use crate::jose::{CompactJws, JoseError, JwkSet, TokenKind, TokenPolicy};
use crate::secrets::fingerprint;

/// Longest claim value shown; a pasted token is the operator's own, but a line stays a line.
const MAX_SHOWN: usize = 80;

/// The claims line (when the token parses) and the verdict line. `now` is Unix seconds.
/// The verdict starts with the sentence the sidecar puts in its 401 and its log, then
/// says what that means here.
pub fn diagnose(token: &str, keys: &JwkSet, policy: &TokenPolicy, now: i64) -> Vec<Line> {
    let token = pasted(token);
    let named = format!("token {}", fingerprint(token));
    let mut lines = Vec::new();
    let verdict = |verdict: Verdict, message: String| {
        Line::new(verdict, step::SESSION_TOKEN, format!("{message} ({named})"))
    };
    let jws = match CompactJws::parse_as(token, policy.max_token_bytes, policy.algorithm()) {
        Ok(jws) => jws,
        Err(error) => {
            lines.push(verdict(
                Verdict::Fail,
                TokenKind::SessionToken.refusal(&error),
            ));
            return lines;
        }
    };
    lines.push(Line::new(
        Verdict::Info,
        step::SESSION_TOKEN,
        format!("{} ({named})", claims_text(jws.kid(), jws.payload(), now)),
    ));
    let exp = jws.payload().get("exp").and_then(Value::as_f64);
    let signer = match jws.find_signer(keys) {
        Ok(key) => key,
        Err(error) => {
            let detail = match &error {
                JoseError::UnknownKey { .. } => format!(
                    " The key set has: {}.",
                    kid_list(keys.keys().iter().map(|key| key.kid()))
                ),
                JoseError::NoKeyMatches { .. } => {
                    " It was signed by a key JTL does not publish at jtl.jwks_url (another JTL environment?) or altered on the way.".to_owned()
                }
                JoseError::BadSignature => {
                    " The key with that kid did not sign it: altered on the way, or signed elsewhere.".to_owned()
                }
                _ => String::new(),
            };
            lines.push(verdict(
                Verdict::Fail,
                format!("{}{detail}", TokenKind::SessionToken.refusal(&error)),
            ));
            return lines;
        }
    };
    let signed_by = match signer.kid() {
        Some(kid) => format!("key `{}`", kid.escape_debug()),
        None => format!("key {} (no kid)", signer.thumbprint()),
    };
    match policy.session_from(jws.into_payload(), now) {
        Ok(session) => lines.push(verdict(
            Verdict::Ok,
            format!(
                "valid: signed by {signed_by}, tenant {} ({}), user {}, expires {}",
                session.tenant_id,
                shown(session.tenant_slug.as_deref().unwrap_or_default()),
                session.user_id,
                relative(session.expires_at, now)
            ),
        )),
        Err(error) => {
            let detail = match (&error, exp) {
                (JoseError::Expired, Some(exp)) => format!(
                    " It expired {} (exp {}, leeway {} s; signed by {signed_by}). The App Shell \
                     hands out fresh tokens: call getSessionToken per request, do not keep one.",
                    relative(exp.ceil() as i64, now),
                    utc(exp.ceil() as i64),
                    policy.leeway_s
                ),
                (JoseError::NotYetValid | JoseError::IssuedInFuture, _) => {
                    format!(" This machine's clock says {}; is it right?", utc(now))
                }
                (JoseError::WrongIssuer | JoseError::WrongAudience, _) => {
                    " Compare session.issuer / session.audience with the token's iss / aud."
                        .to_owned()
                }
                _ => String::new(),
            };
            lines.push(verdict(
                Verdict::Fail,
                format!("{}{detail}", TokenKind::SessionToken.refusal(&error)),
            ));
        }
    }
    lines
}

/// `tenantId ..., userId ..., tenantSlug "...", exp ... (in 5 minutes), header kid ...`,
/// as sent (not yet verified).
fn claims_text(kid: Option<&str>, payload: &Map<String, Value>, now: i64) -> String {
    let claim = |name: &str| match payload.get(name) {
        None => "missing".to_owned(),
        Some(Value::String(text)) => shown(text),
        Some(other) => shown(&other.to_string()),
    };
    let exp = match payload.get("exp").and_then(Value::as_f64) {
        Some(exp) => {
            let exp = exp.ceil() as i64;
            format!("{} ({})", utc(exp), relative(exp, now))
        }
        None => claim("exp"),
    };
    let kid = match kid {
        Some(kid) => shown(kid),
        None => "none (each key of the set is tried)".to_owned(),
    };
    format!(
        "claims as sent: tenantId {}, userId {}, tenantSlug {}, exp {exp}, header kid {kid}",
        claim("tenantId"),
        claim("userId"),
        claim("tenantSlug"),
    )
}

/// The token in pasted text, which may carry the scheme or a line break.
pub(super) fn pasted(token: &str) -> &str {
    let token = token.trim();
    token
        .strip_prefix("Bearer ")
        .map(str::trim)
        .unwrap_or(token)
}

/// A value quoted and escaped, cut at [`MAX_SHOWN`] characters.
pub(super) fn shown(text: &str) -> String {
    let cut: String = text.chars().take(MAX_SHOWN).collect();
    let ellipsis = if cut.len() < text.len() { "…" } else { "" };
    format!("\"{}{ellipsis}\"", cut.escape_debug())
}
