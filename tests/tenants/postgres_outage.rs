//! PostgreSQL going away mid-run and coming back: 503, not ready, recovered; a frozen
//! connection and a statement stuck on a lock, each ended by its deadline.

use super::*;
use common::logs::Logs;
use jtl_auth_sidecar::tenants::StoreError;
use jtl_auth_sidecar::tenants::store::{
    HEALTH_CHECK_INTERVAL, POSTGRES_CALL_TIMEOUT, POSTGRES_STATEMENT_TIMEOUT,
};
use std::time::Instant;

#[tokio::test]
async fn postgres_going_away_is_503_and_not_ready_and_recovers_by_itself() {
    let Some(db) =
        TestDb::postgres("postgres_going_away_is_503_and_not_ready_and_recovers_by_itself").await
    else {
        return;
    };
    let server = url::Url::parse(&db.url).unwrap();
    let target =
        tokio::net::lookup_host((server.host_str().unwrap(), server.port().unwrap_or(5432)))
            .await
            .unwrap()
            .next()
            .unwrap();
    let relay = Relay::reserve(target).await;

    // Down at start-up: the sidecar starts anyway, not ready, connect is 503.
    let proxy = sidecar(&db.via(relay.addr)).await;
    let answer = post(&proxy, &token_body(&proxy.token()), &[]).await;
    assert_eq!(answer.status, 503, "{}", body_text(&answer));
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
    let not_ready = wait_for_readiness(&proxy, 503).await;
    assert!(body_text(&not_ready).contains("tenant_store"));

    // The store comes up: ready by itself, the schema is created, connects work.
    relay.start();
    wait_for_readiness(&proxy, 200).await;
    let answer = post(&proxy, &token_body(&proxy.token()), &[]).await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));

    // It goes away mid-run: 503 and not ready.
    relay.cut();
    let answer = post(&proxy, &token_body(&proxy.token()), &[]).await;
    assert_eq!(answer.status, 503, "{}", body_text(&answer));
    assert!(answer.headers.contains_key("retry-after"));
    let not_ready = wait_for_readiness(&proxy, 503).await;
    assert!(body_text(&not_ready).contains("tenant_store"));

    // And comes back: ready again, connects work, still one row.
    relay.start();
    wait_for_readiness(&proxy, 200).await;
    let token = mint(&proxy, USER, "acme-again");
    let answer = post(&proxy, &token_body(&token), &[]).await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));
    let (count, tenant) = stored(&db).await;
    assert_eq!(count, 1);
    assert_eq!(tenant.unwrap().tenant_slug, "acme-again");
    assert_eq!(proxy.backend_hits(), 0);
    relay.cut();
    drop(proxy);
    db.drop_schema().await;
}

/// A password in the store's URL: the local server trusts the test's user without one, so
/// it changes nothing but what could leak into a log line.
const PASSWORD: &str = "never-logged-4f1c";

/// `jtl_sidecar_tenant_records_total{result="failure"}` from `/metrics`.
async fn record_failures(proxy: &Proxy) -> u64 {
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await;
    body_text(&metrics)
        .lines()
        .find_map(|line| line.strip_prefix("jtl_sidecar_tenant_records_total{result=\"failure\"} "))
        .expect("the failure count in /metrics")
        .trim()
        .parse()
        .unwrap()
}

