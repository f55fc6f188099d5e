//! Reading JTL's answer to a token exchange or refresh. JTL has not published its
//! schema, so the reader is tolerant and strict at once: it takes every plausible
//! spelling of each field, falls back in a fixed order for the lifetime, and refuses an
//! answer without an access token, naming what was missing (never a value).

use http::HeaderValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::super::http::is_blank;
use super::super::token::{EXPIRY_MARGIN, jwt_exp_ms};
use crate::clock::{Reading, duration_ms};
use crate::secrets::{Secret, fingerprint};

/// The lifetime assumed when the answer tells none (no lifetime field, and an access
/// token that is not a JWT with `exp`): short, so a wrong guess costs a refresh, and a
/// `401` from JTL to an expired one makes the egress exchange afresh.
pub const ASSUMED_LIFETIME_S: i64 = 300;

/// Where an exchanged token's lifetime was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeFrom {
    /// `expiresIn` or `expires_in`, seconds.
    ExpiresIn,
    /// `expiresAt` or `expires_at`, RFC 3339 or epoch seconds.
    ExpiresAt,
    /// The access token's own `exp`, read without verifying.
    JwtExp,
    /// None of those: [`ASSUMED_LIFETIME_S`].
    Assumed,
}

impl LifetimeFrom {
    /// As a byte, for the shared entry.
    pub(super) fn as_byte(self) -> u8 {
        match self {
            LifetimeFrom::ExpiresIn => 0,
            LifetimeFrom::ExpiresAt => 1,
            LifetimeFrom::JwtExp => 2,
            LifetimeFrom::Assumed => 3,
        }
    }

    pub(super) fn from_byte(byte: u8) -> LifetimeFrom {
        match byte {
            1 => LifetimeFrom::ExpiresAt,
            2 => LifetimeFrom::JwtExp,
            3 => LifetimeFrom::Assumed,
            _ => LifetimeFrom::ExpiresIn,
        }
    }
}

/// One exchanged access token, ready to send.
pub struct ExchangedToken {
    /// Tells two tokens of one key apart (so a `401` drops only the one that got it).
    pub(super) serial: u64,
    pub(super) value: Secret,
    header: HeaderValue,
    fingerprint: String,
    /// Wall clock, as reckoned at receipt (what a shared entry holds).
    pub(super) expires_at_ms: i64,
    pub(super) obtained_at_ms: i64,
    /// Monotonic deadlines: no longer handed out / refreshed from then on.
    pub(super) expires_at_mono: i64,
    pub(super) refresh_at_mono: i64,
    pub(super) lifetime_from: LifetimeFrom,
}

impl std::fmt::Debug for ExchangedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangedToken")
            .field("fingerprint", &self.fingerprint)
            .field("lifetime_from", &self.lifetime_from)
            .finish()
    }
}

impl ExchangedToken {
    /// `Bearer <token>`, marked sensitive so HTTP/2 never indexes it.
    pub fn authorization(&self) -> &HeaderValue {
        &self.header
    }

    /// First 8 hex digits of the token's SHA-256, for logs.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether it may be sent at the monotonic time `mono_ms` (not within
    /// [`EXPIRY_MARGIN`] of its expiry).
    pub(super) fn is_usable_at(&self, mono_ms: i64) -> bool {
        mono_ms
            < self
                .expires_at_mono
                .saturating_sub(duration_ms(EXPIRY_MARGIN))
    }
}

/// A whole answer: the access token, and the refresh token when JTL sent one.
pub struct Answer {
    pub token: ExchangedToken,
    pub refresh_token: Option<Secret>,
}

static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Reads an answer received at `now`; `refresh_before_ms` ahead of its expiry (or at
/// half-life for short tokens) the token is due for a refresh. The error names what
/// makes the answer unusable.
pub fn read_answer(body: &[u8], now: Reading, refresh_before_ms: i64) -> Result<Answer, String> {
    if is_blank(body) {
        return Err("the answer is empty".into());
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err("the answer is not a JSON object".into());
    };
    let access = text_field(&fields, &["accessToken", "access_token"])
        .ok_or("the answer has no accessToken (nor access_token)")?;
    let refresh_token = text_field(&fields, &["refreshToken", "refresh_token"]).map(Secret::new);
    let (expires_at_ms, lifetime_from) = lifetime(&fields, access, now.wall_ms)?;
    tracing::debug!(
        lifetime_from = ?lifetime_from,
        refresh_token = refresh_token.is_some(),
        fields = ?fields.keys().collect::<Vec<_>>(),
        "read a token-exchange answer"
    );
    let token = ExchangedToken::new(
        access,
        Times {
            expires_at_ms,
            obtained_at_ms: now.wall_ms,
        },
        lifetime_from,
        now,
        refresh_before_ms,
    )?;
    Ok(Answer {
        token,
        refresh_token,
    })
}

/// A token's expiry and when it was obtained, wall clock (ms).
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub expires_at_ms: i64,
    pub obtained_at_ms: i64,
}

