//! Which connections the sidecar holds when descriptors run short.
//!
//! Every accepted connection costs a descriptor, and a proxied one a second for its
//! upstream connection. Connections that hold a place without doing anything (a flood
//! that never sends a byte, or clients that send one token-less request, get `401` and
//! then idle on keep-alive or on an HTTP/2 connection whose pings their library
//! answers) would otherwise fill the descriptor table until valid clients, the liveness
//! probe and the backend's calls to JTL are all refused. So:
//!
//! - Each listener has a budget of its own, below `RLIMIT_NOFILE`: the ingress cannot
//!   take the admin's (probes, scrapes) or the egress's (the backend's calls to JTL).
//! - At a budget's limit, a new connection is admitted and the oldest *idle* one is
//!   asked to go: first an idle connection that never carried a verified token, then
//!   one that has not completed a request yet, then an idle verified one. A connection
//!   with a request in flight is never shed; only when every held connection has one is
//!   a new connection refused.
//!
//! The bookkeeping costs a request two atomic counts and a flag; a connection enters a
//! queue once, and is looked at again only when room is needed (see [`Budget::shed_one`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio_util::sync::CancellationToken;

use crate::proxy::ConnectionMarks;
use crate::telemetry::{ConnectionCounts, ConnectionListener, Shed};

/// Descriptors kept back for everything that is not a client connection: listeners,
/// the JTL, store and Redis connections, log and certificate files.
const RESERVED_DESCRIPTORS: u64 = 64;
/// The soft limit is raised to the hard limit at start, but no higher than this.
const MAX_DESCRIPTORS: u64 = 1 << 20;
/// The smallest ingress limit, whatever the descriptors (0 would refuse everyone).
const MIN_CONNECTIONS: usize = 16;

/// The connection limit of each listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub ingress: usize,
    pub egress: usize,
    pub admin: usize,
    /// The descriptor limit they were derived from.
    pub descriptors: u64,
}

impl Limits {
    /// Raises the soft `RLIMIT_NOFILE` to the hard one (as Go's runtime does) and splits
    /// what it allows (see [`Limits::for_descriptors`]).
    pub fn from_descriptors() -> Limits {
        Limits::for_descriptors(raise_descriptor_limit())
    }

    /// After a reserve of 64 descriptors: the admin listener gets 1/32 of the rest
    /// (4 to 64 connections, one descriptor each: probes and scrapes), the egress 1/16
    /// (8 to 512 connections, two descriptors each: the JTL connection too), and the
    /// ingress half of what remains (each client connection may hold an upstream one).
    pub fn for_descriptors(descriptors: u64) -> Limits {
        let rest =
            usize::try_from(descriptors.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX);
        let admin = (rest / 32).clamp(4, 64);
        let egress = (rest / 16).clamp(8, 512);
        let ingress = (rest.saturating_sub(admin + 2 * egress) / 2).max(MIN_CONNECTIONS);
        Limits {
            ingress,
            egress,
            admin,
            descriptors,
        }
    }
}

fn raise_descriptor_limit() -> u64 {
    use rlimit::Resource;
    let Ok((soft, hard)) = Resource::NOFILE.get() else {
        return 1024;
    };
    let wanted = hard.min(MAX_DESCRIPTORS);
    if wanted > soft && Resource::NOFILE.set(wanted, hard).is_ok() {
        return wanted;
    }
    soft
}

/// What a held connection is, for the choice of which to shed: lower goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Idle, and never carried a verified token: a `401` holder, most likely.
    IdleUnverified = 0,
    /// No complete request yet.
    Fresh = 1,
    /// Idle, after at least one verified request.
    IdleVerified = 2,
    /// A request in flight (or a response still being sent): never shed.
    Busy = 3,
}

/// [`Slot::queued`] of a connection in no queue: busy when a shed last looked, or leaving.
const NOT_QUEUED: u8 = u8::MAX;

/// One listener's connection budget, shared by the threads that accept on it.
pub struct Budget {
    listener: ConnectionListener,
    limit: usize,
    counts: Arc<ConnectionCounts>,
    /// Candidates for shedding, one queue per class. A connection is in at most one of
    /// them (its `queued` flag); entries whose connection has moved on are re-sorted or
    /// dropped when a shed walks past them.
    queues: Mutex<[VecDeque<Weak<Slot>>; 3]>,
}

