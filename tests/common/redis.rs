//! Redis for the shared-cache tests: the shared server at `TEST_REDIS_URL`, and private
//! `redis-server`s a test starts on a port of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::harness::eventually_async;
use super::services::{Service, shared_server, unavailable};

/// The shared Redis of `TEST_REDIS_URL` once it answers; `None` after saying loudly that
/// the test is skipped, or a failure when `REQUIRE_REDIS_TEST=1` (see [`super::services`]).
pub async fn test_redis_url(test: &str) -> Option<String> {
    shared_server(Service::Redis, test).await
}

/// A `redis-server` of the test's own, stopped by its pid when dropped (or [`kill`]ed,
/// and [`restart`]ed on the same port and data directory).
///
/// [`kill`]: PrivateRedis::kill
/// [`restart`]: PrivateRedis::restart
pub struct PrivateRedis {
    /// The port it listens on (serves TLS on, for [`PrivateRedis::start_tls`]).
    pub port: u16,
    /// Serves TLS only (`rediss://`), with a self-signed certificate for `localhost`
    /// whose PEM is at this path.
    pub tls_cert: Option<PathBuf>,
    args: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl PrivateRedis {
    /// On a free port, with `extra` arguments; `None` (said loudly) when there is no
    /// `redis-server` to start (a failure instead when `REQUIRE_REDIS_TEST=1`).
    pub async fn start(test: &str, extra: &[&str]) -> Option<PrivateRedis> {
        PrivateRedis::start_at(test, free_port(), extra).await
    }

    /// As [`PrivateRedis::start`], listening on `port`.
    pub async fn start_at(test: &str, port: u16, extra: &[&str]) -> Option<PrivateRedis> {
        PrivateRedis::launch(test, port, extra, false).await
    }

    /// As [`PrivateRedis::start`], serving TLS only, its certificate at `tls_cert`.
    pub async fn start_tls(test: &str, extra: &[&str]) -> Option<PrivateRedis> {
        PrivateRedis::launch(test, free_port(), extra, true).await
    }

    async fn launch(test: &str, port: u16, extra: &[&str], tls: bool) -> Option<PrivateRedis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            return unavailable(Service::Redis, test, "no redis-server to start");
        }
        let mut redis = PrivateRedis {
            port,
            tls_cert: None,
            args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        if tls {
            let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .expect("certificate");
            let cert = redis.dir.path().join("redis.crt");
            let key = redis.dir.path().join("redis.key");
            std::fs::write(&cert, certified.cert.pem()).expect("cert");
            std::fs::write(&key, certified.key_pair.serialize_pem()).expect("key");
            let (port, cert_arg) = (port.to_string(), cert.display().to_string());
            let key_arg = key.display().to_string();
            redis.args.extend(
                [
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-cert-file",
                    &cert_arg,
                    "--tls-key-file",
                    &key_arg,
                    "--tls-ca-cert-file",
                    &cert_arg,
                    "--tls-auth-clients",
                    "no",
                ]
                .map(str::to_owned),
            );
            redis.tls_cert = Some(cert);
        }
        redis.restart().await;
        Some(redis)
    }

    /// `redis://{userinfo}127.0.0.1:{port}/{db}` (`userinfo` is `""` or `":pass@"`).
    pub fn url(&self, userinfo: &str, db: u32) -> String {
        format!("redis://{userinfo}127.0.0.1:{}/{db}", self.port)
    }

    /// The running server's pid, `None` after [`PrivateRedis::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server (again, after [`PrivateRedis::kill`]) and waits until it listens.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        eventually_async("the private redis-server listens", || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
    }

    /// Stops the server by its pid and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
