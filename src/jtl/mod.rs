//! Everything that talks to JTL: the HTTPS client, the access-token manager (and one
//! token as JTL answered it) and the session-token key set.

pub mod access_token;
pub mod backoff;
pub mod client_auth;
pub mod exchange;
pub mod http;
pub mod jwks;
mod metrics;
pub mod otlp_client;
pub mod token;

pub use access_token::{AccessTokens, TokenError, TokenUnavailable};
pub use http::JtlHttp;
pub use jwks::{
    FetchedKeys, KeySet, KeySetFetchError, KeySetOptions, KeyWait, LoadedKeys, MAX_WAITING_FOR_KEYS,
};
pub use token::{AccessToken, LifetimeSource};

use crate::clock::Clock;
use crate::config::Config;

/// Why the connection to JTL could not be set up: its HTTPS client (TLS), its
/// access-token manager, or a config that names no key set. Nothing is fetched yet when
/// this is decided.
#[derive(Debug, thiserror::Error)]
pub enum JtlSetupError {
    #[error(transparent)]
    Http(#[from] crate::tls::TlsSetupError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the config names no key set (session.flow accepts no kind of token)")]
    NoKeySet,
}

/// The handles through which everything reaches JTL: the access token, and one key set
/// per kind of token the flow accepts (two in `both`).
#[derive(Clone)]
pub struct Jtl {
    pub tokens: AccessTokens,
    /// Tokens that act for a user or a tenant installation (`X-JTL-Act-As`).
    pub exchange: exchange::TokenExchange,
    /// In the order of `config.session.profiles` (app tokens first).
    pub key_sets: Vec<KeySet>,
}

impl Jtl {
    /// Builds the HTTPS client, the access-token manager and the key set from the config.
    /// Nothing is fetched yet: the refreshers or the first callers do that.
    /// The access token is this process's own: `check` and the tests use this. Calls to
    /// JTL run on the runtime this is called from.
    pub fn from_config(config: &Config, clock: Clock) -> Result<Jtl, JtlSetupError> {
        Jtl::from_config_with_shared_store(config, clock, None, tokio::runtime::Handle::current())
    }

    /// As [`Jtl::from_config`], with the access token shared through `shared` (SPEC §12,
    /// `[shared_cache]`): what `run` uses. Nothing is connected yet. Calls to JTL and
    /// their connections run on `runtime` (the server's main runtime), wherever the
    /// caller runs.
    pub fn from_config_with_shared_store(
        config: &Config,
        clock: Clock,
        shared: Option<crate::shared_cache::SharedTokenStore>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Jtl, JtlSetupError> {
        let roots = crate::tls::TlsRoots::new(config.jtl.ca_file.as_deref())?;
        Jtl::from_config_with_roots(config, clock, shared, roots, runtime)
    }

    /// As [`Jtl::from_config_with_shared_store`], new connections to JTL trusting what
    /// `roots` holds then (the server shares one with egress and `rediss://`).
    pub fn from_config_with_roots(
        config: &Config,
        clock: Clock,
        shared: Option<crate::shared_cache::SharedTokenStore>,
        roots: std::sync::Arc<crate::tls::TlsRoots>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Jtl, JtlSetupError> {
        let http = JtlHttp::with_roots(config.jtl.timeout, roots, runtime);
        let tokens =
            AccessTokens::with_shared_store(&config.jtl, http.clone(), clock.clone(), shared)?;
        let key_sets = config
            .session
            .profiles
            .iter()
            .map(|profile| {
                let options = KeySetOptions {
                    url: profile.key_set_url.to_string(),
                    refresh_interval: config.session.jwks_refresh_interval,
                    min_refetch_interval: config.session.jwks_min_refetch_interval,
                    max_stale: config.session.jwks_max_stale,
                    key_kind: profile.policy.algorithm().key_kind(),
                    // Session-token keys come from JTL's API with the access token;
                    // app-token keys from Zitadel's public endpoint.
                    authenticated: profile.key_set_needs_bearer,
                };
                KeySet::new(options, http.clone(), tokens.clone(), clock.clone())
            })
            .collect::<Vec<_>>();
        if key_sets.is_empty() {
            return Err(JtlSetupError::NoKeySet);
        }
        let exchange =
            exchange::TokenExchange::new(config, http.clone(), tokens.clone(), clock.clone());
        Ok(Jtl {
            tokens,
            exchange,
            key_sets,
        })
    }

    /// The key set of the first kind accepted (the only one outside `both`); there is
    /// always one ([`Jtl::from_config_with_shared_store`] refuses a config without).
    pub fn keys(&self) -> &KeySet {
        &self.key_sets[0]
    }
}
