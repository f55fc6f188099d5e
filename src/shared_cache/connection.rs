//! One connection to Redis, opened by this crate and handed to redis-rs: plain TCP for
//! `redis://`, rustls with the caller's `ClientConfig` (the roots of JTL's connections)
//! for `rediss://`. redis-rs's own TLS (and so its `ConnectionManager`) can only trust
//! the webpki roots *or* a PEM bundle, not a `ClientConfig`; opening the stream here keeps
//! the TLS exactly that of JTL's connections.
//!
//! Reconnects by itself: a call on a broken connection drops it and, once, opens a new one
//! within the same call; a failed connect is retried on the next call.
//!
//! The connection is opened and its driver task runs on the runtime given at construction
//! (the server's main runtime), even when the call that opens it comes from an ingress
//! worker: see [`crate::background`].

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, RedisConnectionInfo};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_rustls::TlsConnector;

use super::password::Login;
use crate::background::run_on;
use crate::config::RedisTarget;
use crate::tls::TlsRoots;

/// Why a Redis call failed; the text never holds the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisFailure {
    #[error("no answer within {0} ms (jtl.timeout_ms)")]
    Timeout(u128),
    #[error("cannot connect to {address}: {cause}")]
    Connect { address: String, cause: String },
    #[error("TLS handshake with {address} failed: {cause} (a private CA? set jtl.ca_file)")]
    Tls { address: String, cause: String },
    #[error(
        "login refused by {address}: {cause} (check the password and user of shared_cache.redis_url / redis_password_file)"
    )]
    Auth { address: String, cause: String },
    #[error("{0}")]
    Command(String),
}

pub struct Connection {
    target: RedisTarget,
    /// Without the password: that is read for each new connection.
    info: RedisConnectionInfo,
    login: Login,
    /// For `rediss://`: each new connection takes the configuration the roots hold then.
    tls: Option<(Arc<TlsRoots>, rustls::pki_types::ServerName<'static>)>,
    current: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Where connections are opened and driven.
    runtime: Handle,
}

impl Connection {
    /// Nothing is opened yet. `login` gives the URL's or the password file's password;
    /// connections will be opened and driven on `runtime`.
    pub fn new(
        target: RedisTarget,
        login: Login,
        tls: Option<Arc<TlsRoots>>,
        runtime: Handle,
    ) -> Result<Connection, String> {
        let tls = match tls {
            Some(roots) if target.tls => {
                let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                    .map_err(|_| format!("{:?} is not a valid TLS server name", target.host))?;
                Some((roots, name))
            }
            None if target.tls => return Err("rediss:// needs a TLS configuration".into()),
            _ => None,
        };
        let mut info = RedisConnectionInfo::default()
            .set_db(target.db)
            .set_protocol(ProtocolVersion::RESP2);
        if let Some(username) = &target.username {
            info = info.set_username(username);
        }
        Ok(Connection {
            target,
            info,
            login,
            tls,
            current: tokio::sync::Mutex::new(None),
            runtime,
        })
    }

    pub fn address(&self) -> String {
        self.target.address()
    }

    /// `redis://host:port/db` (or `rediss://`), without the credentials.
    pub fn shown_target(&self) -> String {
        let scheme = if self.target.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}/{}", self.address(), self.target.db)
    }

