//! The words for what goes wrong in a JTL setup, in one place: the runtime logs and
//! `check --online` both use them, so the line an operator finds in the log is the line
//! the check prints. Pure text: no I/O, no clock of its own.

use std::path::Path;

use crate::jose::{SkippedKey, hyphenated_uuid};

/// JTL's own advice for `invalid_client` (the guide's troubleshooting table).
pub const INVALID_CLIENT: &str = "JTL rejected the app's credentials (invalid_client): \
check jtl.client_id and jtl.client_secret (or the content of jtl.client_secret_file): \
a wrong client id or secret, stray whitespace or a newline in the secret or the secret file, \
or client id and secret swapped";

/// What to do when JTL's Zitadel answers `invalid_scope` to the service account's token
/// request (the app-token flow), given the scope that was sent (`jtl.scope` as configured,
/// or `"openid"` as derived). The advice fits what was sent: it never says to set what is
/// set already.
pub fn invalid_scope_advice(scope: Option<&str>) -> String {
    let scope = scope.unwrap_or_default().trim();
    let values: Vec<&str> = scope.split_ascii_whitespace().collect();
    if values.is_empty() {
        return "no scope was sent, and JTL's Zitadel requires \"openid\" in the service \
                account's token request: include openid in jtl.scope (jtl.scope = \"openid\")"
            .to_owned();
    }
    if !values.contains(&"openid") {
        return format!(
            "JTL's Zitadel requires \"openid\" in the service account's token request, and \
             the scope sent lacks it: include openid in jtl.scope; here: jtl.scope = \"openid {}\"",
            scope.escape_debug()
        );
    }
    let not_zitadel = "jtl.token_url is probably not a Zitadel (OpenID Connect) token \
                       endpoint (JTL's is {session.issuer}/oauth/v2/token), or the service \
                       account (jtl.client_id) or its project (session.audience) is not allowed \
                       that scope";
    if values.iter().all(|value| *value == "openid") {
        return format!(
            "the provider refused \"openid\" itself, the one scope JTL's Zitadel requires: \
             {not_zitadel}; check jtl.token_url, jtl.client_id and session.audience"
        );
    }
    format!(
        "the provider refused a value of jtl.scope beside \"openid\": remove it, or leave \
         jtl.scope empty, which sends \"openid\" alone (should \"openid\" alone be refused \
         too: {not_zitadel})"
    )
}

/// Where the client secret came from, for the observations about it.
#[derive(Debug, Clone, Copy)]
pub enum SecretSource<'a> {
    Inline,
    File(&'a Path),
}

/// What can be seen wrong with the credentials without knowing the right ones: each
/// entry one short sentence naming the key. Never contains the secret.
pub fn credential_observations(
    client_id: &str,
    secret: &str,
    source: SecretSource<'_>,
) -> Vec<String> {
    let key = match source {
        SecretSource::Inline => "jtl.client_secret".to_owned(),
        SecretSource::File(path) => format!("jtl.client_secret_file ({})", path.display()),
    };
    let mut seen = Vec::new();
    if secret.is_empty() {
        seen.push(format!("{key} is empty"));
    } else if secret.ends_with("\r\n") {
        seen.push(format!(
            "{key} ends with a Windows line ending (CRLF), which is sent as part of the secret"
        ));
    } else if secret.ends_with('\n') {
        seen.push(format!(
            "{key} ends with a trailing newline, which is sent as part of the secret \
             (write it with `printf %s` or `echo -n`)"
        ));
    } else if secret.ends_with(char::is_whitespace) {
        seen.push(format!("{key} has trailing whitespace"));
    }
    if secret.starts_with(char::is_whitespace) {
        seen.push(format!("{key} has leading whitespace"));
    }
    if secret.trim().chars().any(char::is_control) {
        seen.push(format!("{key} contains a control character"));
    }
    if client_id.trim() != client_id {
        seen.push("jtl.client_id has leading or trailing whitespace".to_owned());
    }
    if !secret.is_empty() && secret.trim() == client_id.trim() {
        seen.push("the secret equals jtl.client_id".to_owned());
    } else if hyphenated_uuid(secret.trim()).is_some()
        && hyphenated_uuid(client_id.trim()).is_none()
    {
        seen.push(format!(
            "{key} looks like an id (a UUID) and jtl.client_id does not: swapped?"
        ));
    }
    seen
}

/// The observations as one clause, or what to compare when there are none.
pub fn observations_sentence(seen: &[String], secret_fingerprint: &str) -> String {
    if seen.is_empty() {
        format!(
            "nothing looks wrong with the values here; compare the secret's fingerprint \
             {secret_fingerprint} with `printf %s \"$SECRET\" | sha256sum | cut -c1-8`"
        )
    } else {
        format!(
            "seen here: {} (secret fingerprint {secret_fingerprint})",
            seen.join("; ")
        )
    }
}

