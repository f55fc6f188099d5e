//! The two checks that do not involve JTL: the tenant store and the upstream backend.
//! Both only look: nothing is created, migrated or sent to the backend.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::{Line, Verdict, step};
use crate::config::{Config, redact_url_password};
use crate::jtl::http::ConnectFailure;

const TABLE: &str = "jtl_tenants";

/// Step 6: the store answers and holds `jtl_tenants`. Read-only: SQLite is opened
/// read-only and never created; PostgreSQL gets one connection and one catalogue query.
/// A store without the table yet passes, since `run` creates it on first use.
pub async fn tenant_store(config: &Config) -> Line {
    if config.tenants.connect_path.is_none() {
        return Line::new(
            Verdict::Skipped,
            step::TENANT_STORE,
            "tenants.connect_path is \"\": connect-tenant is off and no store is used",
        );
    }
    let url = config.tenants.database_url.expose();
    let shown = redact_url_password(url);
    let timeout = config.jtl.timeout;
    let looked = if url.starts_with("sqlite:") {
        sqlite(url, timeout).await
    } else {
        postgres(url, timeout).await
    };
    match looked {
        Ok(Schema::Present) => Line::new(
            Verdict::Ok,
            step::TENANT_STORE,
            format!("{shown} answers; table {TABLE} present"),
        ),
        Ok(Schema::Absent) => Line::new(
            Verdict::Ok,
            step::TENANT_STORE,
            format!("{shown} answers; table {TABLE} not there yet (`run` creates it)"),
        ),
        Ok(Schema::NoFileYet) => Line::new(
            Verdict::Ok,
            step::TENANT_STORE,
            format!("{shown}: the file does not exist yet (`run` creates it and table {TABLE})"),
        ),
        Ok(Schema::InMemory) => Line::new(
            Verdict::Ok,
            step::TENANT_STORE,
            format!("{shown}: in memory, tenants are lost when the sidecar stops"),
        ),
        Err(why) => Line::new(Verdict::Fail, step::TENANT_STORE, format!("{shown}: {why}")),
    }
}

enum Schema {
    Present,
    Absent,
    NoFileYet,
    InMemory,
}

async fn sqlite(url: &str, timeout: Duration) -> Result<Schema, String> {
    let options = SqliteConnectOptions::from_str(url).map_err(|e| e.to_string())?;
    let file = options.get_filename().to_path_buf();
    if url.contains(":memory:") || file.as_os_str() == ":memory:" {
        return Ok(Schema::InMemory);
    }
    if !file.exists() {
        let parent = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return if parent.is_dir() {
            Ok(Schema::NoFileYet)
        } else {
            Err(format!(
                "cannot be created: the directory {} does not exist",
                parent.display()
            ))
        };
    }
    let options = options.read_only(true).create_if_missing(false);
    let look = async {
        let mut connection = options.connect().await.map_err(|e| e.to_string())?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        )
        .bind(TABLE)
        .fetch_one(&mut connection)
        .await
        .map_err(|e| e.to_string())?;
        let _ = connection.close().await;
        Ok(if count > 0 {
            Schema::Present
        } else {
            Schema::Absent
        })
    };
    tokio::time::timeout(timeout, look)
        .await
        .unwrap_or_else(|_| Err(no_answer(timeout)))
}

async fn postgres(url: &str, timeout: Duration) -> Result<Schema, String> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| e.to_string())?
        .application_name("jtl-auth-sidecar check");
    let look = async {
        let mut connection = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(|e| database_error(&e))?;
        // to_regclass resolves through search_path, as the sidecar's own queries do.
        let present: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(TABLE)
            .fetch_one(&mut connection)
            .await
            .map_err(|e| database_error(&e))?;
        let _ = connection.close().await;
        Ok(if present {
            Schema::Present
        } else {
            Schema::Absent
        })
    };
    tokio::time::timeout(timeout, look)
        .await
        .unwrap_or_else(|_| Err(no_answer(timeout)))
}

fn database_error(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Io(io) => match ConnectFailure::of_io(io) {
            Some(kind) => format!("{kind}: {io}"),
            None => format!("cannot connect: {io}"),
        },
        other => other.to_string(),
    }
}

fn no_answer(timeout: Duration) -> String {
    format!(
        "no response within {} ms (jtl.timeout_ms)",
        timeout.as_millis()
    )
}

/// Step 7: something accepts TCP connections at `ingress.upstream`. A connect only, so
/// nothing reaches the backend's logs or handlers; TLS of an https upstream is not
/// checked.
pub async fn upstream(config: &Config) -> Line {
    let upstream = &config.ingress.upstream;
    let timeout = config.jtl.timeout;
    let fail = |why: String| Line::new(Verdict::Fail, step::UPSTREAM, format!("{upstream}: {why}"));
    let (Some(host), Some(port)) = (upstream.host_str(), upstream.port_or_known_default()) else {
        return fail("has no host".to_owned());
    };
    // IPv6 literals come bracketed from the URL.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let reach = async {
        let addrs: Vec<_> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("{}: {e}", ConnectFailure::Dns))?
            .collect();
        let mut last = format!("{}: no address", ConnectFailure::Dns);
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => return Ok(addr),
                Err(error) => {
                    last = match ConnectFailure::of_io(&error) {
                        Some(kind) => format!("{kind}: {addr}"),
                        None => format!("{}: {addr}: {error}", ConnectFailure::Other),
                    }
                }
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, reach).await {
        Ok(Ok(addr)) => Line::new(
            Verdict::Ok,
            step::UPSTREAM,
            format!("{upstream} accepts connections ({addr})"),
        ),
        Ok(Err(why)) => fail(why),
        Err(_) => fail(format!(
            "{}: no connection within {} ms (jtl.timeout_ms)",
            ConnectFailure::Timeout,
            timeout.as_millis()
        )),
    }
}
