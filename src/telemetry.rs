//! Logs (tracing, JSON or pretty) and the Prometheus metrics registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::jtl::Jtl;
use crate::verify::SessionVerifier;

/// Installs the global tracing subscriber: `log.level` unless `RUST_LOG` is set, in
/// `log.format`. `to_stderr` keeps stdout free for `dev`'s instructions. Does nothing
/// when a subscriber is already installed (tests start several servers).
pub fn init_logging(config: &LogConfig, to_stderr: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match (config.format, to_stderr) {
        (LogFormat::Json, false) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Json, true) => builder
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .try_init(),
        (LogFormat::Pretty, false) => builder.try_init(),
        (LogFormat::Pretty, true) => builder.with_writer(std::io::stderr).try_init(),
    };
    let _ = result;
}

/// Which listener a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    Ingress = 0,
    Egress = 1,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Ingress => "ingress",
            Listener::Egress => "egress",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    outcome: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// Every metric of SPEC §9, registered once per server.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// Per listener, looked up once: the hot path does not hash labels for these.
    in_flight: [Gauge; 2],
    verification_seconds: Histogram,
    upstream_seconds: [Histogram; 2],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Latency buckets from 50 µs (a cache hit) to 30 s (a slow upstream).
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0, 30.0,
    ]
    .into_iter()
}

impl Metrics {
    /// Registers the request metrics and collectors that read the JTL client's and the
    /// verifier's counters at scrape time.
    pub fn new(jtl: &Jtl, verifier: &Arc<SessionVerifier>) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("jtl_sidecar");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by listener, outcome and HTTP status",
            requests.clone(),
        );
        let in_flight = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "requests_in_flight",
            "Requests being handled now",
            in_flight.clone(),
        );
        let verification_seconds = Histogram::new(latency_buckets());
        registry.register(
            "verification_duration_seconds",
            "Time to verify a session token (cache hits included)",
            verification_seconds.clone(),
        );
        let upstream_seconds = Family::<ListenerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "upstream_duration_seconds",
            "Time until the upstream (backend or JTL API) sent response headers",
            upstream_seconds.clone(),
        );
        registry.register_collector(Box::new(JtlCollector {
            jtl: jtl.clone(),
            verifier: Arc::clone(verifier),
        }));
        let per_listener = |listener: Listener| ListenerLabels {
            listener: listener.as_str(),
        };
        let in_flight = [Listener::Ingress, Listener::Egress]
            .map(|l| in_flight.get_or_create(&per_listener(l)).clone());
        let upstream_seconds = [Listener::Ingress, Listener::Egress]
            .map(|l| upstream_seconds.get_or_create(&per_listener(l)).clone());
        Arc::new(Metrics {
            registry,
            requests,
            in_flight,
            verification_seconds,
            upstream_seconds,
        })
    }

    pub fn count_request(&self, listener: Listener, outcome: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                listener: listener.as_str(),
                outcome,
                status,
            })
            .inc();
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn in_flight(&self, listener: Listener) -> InFlight {
        let gauge = self.in_flight[listener as usize].clone();
        gauge.inc();
        InFlight { gauge }
    }

    pub fn observe_verification(&self, seconds: f64) {
        self.verification_seconds.observe(seconds);
    }

    pub fn observe_upstream(&self, listener: Listener, seconds: f64) {
        self.upstream_seconds[listener as usize].observe(seconds);
    }

    /// The Prometheus text exposition (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Counts one request in flight until dropped.
pub struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Reads the fetch and cache counters kept by the JTL client and the verifier.
struct JtlCollector {
    jtl: Jtl,
    verifier: Arc<SessionVerifier>,
}

impl std::fmt::Debug for JtlCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JtlCollector")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

fn encode_counts(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counts: [(&'static str, &AtomicU64); 2],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (result, count) in counts {
        let labels = ResultLabels { result };
        let metric = family.encode_family(&labels)?;
        ConstCounter::new(count.load(Ordering::Relaxed)).encode(metric)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for JtlCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tokens = self.jtl.tokens.counts();
        encode_counts(
            &mut encoder,
            "token_fetches",
            "Access-token requests to JTL, by result",
            [("success", &tokens.succeeded), ("failure", &tokens.failed)],
        )?;
        let keys = self.jtl.keys.counts();
        encode_counts(
            &mut encoder,
            "jwks_fetches",
            "Key-set fetches from JTL, by result",
            [("success", &keys.succeeded), ("failure", &keys.failed)],
        )?;
        let cache = self.verifier.cache_counts();
        encode_counts(
            &mut encoder,
            "verified_cache_lookups",
            "Verified-token cache lookups, by result",
            [("hit", &cache.hits), ("miss", &cache.misses)],
        )?;
        Ok(())
    }
}
