//! What loading and refreshing the key set writes to the log (SPEC §6, §11): Zitadel
//! publishes RSA, EC and OKP keys side by side, so a key of a type the flow does not use is
//! skipped at debug level, never as a warning; an unusable key of the flow's type (an RSA
//! key under 2048 bits) is a warning once per `kid`, not at every refresh.
//!
//! The app-token flow's key set is built from the config as `run` builds it and fetched
//! from the emulator's Zitadel. The log is captured as the product writes it (JSON,
//! flattened events); `#[tokio::test]` runs the emulator on the test's thread, where the
//! capturing subscriber is the default.

mod common;

use std::time::Duration;

use common::logs::Logs;
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::config::load_str;
use jtl_auth_sidecar::emulator::{DEV_APP_ID, Emulator, EmulatorOptions};
use jtl_auth_sidecar::jtl::{Jtl, KeySet};

const START_MS: i64 = 1_790_000_000_000;
/// `jwks_min_refetch_interval_s` by default: the clock moves this far between refreshes.
const MIN_REFETCH: Duration = Duration::from_secs(10);

impl Logs {
    /// The messages logged at `level` (`"WARN"`, `"DEBUG"`) about skipped keys.
    fn skipped_keys(&self, level: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line["level"] == level)
            .filter_map(|line| line["message"].as_str().map(str::to_owned))
            .filter(|message| message.starts_with("skipped a key"))
            .collect()
    }

    fn warnings(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line["level"] == "WARN")
            .map(|line| line.to_string())
            .collect()
    }
}

/// The emulator as JTL's Zitadel and the app-token flow's key set, not fetched yet.
async fn zitadel_and_keys() -> (Emulator, Clock, KeySet) {
    let clock = Clock::manual(START_MS);
    let options = EmulatorOptions::default();
    let emulator = Emulator::start(options.clone(), clock.clone())
        .await
        .expect("emulator");
    let toml = format!(
        "[jtl]\nclient_id = {:?}\nclient_secret = {:?}\napi_base_url = {:?}\n\
         [session]\nflow = \"app-token\"\nissuer = {:?}\naudience = {DEV_APP_ID:?}\n",
        options.client_id,
        options.client_secret,
        emulator.api_base_url(),
        emulator.issuer(),
    );
    let config = load_str(&toml, Vec::new())
        .unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"))
        .config;
    assert_eq!(
        config.session.profiles[0].key_set_url.as_str(),
        emulator.app_keys_url()
    );
    let keys = Jtl::from_config(&config, clock.clone())
        .expect("JTL client")
        .keys()
        .clone();
    (emulator, clock, keys)
}

/// Loads the set `times` times, the clock moving on by the refetch interval in between.
async fn load(keys: &KeySet, clock: &Clock, times: u64) {
    for _ in 0..times {
        let generation = keys.current().generation;
        let loaded = keys.refetch(generation).await;
        assert_eq!(loaded.generation, generation + 1, "the fetch succeeded");
        clock.advance(MIN_REFETCH);
    }
}

#[tokio::test]
async fn a_healthy_mixed_key_set_logs_no_warning_at_load_or_refresh() {
    let (logs, _capture) = Logs::capture(tracing::Level::DEBUG);
    let (emulator, clock, keys) = zitadel_and_keys().await;
    // Zitadel's set as served: RSA, EC and OKP keys with numeric-string kids.
    let published = emulator.app_keys();
    let types: Vec<&str> = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kty"].as_str().unwrap())
        .collect();
    for kty in ["RSA", "EC", "OKP"] {
        assert!(types.contains(&kty), "{kty} in {published}");
    }
    for key in published["keys"].as_array().unwrap() {
        let kid = key["kid"].as_str().unwrap();
        assert!(kid.bytes().all(|b| b.is_ascii_digit()), "{kid}");
    }

    load(&keys, &clock, 3).await;

    assert_eq!(keys.current().set.len(), 1, "the RSA key is kept");
    assert_eq!(logs.warnings(), Vec::<String>::new());
    // The EC and OKP keys are skipped at each load, quietly.
    let quiet = logs.skipped_keys("DEBUG");
    assert_eq!(quiet.len(), 2 * 3, "{quiet:?}");
    assert!(
        quiet.iter().all(|message| message.contains("kty")),
        "{quiet:?}"
    );
}

#[tokio::test]
async fn an_rsa_key_under_2048_bits_is_warned_about_once_across_refreshes() {
    let (logs, _capture) = Logs::capture(tracing::Level::DEBUG);
    let (emulator, clock, keys) = zitadel_and_keys().await;
    emulator.publish_small_rsa_key("298817363741600777");

    load(&keys, &clock, 2).await;

    let warned = logs.skipped_keys("WARN");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("\"298817363741600777\""), "{warned:?}");
    assert!(warned[0].contains("1024 bits"), "{warned:?}");
    assert_eq!(logs.warnings().len(), 1, "{:?}", logs.warnings());

    // Another unusable key later is news: warned about once too.
    emulator.publish_small_rsa_key("298817363741600778");
    load(&keys, &clock, 2).await;
    let warned = logs.skipped_keys("WARN");
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned[1].contains("\"298817363741600778\""), "{warned:?}");
    assert_eq!(keys.current().set.len(), 1, "only the 2048-bit key is kept");
}
