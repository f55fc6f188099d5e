//! OpenTelemetry over real sockets: a client's `traceparent` continued through the
//! sidecar to the echo backend (ingress) and to JTL's API (egress, the emulator), and
//! the spans exported over OTLP/HTTP protobuf to a receiver started here, decoded with
//! the OpenTelemetry protobuf types. Spans leave in batches; the tests end the sidecar
//! gracefully, which sends what is queued, before they read what arrived.

mod collector;
#[path = "../common/mod.rs"]
mod common;

use std::time::Duration;

use collector::{Collector, attribute, contains, hex};
use common::harness::{TENANT, eventually_async};
use common::proxy::{Answer, Proxy, get};
use jtl_auth_sidecar::config::Flow;
use jtl_auth_sidecar::emulator::{DEV_APP_USER_ID, EmulatorOptions};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(flags: &str) -> String {
    format!("00-{TRACE_ID}-{CLIENT_SPAN}-{flags}")
}

fn app_token(proxy: &Proxy) -> String {
    proxy
        .emulator
        .mint_app_token_for(TENANT, DEV_APP_USER_ID, Duration::from_secs(3600))
        .expect("the emulator signs")
}

async fn traced_proxy(collector: &Collector, extra_toml: &str) -> Proxy {
    Proxy::builder()
        .flow(Flow::AppToken)
        .toml(&format!(
            "[tracing]\notlp_endpoint = \"{}\"\n{extra_toml}",
            collector.endpoint()
        ))
        .start()
        .await
}

/// Ends the sidecar gracefully: what is queued is exported before it stops.
async fn stop(mut proxy: Proxy) -> Proxy {
    proxy.shut_down();
    proxy
        .finished
        .take()
        .expect("running")
        .await
        .expect("stopped");
    proxy
}

/// The parts of a `traceparent`: trace id, parent id, flags.
fn parts(value: &str) -> (String, String, String) {
    let fields: Vec<&str> = value.split('-').collect();
    assert_eq!(fields.len(), 4, "{value}");
    assert_eq!(fields[0], "00");
    (fields[1].into(), fields[2].into(), fields[3].into())
}

fn one_echoed(answer: &Answer, header: &str) -> String {
    let values = answer.echoed(header);
    assert_eq!(values.len(), 1, "{header}: {values:?}");
    values[0].clone()
}

fn named<'a>(spans: &'a [(String, Span)], name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| span.name == name)
        .collect()
}

/// Every header value the backend or JTL saw that holds a credential.
fn secrets_seen(answer: &Answer) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some(headers) = answer.json()["headers"].as_object() {
        for (name, values) in headers {
            if name.contains("token") || name == "authorization" {
                for value in values.as_array().into_iter().flatten() {
                    let value = value.as_str().unwrap_or_default();
                    secrets.push(value.trim_start_matches("Bearer ").to_owned());
                }
            }
        }
    }
    secrets
}

