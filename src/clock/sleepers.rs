//! Who sleeps on a manual clock, so a test can tell when a move has been seen by every
//! sleeper: the barrier that shows "nothing was due" without waiting real time.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

pub(super) struct Sleepers {
    counts: Mutex<Counts>,
    /// Told when no sleeper is left that has not seen the latest move.
    settled: Notify,
}

#[derive(Default)]
struct Counts {
    /// Bumped by every move.
    moves: u64,
    /// Asleep, having seen the latest move.
    current: usize,
    /// Asleep, woken by a move they have not looked at yet.
    stale: usize,
    /// Sleeps that ended because a move made them due.
    wakeups: u64,
}

impl Counts {
    /// One sleeper stops sleeping; it went to sleep after move number `seen`.
    fn leave(&mut self, seen: u64) {
        if seen == self.moves {
            self.current = self.current.saturating_sub(1);
        } else {
            self.stale = self.stale.saturating_sub(1);
        }
    }
}

impl Sleepers {
    pub(super) fn new() -> Self {
        Sleepers {
            counts: Mutex::new(Counts::default()),
            settled: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `step` (the clock's move) under the lock a sleeper reads the time under, and
    /// counts every sleeper as not having seen it yet.
    pub(super) fn moving(&self, step: impl FnOnce()) {
        let mut counts = self.lock();
        step();
        counts.moves += 1;
        counts.stale += std::mem::take(&mut counts.current);
    }

    /// Completes once no sleeper is left that has not looked at the latest move.
    pub(super) async fn settled(&self) {
        loop {
            let told = self.settled.notified();
            if self.lock().stale == 0 {
                return;
            }
            told.await;
        }
    }

    pub(super) fn asleep(&self) -> usize {
        let counts = self.lock();
        counts.current + counts.stale
    }

    pub(super) fn wakeups(&self) -> u64 {
        self.lock().wakeups
    }

    /// One sleep, counted while it waits.
    pub(super) fn sleeper(&self) -> Asleep<'_> {
        Asleep {
            sleepers: self,
            seen: None,
        }
    }

    /// Tells `settled` waiters when the last stale sleeper has looked.
    fn tell_if_settled(&self, counts: MutexGuard<'_, Counts>) {
        let settled = counts.stale == 0;
        drop(counts);
        if settled {
            self.settled.notify_waiters();
        }
    }
}

/// One sleep on a manual clock; a sleep that is dropped (a `select!` that took another
/// branch) stops being counted.
pub(super) struct Asleep<'a> {
    sleepers: &'a Sleepers,
    /// The move this sleeper saw when it last went to sleep.
    seen: Option<u64>,
}

impl Asleep<'_> {
    /// Looks at the time: `true` when due (the sleep ends), else sleeps on. `due` reads
    /// the time under the lock a move takes, so no move falls between reading and counting.
    pub(super) fn look(&mut self, due: impl FnOnce() -> bool) -> bool {
        let mut counts = self.sleepers.lock();
        let due = due();
        if let Some(seen) = self.seen.take() {
            counts.leave(seen);
            if due {
                counts.wakeups += 1;
            }
        }
        if !due {
            counts.current += 1;
            self.seen = Some(counts.moves);
        }
        self.sleepers.tell_if_settled(counts);
        due
    }
}

impl Drop for Asleep<'_> {
    fn drop(&mut self) {
        if let Some(seen) = self.seen.take() {
            let mut counts = self.sleepers.lock();
            counts.leave(seen);
            self.sleepers.tell_if_settled(counts);
        }
    }
}
