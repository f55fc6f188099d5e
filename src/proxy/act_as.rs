//! `X-JTL-Act-As` on the egress listener (SPEC §14): whom a request to JTL acts for.
//! `user:<user id>` asks for JTL's on-behalf-of-user token, `tenant` for the delegated
//! token of the app's installation; both need `X-Tenant-ID`. The header is never sent to
//! JTL.

use http::{HeaderMap, HeaderName};

use crate::jtl::exchange::ExchangeKey;

pub const X_JTL_ACT_AS: HeaderName = HeaderName::from_static("x-jtl-act-as");

/// The longest user id accepted; JTL's are far shorter (numeric strings or UUIDs).
const MAX_USER_ID_BYTES: usize = 128;

/// Whom the request acts for: `None` for the app itself (no header). Every refusal is a
/// sentence for a `400 invalid_request`, and nothing is sent.
pub fn act_as(
    headers: &HeaderMap,
    tenant_id: Option<&str>,
    enabled: bool,
) -> Result<Option<ExchangeKey>, &'static str> {
    // One lookup when the header is absent (almost every request).
    let Some(value) = headers.get(X_JTL_ACT_AS) else {
        return Ok(None);
    };
    if headers.get_all(X_JTL_ACT_AS).iter().nth(1).is_some() {
        return Err("The request carries the X-JTL-Act-As header more than once.");
    }
    if !enabled {
        return Err(
            "X-JTL-Act-As is disabled on this sidecar (egress.token_exchange = false); nothing was sent.",
        );
    }
    const MALFORMED: &str = "X-JTL-Act-As must be \"user:<user id>\" or \"tenant\".";
    let text = value.to_str().map_err(|_| MALFORMED)?.trim();
    let user = match text.split_once(':') {
        Some((kind, user)) if kind.eq_ignore_ascii_case("user") => Some(user),
        None if text.eq_ignore_ascii_case("tenant") => None,
        _ => return Err(MALFORMED),
    };
    if let Some(user) = user {
        if user.is_empty() {
            return Err("X-JTL-Act-As: user: needs a user id, as in \"user:<user id>\".");
        }
        if !is_user_id(user) {
            return Err(
                "The user id in X-JTL-Act-As has characters a JTL user id does not have, or is too long.",
            );
        }
    }
    let Some(tenant_id) = tenant_id else {
        return Err("X-JTL-Act-As needs X-Tenant-ID: the token acts within one tenant.");
    };
    Ok(Some(match user {
        Some(user) => ExchangeKey::user(tenant_id, user),
        None => ExchangeKey::tenant(tenant_id),
    }))
}

/// Letters, digits, `-`, `_`, `.` and `@`, at most [`MAX_USER_ID_BYTES`].
fn is_user_id(text: &str) -> bool {
    text.len() <= MAX_USER_ID_BYTES
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jtl::exchange::ExchangeKind;
    use http::HeaderValue;

    const TENANT: &str = "7C9E6679-7425-40DE-944B-E07FC1F90AE7";

    fn with(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_JTL_ACT_AS, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn no_header_acts_for_the_app() {
        assert_eq!(act_as(&with(&[]), Some(TENANT), true), Ok(None));
        assert_eq!(act_as(&with(&[]), None, false), Ok(None));
    }

    #[test]
    fn user_and_tenant_are_read_with_the_tenant_lowercased() {
        let key = act_as(&with(&["user:312345678901234567"]), Some(TENANT), true)
            .unwrap()
            .unwrap();
        assert_eq!(key.kind, ExchangeKind::User);
        assert_eq!(key.user_id, "312345678901234567");
        assert_eq!(key.tenant_id, TENANT.to_ascii_lowercase());
        let key = act_as(&with(&["Tenant"]), Some(TENANT), true)
            .unwrap()
            .unwrap();
        assert_eq!(key.kind, ExchangeKind::Tenant);
        assert_eq!(key.user_id, "");
        let key = act_as(&with(&["USER:a.b-c_d@e"]), Some(TENANT), true)
            .unwrap()
            .unwrap();
        assert_eq!(key.user_id, "a.b-c_d@e");
    }

    #[test]
    fn malformed_values_a_missing_id_or_tenant_and_repeats_are_refused() {
        for value in [
            "", "me", "user", "tenant:x", "users:1", "user:a b", "user:a/b",
        ] {
            assert!(
                act_as(&with(&[value]), Some(TENANT), true).is_err(),
                "{value:?}"
            );
        }
        let long = format!("user:{}", "1".repeat(MAX_USER_ID_BYTES + 1));
        assert!(act_as(&with(&[&long]), Some(TENANT), true).is_err());
        assert_eq!(
            act_as(&with(&["user:"]), Some(TENANT), true),
            Err("X-JTL-Act-As: user: needs a user id, as in \"user:<user id>\".")
        );
        assert_eq!(
            act_as(&with(&["tenant"]), None, true),
            Err("X-JTL-Act-As needs X-Tenant-ID: the token acts within one tenant.")
        );
        assert!(act_as(&with(&["tenant", "tenant"]), Some(TENANT), true).is_err());
    }

    #[test]
    fn disabled_refuses_the_header_whatever_its_value() {
        for value in ["tenant", "user:1", "nonsense"] {
            let refused = act_as(&with(&[value]), Some(TENANT), false).unwrap_err();
            assert!(refused.contains("disabled"), "{value}: {refused}");
        }
    }
}
