//! Connect-tenant (SPEC §7) on both stores, and what only SQLite or the handler shows.

use super::*;

on_both_stores!(first_install_stores_the_tenant_and_answers_it);
async fn first_install_stores_the_tenant_and_answers_it(db: TestDb) -> TestDb {
    let proxy = sidecar(&db.url).await;
    let answer = post(&proxy, &token_body(&proxy.token()), &[]).await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(
        body_text(&answer),
        format!(
            r#"{{"success":true,"tenantId":"{TENANT}","userId":"{USER}","tenantSlug":"acme"}}"#
        )
    );
    let (count, tenant) = stored(&db).await;
    assert_eq!(count, 1);
    let tenant = tenant.unwrap();
    assert_eq!(tenant.tenant_id.to_string(), TENANT);
    assert_eq!(tenant.tenant_slug, "acme");
    assert_eq!(tenant.installed_by.to_string(), USER);
    assert_eq!(tenant.installed_at, tenant.updated_at);
    assert_eq!(
        proxy.backend_hits(),
        0,
        "connect-tenant reached the backend"
    );
    db
}

on_both_stores!(reinstall_updates_slug_and_user_and_keeps_installed_at);
async fn reinstall_updates_slug_and_user_and_keeps_installed_at(db: TestDb) -> TestDb {
    let proxy = sidecar(&db.url).await;
    let first = post(&proxy, &token_body(&proxy.token()), &[]).await;
    assert_eq!(first.status, 200, "{}", body_text(&first));
    let (_, before) = stored(&db).await;
    let before = before.unwrap();
    // SQLite keeps milliseconds: let the database's own (real) clock move past them. The
    // store stamps with that clock, not the sidecar's, so only real time moves it.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let new_user = "00000000-0000-4000-8000-00000000beef";
    let token = mint(&proxy, new_user, "acme-renamed");
    let second = post(&proxy, &token_body(&token), &[]).await;
    assert_eq!(second.status, 200, "{}", body_text(&second));
    assert_eq!(second.json()["tenantSlug"], "acme-renamed");
    assert_eq!(second.json()["userId"], new_user);

    let (count, after) = stored(&db).await;
    let after = after.unwrap();
    assert_eq!(count, 1, "a reinstall must not add a row");
    assert_eq!(after.tenant_slug, "acme-renamed");
    assert_eq!(after.installed_by.to_string(), new_user);
    assert_eq!(
        after.installed_at, before.installed_at,
        "installed_at moved"
    );
    assert!(
        after.updated_at > before.updated_at,
        "updated_at did not move: {} -> {}",
        before.updated_at,
        after.updated_at
    );
    db
}

on_both_stores!(twenty_concurrent_connects_of_one_tenant_all_succeed_with_one_row);
async fn twenty_concurrent_connects_of_one_tenant_all_succeed_with_one_row(db: TestDb) -> TestDb {
    let proxy = Arc::new(sidecar(&db.url).await);
    let connects = (0..20).map(|n| {
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let user = format!("00000000-0000-4000-8000-{n:012}");
            let token = mint(&proxy, &user, "acme");
            post(&proxy, &token_body(&token), &[]).await
        })
    });
    for connect in futures_util::future::join_all(connects).await {
        let answer = connect.unwrap();
        assert_eq!(answer.status, 200, "{}", body_text(&answer));
    }
    let (count, tenant) = stored(&db).await;
    assert_eq!(count, 1);
    assert!(tenant.is_some());
    db
}

on_both_stores!(no_token_is_400_with_the_exact_body);
async fn no_token_is_400_with_the_exact_body(db: TestDb) -> TestDb {
    let proxy = sidecar(&db.url).await;
    for body in [
        "{}",
        "",
        r#"{"sessionToken":null}"#,
        r#"{"sessionToken":""}"#,
    ] {
        let answer = post(&proxy, body, &[]).await;
        assert_eq!(answer.status, 400, "body {body:?}");
        assert_eq!(body_text(&answer), TOKEN_REQUIRED, "body {body:?}");
        assert_eq!(answer.headers["content-type"], "application/json");
    }
    assert_eq!(stored(&db).await.0, 0);
    db
}

on_both_stores!(bad_token_is_401_with_the_exact_body);
async fn bad_token_is_401_with_the_exact_body(db: TestDb) -> TestDb {
    let proxy = sidecar(&db.url).await;
    // One signature character changed (to a different one, whatever it was).
    let mut tampered = proxy.token().into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for token in ["not-a-jwt", "a.b.c", &tampered] {
        // The tampered token has no header kid and no key verifies it: it is refused once
        // a key set fetched after it arrived has been tried (SPEC §5).
        let answer = proxy
            .with_refetches_permitted(post(&proxy, &token_body(token), &[]))
            .await;
        assert_eq!(answer.status, 401);
        assert_eq!(body_text(&answer), VERIFICATION_FAILED);
        // Like every 401 of the sidecar (SPEC §4), the challenge says why.
        let challenge = answer.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with(
                "Bearer error=\"invalid_token\", error_description=\"The session token"
            ),
            "{challenge}"
        );
    }
    let answer = post(&proxy, "", &[("authorization", "Bearer not-a-jwt")]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(body_text(&answer), VERIFICATION_FAILED);
    assert_eq!(stored(&db).await.0, 0);
    db
}

