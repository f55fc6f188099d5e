//! JTL's rate limits on the egress listener: each tenant (`X-Tenant-ID`; requests
//! without one spend the app's own budget) is kept within the budget JTL reports in
//! `X-RateLimit-Remaining` and `X-RateLimit-Interval-Length-Seconds`.
//!
//! A tenant whose budget is spent (`Remaining` 0, or a `429` from JTL) is *blocked* until
//! the end of the interval, counted from when that answer arrived (or until JTL's
//! `Retry-After`, should one come). Its next requests wait for that moment on the clock,
//! at most `egress.rate_limit_max_wait_ms`; one that would wait longer is answered `429`
//! by the sidecar and never sent. Other tenants are not slowed.
//!
//! Only spent budgets are kept: a tenant with budget left needs nothing remembered, so a
//! request of such a tenant costs one header lookup on the answer and, while no tenant at
//! all is blocked, one atomic load before it is sent. An answer that says budget is left
//! does not end a block early: while a tenant is blocked, such answers come from requests
//! sent before the block and tell nothing about the interval to come.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::ProxyBody;
use super::errors::{ErrorCode, error_response};
use crate::clock::{Clock, duration_ms};
use crate::config::EgressConfig;
use crate::telemetry::{Collector, DescriptorEncoder, Metrics, encode_counter, encode_gauge};

pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_INTERVAL: HeaderName =
    HeaderName::from_static("x-ratelimit-interval-length-seconds");

/// Tenants whose spent budget is remembered at most (plus those with a request waiting);
/// the least recently used are dropped and start again with an unknown budget.
pub const MAX_TENANTS: usize = 100_000;
/// Requests waiting for a budget at most, all tenants together; beyond, `429` at once.
pub const MAX_WAITING: usize = 10_000;
/// The longest interval or `Retry-After` taken from JTL (a day); a longer one is
/// ignored as absurd rather than blocking a tenant for years.
const MAX_SECONDS: u64 = 86_400;
/// How long a `429` from JTL that says neither the interval nor `Retry-After` blocks.
const UNSPECIFIED_PAUSE_MS: i64 = 1_000;

/// Whose budget a request spends: a tenant's (its UUID, so any spelling of one tenant is
/// one budget) or, without `X-Tenant-ID`, the app's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BudgetKey(Option<u128>);

impl BudgetKey {
    /// The budget of a request with this (already validated) `X-Tenant-ID`, if any.
    pub fn of(tenant_id: Option<&HeaderValue>) -> BudgetKey {
        BudgetKey::of_tenant(tenant_id.map(HeaderValue::as_bytes))
    }

    /// The same from the validated tenant id's bytes.
    pub fn of_tenant(tenant_id: Option<&[u8]>) -> BudgetKey {
        BudgetKey(
            tenant_id
                .and_then(|bytes| uuid::Uuid::try_parse_ascii(bytes).ok())
                .map(|uuid| uuid.as_u128()),
        )
    }
}

/// A tenant whose budget is (or was) spent.
#[derive(Debug, Clone, Copy)]
struct Blocked {
    /// Until when (monotonic ms) its requests wait.
    until_ms: i64,
    /// `X-RateLimit-Limit` as JTL last reported it with the block, for the log.
    limit: Option<u64>,
    /// Requests of this tenant waiting now.
    waiters: u32,
}

type Map = HashMap<BudgetKey, Blocked, ahash::RandomState>;

/// A map bounded by generations: entries used since the last turn live in `current`;
/// at a turn `previous` (everything not used for a whole generation, so less recently
/// used than anything kept) is dropped, apart from tenants with a request waiting.
/// Constant time per operation, at most `2 × generation` entries (plus waiting tenants).
struct Budgets {
    current: Map,
    previous: Map,
    generation: usize,
}