impl ExchangedToken {
    /// A token obtained at `times.obtained_at_ms` (here, or by another replica), read at
    /// `now`: refreshed `refresh_before_ms` ahead of its expiry, or at half-life for short
    /// ones. From here on its deadlines are monotonic (a later wall-clock step moves
    /// neither).
    pub(super) fn new(
        access: &str,
        times: Times,
        lifetime_from: LifetimeFrom,
        now: Reading,
        refresh_before_ms: i64,
    ) -> Result<ExchangedToken, String> {
        let mut header = HeaderValue::from_str(&format!("Bearer {access}"))
            .map_err(|_| "the answer's access token is not header-safe")?;
        header.set_sensitive(true);
        // Times from JTL can be absurd: nothing here may wrap.
        let lifetime_ms = times.expires_at_ms.saturating_sub(times.obtained_at_ms);
        let left_ms = times.expires_at_ms.saturating_sub(now.wall_ms);
        if lifetime_ms <= duration_ms(EXPIRY_MARGIN) || left_ms <= duration_ms(EXPIRY_MARGIN) {
            return Err("the exchanged token expires at once".into());
        }
        let refresh_before_ms = refresh_before_ms.min(lifetime_ms / 2);
        let expires_at_mono = now.mono_ms.saturating_add(left_ms);
        Ok(ExchangedToken {
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            value: Secret::new(access),
            header,
            fingerprint: fingerprint(access),
            expires_at_ms: times.expires_at_ms,
            obtained_at_ms: times.obtained_at_ms,
            expires_at_mono,
            refresh_at_mono: expires_at_mono.saturating_sub(refresh_before_ms),
            lifetime_from,
        })
    }
}

/// The first of `names` that holds a non-empty string.
fn text_field<'a>(fields: &'a Map<String, Value>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| fields.get(*name).and_then(Value::as_str))
        .filter(|text| !text.is_empty())
}

/// The first of `names` present (whatever its value).
fn present<'a>(fields: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|name| fields.get(*name).filter(|value| !value.is_null()))
}

/// When the token expires (wall clock, ms) and where that was read. A lifetime field
/// that is present but unreadable is refused rather than skipped: a guess would be
/// silent.
fn lifetime(
    fields: &Map<String, Value>,
    access: &str,
    now_ms: i64,
) -> Result<(i64, LifetimeFrom), String> {
    if let Some(value) = present(fields, &["expiresIn", "expires_in"]) {
        let seconds = number(value).ok_or("expiresIn is not a number of seconds")?;
        if seconds <= 0.0 {
            return Err("expiresIn is not positive".into());
        }
        return Ok((
            now_ms.saturating_add((seconds * 1000.0) as i64),
            LifetimeFrom::ExpiresIn,
        ));
    }
    if let Some(value) = present(fields, &["expiresAt", "expires_at"]) {
        let at_ms = match value {
            Value::String(text) => match OffsetDateTime::parse(text, &Rfc3339) {
                Ok(at) => (at.unix_timestamp_nanos() / 1_000_000)
                    .clamp(i64::MIN as i128, i64::MAX as i128) as i64,
                Err(_) => number(value)
                    .map(|seconds| (seconds * 1000.0) as i64)
                    .ok_or("expiresAt is neither RFC 3339 nor epoch seconds")?,
            },
            _ => number(value)
                .map(|seconds| (seconds * 1000.0) as i64)
                .ok_or("expiresAt is neither RFC 3339 nor epoch seconds")?,
        };
        return Ok((at_ms, LifetimeFrom::ExpiresAt));
    }
    if let Some(exp_ms) = jwt_exp_ms(access) {
        return Ok((exp_ms, LifetimeFrom::JwtExp));
    }
    Ok((
        now_ms.saturating_add(ASSUMED_LIFETIME_S * 1000),
        LifetimeFrom::Assumed,
    ))
}

