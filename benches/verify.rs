//! Token verification against raw ring on the same signing input: Ed25519 session tokens
//! and RS256 (RSA-2048) app tokens.
//!
//! `cargo bench --bench verify`. The ratios to `raw_ring_ed25519_verify` and
//! `raw_ring_rsa2048_verify` show what parsing, key selection, claim checks and the
//! verified cache add to (or save from) the one signature check that a cache miss cannot
//! avoid. `full_verification` is the sidecar's own `TokenVerifier` over a fixed key set
//! (no cache), polled without a runtime.
//!
//! Criterion measures one benchmark for seconds, then the next, so on a machine where
//! other work comes and goes the ratio of two medians moves by more than what is being
//! compared. With `VERIFY_ALTERNATE=1` each of the `session_token` and `app_token` groups
//! also times its functions in alternation, in short batches, and prints the median
//! per-call times and the median of the full/raw ratios of neighbouring batches: load from
//! elsewhere then falls on both alike.
//!
//! The `verified_cache` group compares the verified-token cache's lookup in quick_cache
//! (what `verify.rs` uses) with moka's; `VERIFY_CACHE=memory:<crate>` and
//! `VERIFY_CACHE=lookups:<crate>` measure memory per entry and (under callgrind)
//! instructions per lookup in a process of their own.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::config::load_str;
use jtl_auth_sidecar::emulator::{Emulator, EmulatorOptions};
use jtl_auth_sidecar::jose::{
    Algorithm, CompactJws, Ed25519Key, JwkSet, RsaKey, TokenKind, TokenPolicy, base64url_encode,
};
use jtl_auth_sidecar::jtl::Jtl;
use jtl_auth_sidecar::verify::TokenVerifier;
use ring::rsa::PublicKeyComponents;
use ring::signature::{
    ED25519, Ed25519KeyPair, KeyPair, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair,
    RsaPublicKeyComponents, UnparsedPublicKey,
};

const NOW: i64 = 1_790_000_000;
const TENANT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const USER: &str = "2f1b8d2c-5c1e-4a7e-9b3f-1d2e3f4a5b6c";

/// A token shaped like JTL's: documented header without `kid`, the usual claims.
fn realistic_token(pair: &Ed25519KeyPair) -> String {
    let header = r#"{"alg":"EdDSA","typ":"JWT"}"#;
    let payload = format!(
        r#"{{"exp":{},"iat":{},"userId":"{USER}","tenantId":"{TENANT}","tenantSlug":"acme-gmbh","kid":"customer-4711"}}"#,
        NOW + 300,
        NOW - 5
    );
    let signing_input = format!(
        "{}.{}",
        base64url_encode(header.as_bytes()),
        base64url_encode(payload.as_bytes())
    );
    let signature = pair.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", base64url_encode(signature.as_ref()))
}

fn bench_jose(c: &mut Criterion) {
    let pair = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("seed");
    let public = pair.public_key().as_ref().to_vec();
    let token = realistic_token(&pair);
    let keys = JwkSet::from_keys([
        Ed25519Key::from_public_bytes(Some("key-1".into()), &public).expect("key")
    ]);
    let policy = TokenPolicy::default();
    let verifier =
        TokenVerifier::with_fixed_keys(keys, policy.clone(), Clock::manual(NOW * 1000), 0);
    assert!(verifier.verify_now(&token).is_ok());

    let (signing_input, _) = token.rsplit_once('.').expect("three segments");
    let signature = CompactJws::parse(&token, 8192)
        .expect("parses")
        .signature()
        .to_vec();

    let mut group = c.benchmark_group("session_token");
    group.bench_function("raw_ring_ed25519_verify", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ED25519, black_box(&public))
                .verify(black_box(signing_input.as_bytes()), black_box(&signature))
                .is_ok()
        })
    });
    group.bench_function("full_verification", |b| {
        b.iter(|| verifier.verify_now(black_box(&token)).is_ok())
    });
    group.bench_function("parse_and_claims_only", |b| {
        b.iter(|| {
            let jws = CompactJws::parse(black_box(&token), policy.max_token_bytes).expect("parses");
            policy.session_from(jws.into_payload(), NOW).is_ok()
        })
    });
    group.finish();

    alternate(
        "session_token",
        &mut [
            ("raw_ring_ed25519_verify", &mut || {
                UnparsedPublicKey::new(&ED25519, black_box(&public))
                    .verify(black_box(signing_input.as_bytes()), black_box(&signature))
                    .is_ok()
            }),
            ("full_verification", &mut || {
                verifier.verify_now(black_box(&token)).is_ok()
            }),
            ("parse_and_claims_only", &mut || {
                let jws =
                    CompactJws::parse(black_box(&token), policy.max_token_bytes).expect("parses");
                policy.session_from(jws.into_payload(), NOW).is_ok()
            }),
        ],
    );
}

