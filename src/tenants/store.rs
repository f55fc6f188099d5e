//! The tenant store: table `jtl_tenants` (SPEC §7) in embedded SQLite or in PostgreSQL,
//! chosen by `tenants.database_url`.
//!
//! One type, one set of operations; the two backends differ only in their pool type and
//! their SQL text (placeholders, UUID and time types), so each operation is one `match`
//! over two queries side by side. sqlx's `Any` driver was not used: it cannot bind UUIDs
//! or timestamps, so the SQL would differ per backend anyway, and the typed pools keep
//! the backend-specific options (WAL, busy timeout, application name) plain.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::Row;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::config::redact_url_password;

/// How long a request waits for a database connection before the store counts as
/// unreachable (503). A connect-tenant is a one-off click: failing fast beats hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an SQLite write waits for another writer (the 20-concurrent-connects case)
/// before giving up: far above what one upsert takes.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per replica. A connect happens once per installation, so a few suffice
/// and several replicas stay far below PostgreSQL's `max_connections`.
const MAX_CONNECTIONS: u32 = 4;
/// Tries at opening and migrating a SQLite file before giving up (see [`sqlite_attempts`]).
const SQLITE_ATTEMPTS: u32 = 5;
/// How often the background check looks at the store (readiness reads its last result).
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// PostgreSQL cancels any statement of the sidecar's that runs longer than this
/// (`statement_timeout`, sent with every new connection). The store's statements are
/// one-row writes and lookups on a table of one row per installation, and that table's
/// migrations: milliseconds. One still running after seconds waits on a lock or a sick
/// server; the server ends it, and the connection stays usable. An operator's own
/// `statement_timeout` in the URL's `options` is kept.
pub const POSTGRES_STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The bound on one PostgreSQL call (connection from the pool, schema check, statement):
/// the pool's and the server's deadlines above plus a second of round trips. It is the
/// one that holds when nothing answers at all (a connection frozen in the network, which
/// neither of the others ends): the call fails, readiness turns red at the next check,
/// and the request or record waiting on it is freed.
pub const POSTGRES_CALL_TIMEOUT: Duration =
    Duration::from_secs(ACQUIRE_TIMEOUT.as_secs() + POSTGRES_STATEMENT_TIMEOUT.as_secs() + 1);
/// The same bound for SQLite: a call may wait [`SQLITE_BUSY_TIMEOUT`] for a pooled
/// connection and as long again for the write lock (many connects at once), so well
/// above both. A local file that takes longer is stuck (a hung network file system).
pub const SQLITE_CALL_TIMEOUT: Duration =
    Duration::from_secs(2 * SQLITE_BUSY_TIMEOUT.as_secs() + 5);

/// The migrations, shipped in the binary. Versions only ever grow; an applied migration
/// is never edited (sqlx refuses a changed checksum).
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "create jtl_tenants",
        include_str!("../../migrations/postgres/0001_create_jtl_tenants.sql"),
    ),
    (
        2,
        "installed_by text",
        include_str!("../../migrations/postgres/0002_installed_by_text.sql"),
    ),
];
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "create jtl_tenants",
        include_str!("../../migrations/sqlite/0001_create_jtl_tenants.sql"),
    ),
    (
        2,
        "installed_by text",
        include_str!("../../migrations/sqlite/0002_installed_by_text.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("tenants.database_url: {0}")]
    Url(String),
    #[error("the tenant store ({store}) cannot be used: {source}")]
    Database {
        store: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the tenant store ({store}) cannot be migrated: {source}")]
    Migration {
        store: String,
        #[source]
        source: MigrateError,
    },
    /// The call was given up after its deadline ([`POSTGRES_CALL_TIMEOUT`],
    /// [`SQLITE_CALL_TIMEOUT`]): the server, or the way to it, did not answer.
    #[error(
        "the tenant store ({store}) did not answer {call} within {}s; \
         the server or the network to it is stuck",
        after.as_secs()
    )]
    TimedOut {
        store: String,
        call: &'static str,
        after: Duration,
    },
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A tenant as stored. Times are ISO 8601 UTC text (`2026-09-21T10:00:00.123Z`;
/// milliseconds in SQLite, microseconds in PostgreSQL), so both backends read alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTenant {
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    /// The installing user as forwarded: a canonical lowercase UUID (session-token flow)
    /// or an app token's `sub` as it came.
    pub installed_by: String,
    pub installed_at: String,
    pub updated_at: String,
}

pub struct TenantStore {
    pool: Pool,
    /// The URL with its password redacted, for logs and errors.
    shown: String,
    /// Set once the migrations have run; retried on every use until they have.
    schema: OnceCell<()>,
    /// The last thing known about the store: the background check and every request
    /// write it, readiness reads it (no query per probe).
    reachable: AtomicBool,
}

/// SQLite's `SQLITE_BUSY` (5) or `SQLITE_LOCKED` (6): another connection holds the lock.
fn is_busy(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("5" | "6")))
}

