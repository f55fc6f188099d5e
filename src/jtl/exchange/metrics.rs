//! The token exchange's counts by kind and event (never by user or tenant), and their
//! collector for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use super::{ExchangeKind, TokenExchange};
use crate::telemetry::{Collector, DescriptorEncoder, Metrics};

/// What happened when a token was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Handed out from the cache.
    Cached = 0,
    /// Exchanged afresh.
    Minted = 1,
    /// Refreshed with its refresh token.
    Refreshed = 2,
    /// JTL refused the exchange (passed back to the caller).
    Refused = 3,
    /// JTL unreachable, or its answer unusable.
    Failed = 4,
    /// Taken from the shared entry another replica wrote (`[shared_cache]`).
    Shared = 5,
}

impl Event {
    const ALL: [Event; 6] = [
        Event::Cached,
        Event::Shared,
        Event::Minted,
        Event::Refreshed,
        Event::Refused,
        Event::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Event::Cached => "cached",
            Event::Minted => "minted",
            Event::Refreshed => "refreshed",
            Event::Refused => "refused",
            Event::Failed => "failed",
            Event::Shared => "shared",
        }
    }
}

const KINDS: [ExchangeKind; 2] = [ExchangeKind::User, ExchangeKind::Tenant];

/// Counts per kind and event; plain atomics (an exchange is rare next to requests).
#[derive(Debug, Default)]
pub struct ExchangeCounts {
    counts: [[AtomicU64; 6]; 2],
}

impl ExchangeCounts {
    pub(super) fn count(&self, kind: ExchangeKind, event: Event) {
        self.counts[kind as usize][event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How often `event` happened for `kind`.
    pub fn get(&self, kind: ExchangeKind, event: Event) -> u64 {
        self.counts[kind as usize][event as usize].load(Ordering::Relaxed)
    }
}

impl TokenExchange {
    /// Registers the collector of the exchange's counts.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register(ExchangeCollector(self.clone()));
    }
}

struct ExchangeCollector(TokenExchange);

impl std::fmt::Debug for ExchangeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExchangeCollector")
    }
}

impl Collector for ExchangeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.counts();
        let mut family = encoder.encode_descriptor(
            "token_exchanges",
            "Exchanged tokens asked for on the egress (X-JTL-Act-As), by kind (user, tenant) \
             and event: cached (from memory), shared (from another replica, through \
             Redis), minted, refreshed, refused (JTL's refusal passed back), failed (JTL \
             unreachable or its answer unusable)",
            None,
            MetricType::Counter,
        )?;
        for kind in KINDS {
            for event in Event::ALL {
                let labels = [("kind", kind.as_str()), ("event", event.as_str())];
                ConstCounter::new(counts.get(kind, event))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
