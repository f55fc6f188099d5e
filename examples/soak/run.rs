//! One soak run: start everything, load, rotate keys, sample, check, write the results.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::emulator::{Emulator, EmulatorOptions};
use tokio::net::TcpListener;

use crate::load::{Load, backend, fetch, worker};
use crate::measure::{
    Sample, Sidecar, cpu_s, free_port, load_average, mean_mb, metric, proc_status_kb, utc_now,
};
use crate::predict::{predict_key_set_requests, predict_token_requests};
use crate::{
    Args, CONNECTIONS, EXPIRES_IN_S, JWKS_MIN_REFETCH_INTERVAL_S, JWKS_REFRESH_INTERVAL_S,
    REFRESH_BEFORE_EXPIRY_S, ROTATION_EVERY_S, RSS_TOLERANCE, SAMPLE_EVERY_S,
    SESSION_TOKEN_LIFETIME, SETTLE_S, SLUG, TENANT, WARM_UP_S, kid,
};

pub(crate) async fn soak(args: Args) -> i32 {
    let duration_s = args.minutes * 60;
    let read_at_s = (duration_s + SETTLE_S) as f64;
    let rotations: Vec<u64> = (1..args.minutes).collect();
    let rotations_s: Vec<f64> = rotations
        .iter()
        .map(|k| (k * ROTATION_EVERY_S) as f64)
        .collect();
    let predicted_tokens = predict_token_requests(read_at_s, EXPIRES_IN_S, REFRESH_BEFORE_EXPIRY_S);
    let predicted_keys = predict_key_set_requests(
        read_at_s,
        JWKS_REFRESH_INTERVAL_S as f64,
        JWKS_MIN_REFETCH_INTERVAL_S as f64,
        &rotations_s,
    );
    let ticks_per_s: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let started_at = utc_now();
    let load_average_before = load_average();

    // JTL.
    let emulator = Emulator::start(
        EmulatorOptions {
            expires_in: Some(EXPIRES_IN_S),
            key_ids: vec![kid(0)],
            ..EmulatorOptions::default()
        },
        Clock::system(),
    )
    .await
    .expect("the emulator starts");

    // The backend.
    let backend_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("backend port");
    let backend_addr = backend_listener.local_addr().expect("backend address");
    let backend_hits = Arc::new(AtomicU64::new(0));
    tokio::spawn(backend(backend_listener, Arc::clone(&backend_hits)));

    // The sidecar.
    let dir = std::env::temp_dir().join(format!("jtl-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a work directory");
    let ingress: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = format!(
        r#"[ingress]
listen = "{ingress}"
upstream = "http://{backend_addr}"
[egress]
listen = ""
[jtl]
client_id = "emulated-client"
client_secret = "emulated-secret"
token_url = "{token_url}"
api_base_url = "{api_base_url}"
refresh_before_expiry_s = {REFRESH_BEFORE_EXPIRY_S}
[session]
flow = "session-token"
jwks_refresh_interval_s = {JWKS_REFRESH_INTERVAL_S}
jwks_min_refetch_interval_s = {JWKS_MIN_REFETCH_INTERVAL_S}
[tenants]
database_url = "sqlite://{db}"
[admin]
listen = "{admin}"
[log]
level = "warn"
[server]
shutdown_grace_s = 5
"#,
        token_url = emulator.token_url(),
        api_base_url = emulator.api_base_url(),
        db = dir.join("tenants.db").display(),
    );
    let config_path = dir.join("sidecar.toml");
    std::fs::write(&config_path, &config).expect("the config file");
    let log_path = dir.join("sidecar.log");
    let log = std::fs::File::create(&log_path).expect("the log file");
    let child = Command::new(&args.bin)
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .stdout(log.try_clone().expect("the log file"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.bin.display()));
    let mut sidecar = Sidecar(child);
    let pid = sidecar.0.id();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = sidecar.0.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("the sidecar exited at start ({status}):\n{log}");
        }
        if let Ok((StatusCode::OK, _)) = fetch(admin, "/readyz", None).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar was not ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    let tokens_at_start = emulator.token_requests();
    let keys_at_start = emulator.jwks_requests();
    let cpu_at_start = cpu_s(pid, ticks_per_s);
    println!(
        "== soak: {} min, {CONNECTIONS} connections, sidecar pid {pid}, ready with {tokens_at_start} token and {keys_at_start} key-set requests",
        args.minutes
    );

    let load = Arc::new(Load {
        emulator,
        kid: RwLock::new(kid(0)),
        ingress,
        stop: AtomicBool::new(false),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        failures: Mutex::new(BTreeMap::new()),
        minted: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|n| tokio::spawn(worker(Arc::clone(&load), n)))
        .collect();

    // Rotations, as JTL would: publish the new kid, sign with it, and only then take the
    // kid before the previous one out of the set (the previous one stays as the overlap,
    // so tokens signed just before the switch remain valid). Kid k-2 is withdrawn (kept
    // here for the final 401 check), kid k-3 deleted.
    let rotator = {
        let load = Arc::clone(&load);
        tokio::spawn(async move {
            for k in rotations {
                tokio::time::sleep_until((t0 + Duration::from_secs(k * ROTATION_EVERY_S)).into())
                    .await;
                let keys_before = load.emulator.jwks_requests();
                load.emulator.add_key(&kid(k));
                *load.kid.write().unwrap() = kid(k);
                if k >= 2 {
                    load.emulator.set_published(&kid(k - 2), false);
                }
                if k >= 3 {
                    load.emulator.remove_key(&kid(k - 3));
                }
                println!(
                    "   t={:5.1} s  rotation {k}: signing with {}, published {:?}, key-set requests so far {keys_before}",
                    t0.elapsed().as_secs_f64(),
                    kid(k),
                    load.emulator.jwks()["keys"]
                        .as_array()
                        .map(|keys| {
                            keys.iter()
                                .filter_map(|key| key["kid"].as_str().map(str::to_owned))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default(),
                );
            }
        })
    };

    // Samples until the load ends.
    let mut samples = Vec::new();
    let mut next = t0;
    while next <= t0 + Duration::from_secs(duration_s) {
        tokio::time::sleep_until(next.into()).await;
        let sample = Sample {
            t_s: t0.elapsed().as_secs_f64(),
            rss_kb: proc_status_kb(pid, "VmRSS:").unwrap_or(0),
            requests: load.ok.load(Ordering::Relaxed) + load.failed.load(Ordering::Relaxed),
            load_average: load_average(),
        };
        if sample.t_s as u64 % 60 < SAMPLE_EVERY_S {
            println!(
                "   t={:5.1} s  VmRSS {:6.1} MB  requests {:9}  failed {}",
                sample.t_s,
                sample.rss_kb as f64 / 1024.0,
                sample.requests,
                load.failed.load(Ordering::Relaxed)
            );
        }
        samples.push(sample);
        next += Duration::from_secs(SAMPLE_EVERY_S);
    }
    load.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let load_s = t0.elapsed().as_secs_f64();
    let _ = rotator.await;
    let cpu_used = cpu_s(pid, ticks_per_s) - cpu_at_start;
    let peak_kb = proc_status_kb(pid, "VmHWM:").unwrap_or(0);

    tokio::time::sleep_until((t0 + Duration::from_secs_f64(read_at_s)).into()).await;
    let read_s = t0.elapsed().as_secs_f64();
    let token_requests = load.emulator.token_requests();
    let key_set_requests = load.emulator.jwks_requests();
    let metrics = fetch(admin, "/metrics", None)
        .await
        .map(|(_, body)| body)
        .unwrap_or_else(|e| format!("(no /metrics: {e})"));

    // A token of the kid withdrawn at the last rotation is refused, at the cost of the one
    // refetch its unknown kid permits (the last fetch is 30 s old).
    let removal_check = match args.minutes.checked_sub(3) {
        Some(k) => {
            let claims = load.emulator.session_claims(
                TENANT,
                "00000000-0000-4000-8000-999999999999",
                SLUG,
                SESSION_TOKEN_LIFETIME,
            );
            let token = load
                .emulator
                .mint(&claims, &kid(k), true)
                .expect("the withdrawn kid is kept for minting");
            let answer = fetch(ingress, "/soak", Some(&token)).await;
            let refetches = load.emulator.jwks_requests() - key_set_requests;
            let ok = matches!(answer, Ok((StatusCode::UNAUTHORIZED, _))) && refetches == 1;
            Some((
                kid(k),
                answer.map(|(status, _)| status.as_u16()),
                refetches,
                ok,
            ))
        }
        None => None,
    };

    // Graceful stop.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let stop_deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        match sidecar.0.try_wait() {
            Ok(Some(status)) => break Some(status),
            _ if Instant::now() > stop_deadline => break None,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    drop(sidecar);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);

    // Figures.
    let ok = load.ok.load(Ordering::Relaxed);
    let failed = load.failed.load(Ordering::Relaxed);
    let requests = ok + failed;
    let hits = backend_hits.load(Ordering::Relaxed);
    let after_warm_up: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_s >= WARM_UP_S as f64 - 0.5)
        .collect();
    let warm_up: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_s < WARM_UP_S as f64 - 0.5)
        .collect();
    let first_minute: Vec<&Sample> = after_warm_up
        .iter()
        .copied()
        .filter(|s| s.t_s < (WARM_UP_S + 60) as f64 - 0.5)
        .collect();
    let last_minute: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_s >= (duration_s - 60) as f64 - 0.5)
        .collect();
    let rss_min = after_warm_up.iter().map(|s| s.rss_kb).min().unwrap_or(0);
    let rss_max = after_warm_up.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    let rss_spread = rss_max as f64 / rss_min.max(1) as f64 - 1.0;
    let load_averages: Vec<f64> = samples.iter().map(|s| s.load_average).collect();
    let load_average_mean = load_averages.iter().sum::<f64>() / load_averages.len().max(1) as f64;
    let load_average_max = load_averages.iter().copied().fold(0.0, f64::max);
    let log_lines: Vec<&str> = log.lines().filter(|line| !line.trim().is_empty()).collect();

    let mut checks: Vec<(String, bool)> = vec![
        (
            format!("failed requests: {failed} (expected 0)"),
            failed == 0,
        ),
        (
            format!("backend hits {hits} = requests answered 200 ({ok})"),
            hits == ok,
        ),
        (
            format!(
                "VmRSS after the {WARM_UP_S} s warm-up: min {:.1} MB, max {:.1} MB, spread {:.1} % (expected <= {:.0} %)",
                rss_min as f64 / 1024.0,
                rss_max as f64 / 1024.0,
                rss_spread * 100.0,
                RSS_TOLERANCE * 100.0
            ),
            !after_warm_up.is_empty() && rss_spread <= RSS_TOLERANCE,
        ),
        (
            format!("access-token requests: {token_requests} (predicted {predicted_tokens})"),
            token_requests == predicted_tokens,
        ),
        (
            format!("key-set requests: {key_set_requests} (predicted {predicted_keys})"),
            key_set_requests == predicted_keys,
        ),
        (
            format!(
                "at readiness: {tokens_at_start} token and {keys_at_start} key-set request (expected 1 and 1)"
            ),
            tokens_at_start == 1 && keys_at_start == 1,
        ),
        (
            format!("the sidecar exited after SIGTERM with {exit:?} (expected 0)"),
            exit.is_some_and(|status| status.success()),
        ),
    ];
    // The sidecar's own counts agree with the emulator's and the driver's.
    for (line, expected) in [
        (
            "jtl_sidecar_token_fetches_total{result=\"success\"}",
            token_requests,
        ),
        (
            "jtl_sidecar_jwks_fetches_total{result=\"success\"}",
            key_set_requests,
        ),
        (
            "jtl_sidecar_requests_total{listener=\"ingress\",outcome=\"forwarded\",status=\"200\"}",
            ok,
        ),
    ] {
        let seen = metric(&metrics, line);
        checks.push((
            format!("/metrics {line} = {seen:?} (expected {expected})"),
            seen == Some(expected),
        ));
    }
    if let Some((kid, answer, refetches, ok)) = &removal_check {
        checks.push((
            format!("a token of the withdrawn {kid}: {answer:?} after {refetches} key-set request (expected 401 after 1)"),
            *ok,
        ));
    }
    let passed = checks.iter().all(|(_, ok)| *ok);

    let metric_lines: Vec<&str> = metrics
        .lines()
        .filter(|line| {
            line.starts_with("jtl_sidecar_requests_total")
                || line.starts_with("jtl_sidecar_token_fetches")
                || line.starts_with("jtl_sidecar_jwks")
        })
        .collect();
    let per_minute: Vec<String> = (0..args.minutes)
        .map(|m| {
            let start = (m * 60) as f64 - 0.5;
            let in_minute: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.t_s >= start && s.t_s < start + 60.0)
                .collect();
            let first = samples.iter().find(|s| s.t_s >= start);
            let end = samples.iter().find(|s| s.t_s >= start + 60.0);
            let done = match (first, end) {
                (Some(a), Some(b)) => b.requests - a.requests,
                _ => 0,
            };
            format!(
                "| {} | {} | {:.0} | {:.1} | {:.1} | {:.2} |",
                m + 1,
                done,
                done as f64 / 60.0,
                mean_mb(&in_minute),
                in_minute.iter().map(|s| s.rss_kb).max().unwrap_or(0) as f64 / 1024.0,
                in_minute.iter().map(|s| s.load_average).sum::<f64>()
                    / in_minute.len().max(1) as f64,
            )
        })
        .collect();

    let mut out = String::new();
    let command = std::env::var("SOAK_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    out += &format!("# Soak run: {} minutes\n\n", args.minutes);
    out += &format!("- date: {started_at}\n- command: `{command}`\n");
    out += &format!(
        "- machine: {} cores, shared with other builds: load average {load_average_before:.2} at start, {load_average_mean:.2} mean / {load_average_max:.2} max during the run. Counts and memory are the figures here; throughput is only indicative under that contention.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    out += &format!(
        "- setup: `examples/soak/` (emulator, backend answering 200, {CONNECTIONS} keep-alive HTTP/1.1 connections without pause, a fresh EdDSA session token per request) against `target/release/jtl-auth-sidecar run` (log level warn, verified cache at its default 100 000 entries) in a process of its own; access tokens live {EXPIRES_IN_S} s; `refresh_before_expiry_s = {REFRESH_BEFORE_EXPIRY_S}`, `jwks_refresh_interval_s = {JWKS_REFRESH_INTERVAL_S}`, `jwks_min_refetch_interval_s = {JWKS_MIN_REFETCH_INTERVAL_S}`; a key rotation every {ROTATION_EVERY_S} s from t = 60 s ({} in all); VmRSS sampled every {SAMPLE_EVERY_S} s; counters read at t = {read_s:.1} s ({SETTLE_S} s after the load).\n\n",
        rotations_s.len()
    );
    out += "## Results\n\n";
    out += &format!(
        "- requests: {requests} in {load_s:.1} s ({:.0}/s), answered 200: {ok}, failed: {failed}; connections opened: {} for {CONNECTIONS} workers\n",
        requests as f64 / load_s,
        load.connections.load(Ordering::Relaxed)
    );
    if failed > 0 {
        out += &format!("- failures: {:?}\n", load.failures.lock().unwrap());
    }
    out += &format!(
        "- VmRSS (MB): warm-up minute (0-{WARM_UP_S} s, excluded) mean {:.1}; first minute after it mean {:.1}; last minute mean {:.1}; after the warm-up min {:.1} / max {:.1} ({:.1} %); peak (VmHWM) {:.1}\n",
        mean_mb(&warm_up),
        mean_mb(&first_minute),
        mean_mb(&last_minute),
        rss_min as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        rss_spread * 100.0,
        peak_kb as f64 / 1024.0,
    );
    out += &format!(
        "- sidecar CPU: {cpu_used:.1} s in {load_s:.0} s of load ({:.1} µs per request)\n",
        cpu_used * 1e6 / requests.max(1) as f64
    );
    out += &format!(
        "- access-token requests (emulator): {token_requests}, predicted {predicted_tokens} = 1 at start + floor({read_at_s:.0} s / {} s), the refresh period being expires_in - min(refresh_before_expiry_s, expires_in / 2) = {EXPIRES_IN_S} - min({REFRESH_BEFORE_EXPIRY_S}, {}) s\n",
        EXPIRES_IN_S - REFRESH_BEFORE_EXPIRY_S.min(EXPIRES_IN_S / 2),
        EXPIRES_IN_S / 2,
    );
    out += &format!(
        "- key-set requests (emulator): {key_set_requests}, predicted {predicted_keys} = 1 at start + 1 periodic refresh per minute ({JWKS_REFRESH_INTERVAL_S} s after the latest fetch; {} by t = {read_at_s:.0} s) + 1 unknown-kid refetch per rotation ({}: the first token of a new kid, {} s after the latest fetch, more than jwks_min_refetch_interval_s = {JWKS_MIN_REFETCH_INTERVAL_S} s; it restarts the {JWKS_REFRESH_INTERVAL_S} s period)\n",
        predicted_keys - 1 - rotations_s.len() as u64,
        rotations_s.len(),
        ROTATION_EVERY_S - JWKS_REFRESH_INTERVAL_S,
    );
    match &removal_check {
        Some((kid, answer, refetches, _)) => {
            out += &format!(
                "- after counting: a token of {kid} (withdrawn at the last rotation): {answer:?}, after {refetches} key-set request (its unknown kid's one refetch)\n"
            )
        }
        None => {
            out += "- no kid was withdrawn in a run this short (needs 3 minutes): no 401 check\n"
        }
    }
    out += &format!(
        "- sidecar log lines at warn or above: {}{}\n",
        log_lines.len(),
        log_lines
            .iter()
            .take(5)
            .map(|line| format!("\n  - `{line}`"))
            .collect::<String>()
    );
    out += &format!("- sidecar stop after SIGTERM: {exit:?}\n\n");
    out += "| minute | requests | req/s | VmRSS mean (MB) | VmRSS max (MB) | load average |\n|---|---|---|---|---|---|\n";
    out += &per_minute.join("\n");
    out += "\n\n## Expectations\n\n";
    for (what, ok) in &checks {
        out += &format!("- {} {what}\n", if *ok { "PASS" } else { "FAIL" });
    }
    out += &format!(
        "\n## /metrics at t = {read_s:.1} s (selected lines)\n\n```text\n{}\n```\n",
        metric_lines.join("\n")
    );
    println!("\n{out}");
    if let Some(path) = &args.results {
        std::fs::write(path, &out)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        println!("written to {}", path.display());
    }
    if passed {
        0
    } else {
        eprintln!("soak: an expectation failed");
        1
    }
}
