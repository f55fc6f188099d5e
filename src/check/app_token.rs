//! `check --online --session-token` in the app-token flow (SPEC §11): an app token pasted
//! from the browser (AppBridge's `getAppToken`), verified against the RSA key set just
//! fetched and explained by JTL's three checks, one line each and in JTL's order:
//!
//! 1. signature and issuer: the header `kid` names a key of the set, that key signed the
//!    token, `iss` equals `session.issuer`, and `exp` / `nbf` / `iat` hold (with leeway);
//! 2. audience: `aud` contains the app id (`session.audience`);
//! 3. app id: `urn:jtl:app_id` absent, or equal to the app id.
//!
//! Then the verdict, which starts with the sentence the sidecar's 401 would carry. The
//! token itself is never printed; it is named by its fingerprint.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::session_token::{pasted, shown};
use super::{Line, Verdict, step};
use crate::diagnose::{kid_list, relative, utc};
use crate::jose::{
    APP_TOKEN_APP_ID_CLAIM, APP_TOKEN_TENANT_CLAIM, CompactJws, JoseError, JwkSet, TokenKind,
    TokenPolicy, VerifyingKey,
};
use crate::secrets::fingerprint;

/// Longest JSON value (an `aud` array) shown.
const MAX_JSON_SHOWN: usize = 160;
/// Longest `kid` shown.
const MAX_KID_SHOWN: usize = 64;

/// The claims line (when the token parses), the three check lines and the verdict line.
/// `now` is Unix seconds.
pub fn diagnose(token: &str, keys: &JwkSet, policy: &TokenPolicy, now: i64) -> Vec<Line> {
    let token = pasted(token);
    let named = format!("token {}", fingerprint(token));
    let verdict = |verdict: Verdict, message: String| {
        Line::new(verdict, step::APP_TOKEN, format!("{message} ({named})"))
    };
    let jws = match CompactJws::parse_as(token, policy.max_token_bytes, policy.algorithm()) {
        Ok(jws) => jws,
        Err(error) => {
            let detail = match &error {
                JoseError::OtherKind(_) => " Its header alg is \"EdDSA\": app tokens \
                                            (getAppToken) are RS256; with session.flow = \
                                            \"both\" the sidecar takes both kinds."
                    .to_owned(),
                JoseError::UnsupportedAlgorithm => header_alg(token)
                    .map(|alg| {
                        format!(
                            " Its header alg is {}; JTL's app tokens are RS256.",
                            shown(&alg)
                        )
                    })
                    .unwrap_or_default(),
                _ => String::new(),
            };
            return vec![verdict(
                Verdict::Fail,
                format!("{}{detail}", TokenKind::AppToken.refusal(&error)),
            )];
        }
    };
    let mut lines = vec![Line::new(
        Verdict::Info,
        step::APP_TOKEN,
        format!("{} ({named})", claims_text(jws.kid(), jws.payload(), now)),
    )];
    let signer = jws.find_signer(keys);
    lines.push(signature_and_issuer(&jws, &signer, keys, policy, now));
    let verified = signer.is_ok();
    lines.push(audience(jws.payload(), policy, verified));
    lines.push(app_id(jws.payload(), policy, verified));

    let key = match signer {
        Ok(key) => key,
        Err(error) => {
            lines.push(verdict(
                Verdict::Fail,
                format!(
                    "{} It fails JTL's check 1 (signature and issuer) above.",
                    TokenKind::AppToken.refusal(&error)
                ),
            ));
            return lines;
        }
    };
    let exp = seconds(jws.payload(), "exp");
    match policy.session_from(jws.into_payload(), now) {
        Ok(session) => lines.push(verdict(
            Verdict::Ok,
            format!(
                "valid: signed by key {}, tenant {}, user {}, expires {}",
                key.kid()
                    .map(kid_text)
                    .unwrap_or_else(|| "without kid".into()),
                session.tenant_id,
                shown(&session.user_id),
                relative(session.expires_at, now)
            ),
        )),
        Err(error) => {
            let detail = match (&error, exp) {
                (JoseError::Expired, Some(exp)) => format!(
                    " It expired {} (exp {}, leeway {} s). The App Shell hands out fresh app \
                     tokens: call getAppToken per request, do not keep one.",
                    relative(exp, now),
                    utc(exp),
                    policy.leeway_s
                ),
                (JoseError::NotYetValid | JoseError::IssuedInFuture, _) => {
                    format!(" This machine's clock says {}; is it right?", utc(now))
                }
                _ => match jtl_check_of(&error) {
                    Some(check) => format!(" It fails JTL's check {check} above."),
                    None => " JTL's three checks pass, but the sidecar also needs \
                             urn:jtl:tenant_id (a UUID) and sub (1-255 characters) to \
                             forward them."
                        .to_owned(),
                },
            };
            lines.push(verdict(
                Verdict::Fail,
                format!("{}{detail}", TokenKind::AppToken.refusal(&error)),
            ));
        }
    }
    lines
}

