//! `run`: the SIGTERM drain, exit codes 2 and 1, and a refused token's log line.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_0() {
    let emulator = Emulator::start(EmulatorOptions::default(), Clock::system())
        .await
        .unwrap();
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let backend = slow_backend(Duration::from_millis(1500), arrived.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    // The stdout reader stays alive (`_lines`), so the sidecar's log writes never block.
    let RunningSidecar {
        mut child,
        lines: _lines,
        ingress,
        admin,
        ..
    } = start_run(
        &emulator,
        &format!("http://{backend}"),
        "[server]\nshutdown_grace_s = 10\n",
        dir.path(),
    );
    let readyz = format!("http://{admin}/readyz");
    assert!(became_ready(admin).await, "the sidecar became ready");

    let token = dev_session_token(&emulator);
    let in_flight = tokio::spawn({
        let url = format!("http://{ingress}/slow");
        async move { status_of(&url, Some(&token)).await }
    });
    // SIGTERM once the request is at the backend, so it is truly in flight.
    tokio::time::timeout(Duration::from_secs(10), arrived.notified())
        .await
        .expect("the request reached the backend");
    terminate(&child);
    // The listeners close once readiness has failed: wait for the later of the two.
    common::harness::eventually_async("new connections are refused", || async {
        tokio::net::TcpStream::connect(ingress).await.is_err()
    })
    .await;

    // Readiness fails at once and new connections are refused during the drain.
    let (status, body) = status_of(&readyz, None)
        .await
        .expect("admin answers during the drain");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("shutting_down"));
    assert!(
        tokio::net::TcpStream::connect(ingress).await.is_err(),
        "new connections are refused"
    );

    // The request in flight completes.
    let (status, body) = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!((status, body.as_ref()), (200, &b"done"[..]));
    assert_eq!(wait_for_exit(&mut child), Some(0));
}

#[test]
fn run_exits_2_for_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[ingress]\nupstream = \"nope\"\n").unwrap();
    let output = sidecar()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ingress.upstream: not an http(s) URL")
    );
}

/// Runs with `key` (`ingress.listen` or `egress.listen`) on a port already taken; the
/// other listeners on free ports. Asserts exit code 1 and the key in the message.
fn assert_run_exits_1_when_port_taken(key: &str) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = format!("\"{}\"", taken.local_addr().unwrap());
    let free = "\"127.0.0.1:0\"".to_owned();
    let (ingress, egress) = if key == "ingress.listen" {
        (taken, free)
    } else {
        (free, taken)
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nlisten = {ingress}\n[egress]\nlisten = {egress}\n[admin]\nlisten = \"127.0.0.1:0\"\n[jtl]\nclient_id = \"a\"\nclient_secret = \"b\"\n[session]\naudience = \"app-1\"\n"
        ),
    )
    .unwrap();
    let output = sidecar()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{key}: cannot listen on")),
        "{stderr}"
    );
}

#[test]
fn run_exits_1_when_a_port_is_taken() {
    assert_run_exits_1_when_port_taken("ingress.listen");
}

#[test]
fn run_exits_1_when_the_egress_port_is_taken() {
    assert_run_exits_1_when_port_taken("egress.listen");
}

/// The drain token is this start's credential: a sidecar that cannot write it does not
/// start, and says which key to fix, on one line.
#[test]
fn run_exits_1_when_the_drain_token_file_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sidecar.toml");
    let token_file = dir.path().join("no-such-directory").join("drain-token");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nlisten = \"127.0.0.1:0\"\n[egress]\nlisten = \"\"\n[admin]\nlisten = \"127.0.0.1:0\"\ndrain_token_file = {:?}\n[jtl]\nclient_id = \"a\"\nclient_secret = \"b\"\n[session]\naudience = \"app-1\"\n[tenants]\ndatabase_url = \"sqlite://{}\"\n",
            token_file.display().to_string(),
            dir.path().join("jtl-tenants.db").display()
        ),
    )
    .unwrap();
    let output = sidecar()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with("error: admin.drain_token_file: cannot write the drain token to "),
        "{stderr}"
    );
}

/// The request log line of a refused token carries the sentence of the 401, the one
/// `check --online --session-token` starts its verdict with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_logged_with_the_reason_check_online_prints() {
    let emulator = Emulator::start(EmulatorOptions::default(), Clock::system())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let RunningSidecar {
        mut child,
        lines,
        ingress,
        admin,
        ..
    } = start_run(&emulator, "http://127.0.0.1:1", "", dir.path());
    became_ready(admin).await;

    let mut claims = emulator.session_claims(
        DEV_TENANT_ID,
        "9b8a7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d",
        "shop",
        Duration::from_secs(600),
    );
    claims["exp"] = serde_json::json!(Clock::system().now_s() - 200);
    let kid = emulator.default_kid().unwrap();
    let token = emulator.mint(&claims, &kid, false).unwrap();
    let (status, _) = status_of(&format!("http://{ingress}/orders"), Some(&token))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let line = next_line_matching(&lines, |l| l.contains("\"outcome\":\"invalid_token\""));
    let _ = child.kill();
    let _ = child.wait();
    let logged: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    let fields = logged.get("fields").unwrap_or(&logged);
    assert_eq!(fields["reason"], "The session token has expired.", "{line}");
    assert!(!line.contains(&token), "{line}");
}