on_both_stores!(malformed_json_is_400);
async fn malformed_json_is_400(db: TestDb) -> TestDb {
    let proxy = sidecar(&db.url).await;
    for body in ["{", "not json", "[]", r#"{"sessionToken":42}"#] {
        let answer = post(&proxy, body, &[]).await;
        assert_eq!(answer.status, 400, "body {body:?}");
        assert_eq!(answer.json()["error"], "invalid_request", "body {body:?}");
    }
    assert_eq!(proxy.backend_hits(), 0);
    db
}

on_both_stores!(oversized_body_is_413);
async fn oversized_body_is_413(db: TestDb) -> TestDb {
    let proxy = sidecar(&db.url).await;
    let padding = "x".repeat(64 * 1024);
    let body = json!({ "sessionToken": proxy.token(), "padding": padding }).to_string();
    let answer = post(&proxy, &body, &[]).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["error"], "invalid_request");
    assert_eq!(stored(&db).await.0, 0);
    assert_eq!(proxy.backend_hits(), 0);
    db
}

// ---- SQLite- or handler-only behaviour -------------------------------------------------

#[tokio::test]
async fn oversized_chunked_body_is_413_without_content_length() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::sqlite();
    let proxy = sidecar(&db.url).await;
    let mut stream = TcpStream::connect(proxy.addresses.ingress).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("2000\r\n{}\r\n", " ".repeat(0x2000));
    // The sidecar may answer and close before all of it is sent.
    for _ in 0..9 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..read]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(proxy.backend_hits(), 0);
}

#[tokio::test]
async fn token_may_come_from_a_token_header_and_the_body_wins_over_it() {
    let db = TestDb::sqlite();
    let proxy = sidecar(&db.url).await;
    let token = proxy.token();
    let answer = post(&proxy, "", &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));
    let answer = post(&proxy, "", &[("x-session-token", &token)]).await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));
    // The body's token is the one used; a different header token does not matter.
    let answer = post(
        &proxy,
        &token_body(&token),
        &[("authorization", "Bearer something-else")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));
    assert_eq!(proxy.backend_hits(), 0);
}

#[tokio::test]
async fn other_methods_and_paths_are_proxied_as_usual() {
    let db = TestDb::sqlite();
    let proxy = sidecar(&db.url).await;
    let token = proxy.token();
    // GET on the path is no connect: it needs a token and is forwarded.
    let answer = get(&proxy.url(PATH), &[]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"], "missing_token");
    let answer = get(
        &proxy.url(PATH),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(proxy.backend_hits(), 1);
    // The query is not part of the path: still a connect.
    let request = Request::post(proxy.url(&format!("{PATH}?x=1")))
        .body(Full::new(Bytes::from(token_body(&token))))
        .unwrap();
    let answer = send(request).await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));
    assert_eq!(answer.json()["success"], true);
    assert_eq!(proxy.backend_hits(), 1);
}

#[tokio::test]
async fn disabled_connect_path_is_proxied() {
    let db = TestDb::sqlite();
    let proxy = Proxy::builder()
        .toml("[tenants]\nconnect_path = \"\"")
        .env(vec![(
            "JTL_SIDECAR_TENANTS__DATABASE_URL".to_owned(),
            db.url.clone(),
        )])
        .start()
        .await;
    let token = proxy.token();
    let answer = post(
        &proxy,
        &token_body(&token),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["method"], "POST");
    assert_eq!(proxy.backend_hits(), 1);
    // No store was opened.
    assert!(!db._dir.as_ref().unwrap().path().join("tenants.db").exists());
}

#[tokio::test]
async fn connects_are_counted_in_metrics() {
    let db = TestDb::sqlite();
    let proxy = sidecar(&db.url).await;
    assert_eq!(
        post(&proxy, &token_body(&proxy.token()), &[]).await.status,
        200
    );
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await;
    let text = body_text(&metrics);
    assert!(
        text.lines()
            .any(|line| line.contains("outcome=\"tenant_connected\"") && line.contains("200")),
        "{text}"
    );
}

#[tokio::test]
async fn sqlite_store_file_is_created_in_wal_mode() {
    let db = TestDb::sqlite();
    let proxy = sidecar(&db.url).await;
    assert_eq!(
        post(&proxy, &token_body(&proxy.token()), &[]).await.status,
        200
    );
    let dir = db._dir.as_ref().unwrap().path();
    assert!(dir.join("tenants.db").exists());
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url).unwrap();
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(options)
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn unreachable_store_is_503_and_not_ready() {
    // Nothing listens on port 1.
    let proxy = sidecar("postgres://postgres@127.0.0.1:1/test").await;
    let answer = post(&proxy, &token_body(&proxy.token()), &[]).await;
    assert_eq!(answer.status, 503, "{}", body_text(&answer));
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
    assert!(answer.json()["error_description"].is_string());
    assert!(answer.headers.contains_key("retry-after"));
    let ready = get(&proxy.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.json()["missing"]
            .as_array()
            .unwrap()
            .contains(&json!("tenant_store")),
        "{}",
        body_text(&ready)
    );
    assert_eq!(proxy.backend_hits(), 0);
}
