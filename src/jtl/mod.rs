//! Everything that talks to JTL: the HTTPS client, the access-token manager and the
//! session-token key set.

pub mod access_token;
pub mod backoff;
pub mod http;
pub mod jwks;

pub use access_token::{AccessToken, AccessTokens, LifetimeSource, TokenError, TokenUnavailable};
pub use http::JtlHttp;
pub use jwks::{
    FetchedKeys, KeySet, KeySetOptions, KeyWait, KeysError, LoadedKeys, MAX_WAITING_FOR_KEYS,
};

use crate::clock::Clock;
use crate::config::Config;

/// Why the connection to JTL could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Http(#[from] http::SetupError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// The two handles through which everything reaches JTL.
#[derive(Clone)]
pub struct Jtl {
    pub tokens: AccessTokens,
    pub keys: KeySet,
}

impl Jtl {
    /// Builds the HTTPS client, the access-token manager and the key set from the config.
    /// Nothing is fetched yet: the refreshers or the first callers do that.
    pub fn from_config(config: &Config, clock: Clock) -> Result<Jtl, SetupError> {
        let http = JtlHttp::new(config.jtl.timeout, config.jtl.ca_file.as_deref())?;
        let tokens = AccessTokens::new(&config.jtl, http.clone(), clock.clone())?;
        let options = KeySetOptions {
            url: config.jtl.jwks_url.to_string(),
            refresh_interval: config.session.jwks_refresh_interval,
            min_refetch_interval: config.session.jwks_min_refetch_interval,
            max_stale: config.session.jwks_max_stale,
            // Session-token keys come from JTL's API with the access token; app-token
            // keys from Zitadel's public endpoint.
            key_kind: config.session.token_policy().algorithm().key_kind(),
            authenticated: config.session.flow == crate::config::Flow::SessionToken,
        };
        let keys = KeySet::new(options, http, tokens.clone(), clock);
        Ok(Jtl { tokens, keys })
    }
}
