//! OpenTelemetry traces (`[tracing]`): every request continues the caller's
//! `traceparent` (or starts a trace) and hands the next hop its own; with
//! `tracing.otlp_endpoint`, its span and the child spans of what it waited for (the
//! upstream call, a key-set or access-token fetch, a token exchange) are exported in
//! batches by [`export`], off the request path.
//!
//! Spans are made with the OpenTelemetry API directly, not as `tracing` spans bridged by
//! tracing-opentelemetry: a `tracing` span per request would go through the log
//! subscriber too (its registry slot, its fields formatted for the JSON layer), on every
//! request, exported or not. Here a request with export off costs its `traceparent`
//! (read, two random ids, one header written) and nothing else.

mod context;
mod export;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use http::{HeaderMap, HeaderName, Method};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

pub use context::{Parent, format as format_traceparent, parse as parse_traceparent};
pub use export::{ExportCounts, TraceSetupError};

use super::Metrics;
use crate::config::TracingConfig;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Set once any sidecar in this process exports: until then [`child`] returns at once
/// without looking at the current context.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The process's tracing: the ratio for traces started here and, with an endpoint, the
/// tracer whose spans are exported.
#[derive(Clone)]
pub struct Tracing {
    sample_ratio: f64,
    exporter: Option<Exporting>,
}

#[derive(Clone)]
struct Exporting {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Tracing {
    /// `traceparent` continued, nothing exported.
    pub fn propagate_only(sample_ratio: f64) -> Tracing {
        Tracing {
            sample_ratio,
            exporter: None,
        }
    }

    /// From `[tracing]`: with an endpoint, a batch exporter sending through `client`,
    /// its counts registered with `metrics`.
    pub fn start(
        config: &TracingConfig,
        client: impl opentelemetry_http::HttpClient + 'static,
        metrics: &Metrics,
    ) -> Result<Tracing, TraceSetupError> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(Tracing::propagate_only(config.sample_ratio));
        };
        let counts = Arc::new(ExportCounts::default());
        let provider = export::provider(config, endpoint, client, Arc::clone(&counts))?;
        metrics.register(export::ExportCollector(counts));
        EXPORTING.store(true, Ordering::Relaxed);
        Ok(Tracing {
            sample_ratio: config.sample_ratio,
            exporter: Some(Exporting {
                tracer: provider.tracer("jtl-auth-sidecar"),
                provider,
            }),
        })
    }

    /// Whether spans are exported.
    pub fn exports(&self) -> bool {
        self.exporter.is_some()
    }

    /// Exports what is queued and stops the exporter (at shutdown). Blocks until done
    /// or its timeout: run it where blocking is allowed.
    pub fn shutdown(&self) {
        if let Some(exporter) = &self.exporter {
            // Already shut down, or the collector unreachable: counted, nothing to add.
            let _ = exporter.provider.shutdown();
        }
    }

    /// Starts the span of a request (`listener`: "ingress" or "egress") under the
    /// caller's `traceparent`, and makes the `traceparent` the next hop (the backend,
    /// JTL's API) gets: the same trace with the sidecar's span as parent
    /// ([`RequestSpan::pass_on`]). A request without a valid `traceparent` starts a
    /// trace. Only reads `headers`: the sidecar's own `traceparent` is set when the
    /// request is sent, after the passes over its headers, which so have one less to
    /// look at.
    pub fn request(
        &self,
        headers: &HeaderMap,
        listener: &'static str,
        method: &Method,
    ) -> RequestSpan {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let first = values.next();
        let sent = first.is_some();
        let parent = match (first, values.next()) {
            (Some(value), None) => context::parse(value.as_bytes()),
            _ => None,
        };
        let (next_hop, cx) = self.next_hop(parent, listener, method);
        RequestSpan {
            cx,
            next_hop,
            // A `tracestate` belongs to the `traceparent` it came with (W3C), not to the
            // trace started in place of a refused one. Without any `traceparent`, a lone
            // `tracestate` is the caller's error and is left as it came.
            drop_tracestate: sent && parent.is_none(),
        }
    }

    /// The ids of the sidecar's `traceparent` for the next hop and, with export, the
    /// span's context.
    fn next_hop(
        &self,
        parent: Option<Parent>,
        listener: &'static str,
        method: &Method,
    ) -> (Parent, Option<Context>) {
        let (trace_id, span_id, sampled, cx) = match &self.exporter {
            None => {
                let trace_id = parent.map_or_else(random_trace_id, |p| p.trace_id);
                let sampled = parent.is_some_and(|p| p.sampled)
                    || context::sampled_by_ratio(trace_id, self.sample_ratio);
                (trace_id, random_span_id(), sampled, None)
            }
            Some(exporter) => {
                let parent_cx = match parent {
                    Some(parent) => Context::new().with_remote_span_context(parent.span_context()),
                    None => Context::new(),
                };
                let span = exporter
                    .tracer
                    .span_builder(listener)
                    .with_kind(SpanKind::Server)
                    .with_attributes([
                        KeyValue::new("http.request.method", method.as_str().to_owned()),
                        KeyValue::new("jtl.listener", listener),
                    ])
                    .start_with_context(&exporter.tracer, &parent_cx);
                let span_context: SpanContext = span.span_context().clone();
                let cx = parent_cx
                    .with_span(span)
                    .with_value(ActiveTracer(exporter.tracer.clone()));
                (
                    span_context.trace_id(),
                    span_context.span_id(),
                    span_context.is_sampled(),
                    Some(cx),
                )
            }
        };
        let next_hop = Parent {
            trace_id,
            span_id,
            sampled,
        };
        (next_hop, cx)
    }
}

