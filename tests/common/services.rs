//! The servers some tests need besides the sidecar: PostgreSQL (`TEST_DATABASE_URL`) and
//! Redis (`TEST_REDIS_URL`). Without one, its tests skip, loudly; with
//! `REQUIRE_POSTGRES_TEST=1` / `REQUIRE_REDIS_TEST=1` (as `.ci/run` sets them) they fail
//! instead, so a CI run whose server is missing cannot report those tests as passed.
//!
//! Every such skip goes through [`unavailable`]: the shared servers' here, and the tests
//! that start private servers of their own when there is no binary to start.

use std::io::Write;
use std::time::Duration;

/// How long the shared server gets to accept a TCP connection before it counts as
/// unreachable: a local server answers in milliseconds.
const REACH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Postgres,
    Redis,
}

impl Service {
    /// The variable naming the shared server.
    pub fn url_variable(self) -> &'static str {
        match self {
            Service::Postgres => "TEST_DATABASE_URL",
            Service::Redis => "TEST_REDIS_URL",
        }
    }

    /// The variable that turns a skip into a failure.
    pub fn require_variable(self) -> &'static str {
        match self {
            Service::Postgres => "REQUIRE_POSTGRES_TEST",
            Service::Redis => "REQUIRE_REDIS_TEST",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Service::Postgres => "PostgreSQL",
            Service::Redis => "Redis",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Service::Postgres => 5432,
            Service::Redis => 6379,
        }
    }

    fn required(self) -> bool {
        std::env::var(self.require_variable()).as_deref() == Ok("1")
    }
}

/// The test cannot have `service`, for the reason `why`: `None` after a loud SKIP line,
/// or a panic (the test fails) when the service's `REQUIRE_…_TEST=1` is set.
pub fn unavailable<T>(service: Service, test: &str, why: &str) -> Option<T> {
    if service.required() {
        panic!(
            "{}=1, but the {} test {test} cannot run: {why}",
            service.require_variable(),
            service.name()
        );
    }
    // Straight to stderr: the harness swallows the output of a passing test, and a skip
    // must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED {} test {test}: {why} (set {}=1 to make this a failure, as .ci/run \
         does) !!!",
        service.name(),
        service.require_variable()
    );
    None
}

/// The shared server's URL from `TEST_DATABASE_URL` / `TEST_REDIS_URL` once it accepts a
/// TCP connection; otherwise [`unavailable`] (a skip, or a failure when required).
pub async fn shared_server(service: Service, test: &str) -> Option<String> {
    let variable = service.url_variable();
    let url = match std::env::var(variable) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            return unavailable(
                service,
                test,
                &format!("{variable} is not set (.ci/run sets it to the local server)"),
            );
        }
    };
    // Only host and port are shown: the URL may carry a password.
    let Some((host, port)) = host_and_port(&url, service.default_port()) else {
        return unavailable(service, test, &format!("{variable} is not a URL"));
    };
    let reached = tokio::time::timeout(
        REACH_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await;
    match reached {
        Ok(Ok(_)) => Some(url),
        Ok(Err(error)) => unavailable(
            service,
            test,
            &format!("{variable} is set, but {host}:{port} is unreachable: {error}"),
        ),
        Err(_) => unavailable(
            service,
            test,
            &format!(
                "{variable} is set, but {host}:{port} did not answer within {REACH_TIMEOUT:?}"
            ),
        ),
    }
}

/// `host` (brackets removed from an IPv6 literal) and port of a URL.
fn host_and_port(url: &str, default_port: u16) -> Option<(String, u16)> {
    let url = url::Url::parse(url).ok()?;
    let host = match url.host()? {
        url::Host::Ipv6(ip) => ip.to_string(),
        host => host.to_string(),
    };
    Some((host, url.port().unwrap_or(default_port)))
}
