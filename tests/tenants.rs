//! Connect-tenant and the tenant store (SPEC §7) end to end: emulator + echo backend +
//! sidecar over real sockets, against SQLite and against the real PostgreSQL named by
//! `TEST_DATABASE_URL` (`.ci/run` sets it). Each PostgreSQL test works in a fresh schema
//! of its own, dropped at the end. Without `TEST_DATABASE_URL` the PostgreSQL tests say
//! loudly that they were skipped.

mod common;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::harness::{TENANT, USER};
use common::proxy::{get, send, Answer, Proxy};
use http::Request;
use http_body_util::Full;
use jtl_auth_sidecar::tenants::{StoredTenant, TenantStore};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::AbortHandle;
use uuid::Uuid;

const TOKEN_REQUIRED: &str = r#"{"error":"Session token is required"}"#;
const VERIFICATION_FAILED: &str = r#"{"error":"Failed to verify session token"}"#;
const PATH: &str = "/api/connect-tenant";

// ---- the stores the tests run against ------------------------------------------------

/// A fresh, empty store for one test.
struct TestDb {
    url: String,
    /// SQLite: the directory holding the file.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the server's URL and the schema to drop at the end.
    postgres: Option<(String, String)>,
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tenants.db").display());
        TestDb {
            url,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A fresh schema on the server of `TEST_DATABASE_URL`; `None` (said loudly) when it
    /// is not set.
    async fn postgres(test: &str) -> Option<TestDb> {
        let Ok(server) = std::env::var("TEST_DATABASE_URL") else {
            // Straight to stderr: the test harness would swallow eprintln! of a test
            // that passes, and a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! SKIPPED PostgreSQL test {test}: TEST_DATABASE_URL is not set \
                 (.ci/run sets it to the local server) !!!"
            );
            return None;
        };
        let schema = format!("jtl_test_{}", Uuid::new_v4().simple());
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&server)
            .await
            .unwrap_or_else(|e| panic!("TEST_DATABASE_URL is set but unreachable: {e}"));
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let separator = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{separator}options=-c%20search_path%3D{schema}");
        Some(TestDb {
            url,
            _dir: None,
            postgres: Some((server, schema)),
        })
    }

    /// The same store reached through `addr` instead of the server's own address.
    fn via(&self, addr: SocketAddr) -> String {
        let mut url = url::Url::parse(&self.url).unwrap();
        url.set_ip_host(addr.ip()).unwrap();
        url.set_port(Some(addr.port())).unwrap();
        url.to_string()
    }

    async fn store(&self) -> TenantStore {
        TenantStore::open(&self.url).await.unwrap()
    }

    async fn drop_schema(self) {
        if let Some((server, schema)) = &self.postgres {
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect(server)
                .await
                .unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
        }
    }
}

/// The sidecar (in front of the echo backend) with its tenant store at `url`.
async fn sidecar(url: &str) -> Proxy {
    Proxy::start_with_env_and_backend(
        "",
        vec![(
            "JTL_SIDECAR_TENANTS__DATABASE_URL".to_owned(),
            url.to_owned(),
        )],
    )
    .await
}

async fn post(proxy: &Proxy, body: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::post(proxy.url(PATH)).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(
        request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
}

fn token_body(token: &str) -> String {
    json!({ "sessionToken": token }).to_string()
}

fn mint(proxy: &Proxy, user: &str, slug: &str) -> String {
    proxy
        .emulator
        .mint_session_token(TENANT, user, slug, Duration::from_secs(3600))
        .unwrap()
}

fn body_text(answer: &Answer) -> &str {
    std::str::from_utf8(&answer.body).unwrap()
}

async fn stored(db: &TestDb) -> (i64, Option<StoredTenant>) {
    let store = db.store().await;
    let count = store.count().await.unwrap();
    let tenant = store
        .tenant(Uuid::parse_str(TENANT).unwrap())
        .await
        .unwrap();
    store.close().await;
    (count, tenant)
}

async fn wait_for_readiness(proxy: &Proxy, status: u16) -> Answer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = get(&proxy.admin_url("/readyz"), &[]).await;
        if answer.status == status {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never answered {status}: {} {}",
            answer.status,
            body_text(&answer)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a scenario against SQLite and against PostgreSQL, as two tests.
macro_rules! on_both_stores {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn sqlite() {
                super::$scenario(super::TestDb::sqlite()).await;
            }

            #[tokio::test]
            async fn postgres() {
                let test = concat!(stringify!($scenario), "::postgres");
                if let Some(db) = super::TestDb::postgres(test).await {
                    let db = super::$scenario(db).await;
                    db.drop_schema().await;
                }
            }
        }
    };
}

