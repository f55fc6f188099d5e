//! The shared-cache step of `check --online` (SPEC §12): Redis answers with the
//! password and TLS the runtime uses, a sealed test entry can be written and read back,
//! and whether this app's entry is there now (read only: never written).

use super::{Line, Verdict, step};
use crate::clock::Clock;
use crate::config::{ClientSecret, Config};
use crate::secrets::fingerprint;
use crate::shared_cache::{EntryNow, SealingKey, SharedCacheSetupError, SharedTokenStore};
use crate::tls::TlsRoots;

/// Said after every failure: Redis is an optimisation, never a dependency.
const FALLBACK: &str = "the replicas fall back to their own access tokens (each asks JTL \
                        itself), so this does not stop serving";

/// The `shared cache` line: `skipped` when `shared_cache.redis_url` is empty.
pub async fn check(config: &Config) -> Line {
    let clock = Clock::system();
    // `jtl.ca_file` matters (and is read) only for `rediss://`.
    let tls = config
        .shared_cache
        .redis
        .as_ref()
        .is_some_and(|target| target.tls);
    let ca_file = config.jtl.ca_file.as_deref().filter(|_| tls);
    let roots = match TlsRoots::new(ca_file) {
        Ok(roots) => roots,
        Err(error) => {
            let error = SharedCacheSetupError::Tls(error.to_string());
            return Line::new(
                Verdict::Fail,
                step::SHARED_CACHE,
                format!("{error}; {FALLBACK}"),
            );
        }
    };
    let store = match SharedTokenStore::from_config(
        config,
        roots,
        clock.clone(),
        tokio::runtime::Handle::current(),
    ) {
        Ok(Some(store)) => store,
        Ok(None) => {
            return Line::new(
                Verdict::Skipped,
                step::SHARED_CACHE,
                "shared_cache.redis_url is \"\": each replica gets its own access token",
            );
        }
        Err(error) => {
            return Line::new(
                Verdict::Fail,
                step::SHARED_CACHE,
                format!("{error}; {FALLBACK}"),
            );
        }
    };
    let shown = store.shown_target();
    // The key the runtime seals with: the client secret, byte for byte.
    let secret = match &config.jtl.client_secret {
        ClientSecret::Inline(secret) => Some(secret.expose().as_bytes().to_vec()),
        ClientSecret::File(path) => std::fs::read(path).ok(),
    };
    let key = secret.as_deref().map(SealingKey::derive);
    match store.probe(key.as_ref()).await {
        Ok(probe) => {
            let entry = match probe.entry {
                EntryNow::Missing => "not there yet (the first replica that needs a token \
                                      writes it)"
                    .to_owned(),
                EntryNow::Opens(entry) => {
                    let left_s = entry.expires_at_ms.saturating_sub(clock.now_ms()).max(0) / 1000;
                    format!(
                        "there and opens with this client secret: access token {}, valid \
                         {left_s} s more",
                        fingerprint(&entry.token)
                    )
                }
                EntryNow::DoesNotOpen => "there but does not open with this client secret \
                                          (sealed under another one; the next replica to \
                                          get a token replaces it)"
                    .to_owned(),
                EntryNow::NotOpened => {
                    "there; not opened, as the client secret could not be read".to_owned()
                }
            };
            Line::new(
                Verdict::Ok,
                step::SHARED_CACHE,
                format!(
                    "{shown}: a sealed test entry was written, read back and deleted ({} ms); \
                     this app's entry {} is {entry}",
                    probe.written_ms,
                    store.key()
                ),
            )
        }
        Err(failure) => Line::new(
            Verdict::Fail,
            step::SHARED_CACHE,
            format!("{shown}: {failure}; {FALLBACK}"),
        ),
    }
}
