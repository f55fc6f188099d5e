//! `check --online` with `[shared_cache]` (SPEC §12): the Redis step.

use super::*;

fn shared_cache_section(redis_url: &str, key_prefix: &str) -> String {
    format!("[shared_cache]\nredis_url = {redis_url:?}\nkey_prefix = {key_prefix:?}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reachable_redis_passes_the_shared_cache_step_and_says_the_entry_is_not_there_yet() {
    let test = "a_reachable_redis_passes_the_shared_cache_step_and_says_the_entry_is_not_there_yet";
    let Some(url) = test_redis_url(test).await else {
        return;
    };
    let mut setup = Setup::healthy().await;
    let prefix = format!("jtl-sidecar-check-{}", uuid::Uuid::new_v4().simple());
    setup.shared_cache = shared_cache_section(&url, &prefix);
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let line = out.line("shared cache");
    assert_verdict(
        line,
        "ok",
        "a sealed test entry was written, read back and deleted",
    );
    assert!(
        line.contains(&format!("this app's entry {prefix}:access-token:")),
        "{line}"
    );
    assert!(line.contains("is not there yet"), "{line}");
    // The test entry is gone, and nothing else was written.
    let mut redis = redis::Client::open(url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut redis)
        .await
        .expect("KEYS");
    assert!(keys.is_empty(), "left behind: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_shared_entry_is_read_and_never_overwritten() {
    use jtl_auth_sidecar::shared_cache::{Entry, SealingKey, entry_key};
    let test = "an_existing_shared_entry_is_read_and_never_overwritten";
    let Some(url) = test_redis_url(test).await else {
        return;
    };
    let mut setup = Setup::healthy().await;
    let prefix = format!("jtl-sidecar-check-{}", uuid::Uuid::new_v4().simple());
    setup.shared_cache = shared_cache_section(&url, &prefix);
    // What a running replica of this app would have published.
    let token_url = url::Url::parse(&setup.token_url).expect("token url");
    let key = entry_key(&prefix, token_url.as_str(), "emulated-client", None);
    let secret = EmulatorOptions::default().client_secret;
    let now = Clock::system().now_ms();
    let entry = Entry {
        token: "a-shared-access-token".into(),
        expires_at_ms: now + 600_000,
        obtained_at_ms: now,
        lifetime_source: 0,
    };
    let sealed = SealingKey::derive(secret.as_bytes())
        .seal(&key, &entry)
        .expect("sealed");
    let mut redis = redis::Client::open(url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&sealed)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .expect("SET");
    let out = setup.online().await;
    let after: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("GET");
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    assert_eq!(out.code, Some(0), "{}", out.all());
    let line = out.line("shared cache");
    assert_verdict(line, "ok", "there and opens with this client secret");
    assert!(line.contains("valid 5"), "about 600 s left: {line}");
    assert!(!line.contains("a-shared-access-token"), "{line}");
    assert_eq!(
        after.as_deref(),
        Some(&sealed[..]),
        "the entry is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_down_fails_the_shared_cache_step_and_exits_1() {
    let mut setup = Setup::healthy().await;
    let port = closed_port();
    setup.shared_cache = shared_cache_section(&format!("redis://127.0.0.1:{port}"), "app");
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("shared cache");
    assert_verdict(
        line,
        "FAIL",
        &format!("redis://127.0.0.1:{port}/0: cannot connect to 127.0.0.1:{port}"),
    );
    assert!(
        line.contains("the replicas fall back to their own access tokens"),
        "{line}"
    );
    assert!(line.contains("does not stop serving"), "{line}");
    // The other steps are unaffected.
    assert_verdict(out.line("credentials"), "ok", "accepted");
    assert_verdict(out.line("upstream"), "ok", "accepts connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_fails_naming_the_login_and_never_shows_it() {
    let test = "a_wrong_redis_password_fails_naming_the_login_and_never_shows_it";
    let Some(redis) = PrivateRedis::start(test, &["--requirepass", "the-right-one"]).await else {
        return;
    };
    let mut setup = Setup::healthy().await;
    let password = setup.dir.path().join("redis-password");
    std::fs::write(&password, "not-the-password\n").expect("password file");
    setup.shared_cache = format!(
        "{}redis_password_file = {:?}\n",
        shared_cache_section(&format!("redis://127.0.0.1:{}", redis.port), "app"),
        password.display().to_string()
    );
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("shared cache");
    assert_verdict(line, "FAIL", "login refused by 127.0.0.1:");
    assert!(line.contains("redis_password_file"), "{line}");
    assert!(
        line.contains("the replicas fall back to their own access tokens"),
        "{line}"
    );
    assert!(!out.all().contains("not-the-password"), "{}", out.all());

    // The right password, in the URL: ok, and the URL is shown without it.
    setup.shared_cache = shared_cache_section(
        &format!("redis://:the-right-one@127.0.0.1:{}", redis.port),
        "app",
    );
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(
        out.line("shared cache"),
        "ok",
        &format!("redis://127.0.0.1:{}/0: a sealed test entry", redis.port),
    );
    assert!(!out.all().contains("the-right-one"), "{}", out.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_redis_certificate_fails_naming_jtl_ca_file() {
    let test = "an_untrusted_redis_certificate_fails_naming_jtl_ca_file";
    // A TLS-only redis-server with a self-signed certificate for localhost.
    let Some(redis) = PrivateRedis::start_tls(test, &[]).await else {
        return;
    };
    let cert_arg = redis.tls_cert.as_ref().expect("tls").display().to_string();
    let mut setup = Setup::healthy().await;
    let url = format!("rediss://localhost:{}", redis.port);
    setup.shared_cache = shared_cache_section(&url, "app");
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("shared cache");
    assert_verdict(
        line,
        "FAIL",
        &format!(
            "rediss://localhost:{}/0: TLS handshake with localhost:{} failed",
            redis.port, redis.port
        ),
    );
    assert!(line.contains("set jtl.ca_file"), "{line}");
    assert!(
        line.contains("the replicas fall back to their own access tokens"),
        "{line}"
    );

    // jtl.ca_file trusts it, as the runtime's connections would.
    setup.jtl_extra = format!("ca_file = {cert_arg:?}");
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(
        out.line("shared cache"),
        "ok",
        "a sealed test entry was written, read back and deleted",
    );
}
