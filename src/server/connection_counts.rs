//! The connections each listener holds, their limits and those the admission shed
//! ([`super::admission`]), and their collector for `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::telemetry::{Collector, DescriptorEncoder, Metrics};

/// The listeners whose connections the admission counts, each within a budget of its
/// own.
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

/// Why a connection was closed by the admission.
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
    /// New counts, read by `/metrics` from now on.
    pub fn registered(metrics: &Metrics) -> Arc<ConnectionCounts> {
        let counts = Arc::new(ConnectionCounts::default());
        metrics.register(ConnectionCollector(Arc::clone(&counts)));
        counts
    }

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

/// Reads the admission's connection counts at scrape time.
#[derive(Debug)]
struct ConnectionCollector(Arc<ConnectionCounts>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ShedLabels {
    listener: &'static str,
    reason: &'static str,
}

impl Collector for ConnectionCollector {
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
