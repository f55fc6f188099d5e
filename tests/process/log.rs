//! The access log of `run` on a real pipe: a stdout nobody reads costs log lines (counted
//! in `/metrics`), never requests; a stdout that is read gets every line, whole.

use super::*;

/// Requests go in batches of this many until `/metrics` counts a dropped line.
const BATCH: usize = 1000;
/// A stdout nobody reads must have dropped lines well before this many requests: the
/// writer queues 4096 lines, and the pipe and the writer's buffer hold 64 KiB each.
const AT_MOST: usize = 20_000;

/// Connections the requests are spread over.
const CLIENTS: usize = 8;

/// Sends `count` verified GETs to `ingress` over [`CLIENTS`] connections; the number of
/// `200`s. Fails the test (rather than hang it) if they are not all answered within a
/// generous bound: a request stalled on the log never is.
async fn send_requests(ingress: SocketAddr, token: &str, count: usize) -> usize {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut clients = tokio::task::JoinSet::new();
    for share in 0..CLIENTS {
        let client = client.clone();
        let url = format!("http://{ingress}/logged");
        let authorization = format!("Bearer {token}");
        let mine = count / CLIENTS + usize::from(share < count % CLIENTS);
        clients.spawn(async move {
            let mut answered = 0;
            for _ in 0..mine {
                let request = Request::get(&url)
                    .header("authorization", &authorization)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = client.request(request).await.expect("an answer");
                let status = response.status();
                let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                answered += usize::from(status == 200);
            }
            answered
        });
    }
    let all = async {
        let mut answered = 0;
        while let Some(share) = clients.join_next().await {
            answered += share.unwrap();
        }
        answered
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("every request answered (none waits on the log)")
}

async fn dropped_lines(admin: SocketAddr) -> f64 {
    let (status, body) = status_of(&format!("http://{admin}/metrics"), None)
        .await
        .expect("/metrics");
    assert_eq!(status, 200);
    metric(
        &String::from_utf8_lossy(&body),
        "jtl_sidecar_log_lines_dropped_total",
    )
    .expect("jtl_sidecar_log_lines_dropped_total in /metrics")
}

/// What must outlive a test's sidecar.
struct Setup {
    emulator: Emulator,
    dir: tempfile::TempDir,
    backend: SocketAddr,
}

async fn setup() -> Setup {
    let emulator = Emulator::start(EmulatorOptions::default(), Clock::system())
        .await
        .unwrap();
    let backend = slow_backend(
        Duration::ZERO,
        std::sync::Arc::new(tokio::sync::Notify::new()),
    )
    .await;
    Setup {
        emulator,
        dir: tempfile::tempdir().unwrap(),
        backend,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_nobody_reads_costs_counted_log_lines_and_stalls_no_request() {
    let Setup {
        emulator,
        dir,
        backend,
    } = setup().await;
    let mut child = spawn_run(
        &[],
        &emulator,
        &format!("http://{backend}"),
        "",
        dir.path(),
        &[],
    );
    // Read up to the "is listening" line, then never again (the pipe stays open).
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    while !line.contains("is listening") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "stdout ended");
    }
    let (ingress, admin, _) = listening_addresses(&line);
    assert!(became_ready(admin).await, "the sidecar became ready");
    let token = dev_session_token(&emulator);

    let mut sent = 0;
    while dropped_lines(admin).await == 0.0 {
        assert!(sent < AT_MOST, "no log line dropped after {sent} requests");
        assert_eq!(send_requests(ingress, &token, BATCH).await, BATCH);
        sent += BATCH;
    }
    assert!(sent > 0, "lines dropped before any request");

    // The shutdown's flush does not wait for good on the full pipe.
    terminate(&child);
    assert_eq!(wait_for_exit(&mut child), Some(0));
    drop(stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_that_is_read_gets_one_whole_json_line_per_request_and_drops_none() {
    let setup = setup().await;
    let RunningSidecar {
        mut child,
        lines,
        ingress,
        admin,
        ..
    } = start_run(
        &setup.emulator,
        &format!("http://{}", setup.backend),
        "",
        setup.dir.path(),
    );
    assert!(became_ready(admin).await, "the sidecar became ready");
    let token = dev_session_token(&setup.emulator);

    // As many requests as make an unread stdout drop lines.
    let count = 6 * BATCH;
    assert_eq!(send_requests(ingress, &token, count).await, count);
    let mut logged = 0;
    while logged < count {
        let line = next_line_matching(&lines, |_| true);
        let line: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        if line["message"] != "request" {
            continue;
        }
        assert_eq!(line["listener"], "ingress", "{line}");
        assert_eq!(line["path"], "/logged", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["outcome"], "forwarded", "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(line["latency_ms"].is_f64(), "{line}");
        assert!(line["request_id"].is_string(), "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["target"].is_string(), "{line}");
        logged += 1;
    }
    assert_eq!(dropped_lines(admin).await, 0.0);

    // The last line, written after the listeners closed, is flushed before the exit.
    terminate(&child);
    assert_eq!(wait_for_exit(&mut child), Some(0));
    let rest: Vec<String> = lines.iter().collect();
    let last: serde_json::Value =
        serde_json::from_str(rest.last().expect("lines after SIGTERM")).unwrap();
    assert_eq!(last["message"], "stopped", "{rest:?}");
}
