//! Time through a handle, so tests move time instead of sleeping.
//!
//! Two readings: the wall clock ([`Clock::now_ms`], milliseconds since the Unix epoch) and
//! a monotonic one ([`Clock::mono_ms`], milliseconds since an arbitrary origin). Absolute
//! times — a JWT's `exp`/`nbf`, the expiry written to Redis for the other replicas — are
//! wall-clock by nature. Everything measured from "now" (token lifetimes from
//! `expires_in`, refresh schedules, backoff, key-set age) runs on the monotonic reading,
//! so a wall-clock step (NTP, a resumed VM) neither expires nor extends it.
//! Network timeouts do not use this clock: they are real time by nature.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use sleepers::Sleepers;

mod sleepers;

#[derive(Clone)]
pub struct Clock(Arc<Source>);

enum Source {
    /// `origin` is the zero of the monotonic reading.
    System { origin: Instant },
    Manual {
        now_ms: AtomicI64,
        mono_ms: AtomicI64,
        moved: Notify,
        /// For tests: who sleeps, and whether they have seen the latest move.
        sleepers: Sleepers,
    },
}

/// Both readings taken together, for code that turns one into the other (an absolute
/// `exp` into a monotonic deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub wall_ms: i64,
    pub mono_ms: i64,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::System { .. } => f.write_str("Clock::System"),
            Source::Manual {
                now_ms, mono_ms, ..
            } => write!(
                f,
                "Clock::Manual({}, mono {})",
                now_ms.load(Ordering::SeqCst),
                mono_ms.load(Ordering::SeqCst)
            ),
        }
    }
}

impl Clock {
    /// The real clocks.
    pub fn system() -> Self {
        Clock(Arc::new(Source::System {
            origin: Instant::now(),
        }))
    }

    /// Clocks that stand still until [`Clock::advance`] moves them: the wall clock at
    /// `start_unix_ms`, the monotonic one at 0 (a different origin on purpose, so a wall
    /// time mistaken for a monotonic one shows in tests).
    pub fn manual(start_unix_ms: i64) -> Self {
        Clock(Arc::new(Source::Manual {
            now_ms: AtomicI64::new(start_unix_ms),
            mono_ms: AtomicI64::new(0),
            moved: Notify::new(),
            sleepers: Sleepers::new(),
        }))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &*self.0 {
            Source::System { .. } => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            Source::Manual { now_ms, .. } => now_ms.load(Ordering::SeqCst),
        }
    }

    /// Whole seconds since the Unix epoch (JWT NumericDate).
    pub fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Monotonic milliseconds: only differences mean anything, and wall-clock steps do
    /// not move it.
    pub fn mono_ms(&self) -> i64 {
        match &*self.0 {
            Source::System { origin } => duration_ms(origin.elapsed()),
            Source::Manual { mono_ms, .. } => mono_ms.load(Ordering::SeqCst),
        }
    }

    /// Both readings at once.
    pub fn read(&self) -> Reading {
        Reading {
            wall_ms: self.now_ms(),
            mono_ms: self.mono_ms(),
        }
    }

