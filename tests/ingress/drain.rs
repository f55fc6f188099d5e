//! `POST /drain` on the admin port: only with the token the sidecar wrote to
//! `admin.drain_token_file`, from loopback, naming this machine, and never for a browser.
//! A refused drain changes nothing.

use std::os::unix::fs::PermissionsExt;

use common::harness::eventually_async;

use super::*;

/// The sidecar with `admin.drain_token_file` in a directory of its own (kept alive by the
/// returned guard), `admin.listen` from `admin_listen`, once ready; and the token it wrote.
async fn drainable(admin_listen: &str) -> (Proxy, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drain-token");
    let proxy = Proxy::builder()
        .env(vec![
            ("JTL_SIDECAR_ADMIN__LISTEN".into(), admin_listen.into()),
            (
                "JTL_SIDECAR_ADMIN__DRAIN_TOKEN_FILE".into(),
                file.display().to_string(),
            ),
        ])
        .start()
        .await;
    wait_until_ready(&proxy).await;
    let token = std::fs::read_to_string(&file).unwrap();
    (proxy, dir, token)
}

/// The first non-loopback IPv4 address of this machine, to reach a listener on 0.0.0.0
/// from an address that is not loopback.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let output = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|word| word.parse::<std::net::IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
}

async fn wait_until_ready(proxy: &Proxy) {
    eventually_async("/readyz answers 200", || async {
        get(&proxy.admin_url("/readyz"), &[]).await.status == 200
    })
    .await;
}

async fn readyz(proxy: &Proxy) -> u16 {
    get(&proxy.admin_url("/readyz"), &[]).await.status
}

/// `POST /drain` on loopback with `Host: host` and the extra header lines `extra`.
async fn post_drain(proxy: &Proxy, host: &str, extra: &str) -> (u16, String) {
    let loopback = SocketAddr::from(([127, 0, 0, 1], proxy.addresses.admin.port()));
    raw(
        loopback,
        &format!("POST /drain HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\nContent-Length: 0\r\n\r\n"),
    )
    .await
}