/// Which of JTL's three checks a refusal belongs to, as shown on the check lines.
fn jtl_check_of(error: &JoseError) -> Option<&'static str> {
    match error {
        JoseError::MissingKid
        | JoseError::UnknownKey { .. }
        | JoseError::BadSignature
        | JoseError::NoKeys
        | JoseError::NoKeyMatches { .. }
        | JoseError::WrongIssuer
        | JoseError::Expired
        | JoseError::NotYetValid
        | JoseError::IssuedInFuture
        | JoseError::MissingClaim("iss" | "exp")
        | JoseError::InvalidClaim {
            claim: "exp" | "nbf" | "iat",
            ..
        } => Some("1 (signature and issuer)"),
        JoseError::WrongAudience | JoseError::MissingClaim("aud") => Some("2 (audience)"),
        JoseError::WrongAppId
        | JoseError::InvalidClaim {
            claim: APP_TOKEN_APP_ID_CLAIM,
            ..
        } => Some("3 (app id)"),
        _ => None,
    }
}

/// Check 1: the key, the signature, `iss`, and the lifetime claims. When the signature
/// does not verify, `iss` and the lifetime are told as sent (unverified).
fn signature_and_issuer(
    jws: &CompactJws<'_>,
    signer: &Result<&VerifyingKey, JoseError>,
    keys: &JwkSet,
    policy: &TokenPolicy,
    now: i64,
) -> Line {
    let mut failed = false;
    let mut parts = Vec::new();
    match signer {
        Ok(key) => parts.push(format!(
            "key {} ({}) signed it",
            key.kid()
                .map(kid_text)
                .unwrap_or_else(|| "without kid".into()),
            key_text(key)
        )),
        Err(error) => {
            failed = true;
            parts.push(match error {
                JoseError::MissingKid => {
                    "the header names no key (kid), which Zitadel's app tokens always do".to_owned()
                }
                JoseError::UnknownKey { kid } => format!(
                    "kid {} is not in the key set at jtl.jwks_url (it has {}): a token of \
                     another issuer, or signed by a key not published there",
                    kid_text(kid),
                    kid_list(keys.keys().iter().map(|key| key.kid()))
                ),
                JoseError::BadSignature => format!(
                    "kid {} is in the key set, but that key did not sign this token: altered on \
                     the way, cut when copied, or signed elsewhere",
                    jws.kid().map(kid_text).unwrap_or_default()
                ),
                other => other.to_string(),
            });
        }
    }
    let signature_failed = failed;
    let mut claims = Vec::new();
    let payload = jws.payload();
    match (&policy.issuer, payload.get("iss")) {
        (None, _) => claims.push("iss not checked (session.issuer is not set)".to_owned()),
        (Some(issuer), Some(Value::String(iss))) if iss == issuer => {
            claims.push(format!("iss equals session.issuer {}", shown(issuer)))
        }
        (Some(issuer), None) => {
            failed = true;
            claims.push(format!(
                "the token has no iss claim (session.issuer is {})",
                shown(issuer)
            ));
        }
        (Some(issuer), Some(iss)) => {
            failed = true;
            claims.push(format!(
                "iss {} is not session.issuer {} (a token of another JTL environment, or \
                 session.issuer mistyped)",
                json_text(iss),
                shown(issuer)
            ));
        }
    }
    match lifetime(payload, policy, now) {
        Ok(text) => claims.push(text),
        Err(text) => {
            failed = true;
            claims.push(text);
        }
    }
    let claims = claims.join("; ");
    if signature_failed {
        parts.push(format!("as sent (unverified): {claims}"));
    } else {
        parts.push(claims);
    }
    let verdict = if failed { Verdict::Fail } else { Verdict::Ok };
    Line::new(verdict, step::SIGNATURE_AND_ISSUER, parts.join("; "))
}

