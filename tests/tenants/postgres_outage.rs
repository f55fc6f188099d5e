//! PostgreSQL going away mid-run and coming back: 503, not ready, recovered.

use super::*;

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
