//! Exponential backoff with jitter, on the sidecar's monotonic clock
//! ([`crate::clock::Clock::mono_ms`]): the times in and out are monotonic milliseconds.

use std::time::Duration;

use crate::clock::duration_ms;

#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
    next_attempt_ms: i64,
    base_ms: i64,
    cap_ms: i64,
}

impl Default for Backoff {
    /// 1 s doubling up to 60 s.
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        let base_ms = duration_ms(base).max(1);
        Backoff {
            failures: 0,
            next_attempt_ms: i64::MIN,
            base_ms,
            cap_ms: duration_ms(cap).max(base_ms),
        }
    }

    /// Records a failure at `now_ms`; returns when the next attempt may be made. The delay
    /// doubles with each failure up to the cap, is jittered into its upper half so that
    /// replicas do not retry in step, and is never below `minimum` (a `Retry-After`).
    pub fn failed(&mut self, now_ms: i64, minimum: Option<Duration>) -> i64 {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(30);
        let delay = self
            .base_ms
            .saturating_mul(1i64 << doublings)
            .min(self.cap_ms);
        let jittered = delay / 2 + rand::random_range(0..=delay / 2);
        let delay = jittered.max(minimum.map(duration_ms).unwrap_or(0));
        self.next_attempt_ms = now_ms.saturating_add(delay);
        self.next_attempt_ms
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.next_attempt_ms = i64::MIN;
    }

    /// No attempt before this time (`i64::MIN` when there is no failure to wait out).
    pub fn next_attempt_ms(&self) -> i64 {
        self.next_attempt_ms
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        for (failure, full) in [
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (4, 8_000),
            (5, 8_000),
            (6, 8_000),
        ] {
            let next = backoff.failed(0, None);
            assert!(
                (full / 2..=full).contains(&next),
                "failure {failure}: {next}"
            );
        }
        backoff.succeeded();
        assert_eq!(backoff.next_attempt_ms(), i64::MIN);
        assert_eq!(backoff.failures(), 0);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.failed(1_000, Some(Duration::from_secs(30))), 31_000);
    }
}