impl Budgets {
    fn new(max_tenants: usize) -> Budgets {
        Budgets {
            current: Map::default(),
            previous: Map::default(),
            generation: (max_tenants / 2).max(1),
        }
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    fn get(&self, key: BudgetKey) -> Option<&Blocked> {
        self.current.get(&key).or_else(|| self.previous.get(&key))
    }

    /// The entry, moved into the current generation (it is being used).
    fn get_mut(&mut self, key: BudgetKey) -> Option<&mut Blocked> {
        if !self.current.contains_key(&key) {
            let entry = self.previous.remove(&key)?;
            self.insert(key, entry);
        }
        self.current.get_mut(&key)
    }

    fn insert(&mut self, key: BudgetKey, entry: Blocked) {
        if self.current.len() >= self.generation && !self.current.contains_key(&key) {
            let older = std::mem::replace(&mut self.previous, std::mem::take(&mut self.current));
            // A tenant with a request waiting stays: dropping it would let the waiter
            // through early and lose it from the gauge.
            self.current
                .extend(older.into_iter().filter(|(_, blocked)| blocked.waiters > 0));
        }
        self.current.insert(key, entry);
    }
}

/// The counts `/metrics` shows.
#[derive(Debug, Default)]
struct Counts {
    delayed: AtomicU64,
    refused: AtomicU64,
    jtl_429: AtomicU64,
    waiting_tenants: AtomicUsize,
}

pub struct RateLimits {
    enabled: bool,
    max_wait_ms: i64,
    clock: Clock,
    /// The latest end of any block: while the clock is past it no tenant is blocked, and
    /// a request goes on without a lookup.
    latest_block_ms: AtomicI64,
    budgets: Mutex<Budgets>,
    /// Requests waiting now, all tenants.
    waiting: AtomicUsize,
    counts: Arc<Counts>,
}

impl RateLimits {
    /// `egress.rate_limits` and `egress.rate_limit_max_wait_ms`; registers its metrics.
    pub fn new(settings: &EgressConfig, clock: Clock, metrics: &Metrics) -> RateLimits {
        let limits = RateLimits::with_capacity(
            settings.rate_limits,
            duration_ms(settings.rate_limit_max_wait),
            clock,
            MAX_TENANTS,
        );
        metrics.register(RateLimitCollector(Arc::clone(&limits.counts)));
        limits
    }

    /// Nothing kept, nothing waited for (`egress.rate_limits = false`).
    pub fn off() -> RateLimits {
        RateLimits::with_capacity(false, 0, Clock::system(), 0)
    }

    fn with_capacity(
        enabled: bool,
        max_wait_ms: i64,
        clock: Clock,
        max_tenants: usize,
    ) -> RateLimits {
        RateLimits {
            enabled,
            max_wait_ms,
            clock,
            latest_block_ms: AtomicI64::new(i64::MIN),
            budgets: Mutex::new(Budgets::new(max_tenants)),
            waiting: AtomicUsize::new(0),
            counts: Arc::default(),
        }
    }

    /// Before a request is sent: at once when its tenant has budget (or none is known),
    /// after a wait on the clock when the tenant's interval ends within the longest wait,
    /// else the sidecar's `429` (never sent to JTL).
    /// Whether any tenant's budget may be spent now: `false` (one clock read, one atomic
    /// load) lets a request go without [`RateLimits::admit`].
    pub fn any_blocked(&self) -> bool {
        self.enabled && self.clock.mono_ms() < self.latest_block_ms.load(Ordering::Acquire)
    }

    pub async fn admit(&self, key: BudgetKey) -> Result<(), Response<ProxyBody>> {
        if !self.enabled {
            return Ok(());
        }
        let now = self.clock.mono_ms();
        if now >= self.latest_block_ms.load(Ordering::Acquire) {
            return Ok(());
        }
        let deadline = now.saturating_add(self.max_wait_ms);
        let mut until = {
            let mut budgets = self.budgets();
            let Some(blocked) = budgets.get_mut(key) else {
                return Ok(());
            };
            if blocked.until_ms <= now {
                return Ok(());
            }
            if blocked.until_ms > deadline || self.waiting.load(Ordering::Relaxed) >= MAX_WAITING {
                return Err(self.refuse(blocked.until_ms, now));
            }
            blocked.waiters += 1;
            if blocked.waiters == 1 {
                self.counts.waiting_tenants.fetch_add(1, Ordering::Relaxed);
            }
            self.waiting.fetch_add(1, Ordering::Relaxed);
            blocked.until_ms
        };
        self.counts.delayed.fetch_add(1, Ordering::Relaxed);
        // Counts the wait off again however it ends, a caller that gave up included.
        let _waiting = Waiting { limits: self, key };
        loop {
            self.clock.sleep_until(until).await;
            // A 429 from JTL meanwhile may have moved the end of the block.
            let now = self.clock.mono_ms();
            let next = self.budgets().get(key).map(|blocked| blocked.until_ms);
            match next {
                Some(next) if next > now && next > deadline => {
                    return Err(self.refuse(next, now));
                }
                Some(next) if next > now => until = next,
                _ => return Ok(()),
            }
        }
    }

