//! `check --online`'s steps in the session-token flow, healthy and broken one by one.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_every_step_and_exits_0() {
    let setup = Setup::healthy().await;
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(out.line("token endpoint"), "ok", "answered");
    assert_verdict(
        out.line("credentials"),
        "ok",
        "accepted for client_id \"emulated-client\"",
    );
    assert_verdict(
        out.line("token lifetime"),
        "ok",
        "3600 s (60 minutes) as received in expires_in",
    );
    assert_verdict(
        out.line("JWKS"),
        "ok",
        "answered HTTP 200 to the access token",
    );
    assert_verdict(
        out.line("keys"),
        "ok",
        "1 usable Ed25519 key (`emulator-key-1`); none skipped",
    );
    assert_verdict(out.line("tenant store"), "ok", "table jtl_tenants present");
    assert_verdict(out.line("upstream"), "ok", "accepts connections");
    assert_verdict(
        out.line("shared cache"),
        "skipped",
        "shared_cache.redis_url is \"\": each replica gets its own access token",
    );
    assert!(out.stderr.contains("online check passed"), "{}", out.stderr);
    // The offline part is unchanged: the effective config comes first.
    assert!(out.stdout.starts_with("[ingress]"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_online_nothing_is_called() {
    let setup = Setup::healthy().await;
    let out = setup.run(&[]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.stdout.contains("token endpoint"), "{}", out.stdout);
    assert_eq!(setup.emulator.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_still_exits_2_before_any_call() {
    let mut setup = Setup::healthy().await;
    setup.upstream_url = "foo".into();
    let out = setup.online().await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("ingress.upstream"), "{}", out.stderr);
    assert_eq!(setup.emulator.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_invalid_client_with_the_guides_advice() {
    let mut setup = Setup::healthy().await;
    setup.secret_line = "client_secret = \"not-the-secret\"".into();
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("token endpoint"), "ok", "answered");
    let line = out.line("credentials");
    assert_verdict(line, "FAIL", "invalid_client");
    assert!(line.contains("or client id and secret swapped"), "{line}");
    assert!(
        line.contains("nothing looks wrong with the values here"),
        "{line}"
    );
    assert!(!line.contains("not-the-secret"), "{line}");
    for step in ["token lifetime", "JWKS", "keys"] {
        assert_verdict(
            out.line(step),
            "skipped",
            "the credentials were not accepted",
        );
    }
    // The other checks still run.
    assert_verdict(out.line("upstream"), "ok", "accepts connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_newline_in_the_secret_file_is_named() {
    let mut setup = Setup::healthy().await;
    setup.secret_file("emulated-secret\n");
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("credentials");
    assert_verdict(line, "FAIL", "invalid_client");
    assert!(
        line.contains("jtl.client_secret_file") && line.contains("ends with a trailing newline"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_is_down_is_connection_refused() {
    let mut setup = Setup::healthy().await;
    setup.token_url = format!("http://127.0.0.1:{}/oauth2/token", closed_port());
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("token endpoint"), "FAIL", "connection refused");
    assert_verdict(
        out.line("credentials"),
        "skipped",
        "the token endpoint was not reached",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_token_endpoint_is_a_timeout() {
    let mut setup = Setup::healthy().await;
    setup.timeout_ms = 200;
    setup
        .emulator
        .set_token_failure(Failure::Delay(Duration::from_secs(3)));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.line("token endpoint"),
        "FAIL",
        "no response within 200 ms (jtl.timeout_ms)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_tls_failure() {
    let setup = Setup::with_options(EmulatorOptions {
        tls: true,
        ..EmulatorOptions::default()
    })
    .await;
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("token endpoint"), "FAIL", "TLS handshake failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_401_says_the_token_was_not_accepted_for_the_jwks() {
    let setup = Setup::healthy().await;
    setup.emulator.set_jwks_failure(Failure::Status(401));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("credentials"), "ok", "accepted");
    assert_verdict(
        out.line("JWKS"),
        "FAIL",
        "the access token was not accepted for the JWKS",
    );
    assert_verdict(out.line("keys"), "skipped", "the key set was not fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_404_names_the_url_settings() {
    let setup = Setup::healthy().await;
    setup.emulator.set_jwks_failure(Failure::Status(404));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.line("JWKS"),
        "FAIL",
        "HTTP 404: wrong jtl.api_base_url / jtl.jwks_url",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_key_set_fails_the_keys_step() {
    let setup = Setup::healthy().await;
    setup.emulator.set_published(&setup.kid(), false);
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("JWKS"), "ok", "answered HTTP 200");
    assert_verdict(
        out.line("keys"),
        "FAIL",
        "no usable Ed25519 signing key (0 skipped): the document's \"keys\" array is empty",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_store_that_is_down_fails_its_step() {
    let mut setup = Setup::healthy().await;
    setup.tenants = format!(
        "database_url = \"postgres://postgres:hunter2@127.0.0.1:{}/db\"",
        closed_port()
    );
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("tenant store");
    assert_verdict(line, "FAIL", "connection refused");
    assert!(
        line.contains("postgres://postgres:<redacted>@127.0.0.1"),
        "{line}"
    );
    assert!(!out.all().contains("hunter2"), "{}", out.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_store_in_a_missing_directory_fails_and_is_not_created() {
    let mut setup = Setup::healthy().await;
    let missing = setup.dir.path().join("no-such-dir");
    setup.tenants = format!(
        "database_url = \"sqlite://{}/tenants.db\"",
        missing.display()
    );
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("tenant store"), "FAIL", "does not exist");
    assert!(!missing.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sqlite_file_passes_without_being_created() {
    let mut setup = Setup::healthy().await;
    let file = setup.dir.path().join("fresh.db");
    setup.tenants = format!("database_url = \"sqlite://{}\"", file.display());
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(
        out.line("tenant store"),
        "ok",
        "does not exist yet (`run` creates it",
    );
    assert!(!file.exists(), "check created the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_step_is_skipped_when_connect_tenant_is_off() {
    let mut setup = Setup::healthy().await;
    setup.tenants = "connect_path = \"\"".into();
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(
        out.line("tenant store"),
        "skipped",
        "tenants.connect_path is \"\"",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_is_down_is_connection_refused() {
    let mut setup = Setup::healthy().await;
    setup.upstream_url = format!("http://127.0.0.1:{}", closed_port());
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("upstream"), "FAIL", "connection refused");
    assert_verdict(out.line("keys"), "ok", "usable");
}

/// The PostgreSQL store of `TEST_DATABASE_URL`, in a fresh schema: absent table first,
/// then present once `run`'s store has created it. Skipped (loudly) without the server, a
/// failure instead when `REQUIRE_POSTGRES_TEST=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_is_looked_at_without_being_migrated() {
    let test = "a_postgres_store_is_looked_at_without_being_migrated";
    let Some(server) = shared_server(Service::Postgres, test).await else {
        return;
    };
    let schema = format!("jtl_check_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&server)
        .await
        .expect("TEST_DATABASE_URL reachable");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .expect("create schema");
    let separator = if server.contains('?') { '&' } else { '?' };
    let url = format!("{server}{separator}options=-c%20search_path%3D{schema}");

    let mut setup = Setup::healthy().await;
    setup.tenants = format!("database_url = {url:?}");
    let before = setup.online().await;
    let created = async {
        let store = TenantStore::open(&url).await.expect("store");
        store.count().await.expect("schema created");
        store.close().await;
    };
    created.await;
    let after = setup.online().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .expect("drop schema");
    admin.close().await;

    assert_eq!(before.code, Some(0), "{}", before.all());
    assert_verdict(
        before.line("tenant store"),
        "ok",
        "table jtl_tenants not there yet (`run` creates it)",
    );
    assert_eq!(after.code, Some(0), "{}", after.all());
    assert_verdict(
        after.line("tenant store"),
        "ok",
        "table jtl_tenants present",
    );
}
