//! Logs (tracing, JSON or pretty: [`log`], [`json`]) and the Prometheus metrics
//! registry.

mod json;
mod log;

/// For the unit tests of the log formats: a writer into a shared buffer, as a
/// subscriber's `MakeWriter`.
#[cfg(test)]
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl Captured {
    /// Everything written so far.
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

pub use json::JsonLayer;
pub use log::{LogGuard, init_logging};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::jtl::Jtl;
use crate::sharded::{ShardedCounterMap, ShardedGauge, ShardedHistogram};
use crate::verify::TokenVerifier;

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

/// The request metrics of SPEC §9, written on the hot path by every worker thread, and
/// therefore sharded per thread (see [`crate::sharded`]); a scrape adds the shards up.
struct RequestMetrics {
    requests: ShardedCounterMap<RequestLabels>,
    verifications: ShardedCounterMap<VerificationLabels>,
    in_flight: [ShardedGauge; 2],
    verification: ShardedHistogram,
    upstream: [ShardedHistogram; 2],
}

/// Every metric of SPEC §9, registered once per server.
pub struct Metrics {
    registry: Registry,
    hot: Arc<RequestMetrics>,
    tenant_records: Arc<TenantRecords>,
    connections: Arc<ConnectionCounts>,
}

/// The listeners whose connections the admission counts, each within a budget of its
/// own (`server::admission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionListener {
    Ingress = 0,
    Egress = 1,
    Admin = 2,
}

impl ConnectionListener {
    pub const ALL: [ConnectionListener; 3] = [
        ConnectionListener::Ingress,
        ConnectionListener::Egress,
        ConnectionListener::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionListener::Ingress => "ingress",
            ConnectionListener::Egress => "egress",
            ConnectionListener::Admin => "admin",
        }
    }
}

/// Why a connection was closed by the admission (`server::admission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The oldest connection without a complete request, closed to make room.
    IdleBeforeRequest = 0,
    /// A new connection closed at once: at the limit, and every held one had a request
    /// in flight.
    Refused = 1,
    /// An idle connection that never carried a verified request (only `401`s, public
    /// paths or preflights), closed to make room: these go first.
    IdleUnverified = 2,
    /// An idle connection that carried a verified request, closed to make room: last.
    IdleVerified = 3,
    /// An HTTP/2 connection with no open stream for the idle timeout, sent `GOAWAY`.
    Http2IdleTimeout = 4,
    /// A connection whose responses its client left unread (an HTTP/2 window of 0, a
    /// socket not read) for seconds, closed to make room.
    Stalled = 5,
}

impl Shed {
    const ALL: [Shed; 6] = [
        Shed::IdleBeforeRequest,
        Shed::Refused,
        Shed::IdleUnverified,
        Shed::IdleVerified,
        Shed::Http2IdleTimeout,
        Shed::Stalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Shed::IdleBeforeRequest => "idle_before_request",
            Shed::Refused => "refused_at_limit",
            Shed::IdleUnverified => "idle_unverified",
            Shed::IdleVerified => "idle_verified",
            Shed::Http2IdleTimeout => "http2_idle_timeout",
            Shed::Stalled => "stalled_client",
        }
    }
}

/// The connections each listener holds, their limits, and those shed. Written once per
/// connection, not per request, so plain atomics.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    open: [AtomicUsize; 3],
    limit: [AtomicUsize; 3],
    shed: [[AtomicU64; 6]; 3],
}

impl ConnectionCounts {
    pub fn open(&self, listener: ConnectionListener) -> &AtomicUsize {
        &self.open[listener as usize]
    }

    pub fn set_limit(&self, listener: ConnectionListener, limit: usize) {
        self.limit[listener as usize].store(limit, Ordering::Relaxed);
    }

    pub fn count_shed(&self, listener: ConnectionListener, why: Shed) {
        self.shed[listener as usize][why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn shed_count(&self, listener: ConnectionListener, why: Shed) -> u64 {
        self.shed[listener as usize][why as usize].load(Ordering::Relaxed)
    }
}

/// What asking the store about a tenant seen on a request found (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantRecord {
    /// The store did not hold the tenant: it does now.
    Inserted = 0,
    /// The store held the tenant already (left as it was).
    Known = 1,
    /// The store could not be asked, or refused the insert: tried again on a later
    /// request of the tenant.
    Failure = 2,
    /// Not asked: too many records were in flight (a slow store); tried again on a
    /// later request of the tenant.
    Skipped = 3,
}

impl TenantRecord {
    const ALL: [TenantRecord; 4] = [
        TenantRecord::Inserted,
        TenantRecord::Known,
        TenantRecord::Failure,
        TenantRecord::Skipped,
    ];