fn json_body(text: &str) -> serde_json::Value {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Rollouts with native sidecars (SIGTERM reaches the sidecar only after the backend has
/// exited): the backend's preStop calls `POST /drain` with the token from the shared
/// volume. Readiness fails, the listener keeps accepting, HTTP/1 answers carry
/// `Connection: close`.
#[tokio::test]
async fn post_drain_with_the_files_token_fails_readiness_and_closes_keep_alive_but_keeps_accepting()
{
    let (proxy, _dir, token) = drainable("127.0.0.1:0").await;
    let session = bearer(&proxy.token());
    let before = get(&proxy.url("/before"), &[("authorization", &session)]).await;
    assert_eq!(before.status, 200);
    assert!(before.headers.get("connection").is_none());

    // Not a GET (a probe or a crawler must not drain the pod).
    let loopback = SocketAddr::from(([127, 0, 0, 1], proxy.addresses.admin.port()));
    let get_drain = format!(
        "GET /drain HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw(loopback, &get_drain).await.0, 405);
    assert_eq!(readyz(&proxy).await, 200);

    let host = format!("127.0.0.1:{}", proxy.addresses.admin.port());
    let (status, text) =
        post_drain(&proxy, &host, &format!("Authorization: Bearer {token}\r\n")).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(json_body(&text)["status"], "draining");
    let ready = get(&proxy.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.json()["missing"]
            .to_string()
            .contains("shutting_down")
    );
    let during = get(&proxy.url("/during"), &[("authorization", &session)]).await;
    assert_eq!(during.status, 200, "still accepting and serving");
    assert_eq!(
        during.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "keep-alive clients are told to go"
    );
}

#[tokio::test]
async fn post_drain_without_a_credential_is_403_and_readiness_stays_200() {
    let (proxy, _dir, _token) = drainable("127.0.0.1:0").await;
    for extra in [
        "",
        "Authorization: Bearer\r\n",
        "Authorization: Basic ZHJhaW46ZHJhaW4=\r\n",
    ] {
        let (status, text) = post_drain(&proxy, "localhost", extra).await;
        assert_eq!(status, 403, "{extra:?}: {text}");
        assert_eq!(json_body(&text)["error"], "forbidden");
        assert!(
            json_body(&text)["error_description"]
                .as_str()
                .unwrap()
                .contains("Authorization: Bearer")
        );
    }
    assert_eq!(readyz(&proxy).await, 200, "a refused drain changes nothing");
}

#[tokio::test]
async fn post_drain_with_a_wrong_token_is_403_and_changes_nothing() {
    let (proxy, _dir, token) = drainable("127.0.0.1:0").await;
    let mut wrong = token.clone();
    wrong.replace_range(..1, if token.starts_with('0') { "1" } else { "0" });
    for extra in [
        format!("Authorization: Bearer {wrong}\r\n"),
        format!("Authorization: Bearer {}\r\n", &token[..token.len() - 1]),
        format!("Authorization: Bearer {token}0\r\n"),
        // Two credentials: which one was meant?
        format!("Authorization: Bearer {token}\r\nAuthorization: Bearer {wrong}\r\n"),
        // The token in another header is no credential.
        format!("X-Drain-Token: {token}\r\n"),
    ] {
        let (status, text) = post_drain(&proxy, "127.0.0.1", &extra).await;
        assert_eq!(status, 403, "{extra:?}: {text}");
        assert_eq!(json_body(&text)["error"], "forbidden");
        assert!(!text.contains(&token), "{text}");
    }
    assert_eq!(readyz(&proxy).await, 200);
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let (status, _) = post_drain(
        &proxy,
        "127.0.0.1",
        &format!("Authorization: bearer {token}\r\n"),
    )
    .await;
    assert_eq!(status, 202);
}

/// DNS rebinding: a page whose name now resolves to 127.0.0.1 sends its own name as Host.
#[tokio::test]
async fn post_drain_naming_a_foreign_host_is_421_even_with_the_right_token() {
    let (proxy, _dir, token) = drainable("127.0.0.1:0").await;
    let credential = format!("Authorization: Bearer {token}\r\n");
    for host in [
        "evil.example",
        "evil.example:9090",
        "localhost.evil.example",
    ] {
        let (status, text) = post_drain(&proxy, host, &credential).await;
        assert_eq!(status, 421, "{host}: {text}");
        assert_eq!(json_body(&text)["error"], "misdirected_request");
    }
    assert_eq!(readyz(&proxy).await, 200);
}

#[tokio::test]
async fn post_drain_with_an_origin_is_403_even_with_the_right_token() {
    let (proxy, _dir, token) = drainable("127.0.0.1:0").await;
    for origin in ["http://127.0.0.1:9090", "null"] {
        let extra = format!("Authorization: Bearer {token}\r\nOrigin: {origin}\r\n");
        let (status, text) = post_drain(&proxy, "127.0.0.1", &extra).await;
        assert_eq!(status, 403, "{origin}: {text}");
        assert_eq!(json_body(&text)["error"], "forbidden");
    }
    assert_eq!(readyz(&proxy).await, 200);
}

/// A page can send a form POST without `Origin` in some browsers, or be a navigation; its
/// Fetch Metadata gives it away.
#[tokio::test]
async fn post_drain_with_a_sec_fetch_header_is_403_even_with_the_right_token() {
    let (proxy, _dir, token) = drainable("127.0.0.1:0").await;
    for header in [
        "Sec-Fetch-Site: same-site",
        "Sec-Fetch-Mode: navigate",
        "Sec-Fetch-Dest: document",
        "Sec-Fetch-User: ?1",
    ] {
        let extra = format!("Authorization: Bearer {token}\r\n{header}\r\n");
        let (status, text) = post_drain(&proxy, "127.0.0.1", &extra).await;
        assert_eq!(status, 403, "{header}: {text}");
        assert_eq!(json_body(&text)["error"], "forbidden");
    }
    assert_eq!(readyz(&proxy).await, 200);
}

/// The token is the proof; loopback stays a condition on top, so a token that leaked out
/// of the pod is useless from outside it.
#[tokio::test]
async fn post_drain_from_a_non_loopback_peer_is_403_even_with_the_right_token() {
    let (proxy, _dir, token) = drainable("0.0.0.0:0").await;
    let Some(ip) = non_loopback_ip() else {
        eprintln!("SKIP: no non-loopback address to send the drain from");
        return;
    };
    let (status, text) = raw(
        SocketAddr::new(ip, proxy.addresses.admin.port()),
        &format!("POST /drain HTTP/1.1\r\nHost: {ip}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(readyz(&proxy).await, 200);
}

#[tokio::test]
async fn post_drain_is_refused_when_drain_token_file_is_unset() {
    let proxy = Proxy::builder().start().await;
    wait_until_ready(&proxy).await;
    let (status, text) = post_drain(&proxy, "127.0.0.1", "Authorization: Bearer x\r\n").await;
    assert_eq!(status, 403, "{text}");
    let body = json_body(&text);
    assert_eq!(body["error"], "forbidden");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("set admin.drain_token_file")
    );
    assert_eq!(readyz(&proxy).await, 200);
}

#[tokio::test]
async fn the_drain_token_file_is_written_with_mode_0640_and_a_new_token_on_every_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drain-token");
    let env = || {
        vec![(
            "JTL_SIDECAR_ADMIN__DRAIN_TOKEN_FILE".to_owned(),
            file.display().to_string(),
        )]
    };
    let first = Proxy::builder().env(env()).start().await;
    let first_token = std::fs::read_to_string(&file).unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "{mode:o}");
    assert_eq!(first_token.len(), 64);
    assert!(first_token.bytes().all(|b| b.is_ascii_hexdigit()));
    drop(first);

    let second = Proxy::builder().env(env()).start().await;
    let second_token = std::fs::read_to_string(&file).unwrap();
    assert_ne!(first_token, second_token, "a new token per start");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // Only the token file: the temporary file it was written through is gone.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // The earlier token no longer drains.
    wait_until_ready(&second).await;
    let credential = format!("Authorization: Bearer {first_token}\r\n");
    assert_eq!(post_drain(&second, "127.0.0.1", &credential).await.0, 403);
    let credential = format!("Authorization: Bearer {second_token}\r\n");
    assert_eq!(post_drain(&second, "127.0.0.1", &credential).await.0, 202);
}

/// Probes and scrapers reach the pod by IP, from other hosts, under any name: the Host and
/// Origin rule of `/drain` is not theirs.
#[tokio::test]
async fn health_readiness_and_metrics_stay_open_to_any_host_and_origin() {
    let (proxy, _dir, _token) = drainable("127.0.0.1:0").await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let answer = get(
            &proxy.admin_url(path),
            &[
                ("host", "jtl-app.monitoring.svc:9090"),
                ("origin", "https://grafana.example"),
            ],
        )
        .await;
        assert_eq!(answer.status, 200, "{path}");
    }
}
