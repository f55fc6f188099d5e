//! The Prometheus registry (SPEC §9) and the request metrics the proxy writes on the
//! hot path. Other modules register collectors of their own ([`Metrics::register`]);
//! the helpers here keep their families spelled alike.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;

use crate::sharded::{ShardedCounterMap, ShardedGauge, ShardedHistogram};

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

/// A token verification's labels: the kind of token (`app-token`, `session-token`, or
/// `unknown` for one too malformed to say, where both are accepted) and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VerificationLabels {
    flow: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

const LISTENERS: [Listener; 2] = [Listener::Ingress, Listener::Egress];

/// Latency buckets from 50 µs (a cache hit) to 30 s (a slow upstream).
static LATENCY_BUCKETS: [f64; 18] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];

/// The request metrics, written on the hot path by every worker thread, and therefore
/// sharded per thread (see [`crate::sharded`]); a scrape adds the shards up.
struct RequestMetrics {
    requests: ShardedCounterMap<RequestLabels>,
    verifications: ShardedCounterMap<VerificationLabels>,
    in_flight: [ShardedGauge; 2],
    verification: ShardedHistogram,
    upstream: [ShardedHistogram; 2],
}

/// The registry of one server: the request metrics, the log writer's drops, and every
/// collector another module registered.
pub struct Metrics {
    /// Locked to register (at start) and to encode (per scrape), never per request.
    registry: Mutex<Registry>,
    hot: Arc<RequestMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A registry with the request metrics and the log writer's count of dropped lines.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("jtl_sidecar");
        let hot = Arc::new(RequestMetrics {
            requests: ShardedCounterMap::default(),
            verifications: ShardedCounterMap::default(),
            in_flight: Default::default(),
            verification: ShardedHistogram::new(&LATENCY_BUCKETS),
            upstream: [
                ShardedHistogram::new(&LATENCY_BUCKETS),
                ShardedHistogram::new(&LATENCY_BUCKETS),
            ],
        });
        registry.register_collector(Box::new(RequestCollector(Arc::clone(&hot))));
        registry.register_collector(Box::new(LogCollector));
        Arc::new(Metrics {
            registry: Mutex::new(registry),
            hot,
        })
    }

    /// Adds a module's collector: it is asked for its families at every scrape, under
    /// the `jtl_sidecar_` prefix.
    pub fn register(&self, collector: impl Collector) {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .register_collector(Box::new(collector));
    }

    pub fn count_request(&self, listener: Listener, outcome: &'static str, status: u16) {
        self.hot.requests.inc(RequestLabels {
            listener: listener.as_str(),
            outcome,
            status,
        });
    }

    /// Counts a request as in flight until the guard is dropped. The guard borrows the
    /// gauge: cloning the shared `Arc` per request would put back the cross-thread
    /// reference count the sharding avoids.
    pub fn in_flight(&self, listener: Listener) -> InFlight<'_> {
        let gauge = &self.hot.in_flight[listener as usize];
        gauge.add(1);
        InFlight { gauge }
    }

    /// One token verification: its time, and its outcome by kind of token (`flow` is a
    /// [`crate::jose::TokenKind::label`], or `unknown`).
    pub fn observe_verification(
        &self,
        elapsed: Duration,
        flow: &'static str,
        outcome: &'static str,
    ) {
        self.hot.verification.observe(elapsed);
        self.hot
            .verifications
            .inc(VerificationLabels { flow, outcome });
    }

    pub fn observe_upstream(&self, listener: Listener, elapsed: Duration) {
        self.hot.upstream[listener as usize].observe(elapsed);
    }

    /// The Prometheus text exposition (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Counts one request in flight until dropped.
pub struct InFlight<'a> {
    gauge: &'a ShardedGauge,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge.add(-1);
    }
}

/// One counter family with one label (`label_name`, e.g. `result` or `event`), a
/// series per value.
pub fn encode_counts<const N: usize>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label_name: &'static str,
    counts: [(&'static str, u64); N],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in counts {
        let labels = [(label_name, value)];
        ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One counter without labels.
pub fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    count: u64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(count).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

/// One gauge without labels (a count that saturates rather than wraps).
pub fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: usize,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Gauge,
    )?)
}

/// Encodes the sharded request metrics at scrape time.
struct RequestCollector(Arc<RequestMetrics>);

impl std::fmt::Debug for RequestCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestCollector")
    }
}

fn encode_histogram(
    metric: prometheus_client::encoding::MetricEncoder<'_>,
    histogram: &ShardedHistogram,
) -> Result<(), std::fmt::Error> {
    let mut metric = metric;
    let snapshot = histogram.snapshot();
    metric.encode_histogram::<NoLabelSet>(snapshot.sum_s, snapshot.count, &snapshot.buckets, None)
}

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let hot = &self.0;
        let mut family = encoder.encode_descriptor(
            "requests",
            "Requests answered, by listener, outcome and HTTP status",
            None,
            MetricType::Counter,
        )?;
        for (labels, count) in hot.requests.totals() {
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "requests_in_flight",
            "Requests being handled now",
            None,
            MetricType::Gauge,
        )?;
        for listener in LISTENERS {
            let labels = ListenerLabels {
                listener: listener.as_str(),
            };
            let in_flight = hot.in_flight[listener as usize].get().max(0);
            ConstGauge::new(in_flight).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "verifications",
            "Token verifications, by kind of token (flow: app-token, session-token, unknown) \
             and outcome (verified, invalid_token, other_flow_token, keys_unavailable, \
             keys_crowded)",
            None,
            MetricType::Counter,
        )?;
        for (labels, count) in hot.verifications.totals() {
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        let metric = encoder.encode_descriptor(
            "verification_duration_seconds",
            "Time to verify a token (app token or session token; cache hits included)",
            None,
            MetricType::Histogram,
        )?;
        encode_histogram(metric, &hot.verification)?;
        let mut family = encoder.encode_descriptor(
            "upstream_duration_seconds",
            "Time until the upstream (backend or JTL API) sent response headers",
            None,
            MetricType::Histogram,
        )?;
        for listener in LISTENERS {
            let labels = ListenerLabels {
                listener: listener.as_str(),
            };
            encode_histogram(
                family.encode_family(&labels)?,
                &hot.upstream[listener as usize],
            )?;
        }
        Ok(())
    }
}

/// Reads the log writer's count of dropped lines (one per process) at scrape time.
#[derive(Debug)]
struct LogCollector;

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_counter(
            &mut encoder,
            "log_lines_dropped",
            "Log lines dropped because stdout took them more slowly than they came (the \
             log writer's queue was full)",
            super::log::dropped_lines(),
        )
    }
}