/// A key of the JWKS that was not taken: "key #2 (kid "k2"): crv is not "Ed25519"".
pub fn skipped_key(key: &SkippedKey) -> String {
    match &key.kid {
        Some(kid) => format!("key #{} (kid {kid:?}): {}", key.index + 1, key.reason),
        None => format!("key #{} (no kid): {}", key.index + 1, key.reason),
    }
}

/// A list of kids for a message: "`k1`, `k2`", or "no keys".
pub fn kid_list<'a>(kids: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let shown: Vec<String> = kids
        .into_iter()
        .map(|kid| match kid {
            Some(kid) => format!("`{}`", kid.escape_debug()),
            None => "a key without kid".to_owned(),
        })
        .collect();
    if shown.is_empty() {
        "no keys".to_owned()
    } else {
        shown.join(", ")
    }
}

/// A duration in the largest unit that keeps it readable: "45 seconds", "3 minutes",
/// "2 hours", "5 days" (rounded down).
pub fn span(seconds: i64) -> String {
    let seconds = seconds.unsigned_abs();
    let (amount, unit) = match seconds {
        0..=89 => (seconds, "second"),
        90..=5_399 => (seconds / 60, "minute"),
        5_400..=172_799 => (seconds / 3600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    format!("{amount} {unit}{}", if amount == 1 { "" } else { "s" })
}

/// "in 5 minutes" or "3 minutes ago", from `at` and `now` in Unix seconds.
pub fn relative(at: i64, now: i64) -> String {
    if at >= now {
        format!("in {}", span(at - now))
    } else {
        format!("{} ago", span(now - at))
    }
}

/// Unix seconds as `2026-11-26T12:34:10Z` (RFC 3339, UTC); a time outside what can be
/// shown (years beyond ±9999) as the plain number.
pub fn utc(unix_s: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_s)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix time {unix_s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_790_000_000), "2026-09-21T14:13:20Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn spans_round_down_to_a_readable_unit() {
        assert_eq!(span(1), "1 second");
        assert_eq!(span(200), "3 minutes");
        assert_eq!(span(7200), "2 hours");
        assert_eq!(relative(100, 300), "3 minutes ago");
        assert_eq!(relative(400, 100), "in 5 minutes");
    }

    #[test]
    fn a_trailing_newline_in_the_secret_file_is_seen() {
        let seen = credential_observations(
            "my-app",
            "s3cret\n",
            SecretSource::File(Path::new("/run/secret")),
        );
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].contains("trailing newline"), "{seen:?}");
        assert!(!seen[0].contains("s3cret"));
    }

    #[test]
    fn invalid_scope_advice_without_openid_says_to_include_it() {
        for scope in [
            None,
            Some(""),
            Some(" "),
            Some("profile"),
            Some("openidx email"),
        ] {
            let advice = invalid_scope_advice(scope);
            assert!(
                advice.contains("include openid in jtl.scope"),
                "{scope:?}: {advice}"
            );
            assert!(!advice.contains("refused"), "{scope:?}: {advice}");
        }
        assert!(invalid_scope_advice(None).contains("no scope was sent"));
        assert!(invalid_scope_advice(None).ends_with("(jtl.scope = \"openid\")"));
        assert!(invalid_scope_advice(Some("profile")).ends_with("jtl.scope = \"openid profile\""));
    }

    #[test]
    fn invalid_scope_advice_for_openid_alone_names_the_endpoint_and_the_account() {
        // "openid" is what the app-token flow derives for an empty jtl.scope: telling the
        // operator to leave it empty, or to add "openid", would be telling them to do
        // what is done already.
        for scope in [Some("openid"), Some(" openid "), Some("openid openid")] {
            let advice = invalid_scope_advice(scope);
            assert!(
                advice.starts_with("the provider refused \"openid\" itself"),
                "{scope:?}: {advice}"
            );
            assert!(
                advice.ends_with("check jtl.token_url, jtl.client_id and session.audience"),
                "{scope:?}: {advice}"
            );
            assert!(advice.contains("not a Zitadel"), "{advice}");
            for wrong in ["leave jtl.scope empty", "include openid", "jtl.scope ="] {
                assert!(!advice.contains(wrong), "{scope:?}: {advice}");
            }
        }
    }

    #[test]
    fn invalid_scope_advice_for_openid_with_more_says_to_drop_the_rest() {
        let advice = invalid_scope_advice(Some("openid urn:x"));
        assert!(advice.contains("beside \"openid\""), "{advice}");
        assert!(advice.contains("leave jtl.scope empty"), "{advice}");
        assert!(!advice.contains("include openid"), "{advice}");
    }

    #[test]
    fn a_uuid_shaped_secret_beside_a_plain_id_looks_swapped() {
        let seen = credential_observations(
            "my-app",
            "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            SecretSource::Inline,
        );
        assert!(seen.iter().any(|s| s.contains("swapped")), "{seen:?}");
        assert!(credential_observations("my-app", "fine", SecretSource::Inline).is_empty());
    }
}