#[tokio::test]
async fn a_client_trace_goes_on_to_the_backend_and_its_spans_are_exported() {
    let collector = Collector::start().await;
    let proxy = traced_proxy(&collector, "").await;
    let token = app_token(&proxy);
    let answer = get(
        &proxy.url("/orders?page=2"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("traceparent", &traceparent("01")),
            ("tracestate", "vendor=opaque"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let (trace_id, parent_id, flags) = parts(&one_echoed(&answer, "traceparent"));
    assert_eq!(
        trace_id, TRACE_ID,
        "the backend continues the client's trace"
    );
    assert_ne!(
        parent_id, CLIENT_SPAN,
        "the sidecar's span is the backend's parent"
    );
    assert_eq!(flags, "01");
    assert_eq!(one_echoed(&answer, "tracestate"), "vendor=opaque");
    let mut secrets = secrets_seen(&answer);
    assert!(!secrets.is_empty(), "the access token reached the backend");
    secrets.push(token.clone());

    stop(proxy).await;
    let received = collector.received();
    assert!(!received.is_empty(), "spans were exported");
    for export in &received {
        assert_eq!(export.path, "/v1/traces");
        assert_eq!(export.content_type, "application/x-protobuf");
    }
    let spans = collector.spans();
    let requests: Vec<_> = spans
        .iter()
        .filter(|(_, span)| span.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(requests.len(), 1, "one span per request");
    let (service, request) = requests[0];
    assert_eq!(service, "jtl-auth-sidecar");
    assert_eq!(hex(&request.trace_id), TRACE_ID);
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    assert_eq!(
        hex(&request.span_id),
        parent_id,
        "the span the backend was told"
    );
    assert_eq!(request.name, "protected");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("jtl.route", "protected"),
        ("http.response.status_code", "200"),
        ("jtl.outcome", "forwarded"),
        ("jtl.tenant_id", TENANT),
        ("url.path", "/orders"),
    ] {
        assert_eq!(attribute(request, key).as_deref(), Some(value), "{key}");
    }
    let upstream = named(&spans, "upstream");
    assert_eq!(upstream.len(), 1);
    assert_eq!(upstream[0].parent_span_id, request.span_id);
    assert_eq!(upstream[0].kind, SpanKind::Client as i32);
    assert_eq!(
        attribute(upstream[0], "http.response.status_code").as_deref(),
        Some("200")
    );

    // Nothing secret and no identity but the tenant: not the token, not the access
    // token, not the client secret, not the user.
    let raw = collector.raw();
    for secret in secrets.iter().chain([
        &EmulatorOptions::default().client_secret,
        &DEV_APP_USER_ID.to_owned(),
    ]) {
        assert!(!contains(&raw, secret.as_bytes()), "exported: {secret}");
    }
}

#[tokio::test]
async fn without_a_valid_traceparent_the_sidecar_starts_a_trace() {
    let collector = Collector::start().await;
    let proxy = traced_proxy(&collector, "").await;
    let token = app_token(&proxy);
    let bearer = format!("Bearer {token}");
    let none = get(&proxy.url("/a"), &[("authorization", &bearer)]).await;
    // Uppercase hex is not W3C: a trace of its own, and the caller's tracestate dropped.
    let invalid = traceparent("01").to_uppercase();
    let bad = get(
        &proxy.url("/b"),
        &[
            ("authorization", &bearer),
            ("traceparent", &invalid),
            ("tracestate", "vendor=stale"),
        ],
    )
    .await;
    let mut started = Vec::new();
    for answer in [&none, &bad] {
        assert_eq!(answer.status, 200);
        let (trace_id, parent_id, flags) = parts(&one_echoed(answer, "traceparent"));
        assert_ne!(trace_id, TRACE_ID.to_uppercase());
        assert_ne!(trace_id, "0".repeat(32));
        assert_eq!(flags, "01", "sampled: sample_ratio is 1");
        started.push((trace_id, parent_id));
    }
    assert_ne!(started[0].0, started[1].0, "a trace per request");
    assert!(bad.echoed("tracestate").is_empty());

    stop(proxy).await;
    let spans = collector.spans();
    for (trace_id, span_id) in &started {
        let root = spans
            .iter()
            .map(|(_, span)| span)
            .find(|span| hex(&span.span_id) == *span_id)
            .expect("the request's span was exported");
        assert_eq!(hex(&root.trace_id), *trace_id);
        assert!(root.parent_span_id.is_empty(), "a root span");
    }
}

#[tokio::test]
async fn with_export_off_the_trace_is_still_continued() {
    let proxy = Proxy::builder().flow(Flow::AppToken).start().await;
    let token = app_token(&proxy);
    let bearer = format!("Bearer {token}");
    for flags in ["01", "00"] {
        let answer = get(
            &proxy.url("/a"),
            &[
                ("authorization", &bearer),
                ("traceparent", &traceparent(flags)),
            ],
        )
        .await;
        let (trace_id, parent_id, sent_flags) = parts(&one_echoed(&answer, "traceparent"));
        assert_eq!(trace_id, TRACE_ID);
        assert_ne!(parent_id, CLIENT_SPAN);
        assert_ne!(parent_id, "0".repeat(16));
        // Not sampled upstream, but sample_ratio 1 samples traces without a sampled
        // parent: the same decision as with export on.
        assert_eq!(sent_flags, "01");
    }
    let answer = get(&proxy.url("/a"), &[("authorization", &bearer)]).await;
    let (trace_id, _, _) = parts(&one_echoed(&answer, "traceparent"));
    assert_ne!(trace_id, TRACE_ID);
}

#[tokio::test]
async fn sampling_follows_a_sampled_parent_and_the_ratio_for_the_rest() {
    let collector = Collector::start().await;
    let proxy = traced_proxy(&collector, "sample_ratio = 0.0\n").await;
    let token = app_token(&proxy);
    let bearer = format!("Bearer {token}");
    let sampled = get(
        &proxy.url("/sampled"),
        &[
            ("authorization", &bearer),
            ("traceparent", &traceparent("01")),
        ],
    )
    .await;
    assert_eq!(parts(&one_echoed(&sampled, "traceparent")).2, "01");
    let unsampled = get(
        &proxy.url("/unsampled"),
        &[
            ("authorization", &bearer),
            ("traceparent", &traceparent("00")),
        ],
    )
    .await;
    assert_eq!(parts(&one_echoed(&unsampled, "traceparent")).2, "00");
    let root = get(&proxy.url("/root"), &[("authorization", &bearer)]).await;
    assert_eq!(parts(&one_echoed(&root, "traceparent")).2, "00");

    stop(proxy).await;
    let paths: Vec<String> = collector
        .spans()
        .iter()
        .filter_map(|(_, span)| attribute(span, "url.path"))
        .collect();
    assert_eq!(paths, ["/sampled"], "only the sampled parent's request");
}

#[tokio::test]
async fn refused_public_and_preflight_requests_have_their_route_and_outcome() {
    let collector = Collector::start().await;
    let proxy = traced_proxy(
        &collector,
        "[ingress]\npublic_paths = [\"/health\"]\ncors_allowed_origins = [\"https://app.example\"]\n",
    )
    .await;
    let forged = format!("{}x", app_token(&proxy));
    let refused = get(
        &proxy.url("/orders"),
        &[("authorization", &format!("Bearer {forged}"))],
    )
    .await;
    assert_eq!(refused.status, 401);
    let public = get(&proxy.url("/health"), &[]).await;
    assert_eq!(public.status, 200);
    let preflight = common::proxy::send(
        http::Request::builder()
            .method("OPTIONS")
            .uri(proxy.url("/orders"))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "GET")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(preflight.status, 204);

    stop(proxy).await;
    let spans = collector.spans();
    let by_path = |path: &str| {
        spans
            .iter()
            .map(|(_, span)| span)
            .find(|span| {
                attribute(span, "url.path").as_deref() == Some(path)
                    && attribute(span, "http.request.method").is_some()
            })
            .unwrap_or_else(|| panic!("a span for {path}"))
            .clone()
    };
    let orders: Vec<&Span> = spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| attribute(span, "url.path").as_deref() == Some("/orders"))
        .collect();
    assert_eq!(orders.len(), 2);
    let refused = orders
        .iter()
        .find(|span| attribute(span, "http.response.status_code").as_deref() == Some("401"))
        .expect("the refused request");
    assert_eq!(
        attribute(refused, "jtl.route").as_deref(),
        Some("protected")
    );
    assert_eq!(
        attribute(refused, "jtl.outcome").as_deref(),
        Some("invalid_token")
    );
    assert_eq!(attribute(refused, "jtl.tenant_id"), None);
    let preflight = orders
        .iter()
        .find(|span| attribute(span, "http.request.method").as_deref() == Some("OPTIONS"))
        .expect("the preflight");
    assert_eq!(
        attribute(preflight, "jtl.route").as_deref(),
        Some("preflight")
    );
    let public = by_path("/health");
    assert_eq!(attribute(&public, "jtl.route").as_deref(), Some("public"));
    assert!(!contains(&collector.raw(), forged.as_bytes()));
}

#[tokio::test]
async fn a_key_set_fetch_the_request_waits_for_is_a_child_of_its_span() {
    let collector = Collector::start().await;
    let proxy = traced_proxy(&collector, "").await;
    // The first key set is loaded before the new key appears.
    eventually_async("the sidecar is ready", || async {
        get(&proxy.admin_url("/readyz"), &[]).await.status == 200
    })
    .await;
    let fetches = proxy.emulator.app_keys_requests();
    proxy.emulator.add_app_key("312909097518999999");
    let claims = proxy.emulator.app_token_claims(
        TENANT,
        DEV_APP_USER_ID,
        &serde_json::json!([jtl_auth_sidecar::emulator::DEV_APP_ID]),
        Some(jtl_auth_sidecar::emulator::DEV_APP_ID),
        Duration::from_secs(3600),
    );
    let token = proxy
        .emulator
        .mint_app_token(&claims, "312909097518999999")
        .expect("signed");
    let answer = proxy
        .with_refetches_permitted(get(
            &proxy.url("/rotated"),
            &[("authorization", &format!("Bearer {token}"))],
        ))
        .await;
    assert_eq!(answer.status, 200);
    assert!(proxy.emulator.app_keys_requests() > fetches);

    stop(proxy).await;
    let spans = collector.spans();
    let request = spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| attribute(span, "url.path").as_deref() == Some("/rotated"))
        .expect("the request's span");
    let fetch = named(&spans, "key-set fetch");
    assert!(
        fetch
            .iter()
            .any(|span| span.parent_span_id == request.span_id),
        "the fetch is the request's child: {fetch:?}"
    );
}

#[tokio::test]
async fn egress_continues_the_trace_to_jtl_with_its_exchange_and_token_fetch() {
    let collector = Collector::start().await;
    let proxy = Proxy::builder()
        .egress()
        .toml(&format!(
            "[tracing]\notlp_endpoint = \"{}/v1/traces\"\n",
            collector.endpoint()
        ))
        .start()
        .await;
    let acting = get(
        &proxy.egress_url("/v1/orders"),
        &[
            ("x-tenant-id", TENANT),
            ("x-jtl-act-as", "user:312345678901234567"),
            ("traceparent", &traceparent("01")),
        ],
    )
    .await;
    assert_eq!(acting.status, 200, "{:?}", acting.body);
    let (trace_id, parent_id, _) = parts(&one_echoed(&acting, "traceparent"));
    assert_eq!(trace_id, TRACE_ID, "JTL's API sees the caller's trace");
    assert_ne!(parent_id, CLIENT_SPAN);

    // JTL forgets the app's token: the 401 sends the request again after a fetch.
    proxy.emulator.revoke_access_tokens();
    let retried = get(
        &proxy.egress_url("/v1/products"),
        &[("x-tenant-id", TENANT), ("traceparent", &traceparent("01"))],
    )
    .await;
    assert_eq!(retried.status, 200, "{:?}", retried.body);

    stop(proxy).await;
    let spans = collector.spans();
    let egress = |path: &str| {
        spans
            .iter()
            .map(|(_, span)| span)
            .find(|span| attribute(span, "url.path").as_deref() == Some(path))
            .unwrap_or_else(|| panic!("the span of {path}"))
    };
    let first = egress("/v1/orders");
    assert_eq!(hex(&first.span_id), parent_id);
    assert_eq!(hex(&first.parent_span_id), CLIENT_SPAN);
    for (key, value) in [
        ("jtl.route", "egress"),
        ("jtl.listener", "egress"),
        ("jtl.tenant_id", TENANT),
        ("jtl.outcome", "forwarded"),
        ("http.request.method", "GET"),
    ] {
        assert_eq!(attribute(first, key).as_deref(), Some(value), "{key}");
    }
    let children = |parent: &Span, name: &str| {
        spans
            .iter()
            .map(|(_, span)| span)
            .filter(|span| span.parent_span_id == parent.span_id && span.name == name)
            .count()
    };
    assert_eq!(children(first, "token exchange"), 1);
    assert_eq!(children(first, "upstream"), 1);
    let exchange = named(&spans, "token exchange")[0];
    assert_eq!(
        attribute(exchange, "jtl.exchange.kind").as_deref(),
        Some("user")
    );
    assert_eq!(
        attribute(exchange, "jtl.exchange.call").as_deref(),
        Some("mint")
    );
    let second = egress("/v1/products");
    assert_eq!(attribute(second, "jtl.outcome").as_deref(), Some("retried"));
    assert_eq!(children(second, "upstream"), 2, "the 401 and the retry");
    assert_eq!(children(second, "access-token fetch"), 1);

    let raw = collector.raw();
    let mut secrets = secrets_seen(&acting);
    secrets.extend(secrets_seen(&retried));
    assert!(
        secrets.len() >= 2,
        "JTL saw the exchanged and the app's token"
    );
    secrets.push(EmulatorOptions::default().client_secret);
    secrets.push("312345678901234567".to_owned());
    for secret in &secrets {
        assert!(!contains(&raw, secret.as_bytes()), "exported: {secret}");
    }
}

#[tokio::test]
async fn a_dead_collector_costs_requests_nothing_and_its_failures_are_counted() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let proxy = Proxy::builder()
        .flow(Flow::AppToken)
        .emulator(EmulatorOptions::default())
        .toml(&format!("[tracing]\notlp_endpoint = \"{endpoint}\"\n"))
        .start()
        .await;
    let bearer = format!("Bearer {}", app_token(&proxy));
    for _ in 0..20 {
        let answer = get(&proxy.url("/a"), &[("authorization", &bearer)]).await;
        assert_eq!(answer.status, 200);
    }
    // The batch leaves on the exporter's schedule (every 5 s) and fails there.
    eventually_async("a failed export is counted", || async {
        let metrics = get(&proxy.admin_url("/metrics"), &[]).await;
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        text.lines().any(|line| {
            line.strip_prefix("jtl_sidecar_trace_exports_total{result=\"failure\"} ")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n >= 1)
        })
    })
    .await;
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("jtl_sidecar_trace_spans_lost_total "),
        "{text}"
    );
    // Still serving while the exporter fails.
    let answer = get(&proxy.url("/after"), &[("authorization", &bearer)]).await;
    assert_eq!(answer.status, 200);
}