/// With `VERIFY_ALTERNATE` set: times `functions` in rotation, `BATCH` calls of one, then
/// of the next, `ROUNDS` times, and prints each one's median time per call and the median
/// (and 10th and 90th percentiles) of the ratio of the second to the first over
/// neighbouring batches.
fn alternate(group: &str, functions: &mut [(&str, &mut dyn FnMut() -> bool)]) {
    const BATCH: u32 = 16;
    const ROUNDS: usize = 1000;
    if std::env::var_os("VERIFY_ALTERNATE").is_none() {
        return;
    }
    let mut times = vec![Vec::with_capacity(ROUNDS); functions.len()];
    for round in 0..ROUNDS + ROUNDS / 10 {
        for (slot, (_, function)) in times.iter_mut().zip(functions.iter_mut()) {
            let start = Instant::now();
            for _ in 0..BATCH {
                black_box(function());
            }
            // The first tenth warms up.
            if round >= ROUNDS / 10 {
                slot.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(BATCH));
            }
        }
    }
    let median = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let mut ratios: Vec<f64> = times[1].iter().zip(&times[0]).map(|(b, a)| b / a).collect();
    ratios.sort_by(f64::total_cmp);
    let described: Vec<String> = functions
        .iter()
        .zip(&times)
        .map(|((name, _), times)| format!("{name} {:.3} µs", median(times)))
        .collect();
    println!(
        "{group} alternating ({ROUNDS} rounds of {BATCH} calls each): {}; {}/{} median {:.3} (p10 {:.3}, p90 {:.3})",
        described.join(", "),
        functions[1].0,
        functions[0].0,
        ratios[ROUNDS / 2],
        ratios[ROUNDS / 10],
        ratios[ROUNDS * 9 / 10],
    );
}

/// An app token shaped like Zitadel's, signed with the emulator's first test-only key.
fn app_token(pair: &RsaKeyPair) -> String {
    let header = r#"{"alg":"RS256","kid":"298817363741638659","typ":"JWT"}"#;
    let payload = format!(
        r#"{{"aud":["312909075212468632","312909075212460000"],"exp":{},"iat":{},"iss":"https://id.jtl-cloud.com","sub":"312909075212468999","urn:jtl:app_id":"312909075212468632","urn:jtl:tenant_id":"{TENANT}"}}"#,
        NOW + 300,
        NOW - 5
    );
    let signing_input = format!(
        "{}.{}",
        base64url_encode(header.as_bytes()),
        base64url_encode(payload.as_bytes())
    );
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .expect("signs");
    format!("{signing_input}.{}", base64url_encode(&signature))
}