    fn as_str(self) -> &'static str {
        match self {
            TenantRecord::Inserted => "inserted",
            TenantRecord::Known => "known",
            TenantRecord::Failure => "failure",
            TenantRecord::Skipped => "skipped",
        }
    }
}

/// The recorder of tenants seen on requests: its results, and how many records are in
/// flight. Written only when a tenant is not known yet (rarely), so plain atomics.
#[derive(Debug, Default)]
pub struct TenantRecords {
    results: [AtomicU64; 4],
    in_flight: AtomicUsize,
}

impl TenantRecords {
    pub fn count(&self, result: TenantRecord) {
        self.results[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one more record in flight, unless `limit` are already: then `false`.
    pub fn begin(&self, limit: usize) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// One record (counted by a `begin` that returned `true`) is over.
    pub fn end(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Registers the request metrics and collectors that read the JTL client's and the
    /// verifier's counters at scrape time.
    pub fn new(jtl: &Jtl, verifier: &Arc<TokenVerifier>) -> Arc<Metrics> {
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
        registry.register_collector(Box::new(JtlCollector {
            jtl: jtl.clone(),
            verifier: Arc::clone(verifier),
        }));
        let tenant_records = Arc::new(TenantRecords::default());
        registry.register_collector(Box::new(TenantRecordCollector(Arc::clone(&tenant_records))));
        let connections = Arc::new(ConnectionCounts::default());
        registry.register_collector(Box::new(ConnectionCollector(Arc::clone(&connections))));
        registry.register_collector(Box::new(LogCollector));
        Arc::new(Metrics {
            registry,
            hot,
            tenant_records,
            connections,
        })
    }

    /// The connection counts the admission keeps (`server::admission`).
    pub fn connections(&self) -> &Arc<ConnectionCounts> {
        &self.connections
    }

    /// The counts of the tenants recorded on request (SPEC §7).
    pub fn tenant_records(&self) -> &TenantRecords {
        &self.tenant_records
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
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
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

impl prometheus_client::collector::Collector for RequestCollector {
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

/// Reads the fetch and cache counters kept by the JTL client and the verifier.
struct JtlCollector {
    jtl: Jtl,
    verifier: Arc<TokenVerifier>,
}

impl std::fmt::Debug for JtlCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JtlCollector")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

fn encode_counts(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counts: [(&'static str, u64); 2],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (result, count) in counts {
        let labels = ResultLabels { result };
        let metric = family.encode_family(&labels)?;
        ConstCounter::new(count).encode(metric)?;
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
            [
                ("success", tokens.succeeded.load(Ordering::Relaxed)),
                ("failure", tokens.failed.load(Ordering::Relaxed)),
            ],
        )?;
        // Summed over the key sets (two in `both`); a failed fetch's log line names its
        // set (`flow`, `url`), and `/readyz` which one is missing.
        let key_sets = &self.jtl.key_sets;
        let sum = |pick: fn(&crate::jtl::jwks::KeyFetchCounts) -> &AtomicU64| {
            key_sets
                .iter()
                .map(|keys| pick(keys.counts()).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        encode_counts(
            &mut encoder,
            "jwks_fetches",
            "Key-set fetches from JTL, by result",
            [
                ("success", sum(|c| &c.succeeded)),
                ("failure", sum(|c| &c.failed)),
            ],
        )?;
        let waiting = key_sets.iter().map(|keys| keys.waiting()).sum::<usize>();
        let waiting = i64::try_from(waiting).unwrap_or(i64::MAX);
        ConstGauge::new(waiting).encode(encoder.encode_descriptor(
            "jwks_waiting_requests",
            "Requests waiting for a key-set fetch made after they arrived (a key not in the cached set)",
            None,
            MetricType::Gauge,
        )?)?;
        // Always exposed (zeros without `[shared_cache]`), so dashboards need no guard.
        let shared = self.jtl.tokens.shared_counts();
        let count = |pick: fn(&crate::shared_cache::SharedCounts) -> &AtomicU64| {
            shared.map_or(0, |counts| pick(counts).load(Ordering::Relaxed))
        };
        let mut family = encoder.encode_descriptor(
            "shared_token",
            "The access token shared through Redis (shared_cache): entries read, hits (used \
             without asking JTL), waits for another replica, locks won (asked JTL for all), \
             Redis errors",
            None,
            MetricType::Counter,
        )?;
        for (event, value) in [
            ("read", count(|c| &c.reads)),
            ("hit", count(|c| &c.hits)),
            ("wait", count(|c| &c.waits)),
            ("lock_won", count(|c| &c.lock_wins)),
            ("error", count(|c| &c.errors)),
        ] {
            ConstCounter::new(value).encode(family.encode_family(&EventLabels { event })?)?;
        }
        let cache = self.verifier.cache_counts();
        encode_counts(
            &mut encoder,
            "verified_cache_lookups",
            "Verified-token cache lookups, by result",
            [("hit", cache.hits.get()), ("miss", cache.misses.get())],
        )?;
        Ok(())
    }
}

/// Reads the tenant recorder's counts at scrape time.
#[derive(Debug)]
struct TenantRecordCollector(Arc<TenantRecords>);

impl prometheus_client::collector::Collector for TenantRecordCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let records = &self.0;
        let mut family = encoder.encode_descriptor(
            "tenant_records",
            "Tenants seen on verified requests and not known in memory, by what the store \
             said: inserted, known (held already), failure (tried again later), skipped \
             (too many in flight, tried again later)",
            None,
            MetricType::Counter,
        )?;
        for result in TenantRecord::ALL {
            let labels = ResultLabels {
                result: result.as_str(),
            };
            let count = records.results[result as usize].load(Ordering::Relaxed);
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        let in_flight = i64::try_from(records.in_flight()).unwrap_or(i64::MAX);
        ConstGauge::new(in_flight).encode(encoder.encode_descriptor(
            "tenant_records_in_flight",
            "Tenants being recorded in the store now",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

/// Reads the admission's connection counts at scrape time.
#[derive(Debug)]
struct ConnectionCollector(Arc<ConnectionCounts>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ShedLabels {
    listener: &'static str,
    reason: &'static str,
}

impl prometheus_client::collector::Collector for ConnectionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = &self.0;
        for (name, help, values) in [
            (
                "connections_open",
                "Client connections held now, by listener",
                &counts.open,
            ),
            (
                "connection_limit",
                "Client connections held at most, by listener (budgets from RLIMIT_NOFILE)",
                &counts.limit,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for listener in ConnectionListener::ALL {
                let value = values[listener as usize].load(Ordering::Acquire);
                let labels = ListenerLabels {
                    listener: listener.as_str(),
                };
                ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "connections_shed",
            "Client connections closed to stay within a listener's connection budget: \
             the oldest idle one (idle_unverified first: it never carried a verified \
             request; then stalled_client: responses left unread; then idle_before_request; \
             then idle_verified), an HTTP/2 connection idle past the idle timeout \
             (http2_idle_timeout), or a new one when every held connection was being \
             answered (refused_at_limit)",
            None,
            MetricType::Counter,
        )?;
        for listener in ConnectionListener::ALL {
            for why in Shed::ALL {
                let labels = ShedLabels {
                    listener: listener.as_str(),
                    reason: why.as_str(),
                };
                ConstCounter::new(counts.shed_count(listener, why))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Reads the log writer's count of dropped lines (one per process) at scrape time.
#[derive(Debug)]
struct LogCollector;

impl prometheus_client::collector::Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        ConstCounter::new(log::dropped_lines()).encode(encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because stdout took them more slowly than they came (the \
             log writer's queue was full)",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_records_in_flight_stop_at_the_limit_and_never_go_below_zero() {
        let records = TenantRecords::default();
        assert!(records.begin(2));
        assert!(records.begin(2));
        assert!(!records.begin(2), "a third record past the limit of 2");
        assert_eq!(records.in_flight(), 2);
        records.end();
        assert!(records.begin(2));
        records.end();
        records.end();
        records.end();
        assert_eq!(records.in_flight(), 0);
    }
}
