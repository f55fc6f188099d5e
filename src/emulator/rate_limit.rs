//! JTL's API rate limits, as the emulator plays them: every API answer carries
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Interval-Length-Seconds`
//! (no `X-RateLimit-Reset`, and no `Retry-After` on the `429`). With a limit set
//! ([`super::Emulator::set_rate_limit`]), each tenant (`X-Tenant-ID`; requests without
//! one share a bucket of their own) gets `limit` requests per interval on the
//! emulator's clock, the interval starting with the tenant's first request in it; then
//! `429` with a JSON body until it ends. The API requests each tenant sent are counted,
//! so tests can tell what JTL never saw.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use super::lock;
use crate::clock::{Clock, duration_ms};

/// What the API reports while no limit is set (nothing is enforced then).
const UNLIMITED: Spent = Spent {
    limit: 1000,
    remaining: 999,
    interval_s: 60,
};

/// One answer's `X-RateLimit-*` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Spent {
    pub limit: u64,
    pub remaining: u64,
    pub interval_s: u64,
}

impl Spent {
    pub fn insert_into(self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert(
            "x-ratelimit-interval-length-seconds",
            HeaderValue::from(self.interval_s),
        );
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start_ms: i64,
    used: u64,
}

#[derive(Default)]
pub(super) struct RateLimits {
    /// `(limit, interval)`, when set.
    limit: Mutex<Option<(u64, Duration)>>,
    buckets: Mutex<HashMap<Option<String>, Bucket>>,
    /// API requests received per tenant (all of them, refused ones included).
    received: Mutex<HashMap<Option<String>, u64>>,
}

impl RateLimits {
    pub fn set(&self, limit: u64, interval: Duration) {
        *lock(&self.limit) = Some((limit, interval));
        lock(&self.buckets).clear();
    }

    /// An API request of `tenant` arrived (before anything else is looked at).
    pub fn count(&self, tenant: Option<String>) {
        *lock(&self.received).entry(tenant).or_default() += 1;
    }

    pub fn received(&self, tenant: Option<&str>) -> u64 {
        let key = tenant.map(str::to_ascii_lowercase);
        lock(&self.received).get(&key).copied().unwrap_or(0)
    }

    /// Spends one request of `tenant`'s budget: `Ok` with the headers of the answer, or
    /// `Err` with those of the `429` when the budget is used up.
    pub fn spend(&self, tenant: Option<String>, clock: &Clock) -> Result<Spent, Spent> {
        let Some((limit, interval)) = *lock(&self.limit) else {
            return Ok(UNLIMITED);
        };
        let interval_ms = duration_ms(interval).max(1);
        let now = clock.mono_ms();
        let mut buckets = lock(&self.buckets);
        let bucket = buckets.entry(tenant).or_insert(Bucket {
            start_ms: now,
            used: 0,
        });
        if now >= bucket.start_ms.saturating_add(interval_ms) {
            *bucket = Bucket {
                start_ms: now,
                used: 0,
            };
        }
        let spent = |used: u64| Spent {
            limit,
            remaining: limit.saturating_sub(used),
            interval_s: interval.as_secs().max(1),
        };
        if bucket.used >= limit {
            return Err(spent(bucket.used));
        }
        bucket.used += 1;
        Ok(spent(bucket.used))
    }
}

/// The tenant an API request names, lowercased (JTL reads the UUID in any case).
pub(super) fn tenant_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-tenant-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_ascii_lowercase)
}