/// The lifetime claims by the policy's own rules (and leeway): the time checks come first
/// in [`TokenPolicy::session_from`], so its verdict without issuer and audience tells them.
fn lifetime(
    payload: &Map<String, Value>,
    policy: &TokenPolicy,
    now: i64,
) -> Result<String, String> {
    let timing = TokenPolicy {
        issuer: None,
        audience: Vec::new(),
        ..policy.clone()
    };
    let leeway = policy.leeway_s;
    let at = |name: &str| seconds(payload, name).unwrap_or_default();
    match timing.session_from(payload.clone(), now) {
        Err(JoseError::Expired) => Err(format!(
            "expired {} (exp {}, leeway {leeway} s)",
            relative(at("exp"), now),
            utc(at("exp"))
        )),
        Err(JoseError::NotYetValid) => Err(format!(
            "not valid yet: nbf {} ({}, leeway {leeway} s); this machine's clock says {}",
            utc(at("nbf")),
            relative(at("nbf"), now),
            utc(now)
        )),
        Err(JoseError::IssuedInFuture) => Err(format!(
            "issued in the future: iat {} ({}, leeway {leeway} s); this machine's clock says {}",
            utc(at("iat")),
            relative(at("iat"), now),
            utc(now)
        )),
        Err(JoseError::MissingClaim("exp")) => Err("the token has no exp claim".to_owned()),
        Err(JoseError::InvalidClaim {
            claim: claim @ ("exp" | "nbf" | "iat"),
            reason,
        }) => Err(format!("its {claim} claim {reason}")),
        _ => Ok(format!(
            "lifetime ok (expires {}, leeway {leeway} s)",
            relative(at("exp"), now)
        )),
    }
}

/// Check 2: `aud` (a string or an array of strings) contains the app id.
fn audience(payload: &Map<String, Value>, policy: &TokenPolicy, verified: bool) -> Line {
    if policy.audience.is_empty() {
        return Line::new(
            Verdict::Skipped,
            step::AUDIENCE,
            "not checked: session.audience is not set",
        );
    }
    let app_id = &audience_shown(policy);
    let aud = payload.get("aud");
    let passes = aud.is_some_and(|aud| policy.audience.iter().any(|app| aud_holds(aud, app)));
    let text = match aud {
        Some(aud) if passes => format!(
            "aud {} contains the app id (session.audience {})",
            json_text(aud),
            app_id
        ),
        Some(aud) => format!(
            "aud {} does not contain the app id (session.audience {}): a token for another \
             app, or session.audience is not this app's id (JTL's appId)",
            json_text(aud),
            app_id
        ),
        None => format!(
            "the token has no aud claim; it must contain the app id (session.audience {})",
            app_id
        ),
    };
    decided(step::AUDIENCE, passes, verified, text)
}

/// Check 3: `urn:jtl:app_id` absent, or a string equal to the app id.
fn app_id(payload: &Map<String, Value>, policy: &TokenPolicy, verified: bool) -> Line {
    let app_id = &audience_shown(policy);
    let aud = payload.get("aud");
    let (passes, text) = match payload.get(APP_TOKEN_APP_ID_CLAIM) {
        None => (
            true,
            format!("{APP_TOKEN_APP_ID_CLAIM} absent, which passes"),
        ),
        Some(Value::String(claim))
            if policy.audience.contains(claim) && aud.is_some_and(|aud| aud_holds(aud, claim)) =>
        {
            (
                true,
                format!(
                    "{APP_TOKEN_APP_ID_CLAIM} {} equals the app id (session.audience)",
                    shown(claim)
                ),
            )
        }
        Some(Value::String(claim)) => (
            false,
            format!(
                "{APP_TOKEN_APP_ID_CLAIM} {} is not the app id (session.audience {}): the \
                 token was issued for another app",
                shown(claim),
                app_id
            ),
        ),
        Some(other) => (
            false,
            format!(
                "{APP_TOKEN_APP_ID_CLAIM} {} is not a string",
                json_text(other)
            ),
        ),
    };
    decided(step::APP_ID, passes, verified, text)
}

/// `session.audience` as shown: the one app id quoted, or the list.
fn audience_shown(policy: &TokenPolicy) -> String {
    match policy.audience.as_slice() {
        [one] => shown(one),
        many => json_text(&Value::from(many.to_vec())),
    }
}

/// Whether `aud` (a string or an array of strings) holds `app` exactly.
fn aud_holds(aud: &Value, app: &str) -> bool {
    match aud {
        Value::String(one) => one == app,
        Value::Array(values) => values.iter().any(|value| value.as_str() == Some(app)),
        _ => false,
    }
}

/// A check on the claims: decided when the signature verified, else only told as sent.
fn decided(step: &'static str, passes: bool, verified: bool, text: String) -> Line {
    match (verified, passes) {
        (false, _) => Line::new(
            Verdict::Skipped,
            step,
            format!("not decided: the signature was not verified; as sent, {text}"),
        ),
        (true, true) => Line::new(Verdict::Ok, step, text),
        (true, false) => Line::new(Verdict::Fail, step, text),
    }
}