fn bench_app_token(c: &mut Criterion) {
    let pair = RsaKeyPair::from_pkcs8(include_bytes!("../src/emulator/keys/rsa2048-1.pk8"))
        .expect("test key");
    let public = PublicKeyComponents::<Vec<u8>>::from(pair.public());
    let token = app_token(&pair);
    let keys = JwkSet::from_keys([RsaKey::from_components(
        Some("298817363741638659".into()),
        &public.n,
        &public.e,
    )
    .expect("key")]);
    let policy = TokenPolicy {
        kind: TokenKind::AppToken,
        issuer: Some("https://id.jtl-cloud.com".into()),
        audience: vec!["312909075212468632".into()],
        ..TokenPolicy::default()
    };
    let verifier =
        TokenVerifier::with_fixed_keys(keys, policy.clone(), Clock::manual(NOW * 1000), 0);
    assert!(verifier.verify_now(&token).is_ok());
    let (signing_input, _) = token.rsplit_once('.').expect("three segments");
    let signature = CompactJws::parse_as(&token, 8192, Algorithm::RS256)
        .expect("parses")
        .signature()
        .to_vec();

    let mut group = c.benchmark_group("app_token");
    group.bench_function("raw_ring_rsa2048_verify", |b| {
        b.iter(|| {
            RsaPublicKeyComponents {
                n: black_box(&public.n[..]),
                e: black_box(&public.e[..]),
            }
            .verify(
                &RSA_PKCS1_2048_8192_SHA256,
                black_box(signing_input.as_bytes()),
                black_box(&signature),
            )
            .is_ok()
        })
    });
    group.bench_function("full_verification", |b| {
        b.iter(|| verifier.verify_now(black_box(&token)).is_ok())
    });
    // Everything full verification does besides the signature check (and the key lookup).
    group.bench_function("parse_and_claims_only", |b| {
        b.iter(|| {
            let jws =
                CompactJws::parse_as(black_box(&token), policy.max_token_bytes, Algorithm::RS256)
                    .expect("parses");
            policy.session_from(jws.into_payload(), NOW).is_ok()
        })
    });
    group.finish();

    alternate(
        "app_token",
        &mut [
            ("raw_ring_rsa2048_verify", &mut || {
                RsaPublicKeyComponents {
                    n: black_box(&public.n[..]),
                    e: black_box(&public.e[..]),
                }
                .verify(
                    &RSA_PKCS1_2048_8192_SHA256,
                    black_box(signing_input.as_bytes()),
                    black_box(&signature),
                )
                .is_ok()
            }),
            ("full_verification", &mut || {
                verifier.verify_now(black_box(&token)).is_ok()
            }),
            ("parse_and_claims_only", &mut || {
                let jws = CompactJws::parse_as(
                    black_box(&token),
                    policy.max_token_bytes,
                    Algorithm::RS256,
                )
                .expect("parses");
                policy.session_from(jws.into_payload(), NOW).is_ok()
            }),
        ],
    );
}

/// The emulator and a `TokenVerifier` with its key set loaded, on a manual clock.
struct Setup {
    _emulator: Emulator,
    clock: Clock,
    jtl: Jtl,
    verifier: Arc<TokenVerifier>,
    token: String,
}

async fn setup(cache_entries: u64) -> Setup {
    let clock = Clock::manual(NOW * 1000);
    let emulator = Emulator::start(EmulatorOptions::default(), clock.clone())
        .await
        .expect("emulator");
    let toml = format!(
        "[jtl]\nclient_id = \"emulated-client\"\nclient_secret = \"emulated-secret\"\ntoken_url = {:?}\napi_base_url = {:?}\n[session]\nflow = \"session-token\"\nverified_cache_entries = {cache_entries}\njwks_min_refetch_interval_s = 1\n",
        emulator.token_url(),
        emulator.api_base_url()
    );
    let config = load_str(&toml, Vec::new()).expect("config").config;
    let jtl = Jtl::from_config(&config, clock.clone()).expect("jtl");
    let verifier = Arc::new(TokenVerifier::new(
        config.session.flow,
        &config.session.profiles,
        &jtl.key_sets,
        clock.clone(),
        cache_entries,
    ));
    let token = emulator
        .mint_session_token(TENANT, USER, "acme-gmbh", Duration::from_secs(3600))
        .expect("token");
    verifier.verify(&token).await.expect("verifies");
    Setup {
        _emulator: emulator,
        clock,
        jtl,
        verifier,
        token,
    }
}