    /// After JTL answered: a spent budget blocks the tenant until its interval ends (a
    /// `429` also until JTL's `Retry-After`), and the `429` goes to the caller with a
    /// `Retry-After` the sidecar computed. An answer without the headers, or with values
    /// that make no sense, changes nothing (a `429` still blocks, briefly).
    pub fn record(&self, key: BudgetKey, status: StatusCode, headers: &mut HeaderMap) {
        self.record_with(|| key, status, headers);
    }

    /// [`RateLimits::record`], with the key made only when the answer spends a budget
    /// (most answers do not: no key is parsed for them).
    pub fn record_with(
        &self,
        key: impl FnOnce() -> BudgetKey,
        status: StatusCode,
        headers: &mut HeaderMap,
    ) {
        if !self.enabled {
            return;
        }
        let too_many = status == StatusCode::TOO_MANY_REQUESTS;
        let spent = headers.get(X_RATELIMIT_REMAINING).is_some_and(is_zero);
        if !too_many && !spent {
            return;
        }
        let key = key();
        let now = self.clock.mono_ms();
        let interval_ms = headers.get(X_RATELIMIT_INTERVAL).and_then(seconds_ms);
        let pause_ms = if too_many {
            self.counts.jtl_429.fetch_add(1, Ordering::Relaxed);
            headers
                .get(RETRY_AFTER)
                .and_then(seconds_ms)
                .or(interval_ms)
        } else {
            interval_ms
        };
        let limit = headers.get(X_RATELIMIT_LIMIT).and_then(count);
        let until = {
            let mut budgets = self.budgets();
            let known = budgets.get_mut(key);
            let until = match (pause_ms, &known) {
                (Some(pause_ms), _) => now.saturating_add(pause_ms),
                (None, _) if too_many => now.saturating_add(UNSPECIFIED_PAUSE_MS),
                // `Remaining: 0` without an interval: nothing to wait for.
                (None, _) => return,
            };
            // A later end already known stays: the answers of requests in flight arrive
            // in any order.
            let until = match known {
                Some(blocked) => {
                    blocked.until_ms = blocked.until_ms.max(until);
                    blocked.limit = limit.or(blocked.limit);
                    blocked.until_ms
                }
                None => {
                    let blocked = Blocked {
                        until_ms: until,
                        limit,
                        waiters: 0,
                    };
                    budgets.insert(key, blocked);
                    until
                }
            };
            self.latest_block_ms.fetch_max(until, Ordering::AcqRel);
            until
        };
        tracing::debug!(
            limit,
            wait_ms = until - now,
            jtl_429 = too_many,
            "a tenant's JTL rate budget is spent; its requests wait until the interval ends"
        );
        if too_many {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_s(until, now)));
        }
    }

    /// Tenants with a spent budget remembered now.
    pub fn tenants(&self) -> usize {
        self.budgets().len()
    }

    fn refuse(&self, until_ms: i64, now: i64) -> Response<ProxyBody> {
        self.counts.refused.fetch_add(1, Ordering::Relaxed);
        let mut response = error_response(
            ErrorCode::RateLimited,
            "The tenant's JTL rate limit is used up for this interval; try again after Retry-After seconds.",
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after_s(until_ms, now)));
        response
    }

    fn budgets(&self) -> MutexGuard<'_, Budgets> {
        // Never held across an await; a panic elsewhere leaves consistent data.
        self.budgets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One request waiting for its tenant's budget.