/// `claims as sent: iss "...", aud [...], urn:jtl:app_id ..., urn:jtl:tenant_id ...,
/// sub ..., exp ... (in 5 minutes), header kid ...` (not yet verified).
fn claims_text(kid: Option<&str>, payload: &Map<String, Value>, now: i64) -> String {
    let claim = |name: &str, absent: &str| {
        payload
            .get(name)
            .map(json_text)
            .unwrap_or_else(|| absent.to_owned())
    };
    let exp = match seconds(payload, "exp") {
        Some(exp) => format!("{} ({})", utc(exp), relative(exp, now)),
        None => claim("exp", "missing"),
    };
    let kid = kid.map(shown).unwrap_or_else(|| "none".to_owned());
    format!(
        "claims as sent: iss {}, aud {}, {APP_TOKEN_APP_ID_CLAIM} {}, {APP_TOKEN_TENANT_CLAIM} {}, sub {}, exp {exp}, header kid {kid}",
        claim("iss", "missing"),
        claim("aud", "missing"),
        claim(APP_TOKEN_APP_ID_CLAIM, "absent"),
        claim(APP_TOKEN_TENANT_CLAIM, "missing"),
        claim("sub", "missing"),
    )
}

/// A NumericDate claim rounded up to whole seconds, as the policy reads it.
fn seconds(payload: &Map<String, Value>, name: &str) -> Option<i64> {
    payload
        .get(name)
        .and_then(Value::as_f64)
        .map(|value| value.ceil() as i64)
}

/// A claim value: a string quoted and escaped, anything else as compact JSON, cut short.
fn json_text(value: &Value) -> String {
    match value {
        Value::String(text) => shown(text),
        other => {
            let text = other.to_string();
            let cut: String = text.chars().take(MAX_JSON_SHOWN).collect();
            let ellipsis = if cut.len() < text.len() { "…" } else { "" };
            format!("{cut}{ellipsis}")
        }
    }
}

/// A kid in backticks, escaped and cut short (it comes from the token).
fn kid_text(kid: &str) -> String {
    let cut: String = kid.chars().take(MAX_KID_SHOWN).collect();
    let ellipsis = if cut.len() < kid.len() { "…" } else { "" };
    format!("`{}`{ellipsis}", cut.escape_debug())
}

fn key_text(key: &VerifyingKey) -> String {
    match key {
        VerifyingKey::Rsa(rsa) => format!("RSA, {} bits", rsa.modulus_bits()),
        VerifyingKey::Ed25519(_) => "Ed25519".to_owned(),
    }
}

