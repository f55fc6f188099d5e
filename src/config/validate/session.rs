//! `[session]`: the token flow, its limits and the key-set timings.

use super::Checker;
use crate::config::raw::RawSession;
use crate::config::settings::{Flow, SessionConfig};
use crate::config::DEFAULT_APP_TOKEN_ISSUER;

pub(super) fn validate_session(raw: &RawSession, check: &mut Checker) -> Option<SessionConfig> {
    let problems_before = check.problems.len();
    let flow = match raw.flow.as_str() {
        "session-token" => Some(Flow::SessionToken),
        "app-token" => Some(Flow::AppToken),
        other => {
            check.problem(
                "session.flow",
                format!("must be \"session-token\" or \"app-token\", not {other:?}"),
            );
            None
        }
    };
    let leeway = check.seconds("session.leeway_s", raw.leeway_s, 0, 600);
    let max_token_bytes = check.range("session.max_token_bytes", raw.max_token_bytes, 256, 65_536);
    let jwks_refresh_interval = check.seconds(
        "session.jwks_refresh_interval_s",
        raw.jwks_refresh_interval_s,
        1,
        86_400,
    );
    let jwks_min_refetch_interval = check.seconds(
        "session.jwks_min_refetch_interval_s",
        raw.jwks_min_refetch_interval_s,
        1,
        3600,
    );
    if raw.jwks_min_refetch_interval_s > raw.jwks_refresh_interval_s {
        check.problem(
            "session.jwks_min_refetch_interval_s",
            "must not be longer than session.jwks_refresh_interval_s",
        );
    }
    let jwks_max_stale = check.seconds(
        "session.jwks_max_stale_s",
        raw.jwks_max_stale_s,
        0,
        30 * 86_400,
    );
    let verified_cache_entries = check.range(
        "session.verified_cache_entries",
        raw.verified_cache_entries,
        0,
        10_000_000,
    );
    let mut issuer = (!raw.issuer.is_empty()).then(|| raw.issuer.clone());
    let audience = (!raw.audience.is_empty()).then(|| raw.audience.clone());
    if flow == Some(Flow::AppToken) {
        let given = issuer.get_or_insert_with(|| DEFAULT_APP_TOKEN_ISSUER.to_owned());
        // `iss` is compared exactly, and Zitadel's has no trailing '/'.
        let trimmed = given.trim_end_matches('/').len();
        given.truncate(trimmed);
        if audience.is_none() {
            check.problem(
                "session.audience",
                "missing (the app's id is required in the app-token flow)",
            );
        }
        if let Some(issuer) = &issuer {
            if check
                .http_url("session.issuer", issuer)
                .is_some_and(|url| url.query().is_some())
            {
                check.problem(
                    "session.issuer",
                    "must not contain a query (paths are appended to it)",
                );
            }
        }
    }
    if check.problems.len() != problems_before {
        return None;
    }
    Some(SessionConfig {
        flow: flow?,
        leeway,
        max_token_bytes: usize::try_from(max_token_bytes).ok()?,
        jwks_refresh_interval,
        jwks_min_refetch_interval,
        jwks_max_stale,
        verified_cache_entries,
        issuer,
        audience,
    })
}
