//! The sidecar in-process (emulator + echo backend + server) for ingress tests, and small
//! HTTP clients: a pooled hyper client and a raw-socket one for bytes hyper would refuse.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::config::{Flow, load_str};
use jtl_auth_sidecar::dev::echo::EchoBackend;
use jtl_auth_sidecar::emulator::{Emulator, EmulatorOptions};
use jtl_auth_sidecar::server::{Addresses, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::harness::{START_MS, TENANT, USER};

pub struct Proxy {
    pub emulator: Emulator,
    pub clock: Clock,
    pub addresses: Addresses,
    pub backend: Option<EchoBackend>,
    /// Holds `jtl.ca_file` when the emulator serves HTTPS.
    _ca_dir: Option<tempfile::TempDir>,
    /// Holds the SQLite tenant store (unless the test names another store).
    pub store_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    pub finished: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What the in-process sidecar runs with: `Proxy::builder()…start().await`. By default,
/// the session-token flow in front of an echo backend of its own, with a default emulator.
pub struct ProxyBuilder {
    flow: Flow,
    toml: String,
    env: Vec<(String, String)>,
    upstream: Option<String>,
    emulator: EmulatorOptions,
    egress: bool,
}

impl ProxyBuilder {
    /// The flow, unless the TOML names one. For the app-token flow the emulator is JTL's
    /// Zitadel (issuer, service-token endpoint, key set, its app id as the audience); for
    /// session tokens JTL's legacy IdP; in `both`, the service token comes from the legacy
    /// endpoint.
    pub fn flow(mut self, flow: Flow) -> Self {
        self.flow = flow;
        self
    }

    /// Settings in any section.
    pub fn toml(mut self, toml: &str) -> Self {
        self.toml = toml.to_owned();
        self
    }

    /// Environment variables that replace the harness's own of the same name.
    pub fn env(mut self, env: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(env);
        self
    }

    /// Forward ingress to `url` instead of an echo backend of the proxy's own.
    pub fn upstream(mut self, url: &str) -> Self {
        self.upstream = Some(url.to_owned());
        self
    }

    pub fn emulator(mut self, options: EmulatorOptions) -> Self {
        self.emulator = options;
        self
    }

    /// The egress listener on an ephemeral port, and no echo backend (egress tests talk
    /// to the emulator's API echo; nothing listens on the ingress upstream, port 1).
    pub fn egress(mut self) -> Self {
        self.egress = true;
        self
    }

    pub async fn start(self) -> Proxy {
        let mut env = Vec::new();
        if self.egress {
            env.push((
                "JTL_SIDECAR_EGRESS__LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ));
        }
        env.extend(self.env);
        let (upstream, backend) = match (self.upstream, self.egress) {
            (Some(url), _) => (url, None),
            (None, true) => ("http://127.0.0.1:1".to_owned(), None),
            (None, false) => {
                let backend = EchoBackend::start(SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .expect("echo backend");
                (backend.url(), Some(backend))
            }
        };
        let mut proxy =
            Proxy::start_in_flow(&upstream, &self.toml, self.emulator, env, self.flow).await;
        proxy.backend = backend;
        proxy
    }
}

impl Proxy {
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            flow: Flow::SessionToken,
            toml: String::new(),
            env: Vec::new(),
            upstream: None,
            emulator: EmulatorOptions::default(),
            egress: false,
        }
    }

    async fn start_in_flow(
        upstream: &str,
        toml: &str,
        options: EmulatorOptions,
        overrides: Vec<(String, String)>,
        flow: Flow,
    ) -> Proxy {
        let clock = Clock::manual(START_MS);
        let emulator = Emulator::start(options.clone(), clock.clone())
            .await
            .expect("emulator");
        let mut env = vec![
            (
                "JTL_SIDECAR_INGRESS__LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
            (
                "JTL_SIDECAR_ADMIN__LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
            ("JTL_SIDECAR_EGRESS__LISTEN".to_owned(), "".to_owned()),
            (
                "JTL_SIDECAR_INGRESS__UPSTREAM".to_owned(),
                upstream.to_owned(),
            ),
            (
                "JTL_SIDECAR_JTL__CLIENT_ID".to_owned(),
                options.client_id.clone(),
            ),
            (
                "JTL_SIDECAR_JTL__CLIENT_SECRET".to_owned(),
                options.client_secret.clone(),
            ),
            (
                "JTL_SIDECAR_JTL__TOKEN_URL".to_owned(),
                emulator.token_url(),
            ),
            (
                "JTL_SIDECAR_JTL__API_BASE_URL".to_owned(),
                emulator.api_base_url(),
            ),
        ];
        // The flow, unless the test's TOML names one.
        if !toml.contains("flow") {
            env.push((
                "JTL_SIDECAR_SESSION__FLOW".to_owned(),
                flow.label().to_owned(),
            ));
        }
        if flow == Flow::AppToken {
            // The service token from Zitadel, derived from the issuer.
            env.retain(|(name, _)| name != "JTL_SIDECAR_JTL__TOKEN_URL");
        }
        if flow.accepts(jtl_auth_sidecar::jose::TokenKind::AppToken) {
            for (name, value) in [
                ("JTL_SIDECAR_SESSION__ISSUER", emulator.issuer()),
                (
                    "JTL_SIDECAR_SESSION__AUDIENCE",
                    jtl_auth_sidecar::emulator::DEV_APP_ID.to_owned(),
                ),
            ] {
                env.push((name.to_owned(), value));
            }
        }
        // Each sidecar gets a tenant store of its own, never a file in the crate.
        let store_dir = tempfile::tempdir().expect("temp dir");
        env.push((
            "JTL_SIDECAR_TENANTS__DATABASE_URL".to_owned(),
            format!(
                "sqlite://{}",
                store_dir.path().join("jtl-tenants.db").display()
            ),
        ));
        // An HTTPS emulator is trusted through jtl.ca_file, as JTL's CA would be.
        let ca_dir = emulator.ca_pem().map(|pem| {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("jtl-ca.pem");
            std::fs::write(&path, pem).expect("ca file");
            env.push((
                "JTL_SIDECAR_JTL__CA_FILE".to_owned(),
                path.display().to_string(),
            ));
            dir
        });
        env.retain(|(name, _)| !overrides.iter().any(|(overridden, _)| overridden == name));
        env.extend(overrides);
        let config = load_str(toml, env)
            .unwrap_or_else(|e| panic!("test config invalid: {e}"))
            .config;
        let server = Server::bind(config, clock.clone())
            .await
            .expect("server binds");
        let addresses = server.addresses();
        let (stop, stopped) = oneshot::channel::<()>();
        let finished = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Proxy {
            emulator,
            clock,
            addresses,
            backend: None,
            _ca_dir: ca_dir,
            store_dir,
            stop: Some(stop),
            finished: Some(finished),
        }
    }

    /// Begins the graceful shutdown.
    pub fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addresses.ingress)
    }

    /// A URL on the egress listener (which must be enabled).
    pub fn egress_url(&self, path_and_query: &str) -> String {
        let egress = self.addresses.egress.expect("egress listener enabled");
        format!("http://{egress}{path_and_query}")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addresses.admin)
    }

    /// Requests that reached the echo backend.
    pub fn backend_hits(&self) -> u64 {
        self.backend
            .as_ref()
            .map(EchoBackend::requests)
            .unwrap_or(0)
    }

    /// A session token for the test tenant and user, valid for an hour.
    pub fn token(&self) -> String {
        self.emulator
            .mint_session_token(TENANT, USER, "acme", Duration::from_secs(3600))
            .expect("token")
    }

    /// Runs `request` while the manual clock moves on by the key-set refetch interval
    /// (10 s) every few real milliseconds. A token that no cached key verifies waits for
    /// the next permitted key-set fetch before its 401 (SPEC §5), and on the manual clock
    /// that moment only comes when the test moves time.
    pub async fn with_refetches_permitted<T>(&self, request: impl Future<Output = T>) -> T {
        tokio::pin!(request);
        loop {
            tokio::select! {
                done = &mut request => return done,
                // The pace at which time moves for the request, not a wait for an event.
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    self.clock.advance(Duration::from_secs(10));
                }
            }
        }
    }
}

/// A finished response: status, headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The values of one request header as the echo backend received it.
    pub fn echoed(&self, header: &str) -> Vec<String> {
        self.json()["headers"][header]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub async fn send(request: Request<Full<Bytes>>) -> Answer {
    let response: Response<_> = client().request(request).await.expect("request sent");
    collect(response).await
}

pub async fn collect(response: Response<hyper::body::Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::new(Bytes::new())).expect("request")).await
}

/// Sends `raw` bytes as they are and reads until the server closes; returns the status
/// code and the whole text.
pub async fn raw(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw.as_bytes()).await.expect("write");
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}
