//! The OTLP/HTTP (protobuf) exporter behind the SDK's batch processor: spans wait in a
//! bounded queue and leave from the processor's own thread, so a slow or dead collector
//! costs requests nothing (spans beyond the queue are dropped). Failed exports are
//! counted and logged when they start and when they stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HttpClient;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SamplingDecision, SamplingResult, SdkTracerProvider,
    ShouldSample, SpanData, SpanExporter,
};
use url::Url;

use crate::config::TracingConfig;
use crate::telemetry::{Collector, DescriptorEncoder, encode_counter, encode_counts};

/// How long one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Spans waiting for export; beyond this they are dropped, never waited for.
const QUEUE_SPANS: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[error("tracing.otlp_endpoint: the exporter could not be set up: {0}")]
pub struct TraceSetupError(String);

impl TraceSetupError {
    pub fn new(reason: impl Into<String>) -> TraceSetupError {
        TraceSetupError(reason.into())
    }
}

/// What became of the exports, for `/metrics`.
#[derive(Debug, Default)]
pub struct ExportCounts {
    succeeded: AtomicU64,
    failed: AtomicU64,
    /// Spans in failed exports: lost.
    spans_lost: AtomicU64,
    /// Whether the last export failed: a failure is logged when a run of them starts.
    failing: AtomicBool,
}

impl ExportCounts {
    /// Exports (batches) that reached the collector and that did not.
    pub fn exports(&self) -> (u64, u64) {
        (
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The tracer provider: parent-based sampling (a sampled parent is followed; traces
/// started here, or under a parent that is not sampled, by `sample_ratio`), batches to
/// `endpoint` through `client`.
pub(super) fn provider(
    config: &TracingConfig,
    endpoint: &Url,
    client: impl HttpClient + 'static,
    counts: Arc<ExportCounts>,
) -> Result<SdkTracerProvider, TraceSetupError> {
    let otlp = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TraceSetupError(e.to_string()))?;
    let exporter = Counted {
        inner: otlp,
        counts,
        endpoint: endpoint.to_string(),
    };
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE_SPANS)
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_sampler(SampledParentOrRatio(config.sample_ratio))
        .with_resource(
            Resource::builder_empty()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .with_span_processor(batches)
        .build())
}

/// A sampled parent is followed, and so is the sidecar's own span for its children;
/// a trace started here, or under a caller's parent that is not sampled, is sampled by
/// `tracing.sample_ratio` (the same decision as [`super::context::sampled_by_ratio`]
/// makes with export off).
#[derive(Debug, Clone)]
struct SampledParentOrRatio(f64);

impl ShouldSample for SampledParentOrRatio {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent.filter(|cx| cx.has_active_span());
        let sampled = match parent.map(|cx| cx.span().span_context().clone()) {
            Some(parent) if parent.is_sampled() => true,
            Some(parent) if !parent.is_remote() => false,
            _ => super::context::sampled_by_ratio(trace_id, self.0),
        };
        SamplingResult {
            decision: if sampled {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::Drop
            },
            attributes: Vec::new(),
            trace_state: parent
                .map(|cx| cx.span().span_context().trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

/// The OTLP exporter, counting what became of each batch.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    counts: Arc<ExportCounts>,
    /// For the log line (no credentials: the endpoint holds none).
    endpoint: String,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        let counts = &self.counts;
        match &result {
            Ok(()) => {
                counts.succeeded.fetch_add(1, Ordering::Relaxed);
                if counts.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "spans reach the OTLP collector again");
                }
            }
            Err(error) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                counts.spans_lost.fetch_add(spans, Ordering::Relaxed);
                if !counts.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        "exporting spans failed, they are dropped (requests are not affected; counted in jtl_sidecar_trace_exports_total): {error}"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// `jtl_sidecar_trace_exports_total{result}` and `jtl_sidecar_trace_spans_lost_total`.
#[derive(Debug)]
pub(super) struct ExportCollector(pub(super) Arc<ExportCounts>);

impl Collector for ExportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (succeeded, failed) = self.0.exports();
        encode_counts(
            &mut encoder,
            "trace_exports",
            "Batches of spans sent to the OTLP collector (tracing.otlp_endpoint), by result",
            "result",
            [("success", succeeded), ("failure", failed)],
        )?;
        encode_counter(
            &mut encoder,
            "trace_spans_lost",
            "Spans in batches the OTLP collector did not take",
            self.0.spans_lost.load(Ordering::Relaxed),
        )
    }
}