fn bench_verifier(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cached = runtime.block_on(setup(100_000));
    let uncached = runtime.block_on(setup(0));

    let mut group = c.benchmark_group("session_verifier");
    group.bench_function("cache_hit", |b| {
        b.to_async(&runtime).iter(|| async {
            cached
                .verifier
                .verify(black_box(&cached.token))
                .await
                .is_ok()
        })
    });
    group.bench_function("cache_off_full_verification", |b| {
        b.to_async(&runtime).iter(|| async {
            uncached
                .verifier
                .verify(black_box(&uncached.token))
                .await
                .is_ok()
        })
    });
    group.bench_function("key_set_lookup", |b| {
        b.iter(|| {
            uncached
                .jtl
                .keys()
                .usable()
                .is_some_and(|loaded| black_box(loaded.set.get("emulator-key-1")).is_some())
        })
    });

    // The key set is swapped as fast as the emulator serves it while verifications run.
    let stop = Arc::new(AtomicBool::new(false));
    let refresher = runtime.spawn({
        let keys = uncached.jtl.keys().clone();
        let clock = uncached.clock.clone();
        let stop = Arc::clone(&stop);
        async move {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                clock.advance(Duration::from_secs(1));
                keys.refetch(keys.current().generation).await;
                swaps += 1;
            }
            swaps
        }
    });
    group.bench_function("cache_off_under_concurrent_key_set_refresh", |b| {
        b.to_async(&runtime).iter(|| async {
            uncached
                .verifier
                .verify(black_box(&uncached.token))
                .await
                .is_ok()
        })
    });
    stop.store(true, Ordering::Relaxed);
    let swaps = runtime.block_on(refresher).expect("refresher");
    eprintln!("key set swapped {swaps} times during the concurrent-refresh benchmark");
    group.finish();
}

/// Distinct entries in the cache comparison: `session.verified_cache_entries`' default.
const CACHE_ENTRIES: usize = 100_000;

/// Keys shaped like the verified cache's (a SHA-256), all distinct.
fn cache_keys() -> Vec<[u8; 32]> {
    (0..CACHE_ENTRIES as u64)
        .map(|n| {
            let mut key = [0u8; 32];
            key.copy_from_slice(
                ring::digest::digest(&ring::digest::SHA256, &n.to_le_bytes()).as_ref(),
            );
            key
        })
        .collect()
}

/// The value: one shared allocation, as the verifier's `Arc<VerifiedSession>`; the
/// comparison is of what each cache adds per entry and per lookup.
type Value = Arc<u64>;

fn quick_cache_filled(
    keys: &[[u8; 32]],
    value: &Value,
) -> quick_cache::sync::Cache<[u8; 32], Value> {
    let cache = quick_cache::sync::Cache::new(CACHE_ENTRIES);
    for key in keys {
        cache.insert(*key, Arc::clone(value));
    }
    cache
}

fn moka_sync_filled(keys: &[[u8; 32]], value: &Value) -> moka::sync::Cache<[u8; 32], Value> {
    let cache = moka::sync::Cache::new(CACHE_ENTRIES as u64);
    for key in keys {
        cache.insert(*key, Arc::clone(value));
    }
    cache.run_pending_tasks();
    cache
}

fn moka_future_filled(keys: &[[u8; 32]], value: &Value) -> moka::future::Cache<[u8; 32], Value> {
    let cache = moka::future::Cache::new(CACHE_ENTRIES as u64);
    futures_executor_block_on(async {
        for key in keys {
            cache.insert(*key, Arc::clone(value)).await;
        }
        cache.run_pending_tasks().await;
    });
    cache
}

/// Polls `future` to completion on this thread (moka's future cache needs no runtime).
fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[inline(never)]
fn lookups_quick_cache(
    cache: &quick_cache::sync::Cache<[u8; 32], Value>,
    keys: &[[u8; 32]],
) -> usize {
    keys.iter().filter(|key| cache.get(*key).is_some()).count()
}

#[inline(never)]
fn lookups_moka_sync(cache: &moka::sync::Cache<[u8; 32], Value>, keys: &[[u8; 32]]) -> usize {
    keys.iter().filter(|key| cache.get(*key).is_some()).count()
}

