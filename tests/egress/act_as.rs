//! `X-JTL-Act-As` on the egress (SPEC §14): requests that act for a user or a tenant
//! installation go with the token JTL's account service (the emulator) exchanged, cached
//! per (kind, tenant, user), refreshed with rotation, one exchange per key at a time.

use std::time::Duration;

use jtl_auth_sidecar::emulator::{ExchangeKind, ExchangeSpelling, Failure};

use super::common::harness::TENANT;
use super::common::logs::Logs;
use super::common::proxy::{Answer, Proxy, get};

const OTHER_TENANT: &str = "0b7e6c1a-2f3d-4e5a-9b8c-7d6e5f4a3b2c";

async fn as_user(proxy: &Proxy, user: &str) -> Answer {
    get(
        &proxy.egress_url("/v1/orders"),
        &[
            ("x-tenant-id", TENANT),
            ("x-jtl-act-as", &format!("user:{user}")),
        ],
    )
    .await
}

fn metric_line(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

async fn exchange_metric(proxy: &Proxy, kind: &str, event: &str) -> Option<u64> {
    let answer = get(&proxy.admin_url("/metrics"), &[]).await;
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    metric_line(
        &text,
        &format!("jtl_sidecar_token_exchanges_total{{kind=\"{kind}\",event=\"{event}\"}}"),
    )
}

#[tokio::test]
async fn acting_for_a_user_sends_the_on_behalf_of_token_and_never_the_header() {
    let proxy = Proxy::builder().egress().start().await;
    let answer = as_user(&proxy, "312345678901234567").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let acting = &answer.json()["acting"];
    assert_eq!(acting["kind"], "user");
    assert_eq!(acting["user_id"], "312345678901234567");
    assert_eq!(acting["tenant_id"], TENANT);
    assert!(
        answer.echoed("x-jtl-act-as").is_empty(),
        "never sent to JTL"
    );
    assert_eq!(proxy.emulator.exchange_calls(ExchangeKind::User), 1);
    let sent = proxy.emulator.last_exchange_body().expect("an exchange");
    assert_eq!(sent["userId"], "312345678901234567");
    assert_eq!(sent["tenantId"], TENANT);

    // The second request for the same user takes the cached token.
    let again = as_user(&proxy, "312345678901234567").await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.echoed("authorization"),
        answer.echoed("authorization")
    );
    assert_eq!(proxy.emulator.exchange_calls(ExchangeKind::User), 1);
    assert_eq!(exchange_metric(&proxy, "user", "minted").await, Some(1));
    assert_eq!(exchange_metric(&proxy, "user", "cached").await, Some(1));
}

#[tokio::test]
async fn acting_for_the_tenant_sends_the_delegated_token_and_without_the_header_the_apps() {
    let proxy = Proxy::builder().egress().start().await;
    let answer = get(
        &proxy.egress_url("/v1/orders"),
        &[("x-tenant-id", TENANT), ("x-jtl-act-as", "tenant")],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json()["acting"]["kind"], "tenant");
    assert_eq!(answer.json()["acting"]["tenant_id"], TENANT);
    assert_eq!(proxy.emulator.exchange_calls(ExchangeKind::Tenant), 1);

    let plain = get(&proxy.egress_url("/v1/orders"), &[("x-tenant-id", TENANT)]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.json()["acting"]["kind"], "app");
    assert_ne!(
        plain.echoed("authorization"),
        answer.echoed("authorization")
    );
}

