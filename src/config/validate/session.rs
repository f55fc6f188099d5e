//! `[session]`: the token flow, its limits, the key-set timings, and the issuer and
//! audience the tokens are held to.

use super::Checker;
use crate::config::raw::RawSession;
use crate::config::settings::{Flow, FlowProfile, JtlEnvironment, SessionConfig};
use crate::jose::{TokenKind, TokenPolicy};

/// Where each kind's key set is (`None` for a kind the flow does not accept), as
/// `[jtl]` finds it.
pub(super) struct KeySetUrls {
    pub app_token: Option<url::Url>,
    pub session_token: Option<url::Url>,
}

/// The issuer and the app ids, as the flow's profiles need them.
pub(super) struct TokenRules {
    /// App tokens: `session.issuer` as written, or derived from `jtl.environment`.
    /// Session tokens: as written, or `None` (not checked).
    pub issuer: Option<String>,
    pub issuer_derived: bool,
    /// Required for app tokens; for session tokens checked only when set.
    pub audience: Vec<String>,
}

/// The section, with no profiles yet (they need `[jtl]`'s URLs too), and its rules.
pub(super) fn validate_session(
    raw: &RawSession,
    environment: Option<JtlEnvironment>,
    check: &mut Checker,
) -> Option<(SessionConfig, TokenRules)> {
    let problems_before = check.problems.len();
    let flow = Flow::from_label(&raw.flow);
    if flow.is_none() {
        check.problem(
            "session.flow",
            format!(
                "must be \"app-token\", \"session-token\" or \"both\", not {:?}",
                raw.flow
            ),
        );
    }
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
    let audience = raw.audience.values();
    for app_id in &audience {
        if app_id.contains(['<', '>']) {
            check.problem(
                "session.audience",
                format!("{app_id:?} is still a placeholder: set your app's id (JTL's appId)"),
            );
        } else if app_id.trim() != app_id || app_id.chars().any(char::is_control) {
            check.problem(
                "session.audience",
                format!("{app_id:?} has whitespace or control characters, which no app id has"),
            );
        }
    }
    let app_tokens = flow.is_some_and(|flow| flow.accepts(TokenKind::AppToken));
    // Written issuers are kept exactly as written: `iss` is compared with them, and an
    // OIDC issuer may end in '/'.
    let (issuer, issuer_derived) = match (raw.issuer.as_str(), app_tokens, environment) {
        ("", true, Some(environment)) => (Some(environment.issuer()), true),
        ("", _, _) => (None, false),
        (written, _, _) => (Some(written.to_owned()), false),
    };
    if app_tokens {
        if audience.is_empty() {
            let reason = if flow == Some(Flow::AppToken) {
                "missing (the app's id is required for app tokens, the default flow; an app \
                 that still uses session tokens sets session.flow = \"session-token\")"
            } else {
                "missing (the app's id is required for app tokens)"
            };
            check.problem("session.audience", reason);
        }
        if let Some(issuer) = &issuer
            && check
                .http_url("session.issuer", issuer)
                .is_some_and(|url| url.query().is_some())
        {
            check.problem(
                "session.issuer",
                "must not contain a query (paths are appended to it)",
            );
        }
    }
    if check.problems.len() != problems_before {
        return None;
    }
    let config = SessionConfig {
        flow: flow?,
        leeway,
        max_token_bytes: usize::try_from(max_token_bytes).ok()?,
        jwks_refresh_interval,
        jwks_min_refetch_interval,
        jwks_max_stale,
        verified_cache_entries,
        profiles: Vec::new(),
    };
    let rules = TokenRules {
        issuer,
        issuer_derived,
        audience,
    };
    Some((config, rules))
}

/// The section with one profile per kind of token the flow accepts: its claim rules and
/// where its keys are. In `both`, the issuer and the app ids apply to app tokens only
/// (JTL's session tokens carry neither).
pub(super) fn with_profiles(
    mut session: SessionConfig,
    rules: TokenRules,
    key_sets: &KeySetUrls,
) -> SessionConfig {
    let leeway_s = i64::try_from(session.leeway.as_secs()).unwrap_or(i64::MAX);
    let flow = session.flow;
    session.profiles = flow
        .kinds()
        .iter()
        .filter_map(|&kind| {
            let (url, needs_bearer) = match kind {
                TokenKind::AppToken => (key_sets.app_token.clone()?, false),
                TokenKind::SessionToken => (key_sets.session_token.clone()?, true),
            };
            let held_to_rules = kind == TokenKind::AppToken || flow == Flow::SessionToken;
            Some(FlowProfile {
                policy: TokenPolicy {
                    kind,
                    max_token_bytes: session.max_token_bytes,
                    leeway_s,
                    issuer: rules.issuer.clone().filter(|_| held_to_rules),
                    audience: if held_to_rules {
                        rules.audience.clone()
                    } else {
                        Vec::new()
                    },
                },
                key_set_url: url,
                key_set_needs_bearer: needs_bearer,
            })
        })
        .collect();
    session
}
