//! Connect-tenant and the tenant store (SPEC §7) end to end: emulator + echo backend +
//! sidecar over real sockets, against SQLite and against the real PostgreSQL named by
//! `TEST_DATABASE_URL` (`.ci/run` sets it). Each PostgreSQL test works in a fresh schema
//! of its own, dropped at the end. Without `TEST_DATABASE_URL` (or when its server does
//! not answer) the PostgreSQL tests say loudly that they were skipped, or fail when
//! `REQUIRE_POSTGRES_TEST=1` (as `.ci/run` sets it).

#[path = "../common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::harness::{TENANT, USER};
use common::proxy::{Answer, Proxy, get, send};
use common::services::{Service, shared_server};
use http::Request;
use http_body_util::Full;
use jtl_auth_sidecar::tenants::{StoredTenant, TenantStore};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
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
    /// is not set or does not answer, a failure instead when `REQUIRE_POSTGRES_TEST=1`.
    async fn postgres(test: &str) -> Option<TestDb> {
        let server = shared_server(Service::Postgres, test).await?;
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

    /// The server's address, for a relay in front of it.
    async fn server_addr(&self) -> SocketAddr {
        let server = url::Url::parse(&self.url).unwrap();
        let host = (server.host_str().unwrap(), server.port().unwrap_or(5432));
        let mut addresses = tokio::net::lookup_host(host).await.unwrap();
        addresses.next().unwrap()
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
    Proxy::builder()
        .env(vec![(
            "JTL_SIDECAR_TENANTS__DATABASE_URL".to_owned(),
            url.to_owned(),
        )])
        .start()
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
    let deadline = tokio::time::Instant::now() + common::harness::scaled(Duration::from_secs(15));
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

/// A TCP relay in front of PostgreSQL that the test can cut and restore, so the store
/// really goes away mid-run without touching the shared server; and freeze, so it stops
/// carrying bytes while every connection stays open (a network path that hangs).
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    state: watch::Sender<Carrying>,
}

/// What the relay does with the bytes it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrying {
    Everything,
    /// Forwards until a client sends a query, then freezes with that query held.
    UntilTheNextQuery,
    /// Forwards nothing either way; what arrives is held until the relay thaws.
    Nothing,
}

/// sqlx's ping of a pooled connection: a lone Sync message (`S`, length 4). Any other
/// chunk from the client (once connected) carries a query. (Readable only on a
/// connection without TLS: `sslmode=disable`.)
const SYNC: &[u8] = b"S\0\0\0\x04";

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
            state: watch::Sender::new(Carrying::Everything),
        }
    }

    fn start(&self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(64).unwrap();
        let target = self.target;
        let tasks = Arc::clone(&self.tasks);
        let state = self.state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let relayed = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let (from_client, to_client) = client.into_split();
                        let (from_server, to_server) = server.into_split();
                        tokio::join!(
                            pump(from_client, to_server, state.clone(), true),
                            pump(from_server, to_client, state, false),
                        );
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

    /// Freezes the relay when a client next sends anything but a ping: a query on a
    /// connection taken from the pool (its ping answered), which then never gets an
    /// answer.
    fn freeze_at_the_next_query(&self) {
        self.state.send_replace(Carrying::UntilTheNextQuery);
    }

    /// Resolves once the relay has frozen.
    async fn frozen(&self) {
        let mut state = self.state.subscribe();
        state
            .wait_for(|carrying| *carrying == Carrying::Nothing)
            .await
            .unwrap();
    }

    /// Carries bytes again, those held while frozen first.
    fn thaw(&self) {
        self.state.send_replace(Carrying::Everything);
    }
}

/// Copies one direction of a relayed connection, holding each chunk while the relay is
/// frozen.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    state: watch::Sender<Carrying>,
    from_client: bool,
) {
    let mut buffer = vec![0; 64 * 1024];
    let mut carrying = state.subscribe();
    loop {
        let chunk = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => &buffer[..n],
        };
        if from_client && chunk != SYNC {
            state.send_if_modified(|now| {
                let freeze = *now == Carrying::UntilTheNextQuery;
                if freeze {
                    *now = Carrying::Nothing;
                }
                freeze
            });
        }
        // The watch's guard is dropped at the `;`, before the write: the other direction
        // may need to change the state meanwhile.
        let thawed = carrying
            .wait_for(|now| *now != Carrying::Nothing)
            .await
            .is_ok();
        if !thawed || to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

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

// Declared after on_both_stores!: a macro_rules! macro is seen only below its definition.
mod connect;
mod migrations;
mod postgres_outage;
mod records;
