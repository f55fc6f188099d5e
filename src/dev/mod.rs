//! `jtl-auth-sidecar dev`: the proxy against the built-in JTL emulator, with an embedded
//! config and (without `--upstream`) the built-in echo backend, so the whole flow runs on
//! a laptop with no JTL account and no network. It runs the app-token flow (SPEC §11),
//! the emulator as JTL's Zitadel, unless `--flow session-token` or `--flow both` says
//! otherwise.

pub mod echo;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use crate::clock::Clock;
use crate::config::{Config, ConfigErrors, Flow};
use crate::emulator::{
    APP_TOKEN_MINT_PATH, DEV_APP_ID, DEV_APP_USER_ID, DEV_TENANT_ID, DEV_TENANT_SLUG, DEV_USER_ID,
    Emulator, EmulatorOptions, MINT_PATH,
};
use crate::jose::TokenKind;
use crate::server::{Addresses, Server, StartError};
use echo::EchoBackend;

/// The config `dev` runs with (`config/dev.toml`): the app-token flow.
pub const DEV_CONFIG: &str = include_str!("../../config/dev.toml");

/// The config `dev --flow session-token` runs with (`config/dev-session-token.toml`).
pub const DEV_SESSION_TOKEN_CONFIG: &str = include_str!("../../config/dev-session-token.toml");

/// The config `dev --flow both` runs with (`config/dev-both.toml`).
pub const DEV_BOTH_CONFIG: &str = include_str!("../../config/dev-both.toml");

/// `tenants.database_url` in the dev configs: `dev` replaces it with a fresh SQLite
/// file under the system temp dir, so trying things out leaves nothing behind.
pub const DEV_DATABASE_URL: &str = "sqlite://dev-temp-dir/jtl-tenants.db";