/// `attempt`, tried again 50 ms later while it fails with an error `retry` accepts, at
/// most [`SQLITE_ATTEMPTS`] times in all: the last error is returned.
async fn sqlite_attempts<T, E, Fut>(
    retry: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempts = 1;
    loop {
        match attempt().await {
            Err(error) if retry(&error) && attempts < SQLITE_ATTEMPTS => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            done => return done,
        }
    }
}

impl TenantStore {
    /// Opens the store named by `database_url` (`sqlite://path` or `postgres://...`).
    ///
    /// SQLite is opened (file created when missing) and migrated now: a file that cannot
    /// be opened is a start-up failure, it will not fix itself. PostgreSQL is connected
    /// lazily: a server that is down at start-up does not stop the sidecar; readiness
    /// says so until it answers, and the schema is created then.
    pub async fn open(database_url: &str) -> Result<TenantStore, StoreError> {
        let shown = redact_url_password(database_url);
        if database_url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(database_url)
                .map_err(|e| StoreError::Url(e.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // With WAL, NORMAL is durable against process crashes and much faster.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT);
            // Processes opening one new file together can find it locked while one of
            // them switches it to WAL, and SQLite answers that with SQLITE_BUSY at once,
            // not after the busy timeout: try again.
            let pool = sqlite_attempts(is_busy, || {
                SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(SQLITE_BUSY_TIMEOUT)
                    .connect_with(options.clone())
            })
            .await
            .map_err(|source| StoreError::Database {
                store: shown.clone(),
                source,
            })?;
            let store = TenantStore::new(Pool::Sqlite(pool), shown);
            store.ensure_schema().await?;
            store.reachable.store(true, Ordering::SeqCst);
            Ok(store)
        } else {
            let mut options = PgConnectOptions::from_str(database_url)
                .map_err(|e| StoreError::Url(e.to_string()))?
                .application_name("jtl-auth-sidecar");
            // In the startup packet: no round trip of its own, and every connection the
            // pool opens (again) has it.
            if !options
                .get_options()
                .is_some_and(|given| given.contains("statement_timeout"))
            {
                let millis = POSTGRES_STATEMENT_TIMEOUT.as_millis();
                options = options.options([("statement_timeout", millis)]);
            }
            let pool = PgPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(options);
            let store = TenantStore::new(Pool::Postgres(pool), shown);
            if let Err(error) = store.check().await {
                tracing::warn!("{error}; connect-tenant answers 503 until it is reachable");
            }
            Ok(store)
        }
    }

    fn new(pool: Pool, shown: String) -> TenantStore {
        TenantStore {
            pool,
            shown,
            schema: OnceCell::new(),
            reachable: AtomicBool::new(false),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// What the last use of the store found (cheap: for readiness).
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::SeqCst)
    }

    /// Inserts the tenant, or updates slug, installing user and `updated_at` of the one
    /// already there (`installed_at` stays). Concurrent connects of one tenant all
    /// succeed and leave one row.
    pub async fn upsert(
        &self,
        tenant_id: Uuid,
        tenant_slug: &str,
        installed_by: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .within(
                "the upsert of a tenant",
                self.upsert_once(tenant_id, tenant_slug, installed_by),
            )
            .await;
        self.note(&result);
        result
    }

    async fn upsert_once(
        &self,
        tenant_id: Uuid,
        tenant_slug: &str,
        installed_by: &str,
    ) -> Result<(), StoreError> {
        self.ensure_schema().await?;
        let tenant_id = tenant_id.hyphenated().to_string();
        let done = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(
                "INSERT INTO jtl_tenants (tenant_id, tenant_slug, installed_by) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET tenant_slug = excluded.tenant_slug, \
                 installed_by = excluded.installed_by, \
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            )
            .bind(&tenant_id)
            .bind(tenant_slug)
            .bind(installed_by)
            .execute(pool)
            .await
            .map(drop),
            Pool::Postgres(pool) => sqlx::query(
                "INSERT INTO jtl_tenants (tenant_id, tenant_slug, installed_by) \
                 VALUES ($1::uuid, $2, $3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET tenant_slug = EXCLUDED.tenant_slug, \
                 installed_by = EXCLUDED.installed_by, updated_at = NOW()",
            )
            .bind(&tenant_id)
            .bind(tenant_slug)
            .bind(installed_by)
            .execute(pool)
            .await
            .map(drop),
        };
        done.map_err(|source| self.database_error(source))
    }

    /// Inserts the tenant unless the store holds it already; a row that is there is left
    /// exactly as it is (only a connect updates rows). `true` when this call inserted it.
    /// Concurrent calls for one tenant leave one row, and exactly one of them says `true`.
    pub async fn insert_if_absent(
        &self,
        tenant_id: Uuid,
        tenant_slug: &str,
        installed_by: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .within(
                "the record of a tenant",
                self.insert_if_absent_once(tenant_id, tenant_slug, installed_by),
            )
            .await;
        self.note(&result);
        result
    }

    async fn insert_if_absent_once(
        &self,
        tenant_id: Uuid,
        tenant_slug: &str,
        installed_by: &str,
    ) -> Result<bool, StoreError> {
        self.ensure_schema().await?;
        let tenant_id = tenant_id.hyphenated().to_string();
        let inserted = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(
                "INSERT INTO jtl_tenants (tenant_id, tenant_slug, installed_by) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(&tenant_id)
            .bind(tenant_slug)
            .bind(installed_by)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0),
            Pool::Postgres(pool) => sqlx::query(
                "INSERT INTO jtl_tenants (tenant_id, tenant_slug, installed_by) \
                 VALUES ($1::uuid, $2, $3) ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(&tenant_id)
            .bind(tenant_slug)
            .bind(installed_by)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0),
        };
        inserted.map_err(|source| self.database_error(source))
    }