    /// Runs `command` (a `redis::Cmd`) within `timeout`, on the open connection or a new
    /// one; a connection that failed is replaced once.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
        timeout: Duration,
    ) -> Result<T, RedisFailure> {
        tokio::time::timeout(timeout, self.query_unbounded(command))
            .await
            .unwrap_or(Err(RedisFailure::Timeout(timeout.as_millis())))
    }

    async fn query_unbounded<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, RedisFailure> {
        let mut current = self.current.lock().await;
        let reused = current.is_some();
        for attempt in 0..2 {
            let connection = match &mut *current {
                Some(connection) => connection,
                None => current.insert(self.connect().await?),
            };
            match command.query_async::<T>(connection).await {
                Ok(value) => return Ok(value),
                Err(error) if is_connection_error(&error) => {
                    *current = None;
                    // A connection that was open before may just have died (Redis
                    // restarted): one fresh try. A fresh one failing is the answer.
                    if attempt == 0 && reused {
                        continue;
                    }
                    return Err(RedisFailure::Command(error.to_string()));
                }
                Err(error) => return Err(RedisFailure::Command(error.to_string())),
            }
        }
        Err(RedisFailure::Command("the connection was lost".into()))
    }

    /// Opens a connection on the connection's runtime: the socket is registered with that
    /// runtime's reactor and the driver task spawned there.
    async fn connect(&self) -> Result<MultiplexedConnection, RedisFailure> {
        let address = self.address();
        let mut info = self.info.clone();
        if let Some(password) = self.login.password() {
            info = info.set_password(password.expose());
        }
        let tls = self
            .tls
            .as_ref()
            .map(|(roots, name)| (TlsConnector::from(roots.config()), name.clone()));
        let opening = open(self.target.clone(), info, tls, self.runtime.clone());
        run_on(&self.runtime, opening).await.unwrap_or_else(|| {
            Err(RedisFailure::Connect {
                address,
                cause: "the sidecar is shutting down".into(),
            })
        })
    }
}

/// Connects (TCP, then TLS for `rediss://`), logs in and spawns the connection's driver
/// on `runtime`. Called on `runtime` itself, so the socket belongs to its reactor.
async fn open(
    target: RedisTarget,
    info: RedisConnectionInfo,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    runtime: Handle,
) -> Result<MultiplexedConnection, RedisFailure> {
    let address = target.address();
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| RedisFailure::Connect {
            address: address.clone(),
            cause: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let result = match &tls {
        Some((connector, name)) => {
            let stream =
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| RedisFailure::Tls {
                        address: address.clone(),
                        cause: e.to_string(),
                    })?;
            MultiplexedConnection::new_with_config(&info, stream, AsyncConnectionConfig::default())
                .await
                .map(|(connection, driver)| {
                    runtime.spawn(driver);
                    connection
                })
        }
        None => {
            MultiplexedConnection::new_with_config(&info, tcp, AsyncConnectionConfig::default())
                .await
                .map(|(connection, driver)| {
                    runtime.spawn(driver);
                    connection
                })
        }
    };
    result.map_err(|error| {
        let cause = error.to_string();
        if error.kind() == redis::ErrorKind::AuthenticationFailed
            || cause.contains("WRONGPASS")
            || cause.contains("NOAUTH")
            || cause.contains("NOPERM")
        {
            RedisFailure::Auth { address, cause }
        } else {
            RedisFailure::Connect { address, cause }
        }
    })
}

fn is_connection_error(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first query comes from an ingress worker's runtime; the connection it opens
    /// lives on the main runtime, so once that worker's runtime is gone the same connection
    /// (the same Redis client id) still answers. Were it opened and driven on the worker,
    /// its driver would die with it and the second query would need a new connection.
    #[test]
    fn a_connection_opened_from_a_worker_outlives_the_worker() {
        let Ok(url) = std::env::var("TEST_REDIS_URL") else {
            eprintln!("\n!!! SKIPPED Redis test: TEST_REDIS_URL is not set !!!");
            return;
        };
        let url = url::Url::parse(&url).expect("TEST_REDIS_URL is a URL");
        let target = RedisTarget {
            tls: false,
            host: url.host_str().expect("a host").to_owned(),
            port: url.port().unwrap_or(6379),
            db: 0,
            username: None,
            password: None,
        };
        let main = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let connection = Connection::new(target, Login::Fixed(None), None, main.handle().clone())
            .expect("connection");
        let client_id = || redis::cmd("CLIENT").arg("ID").clone();
        let timeout = Duration::from_secs(5);
        let worker = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let first: i64 = worker
            .block_on(connection.query(&client_id(), timeout))
            .expect("CLIENT ID from the worker");
        drop(worker);
        let second: i64 = main
            .block_on(connection.query(&client_id(), timeout))
            .expect("CLIENT ID after the worker stopped");
        assert_eq!(first, second, "the connection was replaced");
    }
}
