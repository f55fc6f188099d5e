//! `check --online` in the app-token flow (SPEC §11): discovery, keys, app tokens.

use super::*;

impl Setup {
    /// An app token for [`DEV_APP_ID`] with `aud` and `urn:jtl:app_id` as given.
    fn app_claims(&self, audience: serde_json::Value, app_id: Option<&str>) -> serde_json::Value {
        self.emulator.app_token_claims(
            TENANT,
            DEV_APP_USER_ID,
            &audience,
            app_id,
            Duration::from_secs(3600),
        )
    }

    fn app_token_for(&self, claims: &serde_json::Value) -> String {
        self.emulator
            .mint_app_token(claims, APP_KEY_ID)
            .expect("app token")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_token_flow_passes_every_step_with_discovery_and_exits_0() {
    let setup = Setup::app_token().await;
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let token_endpoint = out.line("token endpoint");
    assert_verdict(
        token_endpoint,
        "ok",
        &format!(
            "{} answered (scope \"openid\" sent)",
            setup.emulator.app_token_url()
        ),
    );
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
        &format!(
            "{} answered HTTP 200 without a bearer (Zitadel's key set is public)",
            setup.emulator.app_keys_url()
        ),
    );
    let keys = out.line("keys");
    assert_verdict(
        keys,
        "ok",
        &format!("1 usable RSA key (`{APP_KEY_ID}` 2048 bits)"),
    );
    assert!(
        keys.contains(&format!(
            "2 keys of other types skipped (`{APP_EC_KEY_ID}`, `{APP_OKP_KEY_ID}`), as expected"
        )),
        "{keys}"
    );
    assert_verdict(
        out.line("discovery"),
        "ok",
        &format!(
            "{}: issuer, jwks_uri and token_endpoint match session.issuer, jtl.jwks_url and jtl.token_url",
            setup.emulator.discovery_url()
        ),
    );
    assert_verdict(out.line("tenant store"), "ok", "table jtl_tenants present");
    assert_verdict(out.line("upstream"), "ok", "accepts connections");
    assert!(out.stderr.contains("online check passed"), "{}", out.stderr);
    // Zitadel's endpoints, not the legacy ones.
    assert_eq!(setup.emulator.app_token_requests(), 1);
    assert_eq!(setup.emulator.app_keys_requests(), 1);
    assert_eq!(setup.emulator.discovery_requests(), 1);
    assert_eq!(setup.emulator.token_requests(), 0);
    assert_eq!(setup.emulator.jwks_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_token_flow_has_no_discovery_step() {
    let setup = Setup::healthy().await;
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.stdout.contains("discovery:"), "{}", out.stdout);
    assert_eq!(setup.emulator.discovery_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_issuer_that_differs_fails_naming_session_issuer() {
    let setup = Setup::app_token().await;
    let mut document = setup.emulator.discovery_document();
    document["issuer"] = serde_json::json!("https://id.jtl-cloud.com");
    setup.emulator.set_discovery_document(Some(document));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("discovery");
    assert_verdict(
        line,
        "FAIL",
        &format!(
            "issuer is \"https://id.jtl-cloud.com\", not session.issuer {:?}",
            setup.emulator.issuer()
        ),
    );
    assert!(
        line.contains("set session.issuer = \"https://id.jtl-cloud.com\""),
        "{line}"
    );
    assert!(!line.contains("jwks_uri is"), "{line}");
    // The other steps do not depend on it.
    assert_verdict(out.line("keys"), "ok", "1 usable RSA key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_jwks_uri_that_differs_fails_naming_jtl_jwks_url() {
    let setup = Setup::app_token().await;
    let mut document = setup.emulator.discovery_document();
    document["jwks_uri"] = serde_json::json!("https://id.jtl-cloud.com/oauth/v2/keys");
    setup.emulator.set_discovery_document(Some(document));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("discovery");
    assert_verdict(
        line,
        "FAIL",
        &format!(
            "jwks_uri is \"https://id.jtl-cloud.com/oauth/v2/keys\", not jtl.jwks_url {:?}",
            setup.emulator.app_keys_url()
        ),
    );
    assert!(
        line.contains("set jtl.jwks_url = \"https://id.jtl-cloud.com/oauth/v2/keys\""),
        "{line}"
    );
    assert!(!line.contains("not session.issuer"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_token_endpoint_that_differs_fails_naming_jtl_token_url() {
    let mut setup = Setup::app_token().await;
    // Configured explicitly to another endpoint, asked for `openid` as the provider's own
    // would be, which Zitadel does not publish. (Without the scope, as JTL's `--legacy`
    // templates use the legacy endpoint, it is not compared.)
    setup.token_url = setup.emulator.token_url();
    setup.jtl_extra = "scope = \"openid\"".to_owned();
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("discovery");
    assert_verdict(
        line,
        "FAIL",
        &format!(
            "token_endpoint is {:?}, not jtl.token_url {:?}: set jtl.token_url = {:?} (or leave it unset",
            setup.emulator.app_token_url(),
            setup.emulator.token_url(),
            setup.emulator.app_token_url(),
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_discovery_document_fails() {
    let setup = Setup::app_token().await;
    setup.emulator.set_discovery_failure(Failure::Status(404));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.line("discovery"),
        "FAIL",
        &format!("{} answered HTTP 404", setup.emulator.discovery_url()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_answer_that_is_not_json_fails() {
    let setup = Setup::app_token().await;
    setup
        .emulator
        .set_discovery_document(Some(serde_json::json!(["not", "an", "object"])));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.line("discovery"),
        "FAIL",
        "the answer is not a JSON object",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_without_openid_fails_the_token_endpoint_with_zitadels_advice() {
    let mut setup = Setup::app_token().await;
    setup.jtl_extra = "scope = \"profile\"".into();
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("token endpoint");
    assert_verdict(
        line,
        "FAIL",
        "refused the scope: scope \"profile\" sent, HTTP 400 invalid_scope",
    );
    assert!(line.contains("include openid in jtl.scope"), "{line}");
    assert!(line.contains("jtl.scope = \"openid profile\""), "{line}");
    assert_verdict(
        out.line("credentials"),
        "skipped",
        "the scope was refused before a token was handed out",
    );
    assert_verdict(out.line("token lifetime"), "skipped", "no access token");
    // The key set is public: it is checked all the same.
    assert_verdict(out.line("JWKS"), "ok", "without a bearer");
    assert_verdict(out.line("keys"), "ok", "1 usable RSA key");
    // `check` warned before any call.
    assert!(
        out.stderr
            .contains("jtl.scope: \"profile\" lacks \"openid\""),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_token_without_expires_in_is_assumed_to_live_300_s() {
    let setup = Setup::app_token().await;
    setup.emulator.set_expires_in(None);
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(
        out.line("token lifetime"),
        "ok",
        "300 s (5 minutes) assumed 300 s: the opaque token came without expires_in",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_with_only_ec_and_okp_keys_fails_the_keys_step() {
    let setup = Setup::app_token().await;
    // Minted while the key is there; then Zitadel stops publishing it.
    let token = setup
        .emulator
        .mint_app_token_for(TENANT, DEV_APP_USER_ID, Duration::from_secs(3600))
        .expect("app token");
    setup.emulator.set_app_key_published(APP_KEY_ID, false);
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("JWKS"), "ok", "without a bearer");
    let keys = out.line("keys");
    assert_verdict(
        keys,
        "FAIL",
        "the JWKS document holds no usable RS256 (RSA, 2048 bits or more) signing key (2 skipped)",
    );
    assert!(
        keys.contains(&format!(
            "only keys of other types (`{APP_EC_KEY_ID}`, `{APP_OKP_KEY_ID}`), while app tokens are signed with RSA"
        )),
        "{keys}"
    );
    assert_verdict(
        out.line("app token"),
        "skipped",
        "not verified: no usable RSA key set was fetched",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_small_rsa_key_is_named_beside_the_usable_one() {
    let setup = Setup::app_token().await;
    setup.emulator.publish_small_rsa_key("small");
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.line("keys").contains(
            "1 RSA key skipped: key #4 (kid \"small\"): the RSA modulus has 1024 bits, fewer than the 2048 required"
        ),
        "{}",
        out.line("keys")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_app_token_passes_jtls_three_checks() {
    let setup = Setup::app_token().await;
    let token =
        setup.app_token_for(&setup.app_claims(serde_json::json!([DEV_APP_ID]), Some(DEV_APP_ID)));
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let claims = out.line("app token");
    assert_verdict(
        claims,
        "info",
        &format!(
            "aud [\"{DEV_APP_ID}\"], urn:jtl:app_id \"{DEV_APP_ID}\", urn:jtl:tenant_id \"{TENANT}\", sub \"{DEV_APP_USER_ID}\""
        ),
    );
    assert!(
        claims.contains(&format!("header kid \"{APP_KEY_ID}\"")),
        "{claims}"
    );
    let first = out.line("app token 1/3 signature and issuer");
    assert_verdict(
        first,
        "ok",
        &format!("key `{APP_KEY_ID}` (RSA, 2048 bits) signed it; iss equals session.issuer"),
    );
    assert!(first.contains("lifetime ok (expires in"), "{first}");
    assert_verdict(
        out.line("app token 2/3 audience"),
        "ok",
        &format!("aud [\"{DEV_APP_ID}\"] contains the app id"),
    );
    assert_verdict(
        out.line("app token 3/3 app id"),
        "ok",
        &format!("urn:jtl:app_id \"{DEV_APP_ID}\" equals the app id"),
    );
    assert_verdict(
        out.verdict("app token"),
        "ok",
        &format!(
            "valid: signed by key `{APP_KEY_ID}`, tenant {TENANT}, user \"{DEV_APP_USER_ID}\""
        ),
    );
    // In JTL's order, after the other steps.
    let order: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|line| line.get(8..))
        .filter_map(|rest| rest.split(": ").next())
        .filter(|step| step.starts_with("app token") || *step == "discovery")
        .collect();
    assert_eq!(
        order,
        [
            "discovery",
            "app token",
            "app token 1/3 signature and issuer",
            "app token 2/3 audience",
            "app token 3/3 app id",
            "app token"
        ]
    );
    let all = out.all();
    for part in token.split('.') {
        assert!(!all.contains(part), "{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_token_for_another_audience_fails_the_audience_check() {
    let setup = Setup::app_token().await;
    let token = setup.app_token_for(&setup.app_claims(serde_json::json!(["another-app"]), None));
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.line("app token 1/3 signature and issuer"),
        "ok",
        "signed it",
    );
    assert_verdict(
        out.line("app token 2/3 audience"),
        "FAIL",
        &format!(
            "aud [\"another-app\"] does not contain the app id (session.audience \"{DEV_APP_ID}\")"
        ),
    );
    assert_verdict(
        out.line("app token 3/3 app id"),
        "ok",
        "urn:jtl:app_id absent, which passes",
    );
    assert_verdict(
        out.verdict("app token"),
        "FAIL",
        "The app token is meant for another audience. It fails JTL's check 2 (audience) above.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_token_for_another_app_id_fails_the_app_id_check() {
    let setup = Setup::app_token().await;
    let token = setup.app_token_for(
        &setup.app_claims(serde_json::json!([DEV_APP_ID]), Some("999999999999999999")),
    );
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.line("app token 1/3 signature and issuer"),
        "ok",
        "signed it",
    );
    assert_verdict(
        out.line("app token 2/3 audience"),
        "ok",
        "contains the app id",
    );
    assert_verdict(
        out.line("app token 3/3 app id"),
        "FAIL",
        &format!(
            "urn:jtl:app_id \"999999999999999999\" is not the app id (session.audience \"{DEV_APP_ID}\")"
        ),
    );
    assert_verdict(
        out.verdict("app token"),
        "FAIL",
        "The app token was issued for another app (urn:jtl:app_id).",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_token_with_an_unknown_kid_fails_the_first_check() {
    let setup = Setup::app_token().await;
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "unknown-kid"});
    let token = setup
        .emulator
        .mint_app_token_with_header(
            &header,
            &setup.app_claims(serde_json::json!([DEV_APP_ID]), Some(DEV_APP_ID)),
            APP_KEY_ID,
        )
        .expect("app token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let first = out.line("app token 1/3 signature and issuer");
    assert_verdict(
        first,
        "FAIL",
        &format!("kid `unknown-kid` is not in the key set at jtl.jwks_url (it has `{APP_KEY_ID}`)"),
    );
    assert!(
        first.contains("as sent (unverified): iss equals session.issuer"),
        "{first}"
    );
    for step in ["app token 2/3 audience", "app token 3/3 app id"] {
        assert_verdict(
            out.line(step),
            "skipped",
            "not decided: the signature was not verified; as sent,",
        );
    }
    assert_verdict(
        out.verdict("app token"),
        "FAIL",
        "The app token was signed by an unknown key `unknown-kid`.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_pasted_in_the_app_token_flow_is_named() {
    let setup = Setup::app_token().await;
    let token = setup
        .emulator
        .mint(&setup.claims(3600), &setup.kid(), false)
        .expect("session token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.verdict("app token"),
        "FAIL",
        "This is a session token (getSessionToken), which is not accepted here. Its header alg is \"EdDSA\": app tokens (getAppToken) are RS256",
    );
}

/// `both`: the one service token from the legacy endpoint, both key sets checked (each
/// step named by its kind), the discovery document, and a pasted token of either kind
/// explained as the kind its `alg` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_flows_check_both_key_sets_and_explain_either_kind_of_token() {
    let mut setup = Setup::healthy().await;
    setup.session = format!(
        "[session]\nflow = \"both\"\nissuer = {:?}\naudience = {DEV_APP_ID:?}\n",
        setup.emulator.issuer()
    );
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(
        out.line("token endpoint"),
        "ok",
        &format!("{} answered (no scope sent)", setup.emulator.token_url()),
    );
    assert_verdict(
        out.line("app-token JWKS"),
        "ok",
        "answered HTTP 200 without a bearer",
    );
    assert_verdict(out.line("app-token keys"), "ok", "usable RSA key");
    assert_verdict(
        out.line("session-token JWKS"),
        "ok",
        "answered HTTP 200 to the access token",
    );
    assert_verdict(out.line("session-token keys"), "ok", "usable Ed25519 key");
    // The service token comes from the legacy endpoint, not the provider: its
    // token_endpoint is not held against jtl.token_url.
    assert_verdict(out.line("discovery"), "ok", "token_endpoint not compared");

    let app_token =
        setup.app_token_for(&setup.app_claims(serde_json::json!([DEV_APP_ID]), Some(DEV_APP_ID)));
    let out = setup.with_session_token(&app_token).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(out.verdict("app token"), "ok", "valid: signed by key");

    let session_token = setup
        .emulator
        .mint(&setup.claims(3600), &setup.kid(), false)
        .expect("session token");
    let out = setup.with_session_token(&session_token).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(out.verdict("session token"), "ok", "valid");
}