/// The tracer of the request being served, in its context for [`child`].
struct ActiveTracer(SdkTracer);

/// A request's span (exported, or nothing with export off) and the `traceparent` its
/// next hop gets.
pub struct RequestSpan {
    cx: Option<Context>,
    /// The next hop's parent: this span. Its header is written when the request is
    /// sent, not cloned (a clone of a fresh header value allocates).
    next_hop: Parent,
    drop_tracestate: bool,
}

impl RequestSpan {
    /// Sets the sidecar's `traceparent` on the request to the next hop, in place of the
    /// caller's (and drops a `tracestate` that came with a refused one).
    pub fn pass_on(&self, headers: &mut HeaderMap) {
        let Parent {
            trace_id,
            span_id,
            sampled,
        } = self.next_hop;
        headers.insert(TRACEPARENT, context::format(trace_id, span_id, sampled));
        if self.drop_tracestate {
            headers.remove(&TRACESTATE);
        }
    }

    /// Whether this request's span is exported (then its handling runs in
    /// [`Self::scope`]; a request that is not pays nothing for it).
    pub fn is_exported(&self) -> bool {
        self.cx.is_some()
    }

    /// Runs `future` (the request's handling) with this span current, so what it waits
    /// for ([`child`]) becomes a child span.
    pub fn scope<F: Future>(&self, future: F) -> InSpan<F> {
        InSpan {
            future,
            cx: self.cx.clone(),
        }
    }

    /// Ends the span with what became of the request. `route`: protected, public,
    /// preflight, connect-tenant or egress. Never a token or an identity header's value:
    /// the tenant id is the one identity an attribute holds.
    pub fn finish(
        self,
        route: &'static str,
        status: u16,
        outcome: &'static str,
        tenant_id: Option<&dyn std::fmt::Display>,
        path: &str,
        request_id: &str,
    ) {
        let Some(cx) = self.cx else { return };
        let span = cx.span();
        if !span.is_recording() {
            return;
        }
        let mut attributes = vec![
            KeyValue::new("jtl.route", route),
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("jtl.outcome", outcome),
            KeyValue::new("url.path", path.to_owned()),
            KeyValue::new("jtl.request_id", request_id.to_owned()),
        ];
        if let Some(tenant_id) = tenant_id {
            attributes.push(KeyValue::new("jtl.tenant_id", tenant_id.to_string()));
        }
        span.set_attributes(attributes);
        if status >= 500 {
            span.set_status(Status::error(outcome));
        }
        span.update_name(route);
        span.end();
    }
}

pin_project_lite::pin_project! {
    /// A future run inside a request's span (see [`RequestSpan::scope`]).
    pub struct InSpan<F> {
        #[pin]
        future: F,
        cx: Option<Context>,
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, task: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        match this.cx {
            Some(cx) => {
                let _attached = cx.clone().attach();
                this.future.poll(task)
            }
            None => this.future.poll(task),
        }
    }
}

/// A span for something a request waits for (the upstream call, a fetch, an exchange),
/// child of the request's span; empty (free) unless the current request is exported.
/// Ends when dropped.
pub struct ChildSpan(Option<opentelemetry_sdk::trace::Span>);

/// A child of the current request's span named `name`, of kind client.
pub fn child(name: &'static str) -> ChildSpan {
    if !EXPORTING.load(Ordering::Relaxed) {
        return ChildSpan(None);
    }
    let cx = Context::current();
    let Some(ActiveTracer(tracer)) = cx.get::<ActiveTracer>() else {
        return ChildSpan(None);
    };
    if !cx.span().is_recording() {
        return ChildSpan(None);
    }
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .start_with_context(tracer, &cx);
    ChildSpan(Some(span))
}

impl ChildSpan {
    /// Adds an attribute (a status code, a kind; never a token).
    pub fn set(&mut self, attribute: KeyValue) {
        if let Some(span) = &mut self.0 {
            span.set_attribute(attribute);
        }
    }

    /// Marks the span failed with a description (no values from the request).
    pub fn fail(&mut self, description: impl Into<std::borrow::Cow<'static, str>>) {
        if let Some(span) = &mut self.0 {
            span.set_status(Status::error(description));
        }
    }

    /// Records the answer's status code (5xx marks the span failed).
    pub fn status(&mut self, status: u16) {
        self.set(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            self.fail("server error");
        }
    }
}

// Ids from fastrand (wyrand, one state per thread): unique enough for traces, which
// need no secrecy, and a few instructions where the thread's ChaCha generator costs a
// hundred on every request.
fn random_trace_id() -> opentelemetry::trace::TraceId {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return opentelemetry::trace::TraceId::from(id);
        }
    }
}

fn random_span_id() -> opentelemetry::trace::SpanId {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return opentelemetry::trace::SpanId::from(id);
        }
    }
}