struct Waiting<'a> {
    limits: &'a RateLimits,
    key: BudgetKey,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let limits = self.limits;
        limits.waiting.fetch_sub(1, Ordering::Relaxed);
        if let Some(blocked) = limits.budgets().get_mut(self.key) {
            blocked.waiters = blocked.waiters.saturating_sub(1);
            if blocked.waiters == 0 {
                limits
                    .counts
                    .waiting_tenants
                    .fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Whole seconds from `now` until `until_ms`, rounded up, at least 1.
fn retry_after_s(until_ms: i64, now: i64) -> u64 {
    let ms = until_ms.saturating_sub(now).max(0).unsigned_abs();
    ms.div_ceil(1000).max(1)
}

/// A count (`X-RateLimit-Limit`, `-Remaining`): digits only, within `u64`.
/// Whether a count is 0 (`0`, `00`, with whitespace around), without parsing it.
fn is_zero(value: &HeaderValue) -> bool {
    let digits = value.as_bytes().trim_ascii();
    !digits.is_empty() && digits.iter().all(|&b| b == b'0')
}

fn count(value: &HeaderValue) -> Option<u64> {
    let digits = value.as_bytes().trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A number of seconds (`X-RateLimit-Interval-Length-Seconds`, a delta `Retry-After`)
/// from 1 to a day, in milliseconds; anything else (0, negative, an HTTP date, huge) is
/// `None`.
fn seconds_ms(value: &HeaderValue) -> Option<i64> {
    let seconds = count(value).filter(|s| (1..=MAX_SECONDS).contains(s))?;
    i64::try_from(seconds * 1000).ok()
}

/// Reads the counts at scrape time.
#[derive(Debug)]
struct RateLimitCollector(Arc<Counts>);

impl Collector for RateLimitCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = &self.0;
        encode_counter(
            &mut encoder,
            "egress_rate_limit_delayed",
            "Egress requests that waited for their tenant's JTL rate budget",
            counts.delayed.load(Ordering::Relaxed),
        )?;
        encode_counter(
            &mut encoder,
            "egress_rate_limit_refused",
            "Egress requests answered 429 by the sidecar (the tenant's budget would come back \
             too late, or too many requests wait) and never sent to JTL",
            counts.refused.load(Ordering::Relaxed),
        )?;
        encode_counter(
            &mut encoder,
            "egress_rate_limit_jtl_429",
            "429 answers from JTL's API to egress requests",
            counts.jtl_429.load(Ordering::Relaxed),
        )?;
        encode_gauge(
            &mut encoder,
            "egress_rate_limit_waiting_tenants",
            "Tenants with an egress request waiting for their JTL rate budget now",
            counts.waiting_tenants.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn value(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    fn limits(max_wait_ms: i64, max_tenants: usize) -> (RateLimits, Clock) {
        let clock = Clock::manual(0);
        let limits = RateLimits::with_capacity(true, max_wait_ms, clock.clone(), max_tenants);
        (limits, clock)
    }

    fn answer(remaining: &str, interval: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(X_RATELIMIT_LIMIT, value("100"));
        headers.insert(X_RATELIMIT_REMAINING, value(remaining));
        headers.insert(X_RATELIMIT_INTERVAL, value(interval));
        headers
    }

    fn tenant(n: u128) -> BudgetKey {
        BudgetKey(Some(n))
    }

    fn blocked_until(limits: &RateLimits, key: BudgetKey) -> Option<i64> {
        limits.budgets().get(key).map(|blocked| blocked.until_ms)
    }

    #[test]
    fn counts_are_digits_within_u64_and_nothing_else() {
        assert_eq!(count(&value("0")), Some(0));
        assert_eq!(count(&value(" 42 ")), Some(42));
        assert_eq!(count(&value("18446744073709551615")), Some(u64::MAX));
        for absurd in [
            "",
            "-1",
            "+1",
            "1.5",
            "1e3",
            "abc",
            "18446744073709551616",
            "99999999999999999999999999",
            "0x10",
        ] {
            assert_eq!(count(&value(absurd)), None, "{absurd}");
        }
    }

    #[test]
    fn seconds_are_one_second_to_a_day() {
        assert_eq!(seconds_ms(&value("1")), Some(1_000));
        assert_eq!(seconds_ms(&value("60")), Some(60_000));
        assert_eq!(seconds_ms(&value("86400")), Some(86_400_000));
        for absurd in [
            "0",
            "86401",
            "-60",
            "60.5",
            "Wed, 21 Oct 2026 07:28:00 GMT",
            "18446744073709551615",
        ] {
            assert_eq!(seconds_ms(&value(absurd)), None, "{absurd}");
        }
    }

    #[test]
    fn budget_keys_are_the_tenant_uuid_in_any_case_or_the_apps_own() {
        let lower = value("7c9e6679-7425-40de-944b-e07fc1f90ae7");
        let upper = value("7C9E6679-7425-40DE-944B-E07FC1F90AE7");
        assert_eq!(BudgetKey::of(Some(&lower)), BudgetKey::of(Some(&upper)));
        assert_ne!(BudgetKey::of(Some(&lower)), BudgetKey::of(None));
        assert_eq!(BudgetKey::of(None), BudgetKey(None));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_at_least_one() {
        assert_eq!(retry_after_s(1_000, 0), 1);
        assert_eq!(retry_after_s(1_001, 0), 2);
        assert_eq!(retry_after_s(60_000, 0), 60);
        assert_eq!(retry_after_s(0, 0), 1);
        assert_eq!(retry_after_s(i64::MIN, i64::MAX), 1);
        assert_eq!(
            retry_after_s(i64::MAX, i64::MIN),
            i64::MAX.unsigned_abs().div_ceil(1000)
        );
    }

    #[test]
    fn remaining_zero_blocks_for_the_interval_from_the_answer() {
        let (limits, clock) = limits(10_000, 100);
        clock.advance(Duration::from_millis(500));
        limits.record(tenant(1), StatusCode::OK, &mut answer("3", "60"));
        assert_eq!(limits.tenants(), 0, "budget left: nothing remembered");
        limits.record(tenant(1), StatusCode::OK, &mut answer("0", "60"));
        assert_eq!(blocked_until(&limits, tenant(1)), Some(60_500));
        // An answer of a request in flight says budget is left: the block stays.
        limits.record(tenant(1), StatusCode::OK, &mut answer("5", "60"));
        assert_eq!(blocked_until(&limits, tenant(1)), Some(60_500));
        // A later end wins, an earlier one does not shorten the block.
        limits.record(tenant(1), StatusCode::OK, &mut answer("0", "1"));
        assert_eq!(blocked_until(&limits, tenant(1)), Some(60_500));
    }

    #[test]
    fn a_429_blocks_for_retry_after_or_the_interval_and_gets_the_sidecars_retry_after() {
        let (limits, _clock) = limits(10_000, 100);
        let mut headers = answer("0", "30");
        limits.record(tenant(1), StatusCode::TOO_MANY_REQUESTS, &mut headers);
        assert_eq!(blocked_until(&limits, tenant(1)), Some(30_000));
        assert_eq!(headers[RETRY_AFTER], "30");

        let mut headers = answer("0", "30");
        headers.insert(RETRY_AFTER, value("45"));
        limits.record(tenant(2), StatusCode::TOO_MANY_REQUESTS, &mut headers);
        assert_eq!(blocked_until(&limits, tenant(2)), Some(45_000));
        assert_eq!(headers[RETRY_AFTER], "45");

        // Neither interval nor Retry-After: a short pause all the same.
        let mut headers = HeaderMap::new();
        limits.record(tenant(3), StatusCode::TOO_MANY_REQUESTS, &mut headers);
        assert_eq!(
            blocked_until(&limits, tenant(3)),
            Some(UNSPECIFIED_PAUSE_MS)
        );
        assert_eq!(headers[RETRY_AFTER], "1");
        assert_eq!(limits.counts.jtl_429.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn answers_without_the_headers_or_with_absurd_values_change_nothing() {
        let (limits, _clock) = limits(10_000, 100);
        limits.record(tenant(1), StatusCode::OK, &mut HeaderMap::new());
        for (remaining, interval) in [
            ("-1", "60"),
            ("abc", "60"),
            ("99999999999999999999999", "60"),
            ("0", "-60"),
            ("0", "0"),
            ("0", "99999999999999999999999"),
            ("0", "1e9"),
            ("0", "864000000"),
        ] {
            limits.record(tenant(1), StatusCode::OK, &mut answer(remaining, interval));
        }
        assert_eq!(limits.tenants(), 0);
        // A 429 with an absurd Retry-After falls back to the interval.
        let mut headers = answer("0", "20");
        headers.insert(RETRY_AFTER, value("999999999999"));
        limits.record(tenant(1), StatusCode::TOO_MANY_REQUESTS, &mut headers);
        assert_eq!(blocked_until(&limits, tenant(1)), Some(20_000));
    }

    #[tokio::test]
    async fn a_blocked_tenant_waits_for_its_interval_and_others_pass() {
        let (limits, clock) = limits(10_000, 100);
        let limits = Arc::new(limits);
        limits.record(tenant(1), StatusCode::OK, &mut answer("0", "5"));
        assert!(limits.admit(tenant(2)).await.is_ok(), "another tenant");
        assert!(limits.admit(BudgetKey(None)).await.is_ok(), "the app's own");
        let waiter = tokio::spawn({
            let limits = Arc::clone(&limits);
            async move { limits.admit(tenant(1)).await.is_ok() }
        });
        while clock.asleep() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(limits.counts.waiting_tenants.load(Ordering::Relaxed), 1);
        clock.advance(Duration::from_secs(4));
        clock.settled().await;
        assert!(!waiter.is_finished());
        clock.advance(Duration::from_secs(1));
        assert!(waiter.await.unwrap());
        assert_eq!(limits.counts.delayed.load(Ordering::Relaxed), 1);
        assert_eq!(limits.counts.waiting_tenants.load(Ordering::Relaxed), 0);
        assert_eq!(limits.waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_wait_longer_than_the_limit_is_refused_at_once_with_retry_after() {
        let (limits, _clock) = limits(10_000, 100);
        limits.record(tenant(1), StatusCode::OK, &mut answer("0", "11"));
        let refused = limits.admit(tenant(1)).await.unwrap_err();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[RETRY_AFTER], "11");
        assert_eq!(limits.counts.refused.load(Ordering::Relaxed), 1);
        assert_eq!(limits.counts.delayed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn switched_off_nothing_is_kept_or_waited_for() {
        let clock = Clock::manual(0);
        let limits = RateLimits::with_capacity(false, 0, clock, 100);
        let mut headers = answer("0", "60");
        limits.record(tenant(1), StatusCode::TOO_MANY_REQUESTS, &mut headers);
        assert!(headers.get(RETRY_AFTER).is_none());
        assert!(limits.admit(tenant(1)).await.is_ok());
        assert_eq!(limits.tenants(), 0);
    }

    #[test]
    fn the_state_stays_bounded_with_a_hundred_thousand_tenants_and_more() {
        let (limits, _clock) = limits(10_000, MAX_TENANTS);
        for n in 0..(3 * MAX_TENANTS as u128 / 2) {
            limits.record(tenant(n), StatusCode::OK, &mut answer("0", "60"));
            assert!(limits.tenants() <= MAX_TENANTS);
        }
        // The most recent are kept, the least recently used dropped.
        let last = 3 * MAX_TENANTS as u128 / 2 - 1;
        assert!(blocked_until(&limits, tenant(last)).is_some());
        assert!(blocked_until(&limits, tenant(0)).is_none());
    }

    #[test]
    fn a_used_tenant_outlives_unused_ones_and_a_waiting_one_is_never_dropped() {
        let mut budgets = Budgets::new(4);
        let blocked = |waiters| Blocked {
            until_ms: 1,
            limit: None,
            waiters,
        };
        budgets.insert(tenant(0), blocked(0));
        budgets.insert(tenant(1), blocked(1));
        budgets.insert(tenant(2), blocked(0)); // turn: 0 and 1 are the previous generation
        budgets.insert(tenant(3), blocked(0));
        assert!(
            budgets.get_mut(tenant(0)).is_some(),
            "used: moved to current"
        );
        budgets.insert(tenant(4), blocked(0)); // turn: 2 dropped
        budgets.insert(tenant(5), blocked(0)); // turn: 3 dropped, 0 and 4 previous
        budgets.insert(tenant(6), blocked(0));
        budgets.insert(tenant(7), blocked(0)); // turn: 0 and 4 dropped
        assert!(
            budgets.get(tenant(1)).is_some(),
            "waiting: kept through every turn"
        );
        assert!(budgets.get(tenant(2)).is_none());
        assert!(budgets.get(tenant(0)).is_none());
        assert!(budgets.get(tenant(7)).is_some());
    }
}