    /// One tenant as stored, for operators and tests.
    pub async fn tenant(&self, tenant_id: Uuid) -> Result<Option<StoredTenant>, StoreError> {
        self.within("the lookup of a tenant", self.tenant_once(tenant_id))
            .await
    }

    async fn tenant_once(&self, tenant_id: Uuid) -> Result<Option<StoredTenant>, StoreError> {
        self.ensure_schema().await?;
        let id = tenant_id.hyphenated().to_string();
        let row = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(
                "SELECT tenant_id, tenant_slug, installed_by, installed_at, updated_at \
                 FROM jtl_tenants WHERE tenant_id = ?1",
            )
            .bind(&id)
            .fetch_optional(pool)
            .await
            .and_then(|row| row.map(|row| stored_tenant(&row)).transpose()),
            Pool::Postgres(pool) => sqlx::query(
                "SELECT tenant_id::text, tenant_slug, installed_by::text, \
                 to_char(installed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                 to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
                 FROM jtl_tenants WHERE tenant_id = $1::uuid",
            )
            .bind(&id)
            .fetch_optional(pool)
            .await
            .and_then(|row| row.map(|row| stored_tenant(&row)).transpose()),
        };
        row.map_err(|source| self.database_error(source))
    }

    /// The number of tenants stored.
    pub async fn count(&self) -> Result<i64, StoreError> {
        self.within("the count of tenants", self.count_once()).await
    }

    async fn count_once(&self) -> Result<i64, StoreError> {
        self.ensure_schema().await?;
        let sql = "SELECT COUNT(*) FROM jtl_tenants";
        let count = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Pool::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        };
        count.map_err(|source| self.database_error(source))
    }

    /// Looks at the store now (schema first, then a trivial query) and remembers the
    /// answer for readiness.
    pub async fn check(&self) -> Result<(), StoreError> {
        let result = self.within("the readiness check", self.ping()).await;
        self.note(&result);
        result
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.ensure_schema().await?;
        let done = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Pool::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        };
        done.map_err(|source| self.database_error(source))
    }

    /// Checks the store every [`HEALTH_CHECK_INTERVAL`] until `stop`, logging when it
    /// goes away and when it comes back.
    pub async fn run_health_check(self: std::sync::Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {}
            }
            let was_reachable = self.is_reachable();
            match self.check().await {
                Ok(()) if !was_reachable => {
                    tracing::info!(store = %self.shown, "the tenant store is reachable");
                }
                Err(error) if was_reachable => tracing::warn!("{error}"),
                _ => {}
            }
        }
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    /// Runs the migrations once per process (retried on the next use when they fail).
    /// On PostgreSQL sqlx holds an advisory lock meanwhile, so replicas starting together
    /// migrate one after the other.
    async fn ensure_schema(&self) -> Result<(), StoreError> {
        self.schema
            .get_or_try_init(|| async {
                let migration_error = |source| StoreError::Migration {
                    store: self.shown.clone(),
                    source,
                };
                match &self.pool {
                    Pool::Sqlite(pool) => {
                        let migrator = Migrator::new(Embedded(SQLITE_MIGRATIONS))
                            .await
                            .map_err(migration_error)?;
                        // sqlx takes no lock on SQLite: two processes opening one new
                        // file race to record the same version, and the loser fails on
                        // the unique version. Its retry finds the version applied.
                        sqlite_attempts(|_| true, || migrator.run(pool))
                            .await
                            .map_err(migration_error)
                    }
                    Pool::Postgres(pool) => Migrator::new(Embedded(POSTGRES_MIGRATIONS))
                        .await
                        .map_err(migration_error)?
                        .run(pool)
                        .await
                        .map_err(migration_error),
                }
            })
            .await
            .map(drop)
    }

    /// The longest one call may take: [`POSTGRES_CALL_TIMEOUT`] or
    /// [`SQLITE_CALL_TIMEOUT`].
    pub fn call_timeout(&self) -> Duration {
        match self.pool {
            Pool::Sqlite(_) => SQLITE_CALL_TIMEOUT,
            Pool::Postgres(_) => POSTGRES_CALL_TIMEOUT,
        }
    }

    /// `call`, given up after [`TenantStore::call_timeout`]. The pool bounds only the wait
    /// for a connection, and the server only a statement it has received: a connection
    /// that stops carrying bytes (a frozen network path) would leave the call waiting
    /// forever, and readiness would keep its last answer. Dropping the call is safe: sqlx
    /// tests a connection given back mid-exchange before the pool hands it out again.
    async fn within<T>(
        &self,
        call: &'static str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let after = self.call_timeout();
        match tokio::time::timeout(after, work).await {
            Ok(result) => result,
            // Logged by the caller like any other store error: the health check when
            // readiness turns red, connect-tenant always, a record when it is the first.
            Err(_) => Err(StoreError::TimedOut {
                store: self.shown.clone(),
                call,
                after,
            }),
        }
    }

    fn note<T>(&self, result: &Result<T, StoreError>) {
        self.reachable.store(result.is_ok(), Ordering::SeqCst);
    }

    fn database_error(&self, source: sqlx::Error) -> StoreError {
        StoreError::Database {
            store: self.shown.clone(),
            source,
        }
    }
}

fn stored_tenant<R: Row>(row: &R) -> Result<StoredTenant, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let uuid = |index: usize| -> Result<Uuid, sqlx::Error> {
        let text: String = row.try_get(index)?;
        Uuid::parse_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    Ok(StoredTenant {
        tenant_id: uuid(0)?,
        tenant_slug: row.try_get(1)?,
        installed_by: row.try_get(2)?,
        installed_at: row.try_get(3)?,
        updated_at: row.try_get(4)?,
    })
}

/// Migrations compiled into the binary, as `sqlx::migrate!` would embed them (same
/// versions, same checksums), without pulling sqlx's proc-macro crate and a second build
/// of both database drivers into the compile.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

type Resolved = Result<Vec<Migration>, sqlx::error::BoxDynError>;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Resolved> + Send + 'static>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}