/// A connection that freezes mid-statement (the relay stops carrying bytes, nothing is
/// closed) is ended by neither the pool's acquire deadline nor PostgreSQL's
/// `statement_timeout`, only by the store's own call deadline: readiness turns red within
/// it, naming the tenant store. Verified requests are served meanwhile without waiting on
/// the store; once the relay thaws, readiness is green again by itself.
#[tokio::test]
async fn a_frozen_connection_turns_readiness_red_within_the_call_deadline_and_requests_are_still_served()
 {
    let test = "a_frozen_connection_turns_readiness_red_within_the_call_deadline_and_requests_are_still_served";
    let Some(db) = TestDb::postgres(test).await else {
        return;
    };
    let logs = Logs::global();
    let relay = Relay::reserve(db.server_addr().await).await;
    relay.start();
    let mut url = url::Url::parse(&db.via(relay.addr)).unwrap();
    url.set_password(Some(PASSWORD)).unwrap();
    // Plain text, so the relay can tell a ping from a statement.
    url.query_pairs_mut().append_pair("sslmode", "disable");
    let proxy = sidecar(url.as_str()).await;
    wait_for_readiness(&proxy, 200).await;
    let answer = post(&proxy, &token_body(&proxy.token()), &[]).await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));

    // Nothing else uses the store now: the next statement is the health check's.
    relay.freeze_at_the_next_query();
    tokio::time::timeout(HEALTH_CHECK_INTERVAL * 5, relay.frozen())
        .await
        .expect("the health check's statement reached the relay");
    let frozen_at = Instant::now();
    let not_ready = wait_for_readiness(&proxy, 503).await;
    let red_after = frozen_at.elapsed();
    assert!(
        body_text(&not_ready).contains("tenant_store"),
        "{}",
        body_text(&not_ready)
    );
    // The check that froze gives up at its deadline; 2 s of slack for a busy machine.
    assert!(
        red_after <= POSTGRES_CALL_TIMEOUT + Duration::from_secs(2),
        "red after {red_after:?}"
    );

    // A verified request of a tenant the sidecar has not seen: answered at once, its
    // record waits on the store in a task of its own and ends, failed, by the deadline.
    let new_tenant = "11111111-1111-4111-8111-111111111111";
    let token = proxy
        .emulator
        .mint_session_token(new_tenant, USER, "other", Duration::from_secs(3600))
        .unwrap();
    let started = Instant::now();
    let answer = get(
        &proxy.url("/api/orders"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    let served_in = started.elapsed();
    assert_eq!(answer.status, 200, "{}", body_text(&answer));
    assert!(
        served_in < Duration::from_secs(1),
        "served in {served_in:?}"
    );
    assert_eq!(proxy.backend_hits(), 1);
    let deadline = Instant::now() + POSTGRES_CALL_TIMEOUT + Duration::from_secs(2);
    while record_failures(&proxy).await == 0 {
        assert!(Instant::now() < deadline, "the record never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Connect-tenant answers 503 within the deadline too, not never.
    let started = Instant::now();
    let answer = post(&proxy, &token_body(&proxy.token()), &[]).await;
    assert_eq!(answer.status, 503, "{}", body_text(&answer));
    assert!(
        started.elapsed() <= POSTGRES_CALL_TIMEOUT + Duration::from_secs(2),
        "503 after {:?}",
        started.elapsed()
    );

    // Said in the log, with the store's address and without its password.
    let port = format!(":{}/", relay.addr.port());
    let text = logs.text();
    assert!(
        text.lines().any(|line| line.contains("WARN")
            && line.contains(&port)
            && line.contains("did not answer the readiness check within")),
        "no warning of the frozen store in:\n{text}"
    );
    assert!(!text.contains(PASSWORD), "the password was logged");

    // The path thaws: ready again by itself, connects work.
    relay.thaw();
    wait_for_readiness(&proxy, 200).await;
    let answer = post(&proxy, &token_body(&proxy.token()), &[]).await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));
    relay.cut();
    drop(proxy);
    db.drop_schema().await;
}

/// A statement waiting on a lock is ended by PostgreSQL after `statement_timeout` (the
/// sidecar's, or the one the URL's `options` set), well before the store's own deadline,
/// and the store works again once the lock is gone.
#[tokio::test]
async fn a_statement_waiting_on_a_lock_is_ended_by_the_statement_timeout() {
    let Some(db) =
        TestDb::postgres("a_statement_waiting_on_a_lock_is_ended_by_the_statement_timeout").await
    else {
        return;
    };
    let store = db.store().await;
    assert_eq!(store.count().await.unwrap(), 0, "schema created");
    // The URL's own statement_timeout (the test URL has `options` already) is kept.
    let own = TenantStore::open(&format!("{}%20-c%20statement_timeout%3D500", db.url))
        .await
        .unwrap();

    let locker = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE jtl_tenants IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let tenant = Uuid::parse_str(TENANT).unwrap();
    for (store, at_least, below) in [
        (&store, POSTGRES_STATEMENT_TIMEOUT, POSTGRES_CALL_TIMEOUT),
        (&own, Duration::from_millis(500), POSTGRES_STATEMENT_TIMEOUT),
    ] {
        let started = Instant::now();
        let error = store.upsert(tenant, "acme", USER).await.unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(error, StoreError::Database { .. })
                && error.to_string().contains("statement timeout"),
            "{error}"
        );
        assert!(took >= at_least && took < below, "ended after {took:?}");
    }
    lock.rollback().await.unwrap();
    locker.close().await;

    store.upsert(tenant, "acme", USER).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
    store.close().await;
    own.close().await;
    db.drop_schema().await;
}
