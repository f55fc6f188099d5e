//! `jtl-auth-sidecar dev`: the proxy against the built-in JTL emulator, with an embedded
//! config and (without `--upstream`) the built-in echo backend, so the whole flow runs on
//! a laptop with no JTL account and no network.

pub mod echo;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use crate::clock::Clock;
use crate::config::{Config, ConfigErrors};
use crate::emulator::{
    Emulator, EmulatorOptions, DEV_TENANT_ID, DEV_TENANT_SLUG, DEV_USER_ID, MINT_PATH,
};
use crate::server::{Addresses, Server, StartError};
use echo::EchoBackend;

/// The config `dev` runs with (`config/dev.toml`).
pub const DEV_CONFIG: &str = include_str!("../../config/dev.toml");

/// `tenants.database_url` in `config/dev.toml`: `dev` replaces it with a fresh SQLite
/// file under the system temp dir, so trying things out leaves nothing behind.
pub const DEV_DATABASE_URL: &str = "sqlite://dev-temp-dir/jtl-tenants.db";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("{what}: {reason}")]
    Start { what: &'static str, reason: String },
    #[error(transparent)]
    Server(#[from] StartError),
}

/// The loaded dev config (embedded file plus environment overrides).
pub fn dev_config() -> Result<Config, DevError> {
    crate::config::load_str_with_process_env(DEV_CONFIG)
        .map(|loaded| loaded.config)
        .map_err(DevError::Config)
}

/// Starts the emulator, the echo backend (unless `upstream` is given) and the proxy;
/// prints how to try it; serves until `shutdown`.
pub async fn run(
    mut config: Config,
    upstream: Option<Url>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DevError> {
    let clock = Clock::system();
    let emulator_addr = socket_addr_of(&config.jtl.token_url).ok_or(DevError::Start {
        what: "jtl.token_url",
        reason: "dev needs an http://IP:port URL for the emulator".into(),
    })?;
    let emulator = Emulator::start_on(
        EmulatorOptions {
            client_id: config.jtl.client_id.clone(),
            client_secret: match &config.jtl.client_secret {
                crate::config::ClientSecret::Inline(secret) => secret.expose().to_owned(),
                crate::config::ClientSecret::File(path) => {
                    std::fs::read_to_string(path).unwrap_or_default()
                }
            },
            ..EmulatorOptions::default()
        },
        clock.clone(),
        emulator_addr,
    )
    .await
    .map_err(|e| DevError::Start {
        what: "JTL emulator",
        reason: e.to_string(),
    })?;
    let emulator_url = |path: &str| Url::parse(&format!("{}{path}", emulator.base_url()));
    if let (Ok(token_url), Ok(api_base_url), Ok(jwks_url)) = (
        emulator_url(crate::emulator::TOKEN_PATH),
        emulator_url(""),
        emulator_url(crate::emulator::JWKS_PATH),
    ) {
        config.jtl.token_url = token_url;
        config.jtl.api_base_url = api_base_url;
        config.jtl.jwks_url = jwks_url;
    }

    let _echo = match upstream {
        Some(url) => {
            config.ingress.upstream = url;
            None
        }
        None => {
            let addr = socket_addr_of(&config.ingress.upstream).ok_or(DevError::Start {
                what: "ingress.upstream",
                reason: "dev needs an http://IP:port URL for the echo backend".into(),
            })?;
            let echo = EchoBackend::start(addr)
                .await
                .map_err(|e| DevError::Start {
                    what: "echo backend",
                    reason: format!("cannot listen on {addr}: {e}"),
                })?;
            if let Ok(url) = Url::parse(&echo.url()) {
                config.ingress.upstream = url;
            }
            Some(echo)
        }
    };

    let tenants_dir = if config.tenants.database_url.expose() == DEV_DATABASE_URL {
        let dir = TempDir::create().map_err(|e| DevError::Start {
            what: "tenants.database_url",
            reason: format!("cannot create a temp dir for the tenant store: {e}"),
        })?;
        config.tenants.database_url = crate::secrets::Secret::new(format!(
            "sqlite://{}",
            dir.0.join("jtl-tenants.db").display()
        ));
        Some(dir)
    } else {
        None
    };

    let upstream_shown = config.ingress.upstream.to_string();
    let connect_path = config.tenants.connect_path.clone();
    let store_shown = crate::config::redact_url_password(config.tenants.database_url.expose());
    let server = Server::bind(config, clock).await?;
    let addresses = server.addresses();
    let token = emulator
        .mint_session_token(
            DEV_TENANT_ID,
            DEV_USER_ID,
            DEV_TENANT_SLUG,
            Duration::from_secs(3600),
        )
        .unwrap_or_default();
    print_instructions(&emulator, &upstream_shown, addresses, &token);
    if let Some(path) = connect_path {
        print_connect_tenant(
            &format!("http://{}", addresses.ingress),
            &path,
            &token,
            &store_shown,
        );
    }
    println!("Stop with Ctrl-C.");
    server.run(shutdown).await;
    drop(tenants_dir);
    Ok(())
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn create() -> std::io::Result<TempDir> {
        let path = std::env::temp_dir().join(format!(
            "jtl-auth-sidecar-dev-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn print_connect_tenant(base: &str, path: &str, token: &str, store: &str) {
    println!("Connect the tenant (the sidecar answers; tenants are kept in {store}):");
    println!();
    println!("  curl -s -X POST {base}{path} -H 'Content-Type: application/json' -d '{{\"sessionToken\":\"{token}\"}}'");
    println!();
}

fn socket_addr_of(url: &Url) -> Option<SocketAddr> {
    let host: std::net::IpAddr = url.host_str()?.trim_matches(['[', ']']).parse().ok()?;
    Some(SocketAddr::new(host, url.port_or_known_default()?))
}

fn print_instructions(emulator: &Emulator, upstream: &str, addresses: Addresses, token: &str) {
    let base = format!("http://{}", addresses.ingress);
    println!("jtl-auth-sidecar dev is running.");
    println!("  ingress  {base}  ->  backend {upstream}");
    if let Some(egress) = addresses.egress {
        println!(
            "  egress   http://{egress}  ->  JTL API {}  (access token injected)",
            emulator.api_base_url()
        );
    }
    println!(
        "  admin    http://{}  (/healthz /readyz /metrics)",
        addresses.admin
    );
    println!("  JTL      {}  (built-in emulator)", emulator.base_url());
    println!();
    println!(
        "A request with a fresh session token (valid for 1 hour) for tenant {DEV_TENANT_SLUG}:"
    );
    println!();
    println!("  curl -s {base}/hello -H 'Authorization: Bearer {token}'");
    println!();
    println!("A spoofed X-Tenant-ID is stripped; the backend sees only the verified one:");
    println!();
    println!("  curl -s {base}/hello -H 'Authorization: Bearer {token}' -H 'X-Tenant-ID: 00000000-0000-4000-8000-000000000000'");
    println!();
    println!("Without a token the sidecar answers 401 and the backend sees nothing:");
    println!();
    println!("  curl -si {base}/hello");
    println!();
    if let Some(egress) = addresses.egress {
        println!("Your backend calls JTL's API through the egress listener, without a token (the emulator's API echoes the request):");
        println!();
        println!("  curl -s http://{egress}/v1/hello -H 'X-Tenant-ID: {DEV_TENANT_ID}'");
        println!();
    }
    println!("Mint more tokens (any tenant, user and slug; count= for many):");
    println!();
    println!(
        "  curl -s '{}{MINT_PATH}?tenantId={DEV_TENANT_ID}&userId={DEV_USER_ID}&tenantSlug={DEV_TENANT_SLUG}'",
        emulator.base_url()
    );
    println!();
}