    /// Moves a manual clock (both readings) forward and wakes everything sleeping on it.
    /// Does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual {
            now_ms,
            mono_ms,
            moved,
            sleepers,
        } = &*self.0
        {
            sleepers.moving(|| {
                now_ms.fetch_add(duration_ms(by), Ordering::SeqCst);
                mono_ms.fetch_add(duration_ms(by), Ordering::SeqCst);
            });
            moved.notify_waiters();
        }
    }

    /// Manual clock: completes once every task that was asleep on the clock has looked at
    /// the latest time and either gone back to sleep or woken (see [`Clock::wakeups`]).
    /// The system clock: at once.
    pub async fn settled(&self) {
        if let Source::Manual { sleepers, .. } = &*self.0 {
            sleepers.settled().await;
        }
    }

    /// Manual clock: how many tasks are asleep on it now (0 on the system clock).
    pub fn asleep(&self) -> usize {
        match &*self.0 {
            Source::System { .. } => 0,
            Source::Manual { sleepers, .. } => sleepers.asleep(),
        }
    }

    /// Manual clock: how many sleeps have ended because a move made them due. Unchanged
    /// across `advance` and [`Clock::settled`] means the move woke nothing.
    pub fn wakeups(&self) -> u64 {
        match &*self.0 {
            Source::System { .. } => 0,
            Source::Manual { sleepers, .. } => sleepers.wakeups(),
        }
    }

    /// Steps a manual wall clock alone, forward or back (what NTP or a resumed VM does);
    /// the monotonic reading stays. Does nothing to the system clock.
    pub fn step_wall(&self, by_ms: i64) {
        if let Source::Manual {
            now_ms,
            moved,
            sleepers,
            ..
        } = &*self.0
        {
            sleepers.moving(|| {
                now_ms.fetch_add(by_ms, Ordering::SeqCst);
            });
            moved.notify_waiters();
        }
    }

    /// Sleeps until the monotonic reading is at least `deadline_ms`.
    pub async fn sleep_until(&self, deadline_ms: i64) {
        match &*self.0 {
            Source::System { .. } => {
                let wait = deadline_ms.saturating_sub(self.mono_ms());
                if wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
                }
            }
            Source::Manual {
                mono_ms,
                moved,
                sleepers,
                ..
            } => {
                let mut asleep = sleepers.sleeper();
                loop {
                    let notified = moved.notified();
                    if asleep.look(|| mono_ms.load(Ordering::SeqCst) >= deadline_ms) {
                        return;
                    }
                    notified.await;
                }
            }
        }
    }

    pub async fn sleep(&self, duration: Duration) {
        self.sleep_until(self.mono_ms().saturating_add(duration_ms(duration)))
            .await
    }
}

/// A duration in whole milliseconds, saturating.
pub fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_sleepers_wake_only_when_advanced_far_enough() {
        let clock = Clock::manual(1_000);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken")
            .expect("no panic");
        assert_eq!(clock.now_ms(), 11_000);
        assert_eq!(clock.now_s(), 11);
        assert_eq!(clock.mono_ms(), 10_000);
    }

    /// A wall-clock step moves `now_ms` alone: sleepers (monotonic) stay asleep.
    #[tokio::test]
    async fn a_wall_step_moves_neither_the_monotonic_reading_nor_sleepers() {
        let clock = Clock::manual(1_000_000);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        clock.step_wall(2 * 3_600_000);
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        assert_eq!(clock.now_ms(), 1_000_000 + 2 * 3_600_000);
        assert_eq!(clock.mono_ms(), 0);
        clock.step_wall(-4 * 3_600_000);
        assert_eq!(clock.now_ms(), 1_000_000 - 2 * 3_600_000);
        clock.advance(Duration::from_secs(10));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken")
            .expect("no panic");
    }

    /// `settled` waits until every sleeper has seen a move; `wakeups` counts the sleeps a
    /// move ended, and a dropped sleep stops being waited for.
    #[tokio::test]
    async fn settled_waits_for_every_sleeper_to_see_the_move() {
        let clock = Clock::manual(0);
        let (parked_tx, mut parked) = tokio::sync::mpsc::unbounded_channel();
        let mut sleepers = Vec::new();
        for seconds in [5, 10] {
            let clock = clock.clone();
            let parked_tx = parked_tx.clone();
            sleepers.push(tokio::spawn(async move {
                let sleep = clock.sleep(Duration::from_secs(seconds));
                tokio::pin!(sleep);
                // Polled once: asleep and counted before the test moves the clock.
                assert!(futures_util::poll!(&mut sleep).is_pending());
                parked_tx.send(()).unwrap();
                sleep.await
            }));
        }
        parked.recv().await.unwrap();
        parked.recv().await.unwrap();
        clock.advance(Duration::from_secs(4));
        clock.settled().await;
        assert_eq!(clock.wakeups(), 0, "nothing due at 4 s");
        assert_eq!(clock.asleep(), 2);
        clock.advance(Duration::from_secs(1));
        clock.settled().await;
        assert_eq!(clock.wakeups(), 1, "the 5 s sleep ended at 5 s");
        assert_eq!(clock.asleep(), 1);
        sleepers.remove(0).await.unwrap();
        sleepers.remove(0).abort();
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), clock.settled())
            .await
            .expect("an aborted sleep is not waited for");
        assert_eq!((clock.wakeups(), clock.asleep()), (1, 0));
    }

    #[test]
    fn system_clock_is_near_now_and_monotonic() {
        let clock = Clock::system();
        assert!(clock.now_s() > 1_700_000_000);
        let first = clock.mono_ms();
        assert!(first >= 0);
        assert!(clock.mono_ms() >= first);
    }
}