/// The embedded config of `flow`, and the file it mirrors.
pub fn config_of(flow: Flow) -> (&'static str, &'static str) {
    match flow {
        Flow::AppToken => (DEV_CONFIG, "config/dev.toml"),
        Flow::SessionToken => (DEV_SESSION_TOKEN_CONFIG, "config/dev-session-token.toml"),
        Flow::Both => (DEV_BOTH_CONFIG, "config/dev-both.toml"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("{what}: {reason}")]
    Start { what: &'static str, reason: String },
    #[error(transparent)]
    Server(#[from] StartError),
}

/// The loaded dev config of `flow` (embedded file plus environment overrides).
pub fn dev_config(flow: Flow) -> Result<Config, DevError> {
    crate::config::load_str_with_process_env(config_of(flow).0)
        .map(|loaded| loaded.config)
        .map_err(DevError::Config)
}

/// Starts the emulator, the echo backend (unless `upstream` is given) and the proxy;
/// prints how to try it; serves until `shutdown`. The flow is `config.session.flow`: where
/// app tokens are accepted the emulator listens on the port of `session.issuer` and is
/// JTL's Zitadel; otherwise on the port of `jtl.token_url`.
pub async fn run(
    mut config: Config,
    upstream: Option<Url>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DevError> {
    let clock = Clock::system();
    let flow = config.session.flow;
    let app_token = flow.accepts(TokenKind::AppToken);
    let emulator_addr = if app_token {
        config
            .session
            .app_token_issuer()
            .and_then(|issuer| Url::parse(issuer).ok())
            .as_ref()
            .and_then(socket_addr_of)
            .ok_or(DevError::Start {
                what: "session.issuer",
                reason: "dev needs an http://IP:port URL for the emulator".into(),
            })?
    } else {
        socket_addr_of(&config.jtl.token_url).ok_or(DevError::Start {
            what: "jtl.token_url",
            reason: "dev needs an http://IP:port URL for the emulator".into(),
        })?
    };
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
    point_at_emulator(&mut config, &emulator);

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
    let audience = config
        .session
        .profile(TokenKind::AppToken)
        .and_then(|profile| profile.policy.audience.first().cloned())
        .unwrap_or_else(|| DEV_APP_ID.to_owned());
    let server = Server::bind(config, clock).await?;
    let addresses = server.addresses();
    // One token of each kind the flow accepts, app tokens first.
    let mut tokens = Vec::new();
    for kind in flow.kinds() {
        tokens.push(match kind {
            TokenKind::AppToken => {
                let token = mint_app_token(&emulator, &audience).ok_or(DevError::Start {
                    what: "JTL emulator",
                    reason: "cannot mint an app token (no RSA signing key)".into(),
                })?;
                (token, Shown::app_token(&emulator, &audience))
            }
            TokenKind::SessionToken => {
                let token = emulator
                    .mint_session_token(
                        DEV_TENANT_ID,
                        DEV_USER_ID,
                        DEV_TENANT_SLUG,
                        Duration::from_secs(3600),
                    )
                    .unwrap_or_default();
                (token, Shown::session_token(&emulator))
            }
        });
    }
    print_instructions(&emulator, flow, &upstream_shown, addresses, &tokens);
    if let (Some(path), Some((token, _))) = (connect_path, tokens.first()) {
        print_connect_tenant(
            &format!("http://{}", addresses.ingress),
            &path,
            token,
            &store_shown,
        );
    }
    println!("Stop with Ctrl-C.");
    server.run(shutdown).await;
    drop(tenants_dir);
    Ok(())
}

/// Points the config's JTL URLs at the started emulator (its port may have been 0): the
/// token endpoint (Zitadel's where only app tokens are accepted, else the legacy one), the
/// API, and each kind's issuer and key set.
fn point_at_emulator(config: &mut Config, emulator: &Emulator) {
    let at = |path: &str| Url::parse(&format!("{}{path}", emulator.base_url())).ok();
    let token_path = if config.session.flow == Flow::AppToken {
        crate::emulator::APP_TOKEN_PATH
    } else {
        crate::emulator::TOKEN_PATH
    };
    if let (Some(token_url), Some(api_base_url)) = (at(token_path), at("")) {
        config.jtl.token_url = token_url;
        config.jtl.api_base_url = api_base_url;
    }
    if config.session.flow == Flow::AppToken {
        // Zitadel's endpoint: it wants `openid`, and its service tokens are opaque,
        // whatever token URL the config named.
        if !config
            .jtl
            .scope
            .as_deref()
            .is_some_and(|scope| scope.split(' ').any(|s| s == "openid"))
        {
            config.jtl.scope = Some("openid".to_owned());
        }
        config.jtl.opaque_token = true;
    }
    for profile in &mut config.session.profiles {
        let keys_path = match profile.kind() {
            TokenKind::AppToken => {
                // The issuer the emulator's tokens carry.
                profile.policy.issuer = Some(emulator.issuer());
                crate::emulator::APP_KEYS_PATH
            }
            TokenKind::SessionToken => crate::emulator::JWKS_PATH,
        };
        if let Some(url) = at(keys_path) {
            profile.key_set_url = url;
        }
    }
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
    println!(
        "  curl -s -X POST {base}{path} -H 'Content-Type: application/json' -d '{{\"sessionToken\":\"{token}\"}}'"
    );
    println!();
}

fn socket_addr_of(url: &Url) -> Option<SocketAddr> {
    let host: std::net::IpAddr = url.host_str()?.trim_matches(['[', ']']).parse().ok()?;
    Some(SocketAddr::new(host, url.port_or_known_default()?))
}

/// A fresh app token (valid 1 hour) for the dev tenant and user, for `audience` (`aud`
/// and `urn:jtl:app_id`, as Zitadel mints them for JTL), so it verifies also when
/// `session.audience` is overridden.
fn mint_app_token(emulator: &Emulator, audience: &str) -> Option<String> {
    let claims = emulator.app_token_claims(
        DEV_TENANT_ID,
        DEV_APP_USER_ID,
        &serde_json::json!([audience]),
        Some(audience),
        Duration::from_secs(3600),
    );
    emulator.mint_app_token(&claims, &emulator.default_app_kid()?)
}

/// What the printed instructions of the two flows differ in.
struct Shown {
    /// After the emulator's URL on the `JTL` line.
    emulator_note: String,
    /// Introduces the first `curl`.
    token_intro: String,
    /// Introduces the minting `curl`.
    mint_intro: &'static str,
    mint_command: String,
    /// The user the printed token is for.
    user_id: &'static str,
}

impl Shown {
    fn session_token(emulator: &Emulator) -> Shown {
        Shown {
            emulator_note: "(built-in emulator)".into(),
            token_intro: format!(
                "A request with a fresh session token (legacy getSessionToken, valid for 1 hour) for tenant {DEV_TENANT_SLUG}:"
            ),
            mint_intro: "Mint more tokens (any tenant, user and slug; count= for many):",
            mint_command: format!(
                "curl -s '{}{MINT_PATH}?tenantId={DEV_TENANT_ID}&userId={DEV_USER_ID}&tenantSlug={DEV_TENANT_SLUG}'",
                emulator.base_url()
            ),
            user_id: DEV_USER_ID,
        }
    }

    fn app_token(emulator: &Emulator, audience: &str) -> Shown {
        // The mint endpoint's `aud` defaults to DEV_APP_ID; name any other app id.
        let aud = if audience == DEV_APP_ID {
            String::new()
        } else {
            let encoded: String =
                url::form_urlencoded::byte_serialize(audience.as_bytes()).collect();
            format!("&aud={encoded}")
        };
        Shown {
            emulator_note: format!(
                "(built-in emulator as JTL's Zitadel: issuer {}, app id {audience})",
                emulator.issuer()
            ),
            token_intro: format!(
                "A request with a fresh app token (getAppToken, valid for 1 hour) for tenant {DEV_TENANT_ID}, user {DEV_APP_USER_ID}:"
            ),
            mint_intro: "Mint more app tokens (any tenant and user; count= for many):",
            mint_command: format!(
                "curl -s '{}{APP_TOKEN_MINT_PATH}?tenantId={DEV_TENANT_ID}&sub={DEV_APP_USER_ID}{aud}'",
                emulator.base_url()
            ),
            user_id: DEV_APP_USER_ID,
        }
    }
}

fn print_instructions(
    emulator: &Emulator,
    flow: Flow,
    upstream: &str,
    addresses: Addresses,
    tokens: &[(String, Shown)],
) {
    let Some((token, shown)) = tokens.first() else {
        return;
    };
    let base = format!("http://{}", addresses.ingress);
    println!("jtl-auth-sidecar dev is running ({} flow).", flow.label());
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
    println!(
        "  JTL      {}  {}",
        emulator.base_url(),
        shown.emulator_note
    );
    println!();
    for (token, shown) in tokens {
        println!("{}", shown.token_intro);
        println!();
        println!("  curl -s {base}/hello -H 'Authorization: Bearer {token}'");
        println!();
    }
    println!("A spoofed X-Tenant-ID is stripped; the backend sees only the verified one:");
    println!();
    println!(
        "  curl -s {base}/hello -H 'Authorization: Bearer {token}' -H 'X-Tenant-ID: 00000000-0000-4000-8000-000000000000'"
    );
    println!();
    println!("Without a token the sidecar answers 401 and the backend sees nothing:");
    println!();
    println!("  curl -si {base}/hello");
    println!();
    if let Some(egress) = addresses.egress {
        println!(
            "Your backend calls JTL's API through the egress listener, without a token (the emulator's API echoes the request):"
        );
        println!();
        println!("  curl -s http://{egress}/v1/hello -H 'X-Tenant-ID: {DEV_TENANT_ID}'");
        println!();
        println!(
            "For work a user started, with that user's JTL permissions (the sidecar exchanges, caches and refreshes JTL's on-behalf-of token; X-JTL-Act-As: tenant acts as your app's installation):"
        );
        println!();
        println!(
            "  curl -s http://{egress}/v1/hello -H 'X-Tenant-ID: {DEV_TENANT_ID}' -H 'X-JTL-Act-As: user:{}'",
            shown.user_id
        );
        println!();
    }
    for (_, shown) in tokens {
        println!("{}", shown.mint_intro);
        println!();
        println!("  {}", shown.mint_command);
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Config {
        crate::config::load_str(text, std::iter::empty())
            .unwrap_or_else(|errors| panic!("{errors}"))
            .config
    }

    #[test]
    fn the_default_dev_config_is_the_app_token_flow_with_the_emulators_app() {
        let config = load(config_of(Flow::AppToken).0);
        assert_eq!(config.session.flow, Flow::AppToken);
        let profile = config.session.profile(TokenKind::AppToken).unwrap();
        assert_eq!(profile.policy.audience, [DEV_APP_ID]);
        assert_eq!(
            profile.policy.issuer.as_deref(),
            Some("http://127.0.0.1:8090")
        );
        assert_eq!(
            config.jtl.token_url.as_str(),
            "http://127.0.0.1:8090/oauth/v2/token"
        );
        assert_eq!(
            profile.key_set_url.as_str(),
            "http://127.0.0.1:8090/oauth/v2/keys"
        );
        assert_eq!(config.jtl.scope.as_deref(), Some("openid"));
        assert_eq!(config.tenants.database_url.expose(), DEV_DATABASE_URL);
    }

    #[test]
    fn each_flow_has_its_dev_config() {
        for flow in [Flow::AppToken, Flow::SessionToken, Flow::Both] {
            let config = load(config_of(flow).0);
            assert_eq!(config.session.flow, flow);
            assert_eq!(config.session.profiles.len(), flow.kinds().len());
        }
        // In `both`, the service token comes from the legacy endpoint, without a scope.
        let both = load(config_of(Flow::Both).0);
        assert_eq!(
            both.jtl.token_url.as_str(),
            "http://127.0.0.1:8090/oauth2/token"
        );
        assert_eq!(both.jtl.scope, None);
    }
}