// ---- the scenarios --------------------------------------------------------------------

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
    // SQLite keeps milliseconds: let the clock move past them.
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
    let proxy = Proxy::start_with_env_and_backend(
        "[tenants]\nconnect_path = \"\"",
        vec![(
            "JTL_SIDECAR_TENANTS__DATABASE_URL".to_owned(),
            db.url.clone(),
        )],
    )
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

// ---- PostgreSQL going away and coming back ---------------------------------------------

/// A TCP relay in front of PostgreSQL that the test can cut and restore, so the store
/// really goes away mid-run without touching the shared server.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Relay {
    /// A relay on a free port, not yet forwarding.
    async fn reserve(target: SocketAddr) -> Relay {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        Relay {
            addr,
            target,
            tasks: Arc::default(),
        }
    }

    fn start(&self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(64).unwrap();
        let target = self.target;
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let relayed = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(relayed.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Stops accepting and cuts every relayed connection.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

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

// ---- several replicas starting together --------------------------------------------------

on_both_stores!(replicas_opening_one_store_together_all_migrate_without_error);
async fn replicas_opening_one_store_together_all_migrate_without_error(db: TestDb) -> TestDb {
    let opened = futures_util::future::join_all((0..6).map(|_| async {
        let store = TenantStore::open(&db.url).await.unwrap();
        store.check().await.unwrap();
        store
    }))
    .await;
    assert!(opened.iter().all(TenantStore::is_reachable));
    let tenant = Uuid::parse_str(TENANT).unwrap();
    let user = USER;
    for store in &opened {
        store.upsert(tenant, "acme", user).await.unwrap();
    }
    assert_eq!(opened[0].count().await.unwrap(), 1);
    for store in opened {
        store.close().await;
    }
    db
}

// ---- installed_by becomes TEXT (migration 0002) ----------------------------------------

/// Runs SQL on the test's store directly, as an operator (or an older sidecar) would.
async fn execute(db: &TestDb, sql: &str) {
    match &db.postgres {
        Some(_) => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        None => {
            let pool = sqlite_pool(db).await;
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

async fn sqlite_pool(db: &TestDb) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)
        .unwrap()
        .create_if_missing(true);
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap()
}

/// Every row of `jtl_tenants` as text, straight from the table: tenant, slug, user,
/// installed_at, updated_at.
async fn raw_rows(db: &TestDb) -> Vec<[String; 5]> {
    let sql = "SELECT CAST(tenant_id AS TEXT), tenant_slug, CAST(installed_by AS TEXT), \
               CAST(installed_at AS TEXT), CAST(updated_at AS TEXT) FROM jtl_tenants \
               ORDER BY tenant_id";
    type Row = (String, String, String, String, String);
    let rows: Vec<Row> = match &db.postgres {
        Some(_) => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .unwrap();
            let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
        None => {
            let pool = sqlite_pool(db).await;
            let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    };
    rows.into_iter()
        .map(|(a, b, c, d, e)| [a, b, c, d, e])
        .collect()
}

/// The declared type of `jtl_tenants.installed_by`, lowercase.
async fn installed_by_type(db: &TestDb) -> String {
    let kind: String = match &db.postgres {
        Some(_) => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .unwrap();
            let kind = sqlx::query_scalar(
                "SELECT data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = 'jtl_tenants' \
                 AND column_name = 'installed_by'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            pool.close().await;
            kind
        }
        None => {
            let pool = sqlite_pool(db).await;
            let kind = sqlx::query_scalar(
                "SELECT type FROM pragma_table_info('jtl_tenants') WHERE name = 'installed_by'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            pool.close().await;
            kind
        }
    };
    kind.to_lowercase()
}

/// The store as the sidecar before migration 0002 left it: only the first migration
/// run (through sqlx, from the file as shipped, so its recorded checksum is the one the
/// new binary expects), with one tenant connected.
async fn store_of_the_first_migration(db: &TestDb) {
    let kind = if db.postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let dir = tempfile::tempdir().unwrap();
    let name = "0001_create_jtl_tenants.sql";
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(kind)
            .join(name),
        dir.path().join(name),
    )
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    assert_eq!(migrator.iter().count(), 1);
    match &db.postgres {
        Some(_) => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .unwrap();
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        }
        None => {
            let pool = sqlite_pool(db).await;
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        }
    }
    execute(
        db,
        &format!(
            "INSERT INTO jtl_tenants (tenant_id, tenant_slug, installed_by) \
             VALUES ('{TENANT}', 'acme', '{USER}')"
        ),
    )
    .await;
}

/// A Zitadel user id (an app token's `sub`): a numeric string, not a UUID.
const ZITADEL_USER: &str = "312909075212468632";
const OTHER_TENANT: &str = "0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9";

on_both_stores!(a_store_of_the_first_migration_is_migrated_in_place_keeping_its_rows);
async fn a_store_of_the_first_migration_is_migrated_in_place_keeping_its_rows(
    db: TestDb,
) -> TestDb {
    store_of_the_first_migration(&db).await;
    let before = raw_rows(&db).await;
    assert_eq!(before.len(), 1);

    // Opened by the new code: migrated, the row as it was.
    let (count, after) = stored(&db).await;
    assert_eq!(installed_by_type(&db).await, "text");
    assert_eq!(count, 1, "rows lost by the migration");
    assert_eq!(raw_rows(&db).await, before);
    let after = after.unwrap();
    assert_eq!(after.tenant_slug, "acme");
    assert_eq!(after.installed_by, USER);

    // A user that is no UUID can be stored now, on a new row and on the old one.
    let store = db.store().await;
    let other = Uuid::parse_str(OTHER_TENANT).unwrap();
    store.upsert(other, "", ZITADEL_USER).await.unwrap();
    assert_eq!(
        store.tenant(other).await.unwrap().unwrap().installed_by,
        ZITADEL_USER
    );
    let tenant = Uuid::parse_str(TENANT).unwrap();
    store.upsert(tenant, "acme", ZITADEL_USER).await.unwrap();
    let updated = store.tenant(tenant).await.unwrap().unwrap();
    assert_eq!(updated.installed_by, ZITADEL_USER);
    assert_eq!(updated.installed_at, after.installed_at);
    assert_eq!(store.count().await.unwrap(), 2);
    store.close().await;
    db
}

on_both_stores!(the_first_migration_alone_declares_installed_by_as_before);
/// The baseline of the test above: what 0001 made is what 0002 changes.
async fn the_first_migration_alone_declares_installed_by_as_before(db: TestDb) -> TestDb {
    store_of_the_first_migration(&db).await;
    let expected = if db.postgres.is_some() {
        "uuid"
    } else {
        "text"
    };
    assert_eq!(installed_by_type(&db).await, expected);
    db
}

#[tokio::test]
async fn a_hand_made_sqlite_table_declaring_uuid_is_rebuilt_so_numeric_users_stay_text() {
    // JTL's guide declares `installed_by UUID`; in SQLite that is NUMERIC affinity, which
    // would turn "312909075212468632" into an integer. The rebuild makes the column TEXT.
    let db = TestDb::sqlite();
    execute(
        &db,
        &format!(
            "CREATE TABLE jtl_tenants (tenant_id UUID PRIMARY KEY, tenant_slug TEXT NOT NULL, \
             installed_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP, \
             installed_by UUID NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP); \
             INSERT INTO jtl_tenants (tenant_id, tenant_slug, installed_at, installed_by, updated_at) \
             VALUES ('{TENANT}', 'acme', '2026-01-02T03:04:05.678Z', '{USER}', '2026-01-02T03:04:05.678Z');"
        ),
    )
    .await;
    assert_eq!(installed_by_type(&db).await, "uuid");

    let store = db.store().await;
    assert_eq!(installed_by_type(&db).await, "text");
    let tenant = store
        .tenant(Uuid::parse_str(TENANT).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tenant.installed_by, USER);
    assert_eq!(tenant.installed_at, "2026-01-02T03:04:05.678Z");
    let other = Uuid::parse_str(OTHER_TENANT).unwrap();
    store.upsert(other, "", ZITADEL_USER).await.unwrap();
    assert_eq!(
        store.tenant(other).await.unwrap().unwrap().installed_by,
        ZITADEL_USER
    );
    store.close().await;
}

#[tokio::test]
async fn a_hand_made_sqlite_table_with_more_columns_is_refused_and_left_as_it_was() {
    // The rebuild would drop a column the spec does not know: the migration refuses,
    // and its transaction leaves the table (rows and column) as it was.
    let db = TestDb::sqlite();
    execute(
        &db,
        &format!(
            "CREATE TABLE jtl_tenants (tenant_id TEXT PRIMARY KEY NOT NULL, \
             tenant_slug TEXT NOT NULL, installed_at TEXT NOT NULL DEFAULT '', \
             installed_by TEXT NOT NULL, updated_at TEXT NOT NULL DEFAULT '', plan TEXT); \
             INSERT INTO jtl_tenants (tenant_id, tenant_slug, installed_by, plan) \
             VALUES ('{TENANT}', 'acme', '{USER}', 'gold');"
        ),
    )
    .await;
    let error = match TenantStore::open(&db.url).await {
        Ok(_) => panic!("a table with more columns was migrated"),
        Err(error) => error,
    };
    let text = format!("{error}: {:?}", std::error::Error::source(&error));
    assert!(
        text.contains("jtl_tenants_has_columns_beyond_spec_so_it_cannot_be_rebuilt_safely"),
        "{text}"
    );
    let pool = sqlite_pool(&db).await;
    let plan: String = sqlx::query_scalar("SELECT plan FROM jtl_tenants")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(plan, "gold");
    pool.close().await;
}

// ---- tenants recorded on request ---------------------------------------------------------

/// The sidecar's tenant-record counts from `/metrics`: inserted, known, failure, skipped,
/// in flight.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct Records {
    inserted: u64,
    known: u64,
    failure: u64,
    skipped: u64,
    in_flight: u64,
}

impl Records {
    /// How often the store was asked.
    fn asked(&self) -> u64 {
        self.inserted + self.known + self.failure
    }
}

async fn records(proxy: &Proxy) -> Records {
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await;
    let text = body_text(&metrics);
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let result = |result: &str| {
        value(&format!(
            "jtl_sidecar_tenant_records_total{{result=\"{result}\"}}"
        ))
    };
    Records {
        inserted: result("inserted"),
        known: result("known"),
        failure: result("failure"),
        skipped: result("skipped"),
        in_flight: value("jtl_sidecar_tenant_records_in_flight"),
    }
}

/// Waits until no record is in flight and `condition` holds for the counts; returns them.
/// Once a request has been answered, any record it started is counted in flight, so
/// "none in flight" means every earlier request's record is over.
async fn records_when(proxy: &Proxy, what: &str, condition: impl Fn(&Records) -> bool) -> Records {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = records(proxy).await;
        if now.in_flight == 0 && condition(&now) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A verified request to the backend (not connect-tenant) as `user` with `slug`.
async fn request_as(proxy: &Proxy, user: &str, slug: &str) -> Answer {
    let token = mint(proxy, user, slug);
    get(
        &proxy.url("/api/orders"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

/// The tenant as stored, once it is there.
async fn eventually_stored(db: &TestDb) -> StoredTenant {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let (_, Some(tenant)) = stored(db).await {
            return tenant;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tenant was never stored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

on_both_stores!(first_verified_request_of_an_unknown_tenant_stores_it_with_its_user_and_slug);
async fn first_verified_request_of_an_unknown_tenant_stores_it_with_its_user_and_slug(
    db: TestDb,
) -> TestDb {
    let proxy = sidecar(&db.url).await;
    let answer = request_as(&proxy, USER, "acme").await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));
    assert_eq!(proxy.backend_hits(), 1);
    let tenant = eventually_stored(&db).await;
    assert_eq!(tenant.tenant_id.to_string(), TENANT);
    assert_eq!(tenant.tenant_slug, "acme");
    assert_eq!(tenant.installed_by, USER);
    assert_eq!(tenant.installed_at, tenant.updated_at);
    let counted = records_when(&proxy, "the insert is counted", |r| r.inserted == 1).await;
    assert_eq!(counted.asked(), 1, "{counted:?}");
    db
}

on_both_stores!(later_requests_of_a_recorded_tenant_do_not_ask_the_store_again);
async fn later_requests_of_a_recorded_tenant_do_not_ask_the_store_again(db: TestDb) -> TestDb {
    let proxy = sidecar(&db.url).await;
    assert_eq!(request_as(&proxy, USER, "acme").await.status, 200);
    records_when(&proxy, "the first request's tenant is recorded", |r| {
        r.inserted == 1
    })
    .await;
    for n in 0..5 {
        let user = format!("00000000-0000-4000-8000-{n:012}");
        assert_eq!(request_as(&proxy, &user, "acme-renamed").await.status, 200);
    }
    let counted = records_when(&proxy, "nothing is in flight", |_| true).await;
    assert_eq!(
        counted,
        Records {
            inserted: 1,
            ..Records::default()
        }
    );
    let tenant = eventually_stored(&db).await;
    assert_eq!(tenant.installed_by, USER);
    assert_eq!(tenant.tenant_slug, "acme");
    db
}

on_both_stores!(concurrent_first_requests_of_one_tenant_ask_the_store_once);
async fn concurrent_first_requests_of_one_tenant_ask_the_store_once(db: TestDb) -> TestDb {
    let proxy = Arc::new(sidecar(&db.url).await);
    let requests = (0..20).map(|n| {
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let user = format!("00000000-0000-4000-8000-{n:012}");
            request_as(&proxy, &user, "acme").await
        })
    });
    for answer in futures_util::future::join_all(requests).await {
        assert_eq!(answer.unwrap().status, 200);
    }
    let counted = records_when(&proxy, "the tenant is recorded", |r| r.inserted == 1).await;
    assert_eq!(counted.asked(), 1, "single flight broken: {counted:?}");
    assert_eq!(stored(&db).await.0, 1);
    db
}

on_both_stores!(a_row_made_by_connect_tenant_is_not_changed_by_requests_nor_asked_about);
async fn a_row_made_by_connect_tenant_is_not_changed_by_requests_nor_asked_about(
    db: TestDb,
) -> TestDb {
    let proxy = sidecar(&db.url).await;
    let installer = "00000000-0000-4000-8000-00000000beef";
    let connect = post(
        &proxy,
        &token_body(&mint(&proxy, installer, "acme-gmbh")),
        &[],
    )
    .await;
    assert_eq!(connect.status, 200, "{}", body_text(&connect));
    let (_, connected) = stored(&db).await;
    let connected = connected.unwrap();

    assert_eq!(request_as(&proxy, USER, "something-else").await.status, 200);
    // Connect-tenant marked the tenant known: the request asked the store nothing.
    let counted = records_when(&proxy, "nothing is in flight", |_| true).await;
    assert_eq!(counted, Records::default());
    let (count, after) = stored(&db).await;
    assert_eq!(count, 1);
    assert_eq!(after.unwrap(), connected);
    db
}

on_both_stores!(a_tenant_the_store_holds_already_is_left_as_it_is_and_counted_known);
async fn a_tenant_the_store_holds_already_is_left_as_it_is_and_counted_known(db: TestDb) -> TestDb {
    // Connected through another replica (or before a restart): in the store, not in this
    // sidecar's memory.
    let store = db.store().await;
    let installer = "00000000-0000-4000-8000-00000000beef";
    store
        .upsert(Uuid::parse_str(TENANT).unwrap(), "acme-gmbh", installer)
        .await
        .unwrap();
    store.close().await;
    let (_, before) = stored(&db).await;
    let before = before.unwrap();

    let proxy = sidecar(&db.url).await;
    assert_eq!(request_as(&proxy, USER, "something-else").await.status, 200);
    let counted = records_when(&proxy, "the store is asked", |r| r.known == 1).await;
    assert_eq!(counted.asked(), 1, "{counted:?}");
    let (count, after) = stored(&db).await;
    assert_eq!(count, 1);
    assert_eq!(after.unwrap(), before, "a request changed an existing row");

    // Known now: the next request asks nothing.
    assert_eq!(request_as(&proxy, USER, "something-else").await.status, 200);
    let counted = records_when(&proxy, "nothing is in flight", |_| true).await;
    assert_eq!(counted.asked(), 1, "{counted:?}");
    db
}

on_both_stores!(a_failed_record_is_counted_and_tried_again_on_a_later_request);
async fn a_failed_record_is_counted_and_tried_again_on_a_later_request(db: TestDb) -> TestDb {
    let proxy = sidecar(&db.url).await;
    // The sidecar has migrated the store (SQLite at start-up, PostgreSQL on its first
    // check); then an operator moves the table away: inserts fail.
    wait_for_readiness(&proxy, 200).await;
    execute(&db, "ALTER TABLE jtl_tenants RENAME TO jtl_tenants_away").await;

    for failures in 1..=2 {
        let answer = request_as(&proxy, USER, "acme").await;
        assert_eq!(answer.status, 200, "{}", body_text(&answer));
        let counted =
            records_when(&proxy, "the failure is counted", |r| r.failure == failures).await;
        assert_eq!(counted.inserted, 0, "{counted:?}");
    }
    assert_eq!(proxy.backend_hits(), 2);

    // The table is back: the tenant's next request records it.
    execute(&db, "ALTER TABLE jtl_tenants_away RENAME TO jtl_tenants").await;
    let later_user = "00000000-0000-4000-8000-00000000cafe";
    assert_eq!(request_as(&proxy, later_user, "acme").await.status, 200);
    records_when(&proxy, "the tenant is recorded", |r| r.inserted == 1).await;
    let tenant = eventually_stored(&db).await;
    assert_eq!(tenant.installed_by, later_user);
    db
}

#[tokio::test]
async fn an_unreachable_store_never_fails_a_request_and_each_failure_is_counted() {
    // Nothing listens on port 1.
    let proxy = sidecar("postgres://postgres@127.0.0.1:1/test").await;
    for failures in 1..=2 {
        let answer = request_as(&proxy, USER, "acme").await;
        assert_eq!(answer.status, 200, "{}", body_text(&answer));
        // Not cached: the next request of the tenant asks the store again.
        let counted =
            records_when(&proxy, "the failure is counted", |r| r.failure == failures).await;
        assert_eq!(counted.asked(), failures, "{counted:?}");
    }
    assert_eq!(proxy.backend_hits(), 2);
}

#[tokio::test]
async fn postgres_down_then_up_a_tenant_seen_meanwhile_is_recorded_on_its_next_request() {
    let Some(db) = TestDb::postgres(
        "postgres_down_then_up_a_tenant_seen_meanwhile_is_recorded_on_its_next_request",
    )
    .await
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
    let proxy = sidecar(&db.via(relay.addr)).await;

    let answer = request_as(&proxy, USER, "acme").await;
    assert_eq!(answer.status, 200, "{}", body_text(&answer));
    records_when(&proxy, "the failure is counted", |r| r.failure == 1).await;

    relay.start();
    wait_for_readiness(&proxy, 200).await;
    assert_eq!(request_as(&proxy, USER, "acme").await.status, 200);
    records_when(&proxy, "the tenant is recorded", |r| r.inserted == 1).await;
    let tenant = eventually_stored(&db).await;
    assert_eq!(tenant.installed_by, USER);
    relay.cut();
    drop(proxy);
    db.drop_schema().await;
}

on_both_stores!(with_record_on_request_off_requests_store_nothing);
async fn with_record_on_request_off_requests_store_nothing(db: TestDb) -> TestDb {
    let proxy = Proxy::start_with_env_and_backend(
        "[tenants]\nrecord_on_request = false",
        vec![(
            "JTL_SIDECAR_TENANTS__DATABASE_URL".to_owned(),
            db.url.clone(),
        )],
    )
    .await;
    for n in 0..3 {
        let user = format!("00000000-0000-4000-8000-{n:012}");
        assert_eq!(request_as(&proxy, &user, "acme").await.status, 200);
    }
    // Let a (wrongly) started record run, to show none was.
    common::harness::settle().await;
    assert_eq!(records(&proxy).await, Records::default());
    assert_eq!(stored(&db).await.0, 0);
    // Connect-tenant still stores the tenant.
    let connect = post(&proxy, &token_body(&proxy.token()), &[]).await;
    assert_eq!(connect.status, 200, "{}", body_text(&connect));
    assert_eq!(stored(&db).await.0, 1);
    db
}
