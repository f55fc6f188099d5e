//! `dev`: the curl commands it prints work in each flow (the app-token flow by default,
//! one token of each kind with `--flow both`); an unknown flow exits 2.

use super::*;

/// `dev` with `args`, every listener (and the emulator) on a free port, so it never
/// clashes with a `dev` on the default ports or with other tests.
fn start_dev(args: &[&str]) -> Child {
    let mut command = sidecar();
    command
        .arg("dev")
        .args(args)
        .env("JTL_SIDECAR_INGRESS__LISTEN", "127.0.0.1:0")
        .env("JTL_SIDECAR_ADMIN__LISTEN", "127.0.0.1:0")
        .env("JTL_SIDECAR_EGRESS__LISTEN", "127.0.0.1:0")
        .env("JTL_SIDECAR_INGRESS__UPSTREAM", "http://127.0.0.1:0")
        .env(
            "JTL_SIDECAR_JTL__TOKEN_URL",
            "http://127.0.0.1:0/oauth2/token",
        )
        .env("JTL_SIDECAR_JTL__API_BASE_URL", "http://127.0.0.1:0");
    if !args.contains(&"session-token") {
        // Where app tokens are accepted (the default flow, and both), the emulator
        // listens on the port of session.issuer.
        command.env("JTL_SIDECAR_SESSION__ISSUER", "http://127.0.0.1:0");
    }
    if args.contains(&"app-token") {
        // In the app-token flow, jtl.token_url is derived from the issuer. (Without
        // `--flow`, the legacy URL set above stays: `dev` points the app-token flow at the
        // emulator's Zitadel, with openid, whatever the config named.)
        command.env_remove("JTL_SIDECAR_JTL__TOKEN_URL");
    }
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs a printed command with `sh -c`; its stdout.
fn sh(command: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .expect("sh");
    assert!(output.status.success(), "{command}");
    String::from_utf8(output.stdout).unwrap()
}

/// Runs the first printed `curl` until the sidecar forwards it (the service token and
/// key set are fetched in the background); the echo backend's answer.
fn first_answer(first: &str) -> serde_json::Value {
    let mut answer = String::new();
    let deadline = std::time::Instant::now() + common::harness::scaled(Duration::from_secs(5));
    while std::time::Instant::now() < deadline {
        answer = sh(first.trim());
        if answer.contains("x-tenant-id") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[test]
fn dev_flow_session_token_prints_a_curl_command_that_works() {
    let mut child = start_dev(&["--flow", "session-token"]);
    let lines = lines_of(&mut child);
    let first = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let spoofed = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let egress = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let mint = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s 'http"));
    let connect = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s -X POST"));

    let echoed = first_answer(&first);
    assert_eq!(
        echoed["headers"]["x-tenant-id"],
        serde_json::json!([DEV_TENANT_ID])
    );
    assert!(echoed["headers"].get("x-session-token").is_none());

    let echoed: serde_json::Value = serde_json::from_str(&sh(spoofed.trim())).unwrap();
    assert_eq!(
        echoed["headers"]["x-tenant-id"],
        serde_json::json!([DEV_TENANT_ID])
    );

    // The egress command reaches the emulator's API echo with the access token injected.
    let echoed: serde_json::Value = serde_json::from_str(&sh(egress.trim())).unwrap();
    assert_eq!(echoed["path"], "/v1/hello");
    assert_eq!(
        echoed["headers"]["x-tenant-id"],
        serde_json::json!([DEV_TENANT_ID])
    );
    assert!(
        echoed["headers"]["authorization"][0]
            .as_str()
            .is_some_and(|value| value.starts_with("Bearer "))
    );

    let minted = sh(mint.trim());
    assert_eq!(
        minted.trim().split('.').count(),
        3,
        "a fresh token: {minted}"
    );

    // The connect-tenant command is answered by the sidecar, with the dev tenant.
    let connected: serde_json::Value = serde_json::from_str(&sh(connect.trim())).unwrap();
    assert_eq!(connected["success"], true, "{connected}");
    assert_eq!(connected["tenantId"], DEV_TENANT_ID);

    terminate(&child);
    assert_eq!(wait_for_exit(&mut child), Some(0));
}

/// The app-token flow is what `dev` runs without `--flow`.
#[test]
fn dev_runs_the_app_token_flow_by_default_and_its_curl_commands_work() {
    let mut child = start_dev(&[]);
    let lines = lines_of(&mut child);
    let heading = next_line_matching(&lines, |l| l.starts_with("jtl-auth-sidecar dev is running"));
    assert!(heading.contains("app-token"), "{heading}");
    let first = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let spoofed = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let egress = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let act_as = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let mint = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s 'http"));
    let connect = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s -X POST"));
    let app_token = first
        .split("Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the first curl carries a token")
        .to_owned();
    assert_eq!(app_token.split('.').count(), 3, "an app token: {first}");
    let emulator = mint
        .split('\'')
        .nth(1)
        .and_then(|url| url.split(APP_TOKEN_MINT_PATH).next())
        .expect("the mint command names the emulator")
        .to_owned();
    assert!(
        mint.contains(&format!(
            "{APP_TOKEN_MINT_PATH}?tenantId={DEV_TENANT_ID}&sub={DEV_APP_USER_ID}'"
        )),
        "{mint}"
    );

    // The backend gets the tenant and the numeric Zitadel user, no slug, and the service
    // account's opaque access token from the emulator's Zitadel instead of the app token.
    let echoed = first_answer(&first);
    let headers = &echoed["headers"];
    assert_eq!(headers["x-tenant-id"], serde_json::json!([DEV_TENANT_ID]));
    assert_eq!(headers["x-user-id"], serde_json::json!([DEV_APP_USER_ID]));
    assert!(headers.get("x-tenant-slug").is_none(), "{echoed}");
    let forwarded = headers["authorization"][0]
        .as_str()
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("a bearer for the backend: {echoed}"))
        .to_owned();
    assert_ne!(forwarded, app_token);
    assert!(!forwarded.contains('.'), "opaque, not a JWT: {forwarded}");
    let api_status = |token: &str| {
        sh(&format!(
            "curl -s -o /dev/null -w '%{{http_code}}' {emulator}/v1/whoami -H 'Authorization: Bearer {token}'"
        ))
    };
    assert_eq!(api_status(&forwarded), "200", "the emulator issued it");
    assert_eq!(api_status(&app_token), "401");

    let echoed: serde_json::Value = serde_json::from_str(&sh(spoofed.trim())).unwrap();
    assert_eq!(
        echoed["headers"]["x-tenant-id"],
        serde_json::json!([DEV_TENANT_ID])
    );

    // Egress: the emulator's API answers (it checks the bearer) with the service token.
    let echoed: serde_json::Value = serde_json::from_str(&sh(egress.trim())).unwrap();
    assert_eq!(echoed["path"], "/v1/hello", "{echoed}");
    assert!(
        echoed["headers"]["authorization"][0]
            .as_str()
            .is_some_and(|value| value.starts_with("Bearer ") && !value.contains(&app_token))
    );

    // Acting for the user: the emulator's account service exchanged a token for them.
    let echoed: serde_json::Value = serde_json::from_str(&sh(act_as.trim())).unwrap();
    assert_eq!(echoed["acting"]["kind"], "user", "{echoed}");
    assert_eq!(echoed["acting"]["user_id"], DEV_APP_USER_ID, "{echoed}");
    assert_eq!(echoed["acting"]["tenant_id"], DEV_TENANT_ID, "{echoed}");

    // A minted token works like the printed one.
    let minted = sh(mint.trim());
    let minted = minted.trim();
    assert_eq!(minted.split('.').count(), 3, "a fresh app token: {minted}");
    let echoed = first_answer(&first.replace(&app_token, minted));
    assert_eq!(
        echoed["headers"]["x-user-id"],
        serde_json::json!([DEV_APP_USER_ID])
    );

    let connected: serde_json::Value = serde_json::from_str(&sh(connect.trim())).unwrap();
    assert_eq!(connected["success"], true, "{connected}");
    assert_eq!(connected["tenantId"], DEV_TENANT_ID);
    assert_eq!(connected["userId"], DEV_APP_USER_ID);
    assert!(connected.get("tenantSlug").is_none(), "{connected}");

    terminate(&child);
    assert_eq!(wait_for_exit(&mut child), Some(0));
}

#[test]
fn dev_flow_both_prints_a_working_curl_command_for_each_kind_of_token() {
    let mut child = start_dev(&["--flow", "both"]);
    let lines = lines_of(&mut child);
    let heading = next_line_matching(&lines, |l| l.starts_with("jtl-auth-sidecar dev is running"));
    assert!(heading.contains("both"), "{heading}");
    let app = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let session = next_line_matching(&lines, |l| l.trim_start().starts_with("curl -s http"));
    let token_of = |line: &str| {
        line.split("Bearer ")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .expect("the curl carries a token")
            .to_owned()
    };
    let header_of = |token: &str| {
        let header = token.split('.').next().unwrap_or_default();
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .expect("a JWS header");
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("JSON")
    };
    assert_eq!(header_of(&token_of(&app))["alg"], "RS256", "{app}");
    assert_eq!(header_of(&token_of(&session))["alg"], "EdDSA", "{session}");

    // Each kind reaches the backend with the same tenant; the slug only with the
    // session token, and the same service token for both.
    let from_app = first_answer(&app);
    let from_session = first_answer(&session);
    assert_eq!(
        from_app["headers"]["x-tenant-id"],
        serde_json::json!([DEV_TENANT_ID])
    );
    assert_eq!(
        from_session["headers"]["x-tenant-id"],
        serde_json::json!([DEV_TENANT_ID])
    );
    assert_eq!(
        from_app["headers"]["x-user-id"],
        serde_json::json!([DEV_APP_USER_ID])
    );
    assert!(
        from_app["headers"].get("x-tenant-slug").is_none(),
        "{from_app}"
    );
    assert_eq!(
        from_session["headers"]["x-tenant-slug"],
        serde_json::json!([DEV_TENANT_SLUG])
    );
    assert_eq!(
        from_app["headers"]["authorization"],
        from_session["headers"]["authorization"]
    );

    terminate(&child);
    assert_eq!(wait_for_exit(&mut child), Some(0));
}

#[test]
fn dev_refuses_an_unknown_flow_with_exit_2() {
    let output = sidecar()
        .args(["dev", "--flow", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--flow") && stderr.contains("nonsense"),
        "{stderr}"
    );
    assert!(
        stderr.contains("session-token") && stderr.contains("app-token"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}
