//! One access token as JTL's token endpoint answered it: its value as an `Authorization`
//! header, and when it expires and is refreshed (from `expires_in`, the token's own `exp`,
//! or an assumed lifetime for an opaque token).

use std::time::Duration;

use base64::Engine;
use http::HeaderValue;
use serde_json::Value;

use super::http::is_blank;
use crate::clock::{Reading, duration_ms};
use crate::secrets::{Secret, fingerprint};
use crate::shared_cache::Entry;

/// A token this close to its expiry is no longer handed out: it could expire while the
/// request that carries it is on its way.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// Numbers every token ever obtained, so per-thread copies can tell them apart.
static TOKEN_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One access token and when to replace it.
///
/// The deadlines that decide (usable? due for refresh?) are monotonic
/// ([`crate::clock::Clock::mono_ms`]): a lifetime is a duration from receipt, and a
/// wall-clock step must neither expire nor extend it. An absolute `exp` (or a shared
/// entry's expiry) is turned into a monotonic deadline once, at receipt. The wall-clock
/// times are kept as reckoned at receipt, for the shared entry and for display.
pub struct AccessToken {
    pub(super) serial: u64,
    pub(super) value: Secret,
    header: HeaderValue,
    /// Wall clock, as reckoned at receipt.
    expires_at_ms: i64,
    refresh_at_ms: i64,
    /// When it was obtained from JTL (by this replica or the one that shared it), wall clock.
    obtained_at_ms: i64,
    /// Monotonic deadlines: no longer handed out / refreshed from then on.
    expires_at_mono: i64,
    refresh_at_mono: i64,
    fingerprint: String,
    lifetime_from: LifetimeSource,
}

/// Where a token's lifetime was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeSource {
    /// The response's `expires_in`.
    ExpiresIn = 0,
    /// The token's own JWT `exp` (the response had no `expires_in`).
    JwtExp = 1,
    /// Assumed: an opaque token (the app-token flow's, from Zitadel) came without
    /// `expires_in`, so [`OPAQUE_TOKEN_ASSUMED_LIFETIME`] is used.
    Assumed = 2,
}

/// The lifetime assumed for an opaque service token answered without `expires_in`
/// (Zitadel always sends it; this is the fallback). Short, so that a wrong guess costs a
/// refresh every few minutes rather than an expired token: JTL's 401 on such a token makes
/// egress fetch a fresh one and retry.
pub const OPAQUE_TOKEN_ASSUMED_LIFETIME: Duration = Duration::from_secs(300);