/// A finite number, or a string holding one.
fn number(value: &Value) -> Option<f64> {
    let number = match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    number.is_finite().then_some(number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const NOW_MS: i64 = 1_800_000_000_000;

    fn now() -> Reading {
        Reading {
            wall_ms: NOW_MS,
            mono_ms: 5_000,
        }
    }

    fn jwt(exp_s: i64) -> String {
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        format!(
            "{}.{}.c2ln",
            encode(r#"{"alg":"RS256"}"#),
            encode(&format!(r#"{{"exp":{exp_s}}}"#))
        )
    }

    fn read(body: &str) -> Result<Answer, String> {
        read_answer(body.as_bytes(), now(), 60_000)
    }

    fn lifetime_s(answer: &Answer) -> i64 {
        (answer.token.expires_at_mono - now().mono_ms) / 1000
    }

    #[test]
    fn camel_case_and_snake_case_are_both_read() {
        for body in [
            r#"{"accessToken":"a.b.c","refreshToken":"r1","expiresIn":600}"#,
            r#"{"access_token":"a.b.c","refresh_token":"r1","expires_in":600}"#,
            r#"{"access_token":"a.b.c","refreshToken":"r1","expires_in":"600"}"#,
        ] {
            let answer = read(body).unwrap();
            assert_eq!(answer.token.authorization(), "Bearer a.b.c", "{body}");
            assert_eq!(answer.refresh_token.as_ref().unwrap().expose(), "r1");
            assert_eq!(answer.token.lifetime_from, LifetimeFrom::ExpiresIn);
            assert_eq!(lifetime_s(&answer), 600);
            // Refreshed 60 s ahead of the expiry.
            assert_eq!(
                answer.token.expires_at_mono - answer.token.refresh_at_mono,
                60_000
            );
        }
    }

    #[test]
    fn expires_at_is_read_as_rfc_3339_or_epoch_seconds() {
        let at_s = NOW_MS / 1000 + 900;
        let rfc = OffsetDateTime::from_unix_timestamp(at_s)
            .unwrap()
            .format(&Rfc3339)
            .unwrap();
        for body in [
            format!(r#"{{"accessToken":"t","expiresAt":"{rfc}"}}"#),
            format!(r#"{{"access_token":"t","expires_at":{at_s}}}"#),
            format!(r#"{{"accessToken":"t","expiresAt":"{at_s}"}}"#),
        ] {
            let answer = read(&body).unwrap();
            assert_eq!(
                answer.token.lifetime_from,
                LifetimeFrom::ExpiresAt,
                "{body}"
            );
            assert_eq!(lifetime_s(&answer), 900, "{body}");
            assert!(answer.refresh_token.is_none());
        }
    }

    #[test]
    fn without_a_lifetime_field_the_jwt_exp_and_then_300_s_are_used() {
        let token = jwt(NOW_MS / 1000 + 1200);
        let answer = read(&format!(r#"{{"accessToken":"{token}"}}"#)).unwrap();
        assert_eq!(answer.token.lifetime_from, LifetimeFrom::JwtExp);
        assert_eq!(lifetime_s(&answer), 1200);

        let answer = read(r#"{"accessToken":"opaque"}"#).unwrap();
        assert_eq!(answer.token.lifetime_from, LifetimeFrom::Assumed);
        assert_eq!(lifetime_s(&answer), ASSUMED_LIFETIME_S);
    }

    #[test]
    fn an_answer_without_an_access_token_is_refused_naming_it() {
        for body in [
            r#"{"refreshToken":"r1","expiresIn":600}"#,
            r#"{"accessToken":"","expiresIn":600}"#,
            r#"{"accessToken":42}"#,
        ] {
            let error = read(body).err().unwrap();
            assert!(error.contains("accessToken"), "{body}: {error}");
            assert!(!error.contains("r1"), "never a value: {error}");
        }
        assert_eq!(read("").err().unwrap(), "the answer is empty");
        assert_eq!(
            read("<html>").err().unwrap(),
            "the answer is not a JSON object"
        );
        assert_eq!(
            read("[1]").err().unwrap(),
            "the answer is not a JSON object"
        );
    }

    #[test]
    fn unreadable_or_absurd_lifetimes_are_refused_and_nothing_wraps() {
        for body in [
            r#"{"accessToken":"t","expiresIn":"soon"}"#,
            r#"{"accessToken":"t","expiresIn":0}"#,
            r#"{"accessToken":"t","expiresIn":-5}"#,
            r#"{"accessToken":"t","expiresAt":"yesterday"}"#,
            r#"{"accessToken":"t","expiresAt":true}"#,
            r#"{"accessToken":"t","expiresAt":-1e300}"#,
            r#"{"accessToken":"t","expires_at":0}"#,
        ] {
            assert!(read(body).is_err(), "{body}");
        }
        // Far in the future saturates instead of wrapping.
        for body in [
            r#"{"accessToken":"t","expiresIn":1e300}"#,
            r#"{"accessToken":"t","expiresAt":1e300}"#,
        ] {
            let answer = read(body).unwrap();
            assert!(answer.token.expires_at_mono > now().mono_ms, "{body}");
            assert!(answer.token.refresh_at_mono > now().mono_ms, "{body}");
        }
    }

    #[test]
    fn a_token_that_is_not_header_safe_is_refused() {
        let error = read("{\"accessToken\":\"a\\nb\"}").err().unwrap();
        assert!(error.contains("header-safe"), "{error}");
    }
}