/// One held connection, as its budget sees it.
pub struct Slot {
    budget: Arc<Budget>,
    /// A complete request head arrived.
    started: AtomicBool,
    /// Its requests are HTTP/2 (set with `started`).
    http2: AtomicBool,
    /// Requests whose response has not been sent in full yet.
    in_flight: AtomicU32,
    /// A request ended since a shed or the idle clock last looked: a second chance.
    recent: AtomicBool,
    /// The queue it is in (a [`Class`]), or [`NOT_QUEUED`]. Changed under the queues'
    /// lock only; an entry in another queue than this one is stale.
    queued: AtomicU8,
    /// Whether a request on it was verified (set by the ingress).
    marks: Arc<ConnectionMarks>,
    /// Cancelled when the connection is asked to close (shed, or the server stops).
    close: CancellationToken,
    /// Why it was asked to close, when it was shed.
    shed_as: Mutex<Option<Shed>>,
}

impl Slot {
    pub fn marks(&self) -> &Arc<ConnectionMarks> {
        &self.marks
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    pub fn http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// A request head arrived; it is in flight until [`Slot::request_ended`].
    pub fn request_started(&self, http2: bool) {
        if !self.started.load(Ordering::Relaxed) {
            self.http2.store(http2, Ordering::Relaxed);
            self.started.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// A request's response was sent in full (or dropped). When this was its last
    /// request in flight, the connection is queued as idle, unless it already is in the
    /// queue of its class (the common case: loads only, no lock).
    pub fn request_ended(self: &Arc<Self>) {
        if !self.recent.load(Ordering::Relaxed) {
            self.recent.store(true, Ordering::Relaxed);
        }
        // SeqCst with the shed's "store NOT_QUEUED, then read in_flight": one of the two
        // sees the other, so an idle connection is never left out of the queues.
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.queued.load(Ordering::SeqCst) != self.class() as u8
        {
            self.budget.queue(self);
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Whether it was idle since the last look (no request ended, none in flight), and
    /// starts a new period.
    pub fn idle_since_last_look(&self) -> bool {
        let recent = self.recent.swap(false, Ordering::Relaxed);
        !recent && self.in_flight() == 0
    }

    /// Cancelled when the connection is asked to close.
    pub fn close_signal(&self) -> &CancellationToken {
        &self.close
    }

    /// Why the admission asked it to close, if it did.
    pub fn shed_as(&self) -> Option<Shed> {
        *lock(&self.shed_as)
    }

    fn class(&self) -> Class {
        if !self.started() {
            Class::Fresh
        } else if self.in_flight() > 0 {
            Class::Busy
        } else if self.marks.verified() {
            Class::IdleVerified
        } else {
            Class::IdleUnverified
        }
    }

    fn ask_to_close(&self, why: Shed) {
        *lock(&self.shed_as) = Some(why);
        self.close.cancel();
    }
}

/// Holds one connection's place in its budget until dropped.
pub struct Ticket {
    slot: Arc<Slot>,
}

impl Ticket {
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let budget = &self.slot.budget;
        budget
            .counts
            .open(budget.listener)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl Budget {
    pub fn new(
        listener: ConnectionListener,
        limit: usize,
        counts: Arc<ConnectionCounts>,
    ) -> Arc<Budget> {
        counts.set_limit(listener, limit);
        Arc::new(Budget {
            listener,
            limit,
            counts,
            queues: Mutex::new(Default::default()),
        })
    }

    pub fn listener(&self) -> ConnectionListener {
        self.listener
    }

    /// A connection was accepted: its ticket, or `None` when it must be closed at once
    /// (at the limit, with every held connection busy). `stop` is the listener's own
    /// stop: the connection's close signal is a child of it.
    pub fn admit(self: &Arc<Self>, stop: &CancellationToken) -> Option<Ticket> {
        let open = self
            .counts
            .open(self.listener)
            .fetch_add(1, Ordering::AcqRel)
            + 1;
        if open > self.limit && !self.shed_one() {
            self.counts
                .open(self.listener)
                .fetch_sub(1, Ordering::AcqRel);
            self.counts.count_shed(self.listener, Shed::Refused);
            return None;
        }
        let slot = Arc::new(Slot {
            budget: Arc::clone(self),
            started: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            recent: AtomicBool::new(false),
            queued: AtomicU8::new(Class::Fresh as u8),
            marks: Arc::default(),
            close: stop.child_token(),
            shed_as: Mutex::new(None),
        });
        let mut queues = lock(&self.queues);
        for queue in queues.iter_mut() {
            while queue.front().is_some_and(|entry| entry.strong_count() == 0) {
                queue.pop_front();
            }
        }
        // Bounded however long the oldest stay: a full sweep once the queues hold many
        // more entries than connections can be open (a live one is current in one queue).
        if queues.iter().map(VecDeque::len).sum::<usize>() > 2 * self.limit + 1024 {
            for (index, queue) in queues.iter_mut().enumerate() {
                queue.retain(|entry| {
                    entry.upgrade().is_some_and(|slot| {
                        usize::from(slot.queued.load(Ordering::SeqCst)) == index
                    })
                });
            }
        }
        queues[Class::Fresh as usize].push_back(Arc::downgrade(&slot));
        drop(queues);
        Some(Ticket { slot })
    }

    /// Asks the best candidate to close: the oldest idle connection that never carried a
    /// verified token, else the oldest without a complete request, else the oldest idle
    /// verified one; an idle connection with a request since the last look gets a second
    /// chance first. `false` when every held connection is busy.
    ///
    /// Each entry is looked at a bounded number of times: busy ones leave the queues
    /// (they come back when idle), others move to their class's queue or are taken.
    pub fn shed_one(&self) -> bool {
        let mut queues = lock(&self.queues);
        for class in [Class::IdleUnverified, Class::Fresh, Class::IdleVerified] {
            // Twice the length: one pass that may give second chances, one that takes.
            let mut steps = 2 * queues[class as usize].len();
            while steps > 0 {
                steps -= 1;
                let Some(entry) = queues[class as usize].pop_front() else {
                    break;
                };
                let Some(slot) = entry.upgrade() else {
                    continue;
                };
                if slot.queued.load(Ordering::SeqCst) != class as u8 {
                    continue; // stale: it was queued again elsewhere
                }
                let actual = slot.class();
                if actual == Class::Busy {
                    slot.queued.store(NOT_QUEUED, Ordering::SeqCst);
                    // It may have gone idle between the two loads: keep it then.
                    if slot.in_flight() == 0 {
                        let now = slot.class().min(Class::IdleVerified);
                        slot.queued.store(now as u8, Ordering::SeqCst);
                        queues[now as usize].push_back(entry);
                    }
                    continue;
                }
                if actual != class {
                    slot.queued.store(actual as u8, Ordering::SeqCst);
                    queues[actual as usize].push_back(entry);
                    continue;
                }
                if actual != Class::Fresh && slot.recent.swap(false, Ordering::Relaxed) {
                    queues[actual as usize].push_back(entry);
                    continue;
                }
                let why = match actual {
                    Class::IdleUnverified => Shed::IdleUnverified,
                    Class::Fresh => Shed::IdleBeforeRequest,
                    _ => Shed::IdleVerified,
                };
                // Out of the queues for good: it is leaving.
                slot.queued.store(NOT_QUEUED, Ordering::SeqCst);
                slot.ask_to_close(why);
                return true;
            }
        }
        false
    }

    /// A connection closed because it was asked to (counted when it really closes).
    pub fn count_closed(&self, why: Shed) {
        self.counts.count_shed(self.listener, why);
    }

    /// Queues an idle connection under its class (an entry it had elsewhere is stale).
    fn queue(&self, slot: &Arc<Slot>) {
        let mut queues = lock(&self.queues);
        let class = slot.class();
        if class == Class::Busy
            || slot.queued.load(Ordering::SeqCst) == class as u8
            || slot.close.is_cancelled()
        {
            return;
        }
        slot.queued.store(class as u8, Ordering::SeqCst);
        queues[class as usize].push_back(Arc::downgrade(slot));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: usize) -> (Arc<Budget>, Arc<ConnectionCounts>) {
        let counts = Arc::new(ConnectionCounts::default());
        (
            Budget::new(ConnectionListener::Ingress, limit, Arc::clone(&counts)),
            counts,
        )
    }

    fn open(counts: &ConnectionCounts) -> usize {
        counts
            .open(ConnectionListener::Ingress)
            .load(Ordering::Acquire)
    }

    /// A request that starts and ends (its answer sent), as the server reports them.
    fn one_request(ticket: &Ticket, verified: bool) {
        let slot = ticket.slot();
        slot.request_started(false);
        if verified {
            slot.marks().mark_verified();
        }
        slot.request_ended();
    }

    fn asked(ticket: &Ticket) -> Option<Shed> {
        ticket
            .slot()
            .close_signal()
            .is_cancelled()
            .then(|| ticket.slot().shed_as())
            .flatten()
    }

    #[test]
    fn at_the_limit_the_oldest_connection_without_a_request_is_shed() {
        let (budget, counts) = budget(2);
        let stop = CancellationToken::new();
        let oldest = budget.admit(&stop).expect("first of two");
        let newer = budget.admit(&stop).expect("second of two");
        let third = budget.admit(&stop).expect("a third: room is made");
        assert_eq!(asked(&oldest), Some(Shed::IdleBeforeRequest));
        assert_eq!(asked(&newer), None, "the newer connection keeps its place");
        assert_eq!(open(&counts), 3);
        drop((oldest, newer, third));
        assert_eq!(open(&counts), 0);
    }

    #[test]
    fn an_idle_keep_alive_connection_that_only_got_401s_goes_before_a_fresh_one() {
        let (budget, _counts) = budget(3);
        let stop = CancellationToken::new();
        let fresh = budget.admit(&stop).expect("fresh");
        let holder = budget.admit(&stop).expect("holder");
        let verified = budget.admit(&stop).expect("verified");
        one_request(&holder, false);
        one_request(&verified, true);
        // Both idle ones got a request since the last look: the first shed gives them
        // their second chance and takes the holder on the way round.
        let _new = budget.admit(&stop).expect("room is made");
        assert_eq!(asked(&holder), Some(Shed::IdleUnverified));
        assert_eq!(asked(&fresh), None);
        assert_eq!(asked(&verified), None);
    }

    #[test]
    fn a_verified_idle_connection_goes_last() {
        let (budget, _counts) = budget(2);
        let stop = CancellationToken::new();
        let verified = budget.admit(&stop).expect("verified");
        one_request(&verified, true);
        let fresh = budget.admit(&stop).expect("fresh");
        let third = budget.admit(&stop).expect("room is made");
        assert_eq!(asked(&fresh), Some(Shed::IdleBeforeRequest));
        assert_eq!(asked(&verified), None);
        // With nothing else idle, the verified idle one goes.
        third.slot().request_started(false);
        let _fourth = budget.admit(&stop).expect("room again");
        assert_eq!(asked(&verified), Some(Shed::IdleVerified));
        assert_eq!(asked(&third), None, "busy: never shed");
    }

    #[test]
    fn connections_with_a_request_in_flight_are_not_shed_and_a_new_one_is_refused() {
        let (budget, counts) = budget(2);
        let stop = CancellationToken::new();
        let first = budget.admit(&stop).expect("first");
        let second = budget.admit(&stop).expect("second");
        first.slot().request_started(false);
        second.slot().request_started(false);
        assert!(budget.admit(&stop).is_none(), "nothing to shed: refused");
        assert_eq!(open(&counts), 2);
        assert_eq!(
            counts.shed_count(ConnectionListener::Ingress, Shed::Refused),
            1
        );
        // The first answer is sent: that connection is idle again, and the next one in
        // gets its place.
        first.slot().request_ended();
        assert!(budget.admit(&stop).is_some());
        assert_eq!(asked(&first), Some(Shed::IdleUnverified));
        assert_eq!(asked(&second), None);
    }

    #[test]
    fn a_connection_that_goes_idle_again_is_queued_again() {
        let (budget, _counts) = budget(1);
        let stop = CancellationToken::new();
        let conn = budget.admit(&stop).expect("first");
        conn.slot().request_started(false);
        // A shed walks past it while busy: it leaves the queues.
        assert!(!budget.shed_one());
        conn.slot().request_ended();
        assert!(budget.shed_one(), "idle again, it is a candidate again");
        assert_eq!(asked(&conn), Some(Shed::IdleUnverified));
    }

    #[test]
    fn the_stop_of_the_listener_reaches_every_connection() {
        let (budget, _counts) = budget(4);
        let stop = CancellationToken::new();
        let conn = budget.admit(&stop).expect("first");
        stop.cancel();
        assert!(conn.slot().close_signal().is_cancelled());
        assert_eq!(conn.slot().shed_as(), None, "stopped, not shed");
    }

    #[test]
    fn the_queues_stay_bounded_when_the_oldest_never_leaves() {
        let (budget, _counts) = budget(4);
        let stop = CancellationToken::new();
        let _stuck = budget.admit(&stop).expect("stuck");
        for _ in 0..10_000 {
            let ticket = budget.admit(&stop).expect("room");
            ticket.slot().request_started(false);
        }
        let len: usize = lock(&budget.queues).iter().map(VecDeque::len).sum();
        assert!(len <= 2 * 4 + 1024 + 1, "queues grew to {len}");
    }

    #[test]
    fn the_budgets_leave_room_for_upstream_connections_and_keep_admin_and_egress_apart() {
        for descriptors in [200, 1024, 65_536, 1 << 20] {
            let limits = Limits::for_descriptors(descriptors);
            let used = limits.ingress * 2 + limits.egress * 2 + limits.admin;
            assert!(
                used as u64 + RESERVED_DESCRIPTORS <= descriptors,
                "{limits:?} uses {used}"
            );
            assert!(limits.admin >= 4 && limits.egress >= 8, "{limits:?}");
        }
        assert_eq!(
            Limits::for_descriptors(200),
            Limits {
                ingress: 58,
                egress: 8,
                admin: 4,
                descriptors: 200
            }
        );
        let (limits, raised) = (Limits::from_descriptors(), raise_descriptor_limit());
        assert!(limits.ingress >= MIN_CONNECTIONS && raised >= limits.descriptors);
    }
}