impl LifetimeSource {
    fn from_byte(byte: u8) -> LifetimeSource {
        match byte {
            1 => LifetimeSource::JwtExp,
            2 => LifetimeSource::Assumed,
            _ => LifetimeSource::ExpiresIn,
        }
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("fingerprint", &self.fingerprint)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl AccessToken {
    pub fn value(&self) -> &str {
        self.value.expose()
    }

    /// `Bearer <token>`, marked sensitive so HTTP/2 never indexes it.
    pub fn authorization(&self) -> &HeaderValue {
        &self.header
    }

    /// The wall-clock expiry as reckoned at receipt (shown, and shared through Redis).
    pub fn expires_at_ms(&self) -> i64 {
        self.expires_at_ms
    }

    /// When the background refresher replaces this token, wall clock as reckoned at receipt.
    pub fn refresh_at_ms(&self) -> i64 {
        self.refresh_at_ms
    }

    /// The expiry on the monotonic clock ([`crate::clock::Clock::mono_ms`]).
    pub fn expires_at_mono(&self) -> i64 {
        self.expires_at_mono
    }

    /// When the background refresher replaces this token, on the monotonic clock.
    pub fn refresh_at_mono(&self) -> i64 {
        self.refresh_at_mono
    }

    /// First 8 hex digits of the token's SHA-256, for logs.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn lifetime_from(&self) -> LifetimeSource {
        self.lifetime_from
    }

    /// A token read from the shared entry, refreshed on the same schedule as one obtained
    /// here: `refresh_before` ahead, or at half-life for short ones. The entry's expiry is
    /// absolute (replicas share it); it becomes a monotonic deadline here, once.
    pub(super) fn from_entry(
        entry: &Entry,
        refresh_before_ms: i64,
        now: Reading,
    ) -> Option<AccessToken> {
        let mut header = HeaderValue::from_str(&format!("Bearer {}", entry.token)).ok()?;
        header.set_sensitive(true);
        let lifetime_ms = entry.expires_at_ms.checked_sub(entry.obtained_at_ms)?;
        if lifetime_ms <= 0 {
            return None;
        }
        let refresh_before_ms = refresh_before_ms.min(lifetime_ms / 2);
        let expires_at_mono = to_mono(entry.expires_at_ms, now);
        Some(AccessToken {
            serial: TOKEN_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            fingerprint: fingerprint(&entry.token),
            value: Secret::new(entry.token.clone()),
            header,
            expires_at_ms: entry.expires_at_ms,
            refresh_at_ms: entry.expires_at_ms.saturating_sub(refresh_before_ms),
            obtained_at_ms: entry.obtained_at_ms,
            expires_at_mono,
            refresh_at_mono: expires_at_mono.saturating_sub(refresh_before_ms),
            lifetime_from: LifetimeSource::from_byte(entry.lifetime_source),
        })
    }

    /// What the shared entry holds for this token.
    pub(super) fn to_entry(&self) -> Entry {
        Entry {
            token: self.value.expose().to_owned(),
            expires_at_ms: self.expires_at_ms,
            obtained_at_ms: self.obtained_at_ms,
            lifetime_source: self.lifetime_from as u8,
        }
    }

    /// Whether it may be handed out at the monotonic time `mono_ms`.
    pub(super) fn is_usable_at(&self, mono_ms: i64) -> bool {
        mono_ms
            < self
                .expires_at_mono
                .saturating_sub(duration_ms(EXPIRY_MARGIN))
    }
}

/// The monotonic time of the absolute (wall-clock) `wall_ms`, as the clocks read `now`;
/// saturating at the ends of i64.
fn to_mono(wall_ms: i64, now: Reading) -> i64 {
    now.mono_ms
        .saturating_add(wall_ms.saturating_sub(now.wall_ms))
}

/// Reads `access_token` and the lifetime: `expires_in`, or else the token's own `exp`
/// (read without verifying: it only decides when to refresh); an `opaque` token is never
/// decoded and without `expires_in` lives [`OPAQUE_TOKEN_ASSUMED_LIFETIME`]. The error says
/// what makes the answer unusable.
pub(super) fn parse_token_response(
    body: &[u8],
    now: Reading,
    refresh_before_ms: i64,
    opaque: bool,
) -> Result<AccessToken, &'static str> {
    if is_blank(body) {
        return Err("HTTP 200 with an empty body");
    }
    let body: Value = serde_json::from_slice(body).map_err(|_| "not JSON")?;
    let value = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|token| !token.is_empty())
        .ok_or("no access_token")?;
    let mut header = HeaderValue::from_str(&format!("Bearer {value}"))
        .map_err(|_| "access_token is not header-safe")?;
    header.set_sensitive(true);
    let now_ms = now.wall_ms;
    let (expires_at_ms, lifetime_from) = match body.get("expires_in").and_then(Value::as_f64) {
        Some(seconds) if seconds > 0.0 => (
            now_ms.saturating_add((seconds * 1000.0) as i64),
            LifetimeSource::ExpiresIn,
        ),
        Some(_) => return Err("expires_in is not positive"),
        None if opaque => (
            now_ms.saturating_add(duration_ms(OPAQUE_TOKEN_ASSUMED_LIFETIME)),
            LifetimeSource::Assumed,
        ),
        None => (
            jwt_exp_ms(value)
                .ok_or("neither expires_in nor a JWT exp tells the token's lifetime")?,
            LifetimeSource::JwtExp,
        ),
    };
    // Times from JTL can be absurd (an `exp` of ±1e300 saturates to the ends of i64):
    // nothing here may wrap.
    let lifetime_ms = expires_at_ms.saturating_sub(now_ms);
    if lifetime_ms <= duration_ms(EXPIRY_MARGIN) {
        return Err("the token expires at once");
    }
    // Refresh `refresh_before` ahead, or at half-life for tokens shorter than twice that.
    let refresh_before_ms = refresh_before_ms.min(lifetime_ms / 2);
    let refresh_at_ms = expires_at_ms.saturating_sub(refresh_before_ms);
    // From here on, the lifetime runs on the monotonic clock (an `exp` is converted here,
    // once: a later wall-clock step does not move it).
    let expires_at_mono = now.mono_ms.saturating_add(lifetime_ms);
    Ok(AccessToken {
        serial: TOKEN_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        fingerprint: fingerprint(value),
        value: Secret::new(value),
        header,
        expires_at_ms,
        refresh_at_ms,
        obtained_at_ms: now_ms,
        expires_at_mono,
        refresh_at_mono: expires_at_mono.saturating_sub(refresh_before_ms),
        lifetime_from,
    })
}