/// Measurement modes run in a process of their own (`VERIFY_CACHE=<mode>:<crate>`), then
/// exit: `memory` prints the resident-set growth per entry of a filled cache; `lookups`
/// looks up every key once in `lookups_*` (for `valgrind --tool=callgrind
/// --toggle-collect='*lookups_*'`: instructions per lookup, stable under load).
fn cache_measurement_mode(keys: &[[u8; 32]], value: &Value) {
    let Ok(mode) = std::env::var("VERIFY_CACHE") else {
        return;
    };
    let before = rss_bytes();
    // Each cache is read while still alive: freed, its pages may go back to the system.
    let (entries, grown) = match mode.as_str() {
        "memory:quick_cache" => {
            let cache = quick_cache_filled(keys, value);
            (cache.len(), rss_bytes().saturating_sub(before))
        }
        "memory:moka_sync" => {
            let cache = moka_sync_filled(keys, value);
            (
                cache.entry_count() as usize,
                rss_bytes().saturating_sub(before),
            )
        }
        "memory:moka_future" => {
            let cache = moka_future_filled(keys, value);
            (
                cache.entry_count() as usize,
                rss_bytes().saturating_sub(before),
            )
        }
        "lookups:quick_cache" => (
            lookups_quick_cache(&quick_cache_filled(keys, value), keys),
            0,
        ),
        "lookups:moka_sync" => (lookups_moka_sync(&moka_sync_filled(keys, value), keys), 0),
        other => panic!("VERIFY_CACHE={other}: unknown"),
    };
    println!(
        "{mode}: {entries} entries; resident set grew {} KiB, {} bytes per entry (keys: 32 bytes each)",
        grown / 1024,
        grown / CACHE_ENTRIES as u64,
    );
    std::process::exit(0);
}

/// Polls a future that completes without waiting (a moka lookup) once, without a
/// runtime: what an `.await` of it costs inside the verifier's own future.
fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut context = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
    match std::pin::pin!(future).poll(&mut context) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// The verified-token cache's lookup alone, quick_cache against moka, each holding
/// [`CACHE_ENTRIES`] entries and hit on a different key each time (many users).
fn bench_cache(c: &mut Criterion) {
    let keys = cache_keys();
    let value: Value = Arc::new(7);
    cache_measurement_mode(&keys, &value);
    let quick = quick_cache_filled(&keys, &value);
    let moka_sync = moka_sync_filled(&keys, &value);
    let moka_future = moka_future_filled(&keys, &value);
    // A stride through the keys: each lookup another entry, as with many users.
    let mut at = 0usize;
    let mut next = move || {
        at = (at + 7_919) % CACHE_ENTRIES;
        at
    };
    let mut group = c.benchmark_group("verified_cache");
    group.bench_function("quick_cache_get", |b| {
        b.iter(|| quick.get(black_box(&keys[next()])).is_some())
    });
    group.bench_function("moka_sync_get", |b| {
        b.iter(|| moka_sync.get(black_box(&keys[next()])).is_some())
    });
    group.bench_function("moka_future_get", |b| {
        b.iter(|| {
            poll_once(moka_future.get(black_box(&keys[next()])))
                .flatten()
                .is_some()
        })
    });
    group.finish();
    let mut a = 0usize;
    let mut b = 0usize;
    let mut f = 0usize;
    alternate(
        "verified_cache",
        &mut [
            ("quick_cache_get", &mut || {
                a = (a + 7_919) % CACHE_ENTRIES;
                quick.get(black_box(&keys[a])).is_some()
            }),
            ("moka_sync_get", &mut || {
                b = (b + 7_919) % CACHE_ENTRIES;
                moka_sync.get(black_box(&keys[b])).is_some()
            }),
            ("moka_future_get", &mut || {
                f = (f + 7_919) % CACHE_ENTRIES;
                poll_once(moka_future.get(black_box(&keys[f])))
                    .flatten()
                    .is_some()
            }),
        ],
    );
}

criterion_group!(
    benches,
    bench_jose,
    bench_app_token,
    bench_verifier,
    bench_cache
);
criterion_main!(benches);