/// The header's `alg`, read without any check, to say what kind of token came instead.
fn header_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let header: Value = serde_json::from_slice(&bytes).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{RsaKey, TokenKind, base64url_encode};
    use ring::rand::SystemRandom;
    use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents};
    use serde_json::json;

    const NOW: i64 = 1_790_000_000;
    const ISSUER: &str = "https://id.jtl-cloud.com";
    const APP: &str = "312909075212468632";
    const KID: &str = "312909097518325144";
    const TENANT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    fn pair() -> RsaKeyPair {
        RsaKeyPair::from_pkcs8(include_bytes!("../emulator/keys/rsa2048-1.pk8")).unwrap()
    }

    fn keys() -> JwkSet {
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair().public());
        JwkSet::from_keys([
            RsaKey::from_components(Some(KID.into()), &public.n, &public.e).unwrap(),
        ])
    }

    fn policy() -> TokenPolicy {
        TokenPolicy {
            kind: TokenKind::AppToken,
            issuer: Some(ISSUER.into()),
            audience: vec![APP.into()],
            ..TokenPolicy::default()
        }
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER, "sub": "312909186034567229", "aud": [APP],
            "urn:jtl:tenant_id": TENANT, "urn:jtl:app_id": APP,
            "iat": NOW - 10, "exp": NOW + 3600,
        })
    }

    fn sign(kid: &str, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        let input = format!(
            "{}.{}",
            base64url_encode(header.to_string().as_bytes()),
            base64url_encode(claims.to_string().as_bytes())
        );
        let pair = pair();
        let mut signature = vec![0; pair.public().modulus_len()];
        pair.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut signature,
        )
        .unwrap();
        format!("{input}.{}", base64url_encode(&signature))
    }

    fn verdicts(lines: &[Line]) -> Vec<(Verdict, &'static str)> {
        lines.iter().map(|line| (line.verdict, line.step)).collect()
    }

    #[test]
    fn a_valid_app_token_passes_the_three_checks_in_order() {
        let lines = diagnose(&sign(KID, &claims()), &keys(), &policy(), NOW);
        assert_eq!(
            verdicts(&lines),
            [
                (Verdict::Info, step::APP_TOKEN),
                (Verdict::Ok, step::SIGNATURE_AND_ISSUER),
                (Verdict::Ok, step::AUDIENCE),
                (Verdict::Ok, step::APP_ID),
                (Verdict::Ok, step::APP_TOKEN),
            ],
            "{lines:#?}"
        );
        assert!(
            lines[1].message.contains("(RSA, 2048 bits) signed it"),
            "{}",
            lines[1]
        );
        assert!(
            lines[4]
                .message
                .starts_with("valid: signed by key `312909097518325144`")
        );
    }

    #[test]
    fn each_failing_check_is_its_own_line_and_the_verdict_is_the_401_sentence() {
        let mut wrong_aud = claims();
        wrong_aud["aud"] = json!(["another-app"]);
        wrong_aud.as_object_mut().unwrap().remove("urn:jtl:app_id");
        let lines = diagnose(&sign(KID, &wrong_aud), &keys(), &policy(), NOW);
        assert_eq!(lines[2].verdict, Verdict::Fail, "{lines:#?}");
        assert!(
            lines[2]
                .message
                .contains("[\"another-app\"] does not contain")
        );
        assert_eq!(lines[3].verdict, Verdict::Ok, "{}", lines[3]);
        assert!(
            lines[4]
                .message
                .starts_with(&TokenKind::AppToken.refusal(&JoseError::WrongAudience))
        );

        let mut wrong_app = claims();
        wrong_app["urn:jtl:app_id"] = json!("999");
        let lines = diagnose(&sign(KID, &wrong_app), &keys(), &policy(), NOW);
        assert_eq!(
            verdicts(&lines)[1..4],
            [
                (Verdict::Ok, step::SIGNATURE_AND_ISSUER),
                (Verdict::Ok, step::AUDIENCE),
                (Verdict::Fail, step::APP_ID),
            ]
        );
        assert!(
            lines[4]
                .message
                .starts_with(&TokenKind::AppToken.refusal(&JoseError::WrongAppId))
        );

        let mut wrong_iss = claims();
        wrong_iss["iss"] = json!("https://id.example");
        let lines = diagnose(&sign(KID, &wrong_iss), &keys(), &policy(), NOW);
        assert_eq!(lines[1].verdict, Verdict::Fail);
        assert!(
            lines[1]
                .message
                .contains("iss \"https://id.example\" is not session.issuer")
        );
        assert!(
            lines[4]
                .message
                .starts_with(&TokenKind::AppToken.refusal(&JoseError::WrongIssuer))
        );
    }

    #[test]
    fn an_unknown_kid_fails_check_1_and_leaves_the_others_undecided() {
        let lines = diagnose(&sign("abc", &claims()), &keys(), &policy(), NOW);
        assert_eq!(
            verdicts(&lines)[1..],
            [
                (Verdict::Fail, step::SIGNATURE_AND_ISSUER),
                (Verdict::Skipped, step::AUDIENCE),
                (Verdict::Skipped, step::APP_ID),
                (Verdict::Fail, step::APP_TOKEN),
            ]
        );
        assert!(lines[1].message.contains("kid `abc` is not in the key set"));
        assert!(lines[1].message.contains("it has `312909097518325144`"));
        assert!(lines[2].message.contains("as sent, aud"), "{}", lines[2]);
        let unknown = TokenKind::AppToken.refusal(&JoseError::UnknownKey { kid: "abc".into() });
        assert!(lines[4].message.starts_with(&unknown), "{}", lines[4]);
    }

    #[test]
    fn an_expired_app_token_says_how_long_ago_in_check_1() {
        let mut expired = claims();
        expired["exp"] = json!(NOW - 200);
        let lines = diagnose(&sign(KID, &expired), &keys(), &policy(), NOW);
        assert_eq!(lines[1].verdict, Verdict::Fail);
        assert!(
            lines[1].message.contains("expired 3 minutes ago"),
            "{}",
            lines[1]
        );
        assert!(lines[4].message.starts_with("The app token has expired."));
        assert!(lines[4].message.contains("getAppToken"));
    }

    #[test]
    fn a_session_token_in_the_app_token_flow_is_named() {
        let header = base64url_encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
        let token = format!("{header}.{}.{}", base64url_encode(b"{}"), "A".repeat(86));
        let lines = diagnose(&token, &keys(), &policy(), NOW);
        assert_eq!(verdicts(&lines), [(Verdict::Fail, step::APP_TOKEN)]);
        assert!(
            lines[0]
                .message
                .contains("a session token (getSessionToken)")
        );
    }
}
