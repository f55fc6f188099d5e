//! The token-exchange step of `check --online` (SPEC §14): JTL's two exchange endpoints
//! answer the app's access token. A dry call for a random tenant is made to each; its
//! refusal (no app is installed there) is the expected answer, and shows the endpoint is
//! there and takes the token.

use http::StatusCode;

use super::{Line, Verdict, step};
use crate::config::Config;
use crate::jtl::Jtl;
use crate::jtl::exchange::{ExchangeError, ExchangeKind};

/// The `token exchange` line; `jtl` is `None` when no access token could be had.
pub async fn check(config: &Config, jtl: Option<&Jtl>) -> Line {
    if !config.egress.token_exchange || config.egress.listen.is_none() {
        return Line::new(
            Verdict::Skipped,
            step::TOKEN_EXCHANGE,
            "off (egress.token_exchange = false, or egress.listen = \"\"): X-JTL-Act-As is refused",
        );
    }
    let Some(jtl) = jtl else {
        return Line::new(
            Verdict::Skipped,
            step::TOKEN_EXCHANGE,
            "not called: no access token to exchange",
        );
    };
    let mut verdict = Verdict::Ok;
    let mut parts = Vec::new();
    for kind in [ExchangeKind::User, ExchangeKind::Tenant] {
        let url = jtl.exchange.mint_url(kind);
        let (failed, text) = match jtl.exchange.probe(kind).await {
            Ok((status, _)) if status.is_success() => (false, format!("{url} answered {status}")),
            Ok((StatusCode::UNAUTHORIZED, reason)) => (
                true,
                format!(
                    "{url} refused the app's access token (HTTP 401{})",
                    with(&reason)
                ),
            ),
            Ok((status, reason))
                if status.is_client_error() && status != StatusCode::METHOD_NOT_ALLOWED =>
            {
                (
                    false,
                    format!(
                        "{url} answered HTTP {}{} for a random tenant, as expected",
                        status.as_u16(),
                        with(&reason)
                    ),
                )
            }
            Ok((status, reason)) => (
                true,
                format!("{url} answered HTTP {}{}", status.as_u16(), with(&reason)),
            ),
            Err(ExchangeError::Unreachable(error)) => (true, format!("{url}: {error}")),
            Err(error) => (true, format!("{url}: {error}")),
        };
        if failed {
            verdict = Verdict::Fail;
        }
        parts.push(text);
    }
    let mut message = parts.join("; ");
    if verdict == Verdict::Ok {
        message.push_str(" (X-JTL-Act-As can be used)");
    }
    Line::new(verdict, step::TOKEN_EXCHANGE, message)
}

fn with(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}
