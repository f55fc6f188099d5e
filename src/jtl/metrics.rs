//! The JTL client's counts at scrape time: access-token fetches, key-set fetches and
//! the requests waiting for one, and the access token shared through Redis.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Jtl;
use super::jwks::KeyFetchCounts;
use crate::shared_cache::SharedCounts;
use crate::telemetry::{Collector, DescriptorEncoder, Metrics, encode_counts, encode_gauge};

impl Jtl {
    /// Registers the collector of this client's counts.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register(JtlCollector(self.clone()));
        self.exchange.register_metrics(metrics);
    }
}

struct JtlCollector(Jtl);

impl std::fmt::Debug for JtlCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JtlCollector")
    }
}

impl Collector for JtlCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tokens = self.0.tokens.counts();
        encode_counts(
            &mut encoder,
            "token_fetches",
            "Access-token requests to JTL, by result",
            "result",
            [
                ("success", tokens.succeeded.load(Ordering::Relaxed)),
                ("failure", tokens.failed.load(Ordering::Relaxed)),
            ],
        )?;
        // Summed over the key sets (two in `both`); a failed fetch's log line names its
        // set (`flow`, `url`), and `/readyz` which one is missing.
        let key_sets = &self.0.key_sets;
        let sum = |pick: fn(&KeyFetchCounts) -> &AtomicU64| {
            key_sets
                .iter()
                .map(|keys| pick(keys.counts()).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        encode_counts(
            &mut encoder,
            "jwks_fetches",
            "Key-set fetches from JTL, by result",
            "result",
            [
                ("success", sum(|c| &c.succeeded)),
                ("failure", sum(|c| &c.failed)),
            ],
        )?;
        encode_gauge(
            &mut encoder,
            "jwks_waiting_requests",
            "Requests waiting for a key-set fetch made after they arrived (a key not in the \
             cached set)",
            key_sets.iter().map(|keys| keys.waiting()).sum::<usize>(),
        )?;
        // Always exposed (zeros without `[shared_cache]`), so dashboards need no guard.
        let shared = self.0.tokens.shared_counts();
        let count = |pick: fn(&SharedCounts) -> &AtomicU64| {
            shared.map_or(0, |counts| pick(counts).load(Ordering::Relaxed))
        };
        encode_counts(
            &mut encoder,
            "shared_token",
            "The access token shared through Redis (shared_cache): entries read, hits (used \
             without asking JTL), waits for another replica, locks won (asked JTL for all), \
             Redis errors",
            "event",
            [
                ("read", count(|c| &c.reads)),
                ("hit", count(|c| &c.hits)),
                ("wait", count(|c| &c.waits)),
                ("lock_won", count(|c| &c.lock_wins)),
                ("error", count(|c| &c.errors)),
            ],
        )
    }
}
