//! Which connections the sidecar holds when descriptors run short.
//!
//! Every accepted connection costs a descriptor, and a proxied one a second for its
//! upstream connection. Idle connections that never send a byte (a flood, or a balancer
//! that pre-opens sockets) would otherwise fill the descriptor table until `accept`
//! fails with `EMFILE` and valid clients time out in the kernel's queue. So the sidecar
//! keeps a connection limit below `RLIMIT_NOFILE`, and at the limit it sheds the oldest
//! connection that has not completed a request yet, which a valid client never is for
//! long. Only when every held connection has sent a request is a new one refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::telemetry::{ConnectionCounts, Shed};

/// Descriptors kept back for everything that is not a client connection: listeners,
/// the JTL, store and Redis connections, log and certificate files.
const RESERVED_DESCRIPTORS: u64 = 64;
/// The soft limit is raised to the hard limit at start, but no higher than this.
const MAX_DESCRIPTORS: u64 = 1 << 20;
/// The smallest limit, whatever the descriptors (a limit of 0 would refuse everyone).
const MIN_CONNECTIONS: usize = 16;

/// Raises the soft `RLIMIT_NOFILE` to the hard one (as Go's runtime does) and returns
/// the connection limit it allows: half of what is left after the reserve, since each
/// client connection may hold an upstream connection too.
pub fn connection_limit_from_descriptors() -> (usize, u64) {
    let descriptors = raise_descriptor_limit();
    let limit = descriptors.saturating_sub(RESERVED_DESCRIPTORS) / 2;
    let limit = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .max(MIN_CONNECTIONS);
    (limit, descriptors)
}

fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    let wanted = limit.rlim_max.min(MAX_DESCRIPTORS);
    if wanted > limit.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return wanted;
        }
    }
    limit.rlim_cur
}

/// The connection budget all listeners share, across the worker threads.
pub struct Admission {
    limit: usize,
    counts: Arc<ConnectionCounts>,
    /// Connections in the order they were accepted that had not completed a request
    /// when last looked at; started and closed ones are dropped from the front lazily.
    waiting: Mutex<VecDeque<Weak<Slot>>>,
}

/// One held connection, as the admission sees it.
#[derive(Default)]
pub struct Slot {
    started: AtomicBool,
    shed: Notify,
}

impl Slot {
    /// A complete request head arrived: the connection is no longer shed first.
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Completes when the admission asks this connection to close to make room.
    pub async fn shed(&self) {
        self.shed.notified().await
    }
}

/// Holds one connection's place in the budget until dropped.
pub struct Ticket {
    slot: Arc<Slot>,
    counts: Arc<ConnectionCounts>,
}

impl Ticket {
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(limit: usize, counts: Arc<ConnectionCounts>) -> Admission {
        counts.limit.store(limit, Ordering::Relaxed);
        Admission {
            limit,
            counts,
            waiting: Mutex::new(VecDeque::new()),
        }
    }

    /// A connection was accepted: its ticket, or `None` when it must be closed at once
    /// (at the limit, with nothing to shed).
    pub fn admit(&self) -> Option<Ticket> {
        let open = self.counts.open.fetch_add(1, Ordering::AcqRel) + 1;
        if open > self.limit && !self.shed_oldest_waiting() {
            self.counts.open.fetch_sub(1, Ordering::AcqRel);
            self.counts.count_shed(Shed::Refused);
            return None;
        }
        let slot = Arc::new(Slot::default());
        let mut waiting = self.lock_waiting();
        prune_front(&mut waiting);
        // Bounded however long the oldest waits: a full sweep once it holds many more
        // entries than connections can be open.
        if waiting.len() > 2 * self.limit + 1024 {
            waiting.retain(|entry| entry.upgrade().is_some_and(|slot| !slot.started()));
        }
        waiting.push_back(Arc::downgrade(&slot));
        drop(waiting);
        Some(Ticket {
            slot,
            counts: Arc::clone(&self.counts),
        })
    }

    /// Asks the oldest connection still without a complete request to close. `false`
    /// when there is none.
    pub fn shed_oldest_waiting(&self) -> bool {
        let mut waiting = self.lock_waiting();
        while let Some(entry) = waiting.pop_front() {
            if let Some(slot) = entry.upgrade() {
                if !slot.started() {
                    slot.shed.notify_one();
                    return true;
                }
            }
        }
        false
    }

    /// A connection closed because it was shed (counted when it really closes).
    pub fn count_shed(&self) {
        self.counts.count_shed(Shed::IdleBeforeRequest);
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<Weak<Slot>>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn prune_front(waiting: &mut VecDeque<Weak<Slot>>) {
    while let Some(front) = waiting.front() {
        match front.upgrade() {
            Some(slot) if !slot.started() => return,
            _ => {
                waiting.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(limit: usize) -> (Admission, Arc<ConnectionCounts>) {
        let counts = Arc::new(ConnectionCounts::default());
        (Admission::new(limit, Arc::clone(&counts)), counts)
    }

    #[tokio::test]
    async fn at_the_limit_the_oldest_connection_without_a_request_is_shed() {
        let (admission, counts) = admission(2);
        let oldest = admission.admit().expect("first of two");
        let newer = admission.admit().expect("second of two");
        let third = admission.admit().expect("a third: room is made");
        // The oldest was asked to go, not the newer one.
        tokio::time::timeout(std::time::Duration::from_secs(1), oldest.slot().shed())
            .await
            .expect("the oldest waiting connection is told to close");
        let newer_told =
            tokio::time::timeout(std::time::Duration::from_millis(50), newer.slot().shed()).await;
        assert!(newer_told.is_err(), "the newer connection keeps its place");
        assert_eq!(counts.open.load(Ordering::Acquire), 3);
        drop((oldest, newer, third));
        assert_eq!(counts.open.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn connections_that_sent_a_request_are_not_shed_and_a_new_one_is_refused() {
        let (admission, counts) = admission(2);
        let first = admission.admit().expect("first");
        let second = admission.admit().expect("second");
        first.slot().mark_started();
        second.slot().mark_started();
        assert!(admission.admit().is_none(), "nothing to shed: refused");
        assert_eq!(counts.open.load(Ordering::Acquire), 2);
        assert_eq!(counts.shed_count(Shed::Refused), 1);
    }

    #[tokio::test]
    async fn a_started_connection_is_skipped_for_the_next_waiting_one() {
        let (admission, _counts) = admission(3);
        let busy = admission.admit().expect("busy");
        let idle = admission.admit().expect("idle");
        let _third = admission.admit().expect("third");
        busy.slot().mark_started();
        assert!(admission.admit().is_some());
        tokio::time::timeout(std::time::Duration::from_secs(1), idle.slot().shed())
            .await
            .expect("the oldest connection without a request is told to close");
    }

    #[test]
    fn the_waiting_queue_stays_bounded_when_the_oldest_never_leaves() {
        let (admission, _counts) = admission(4);
        let _stuck = admission.admit().expect("stuck");
        for _ in 0..10_000 {
            let ticket = admission.admit().expect("room");
            ticket.slot().mark_started();
        }
        let len = admission.lock_waiting().len();
        assert!(len <= 2 * 4 + 1024 + 1, "queue grew to {len}");
    }

    #[test]
    fn the_limit_leaves_room_for_upstream_connections() {
        let (limit, descriptors) = connection_limit_from_descriptors();
        assert!(limit >= MIN_CONNECTIONS);
        assert!(
            (limit as u64) * 2 + RESERVED_DESCRIPTORS <= descriptors.max(2 * 16 + 64),
            "limit {limit} for {descriptors} descriptors"
        );
    }
}
