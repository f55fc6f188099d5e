//! Connections: 1 500 idle ones under 1 024 descriptors, and the shutdown delay.

use super::*;

/// This process's soft descriptor limit, raised to `wanted` when the hard limit allows.
fn own_descriptors_at_least(wanted: u64) -> u64 {
    let current = || {
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                limits
                    .lines()
                    .find(|line| line.starts_with("Max open files"))
                    .and_then(|line| line.split_whitespace().nth(3)?.parse().ok())
            })
            .unwrap_or(0)
    };
    if current() < wanted {
        let _ = Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={wanted}:"))
            .status();
    }
    current()
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    field(11) + field(12)
}

/// Issue 16: idle connections that never send a byte must not keep valid clients out.
/// With 1 024 descriptors and 1 500 idle connections (more than the descriptors), a valid
/// request still gets its 200 long before header_read_timeout (60 s here) could free
/// anything, the oldest idle connections are shed and counted, and the process does not
/// spin meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_1024_descriptors_1500_idle_connections_do_not_keep_a_valid_request_out() {
    const IDLE: usize = 1500;
    let own = own_descriptors_at_least(4096);
    if own < 2048 {
        eprintln!(
            "SKIP: this test needs 2048 descriptors for its own idle connections; it has {own} and cannot raise the limit"
        );
        return;
    }
    let ReadySidecar {
        kept: _kept,
        mut child,
        ingress,
        admin,
        token,
        ..
    } = ready_in_front_of_a_backend(
        &["prlimit", "--nofile=1024:1024", "--"],
        "[server]\nheader_read_timeout_ms = 60000\n",
        Duration::ZERO,
        &[],
    )
    .await;

    // Open the idle connections, a few at a time; connects beyond the kernel's accept
    // queues may wait, so each gets a bounded time.
    // 20 s for them all: a sidecar that stops accepting leaves the kernel's queues full.
    let mut idle = Vec::with_capacity(IDLE);
    let opening = std::time::Instant::now();
    for _ in 0..IDLE {
        if opening.elapsed() > Duration::from_secs(20) {
            break;
        }
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(ingress),
        )
        .await
        {
            idle.push(stream);
        }
    }
    assert!(
        idle.len() > 1000,
        "only {} idle connections opened",
        idle.len()
    );

    let cpu_before = cpu_ticks(child.id());
    // The measurement period itself, not a wait for an event: CPU used while idle for 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_idle = cpu_ticks(child.id()) - cpu_before;

    let asked = std::time::Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        status_of(&format!("http://{ingress}/valid"), Some(&token)),
    )
    .await
    .expect("a valid request is answered while the idle connections are held")
    .expect("the valid request's connection works");
    assert_eq!(answer.0, 200, "{}", String::from_utf8_lossy(&answer.1));
    // A figure for the README's reliability table, not an assertion.
    eprintln!(
        "flood: {} idle connections held open; the valid request took {:?}; CPU {cpu_idle} ticks in 2 s",
        idle.len(),
        asked.elapsed()
    );

    let (status, metrics) = status_of(&format!("http://{admin}/metrics"), None)
        .await
        .expect("metrics");
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert_eq!(
        metric(
            &metrics,
            "jtl_sidecar_connection_limit{listener=\"ingress\"}"
        ),
        Some(405.0),
        "(1024 - 64 - 30 for admin - 2 * 60 for egress) / 2\n{metrics}"
    );
    let shed = metric(
        &metrics,
        "jtl_sidecar_connections_shed_total{listener=\"ingress\",reason=\"idle_before_request\"}",
    )
    .expect("the shed counter is exported");
    assert!(
        shed >= (idle.len() - 405) as f64 * 0.9,
        "{shed} shed of {} idle",
        idle.len()
    );
    let open = metric(
        &metrics,
        "jtl_sidecar_connections_open{listener=\"ingress\"}",
    )
    .expect("open gauge");
    eprintln!("flood: {shed} connections shed, {open} open after the valid request");
    assert!(open <= 405.0 + 2.0, "{open} connections open");
    // Spinning on a full descriptor table would burn a core: 2 s is 200 ticks.
    assert!(
        cpu_idle < 50,
        "{cpu_idle} ticks of CPU in 2 s with only idle connections"
    );

    drop(idle);
    terminate(&child);
    assert_eq!(wait_for_exit(&mut child), Some(0));
}

/// Sends one HTTP/1.1 GET on `stream` and reads the answer's head; `None` when the
/// connection was closed instead.
async fn http1_get(stream: &mut tokio::net::TcpStream, token: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request =
        format!("GET /drain HTTP/1.1\r\nHost: app\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The backend answers "done": the head and that body come in one or two reads.
    while !answer.ends_with(b"done") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&answer).to_ascii_lowercase())
}

/// Issue 16, rollouts behind a balancer that does not retry: with
/// `server.shutdown_delay_s`, SIGTERM fails readiness at once while the listener keeps
/// accepting for the delay; keep-alive clients get `Connection: close` on their next
/// answer and are then closed cleanly (never between two requests); after the delay
/// new connections are refused, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_delay_keeps_accepting_and_closes_keep_alive_connections_after_an_answer() {
    use tokio::io::AsyncReadExt;
    let ReadySidecar {
        kept: _kept,
        mut child,
        ingress,
        admin,
        token,
        ..
    } = ready_in_front_of_a_backend(
        &[],
        "[server]\nshutdown_delay_s = 2\nshutdown_grace_s = 5\n",
        Duration::ZERO,
        &[],
    )
    .await;
    let mut kept_alive = tokio::net::TcpStream::connect(ingress).await.unwrap();
    let first = http1_get(&mut kept_alive, &token)
        .await
        .expect("first answer");
    assert!(first.starts_with("http/1.1 200"), "{first}");
    assert!(!first.contains("connection: close"), "{first}");

    terminate(&child);
    common::harness::eventually_async("readiness fails during the delay", || async {
        status_of(&format!("http://{admin}/readyz"), None)
            .await
            .expect("admin answers during the delay")
            .0
            == 503
    })
    .await;

    // A new connection during the delay is still served, and told to close.
    let mut late = tokio::net::TcpStream::connect(ingress)
        .await
        .expect("the listener accepts during the shutdown delay");
    let answer = http1_get(&mut late, &token)
        .await
        .expect("served during the delay");
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");

    // The keep-alive connection: its next request is answered, with Connection: close,
    // and then the sidecar closes it.
    let second = http1_get(&mut kept_alive, &token)
        .await
        .expect("the keep-alive connection is not cut between two requests");
    assert!(second.starts_with("http/1.1 200"), "{second}");
    assert!(second.contains("connection: close"), "{second}");
    let mut rest = [0u8; 16];
    let eof = tokio::time::timeout(Duration::from_secs(2), kept_alive.read(&mut rest)).await;
    assert!(matches!(eof, Ok(Ok(0))), "closed after the answer: {eof:?}");

    // After the delay the listener is closed.
    common::harness::eventually_async("new connections are refused after the delay", || async {
        tokio::net::TcpStream::connect(ingress).await.is_err()
    })
    .await;
    assert_eq!(wait_for_exit(&mut child), Some(0));
}