#[tokio::test]
async fn a_hundred_concurrent_requests_for_one_user_make_one_exchange_and_ten_users_ten() {
    let proxy = Proxy::builder().egress().start().await;
    let one_user = (0..100).map(|_| as_user(&proxy, "1001"));
    for answer in futures_util::future::join_all(one_user).await {
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    assert_eq!(proxy.emulator.exchange_calls(ExchangeKind::User), 1);

    let users: Vec<String> = (0..10).map(|i| format!("20{i}")).collect();
    let ten_users = (0..100).map(|i| as_user(&proxy, &users[i % 10]));
    for answer in futures_util::future::join_all(ten_users).await {
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    assert_eq!(proxy.emulator.exchange_calls(ExchangeKind::User), 11);
}

#[tokio::test]
async fn a_due_token_is_refreshed_once_and_no_refresh_token_is_ever_sent_twice() {
    let proxy = Proxy::builder().egress().start().await;
    proxy.emulator.set_exchanged_token_lifetime(600);
    let first = as_user(&proxy, "42").await;
    assert_eq!(first.status, 200);

    for round in 1..=3u64 {
        // Refreshed 60 s (jtl.refresh_before_expiry_s) before the expiry.
        proxy.clock.advance(Duration::from_secs(545));
        let answers = futures_util::future::join_all((0..20).map(|_| as_user(&proxy, "42"))).await;
        for answer in &answers {
            assert_eq!(answer.status, 200, "round {round}: {:?}", answer.body);
        }
        let tokens: std::collections::HashSet<_> =
            answers.iter().map(|a| a.echoed("authorization")).collect();
        assert_eq!(
            tokens.len(),
            1,
            "round {round}: one refreshed token for all"
        );
        assert_eq!(proxy.emulator.refresh_calls(ExchangeKind::User), round);
    }
    assert_eq!(proxy.emulator.exchange_calls(ExchangeKind::User), 1);
    assert_eq!(proxy.emulator.refresh_token_reuses(), 0);
    assert_eq!(exchange_metric(&proxy, "user", "refreshed").await, Some(3));
}

#[tokio::test]
async fn a_refused_refresh_mints_afresh_once_and_a_refused_mint_is_passed_back() {
    let proxy = Proxy::builder().egress().start().await;
    proxy.emulator.set_exchanged_token_lifetime(600);
    assert_eq!(as_user(&proxy, "42").await.status, 200);
    // The user left the tenant: JTL refuses the refresh, then the new exchange.
    proxy.emulator.set_user_member(TENANT, "42", false);
    proxy.clock.advance(Duration::from_secs(545));
    let api_before = proxy.emulator.api_requests();

    let answer = as_user(&proxy, "42").await;
    assert_eq!(answer.status, 403, "JTL's own status: {:?}", answer.body);
    assert_eq!(answer.json()["error"], "user_not_member", "JTL's own body");
    assert_eq!(proxy.emulator.refresh_calls(ExchangeKind::User), 1);
    assert_eq!(
        proxy.emulator.exchange_calls(ExchangeKind::User),
        2,
        "one fresh try"
    );
    assert_eq!(
        proxy.emulator.api_requests(),
        api_before,
        "nothing sent to the API"
    );
    assert_eq!(proxy.emulator.refresh_token_reuses(), 0);

    // Back in the tenant: a fresh exchange, without the dead refresh token.
    proxy.emulator.set_user_member(TENANT, "42", true);
    assert_eq!(as_user(&proxy, "42").await.status, 200);
    assert_eq!(proxy.emulator.refresh_calls(ExchangeKind::User), 1);
    assert_eq!(proxy.emulator.exchange_calls(ExchangeKind::User), 3);
}

#[tokio::test]
async fn every_answer_spelling_is_read_and_one_without_an_access_token_is_502_naming_it() {
    for spelling in [
        ExchangeSpelling::CamelCase,
        ExchangeSpelling::SnakeCase,
        ExchangeSpelling::ExpiresAtRfc3339,
        ExchangeSpelling::ExpiresAtEpoch,
        ExchangeSpelling::NoLifetime,
    ] {
        let proxy = Proxy::builder().egress().start().await;
        proxy.emulator.set_exchange_spelling(spelling);
        proxy.emulator.set_exchanged_token_lifetime(1200);
        let answer = as_user(&proxy, "7").await;
        assert_eq!(answer.status, 200, "{spelling:?}: {:?}", answer.body);
        assert_eq!(answer.json()["acting"]["user_id"], "7", "{spelling:?}");
        // The lifetime was read (not the 300 s fallback): still cached after 1000 s.
        proxy.clock.advance(Duration::from_secs(1000));
        assert_eq!(as_user(&proxy, "7").await.status, 200);
        assert_eq!(
            proxy.emulator.exchange_calls(ExchangeKind::User)
                + proxy.emulator.refresh_calls(ExchangeKind::User),
            1,
            "{spelling:?}: the lifetime of 1200 s was read"
        );
    }

    let proxy = Proxy::builder().egress().start().await;
    proxy
        .emulator
        .set_exchange_spelling(ExchangeSpelling::NoAccessToken);
    let api_before = proxy.emulator.api_requests();
    let answer = as_user(&proxy, "7").await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_eq!(answer.json()["error"], "bad_gateway");
    let description = answer.json()["error_description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(description.contains("accessToken"), "{description}");
    assert_eq!(proxy.emulator.api_requests(), api_before);
}

#[tokio::test]
async fn jtls_refusals_pass_through_with_status_and_body_and_no_token_is_logged() {
    let (logs, _capture) = Logs::capture(tracing::Level::DEBUG);
    let proxy = Proxy::builder().egress().start().await;
    let ok = as_user(&proxy, "42").await;
    assert_eq!(ok.status, 200);

    proxy.emulator.set_app_installed(OTHER_TENANT, false);
    let answer = get(
        &proxy.egress_url("/v1/orders"),
        &[("x-tenant-id", OTHER_TENANT), ("x-jtl-act-as", "tenant")],
    )
    .await;
    assert_eq!(answer.status, 404, "{:?}", answer.body);
    assert_eq!(answer.json()["error"], "app_not_installed");

    proxy
        .emulator
        .set_exchange_capability(ExchangeKind::Tenant, false);
    let answer = get(
        &proxy.egress_url("/v1/orders"),
        &[("x-tenant-id", TENANT), ("x-jtl-act-as", "tenant")],
    )
    .await;
    assert_eq!(answer.status, 403, "{:?}", answer.body);
    assert_eq!(answer.json()["error"], "capability_not_enabled");

    let text = logs.text();
    assert!(text.contains("JTL refused a token exchange"), "{text}");
    let bearer = ok.echoed("authorization")[0].clone();
    let token = bearer.trim_start_matches("Bearer ");
    assert!(!text.contains(token), "an exchanged token in the log");
}

#[tokio::test]
async fn bad_values_and_a_disabled_exchange_are_400_and_nothing_is_sent() {
    let proxy = Proxy::builder().egress().start().await;
    let api_before = proxy.emulator.api_requests();
    for (headers, says) in [
        (
            vec![("x-tenant-id", TENANT), ("x-jtl-act-as", "user:")],
            "user id",
        ),
        (
            vec![("x-tenant-id", TENANT), ("x-jtl-act-as", "admin")],
            "must be",
        ),
        (vec![("x-jtl-act-as", "tenant")], "X-Tenant-ID"),
    ] {
        let answer = get(&proxy.egress_url("/v1/orders"), &headers).await;
        assert_eq!(answer.status, 400, "{headers:?}");
        assert_eq!(answer.json()["error"], "invalid_request");
        let description = answer.json()["error_description"].to_string();
        assert!(description.contains(says), "{headers:?}: {description}");
    }
    assert_eq!(proxy.emulator.api_requests(), api_before);
    assert_eq!(proxy.emulator.exchange_calls(ExchangeKind::User), 0);

    let off = Proxy::builder()
        .egress()
        .toml("[egress]\ntoken_exchange = false")
        .start()
        .await;
    let answer = get(
        &off.egress_url("/v1/orders"),
        &[("x-tenant-id", TENANT), ("x-jtl-act-as", "tenant")],
    )
    .await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.json()["error_description"]
            .to_string()
            .contains("disabled")
    );
    assert_eq!(off.emulator.exchange_calls(ExchangeKind::Tenant), 0);
}

#[tokio::test]
async fn a_401_to_an_exchanged_token_drops_it_and_retries_once_with_a_fresh_exchange() {
    let proxy = Proxy::builder().egress().start().await;
    let first = as_user(&proxy, "42").await;
    assert_eq!(first.status, 200);
    proxy.emulator.revoke_exchanged_tokens();
    let api_before = proxy.emulator.api_requests();

    let answer = as_user(&proxy, "42").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_ne!(
        answer.echoed("authorization"),
        first.echoed("authorization")
    );
    assert_eq!(proxy.emulator.api_requests() - api_before, 2);
    assert_eq!(proxy.emulator.exchange_calls(ExchangeKind::User), 2);
    assert_eq!(proxy.emulator.refresh_token_reuses(), 0);
}

#[tokio::test]
async fn an_unreachable_or_garbled_exchange_is_502_and_the_apps_own_requests_go_on() {
    let proxy = Proxy::builder().egress().start().await;
    proxy.emulator.set_exchange_failure(Failure::Garbage);
    let answer = as_user(&proxy, "42").await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_eq!(answer.json()["error"], "bad_gateway");
    assert_eq!(exchange_metric(&proxy, "user", "failed").await, Some(1));

    let plain = get(&proxy.egress_url("/v1/orders"), &[("x-tenant-id", TENANT)]).await;
    assert_eq!(plain.status, 200);
}