/// A JWT's `exp` in milliseconds, read without verifying (it only decides when to refresh).
pub(super) fn jwt_exp_ms(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    Some((exp * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both clocks reading `ms` (the monotonic origin at the epoch).
    fn at(ms: i64) -> Reading {
        Reading {
            wall_ms: ms,
            mono_ms: ms,
        }
    }

    /// Absurd times from JTL neither wrap nor panic: a far-future lifetime saturates, a
    /// past or far-past one is refused as expiring at once.
    #[test]
    fn absurd_lifetimes_saturate_or_are_refused_and_never_wrap() {
        let now = 1_790_000_000_000;
        let jwt = |exp: &str| {
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!(r#"{{"exp":{exp}}}"#));
            format!(r#"{{"access_token":"eyJhbGciOiJFZERTQSJ9.{payload}.c2ln"}}"#)
        };
        let far = parse_token_response(
            jwt(&i64::MAX.to_string()).as_bytes(),
            at(now),
            60_000,
            false,
        )
        .expect("a far exp");
        assert_eq!(far.expires_at_ms(), i64::MAX);
        assert_eq!(far.refresh_at_ms(), i64::MAX - 60_000);
        for past in ["-1", "-1e300", &i64::MIN.to_string()] {
            assert_eq!(
                parse_token_response(jwt(past).as_bytes(), at(now), 60_000, false).err(),
                Some("the token expires at once"),
                "exp {past}"
            );
        }
        let huge = format!(r#"{{"access_token":"abc","expires_in":{}}}"#, u64::MAX);
        let token = parse_token_response(huge.as_bytes(), at(now), 60_000, false).expect("huge");
        assert_eq!(token.expires_at_ms(), i64::MAX);
        assert!(token.is_usable_at(now));
        // The same from the shared entry.
        let entry = Entry {
            token: "abc".into(),
            expires_at_ms: i64::MAX,
            obtained_at_ms: i64::MIN,
            lifetime_source: 0,
        };
        assert!(AccessToken::from_entry(&entry, 60_000, at(now)).is_none());
    }

    #[test]
    fn lifetime_comes_from_expires_in() {
        let token = parse_token_response(
            br#"{"access_token":"abc","expires_in":3600}"#,
            at(0),
            60_000,
            false,
        )
        .unwrap();
        assert_eq!(token.expires_at_ms(), 3_600_000);
        assert_eq!(token.refresh_at_ms(), 3_540_000);
        assert_eq!(token.authorization(), "Bearer abc");
    }

    #[test]
    fn short_tokens_refresh_at_half_life() {
        let token = parse_token_response(
            br#"{"access_token":"abc","expires_in":60}"#,
            at(0),
            60_000,
            false,
        )
        .unwrap();
        assert_eq!(token.refresh_at_ms(), 30_000);
    }

    #[test]
    fn lifetime_falls_back_to_the_jwt_exp() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1000}"#);
        let body = format!(r#"{{"access_token":"eyJhbGciOiJFZERTQSJ9.{payload}.c2ln"}}"#);
        let token = parse_token_response(body.as_bytes(), at(100_000), 60_000, false).unwrap();
        assert_eq!(token.expires_at_ms(), 1_000_000);
    }

    #[test]
    fn unusable_answers_are_errors() {
        for body in [
            &b""[..],
            b" \n",
            b"not json",
            br#"{"expires_in":10}"#,
            br#"{"access_token":"","expires_in":10}"#,
            br#"{"access_token":"a\nb","expires_in":10}"#,
            br#"{"access_token":"opaque"}"#,
            br#"{"access_token":"opaque","expires_in":0}"#,
            br#"{"access_token":"opaque","expires_in":2}"#,
        ] {
            assert!(
                parse_token_response(body, at(0), 60_000, false).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn token_is_unusable_within_the_expiry_margin() {
        let token = parse_token_response(
            br#"{"access_token":"abc","expires_in":100}"#,
            at(0),
            60_000,
            false,
        )
        .unwrap();
        assert!(token.is_usable_at(94_999));
        assert!(!token.is_usable_at(95_000));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let token = parse_token_response(
            br#"{"access_token":"top-secret-token","expires_in":100}"#,
            at(0),
            0,
            false,
        )
        .unwrap();
        assert!(!format!("{token:?}").contains("top-secret-token"));
    }

    #[test]
    fn an_opaque_token_is_never_decoded_for_its_lifetime() {
        // A JWT-shaped value with a far exp: in the app-token flow it is opaque.
        let claims =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":99999999999}"#);
        let body = format!(r#"{{"access_token":"e30.{claims}.sig"}}"#);
        let token = parse_token_response(body.as_bytes(), at(1_000), 60_000, true).unwrap();
        assert_eq!(token.lifetime_from(), LifetimeSource::Assumed);
        assert_eq!(token.expires_at_ms(), 1_000 + 300_000);
        let with_expires_in = parse_token_response(
            br#"{"access_token":"opaque","expires_in":43199}"#,
            at(0),
            60_000,
            true,
        )
        .unwrap();
        assert_eq!(with_expires_in.lifetime_from(), LifetimeSource::ExpiresIn);
        assert_eq!(with_expires_in.expires_at_ms(), 43_199_000);
    }

    /// A lifetime from `expires_in` runs on the monotonic clock; an `exp` is turned into
    /// a monotonic deadline at receipt, and so is a shared entry's expiry.
    #[test]
    fn deadlines_are_monotonic_whatever_the_wall_clock_reads() {
        let now = Reading {
            wall_ms: 1_790_000_000_000,
            mono_ms: 5_000,
        };
        let token = parse_token_response(
            br#"{"access_token":"abc","expires_in":3600}"#,
            now,
            60_000,
            false,
        )
        .unwrap();
        assert_eq!(token.expires_at_ms(), 1_790_003_600_000);
        assert_eq!(token.expires_at_mono(), 3_605_000);
        assert_eq!(token.refresh_at_mono(), 3_545_000);
        assert!(token.is_usable_at(3_599_999));
        assert!(!token.is_usable_at(3_600_000));

        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1790000600}"#);
        let body = format!(r#"{{"access_token":"eyJhbGciOiJFZERTQSJ9.{payload}.c2ln"}}"#);
        let from_exp = parse_token_response(body.as_bytes(), now, 60_000, false).unwrap();
        assert_eq!(from_exp.expires_at_mono(), 605_000);

        let entry = token.to_entry();
        let later = Reading {
            wall_ms: 1_790_000_100_000,
            mono_ms: 900_000,
        };
        let shared = AccessToken::from_entry(&entry, 60_000, later).unwrap();
        assert_eq!(shared.expires_at_mono(), 900_000 + 3_500_000);
        assert_eq!(shared.refresh_at_mono(), 900_000 + 3_440_000);
    }
}
