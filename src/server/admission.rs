//! Which connections the sidecar holds when descriptors run short.
//!
//! Every accepted connection costs a descriptor, and a proxied one a second for its
//! upstream connection. Connections that hold a place without doing anything (a flood
//! that never sends a byte; clients that send one token-less request, get `401` and then
//! idle on keep-alive or on an HTTP/2 connection whose pings their library answers; or
//! clients that leave a response unread, with an HTTP/2 window of 0 or a socket they do
//! not read) would otherwise fill the descriptor table until valid clients, the liveness
//! probe and the backend's calls to JTL are all refused. So:
//!
//! - Each listener has a budget of its own, below `RLIMIT_NOFILE`: the ingress cannot
//!   take the admin's (probes, scrapes) or the egress's (the backend's calls to JTL).
//! - At a budget's limit, a new connection is admitted and another is asked to go, the
//!   first of: an idle connection that never carried a verified token; a connection whose
//!   responses have waited on its client for [`STALLED_AFTER`]; the oldest connection
//!   that has not completed a request; an idle verified one. A connection whose request is
//!   being answered (the sidecar, the backend or JTL is working on it, or its client is
//!   reading) is never shed; when every held connection is such, a new one is refused.
//! - A WebSocket tunnel keeps its connection's place until it closes.
//!
//! The bookkeeping costs a request a few relaxed atomic counts and no lock; a connection
//! enters a queue when it goes idle in another class than it was queued under, and is
//! looked at again only when room is needed (see [`Budget::shed_one`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::connection_counts::{ConnectionCounts, ConnectionListener, Shed};
use crate::proxy::ConnectionMarks;

/// Descriptors kept back for everything that is not a client connection: listeners,
/// the JTL, store and Redis connections, log and certificate files.
const RESERVED_DESCRIPTORS: u64 = 64;
/// The soft limit is raised to the hard limit at start, but no higher than this.
const MAX_DESCRIPTORS: u64 = 1 << 20;
/// The smallest ingress limit, whatever the descriptors (0 would refuse everyone).
const MIN_CONNECTIONS: usize = 16;
/// A connection whose responses have waited this long on its client (nothing taken from
/// them, nothing else being worked on) may be shed at the limit like an idle one.
pub const STALLED_AFTER: Duration = Duration::from_secs(5);
/// How many busy connections one shed looks at for a stalled one: bounded work per
/// accepted connection, however many are busy; the next shed goes on where it stopped.
const BUSY_LOOKS: usize = 64;

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

/// A clock of whole milliseconds that requests read without a system call: a task of the
/// server's moves it ([`CoarseClock::tick`]) a few times a second, and [`STALLED_AFTER`]
/// is seconds.
#[derive(Debug)]
pub struct CoarseClock {
    start: Instant,
    now_ms: AtomicU64,
}

impl CoarseClock {
    pub const TICK: Duration = Duration::from_millis(100);

    pub fn new() -> Arc<CoarseClock> {
        Arc::new(CoarseClock {
            start: Instant::now(),
            now_ms: AtomicU64::new(0),
        })
    }

    /// Reads the system clock into the coarse one.
    pub fn tick(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.now_ms.store(now, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now_ms.fetch_add(by, Ordering::Relaxed);
    }
}

/// What a held connection is, for the choice of which to shed; also the index of its
/// queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Idle, and never carried a verified token: a `401` holder, most likely.
    IdleUnverified = 0,
    /// No complete request yet.
    Fresh = 1,
    /// Idle, after at least one verified request.
    IdleVerified = 2,
    /// A request in flight: shed only when its responses have stalled on the client.
    Busy = 3,
}

/// [`Slot::queued`] of a connection in no queue: it is leaving.
const NOT_QUEUED: u8 = u8::MAX;

/// One listener's connection budget, shared by the threads that accept on it.
pub struct Budget {
    listener: ConnectionListener,
    limit: usize,
    counts: Arc<ConnectionCounts>,
    clock: Arc<CoarseClock>,
    /// Candidates for shedding, one queue per class. A connection is in at most one of
    /// them (its `queued` field); entries whose connection has moved on are re-sorted or
    /// dropped when a shed walks past them.
    queues: Mutex<[VecDeque<Weak<Slot>>; 4]>,
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
    /// Of those, the ones being worked on by the sidecar, the backend or JTL (an answer
    /// not ready yet, or a body waiting for its next bytes); the rest wait on the client.
    answering: AtomicU32,
    /// When an answer last moved ([`CoarseClock`] milliseconds).
    moved_at_ms: AtomicU64,
    /// A request ended since a shed or the idle clock last looked: a second chance.
    recent: AtomicBool,
    /// The queue it is in (a [`Class`]), or [`NOT_QUEUED`]. Changed under the queues'
    /// lock only; an entry in another queue than this one is stale.
    queued: AtomicU8,
    /// Whether a request on it was verified (set by the ingress); they also hold the
    /// connection's place in the budget.
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

    /// A request head arrived; it is in flight, and being answered, until
    /// [`Slot::answer_ready`] and [`Slot::request_ended`].
    pub fn request_started(&self, http2: bool) {
        if !self.started.load(Ordering::Relaxed) {
            self.http2.store(http2, Ordering::Relaxed);
            self.started.store(true, Ordering::Relaxed);
        }
        self.answering.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// An answer moved: its head is ready, or its body gave bytes (`waiting` false), or
    /// its body waits on its source (`waiting` true). `was_waiting` is the answer's own
    /// state, kept by its caller.
    pub fn answer_moved(&self, was_waiting: &mut bool, waiting: bool) {
        if *was_waiting != waiting {
            *was_waiting = waiting;
            if waiting {
                self.answering.fetch_add(1, Ordering::Relaxed);
            } else {
                self.answering.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if !waiting {
            let now = self.budget.clock.now_ms();
            if self.moved_at_ms.load(Ordering::Relaxed) != now {
                self.moved_at_ms.store(now, Ordering::Relaxed);
            }
        }
    }

    /// A request's response was sent in full (or dropped); `waiting` is whether its
    /// answer was still being worked on. When this was its last request in flight, the
    /// connection is queued as idle, unless it already is in the queue of its class (the
    /// common case: loads only, no lock).
    pub fn request_ended(self: &Arc<Self>, waiting: bool) {
        if waiting {
            self.answering.fetch_sub(1, Ordering::Relaxed);
        }
        if !self.recent.load(Ordering::Relaxed) {
            self.recent.store(true, Ordering::Relaxed);
        }
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.queued.load(Ordering::SeqCst) != self.class() as u8
        {
            self.budget.queue(self);
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Requests in flight whose answers wait on the client, and have for
    /// [`STALLED_AFTER`]: the client does not take what it asked for.
    pub fn stalled(&self) -> bool {
        self.in_flight() > 0
            && self.answering.load(Ordering::Relaxed) == 0
            && self
                .budget
                .clock
                .now_ms()
                .saturating_sub(self.moved_at_ms.load(Ordering::Relaxed))
                >= STALLED_AFTER.as_millis() as u64
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

/// A connection's place in its budget, given back when dropped. The connection's marks
/// hold it (see [`ConnectionMarks::holding`]), so a WebSocket tunnel keeps it too.
struct Place {
    budget: Arc<Budget>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.budget
            .counts
            .open(self.budget.listener)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl Budget {
    pub fn new(
        listener: ConnectionListener,
        limit: usize,
        counts: Arc<ConnectionCounts>,
        clock: Arc<CoarseClock>,
    ) -> Arc<Budget> {
        counts.set_limit(listener, limit);
        Arc::new(Budget {
            listener,
            limit,
            counts,
            clock,
            queues: Mutex::new(Default::default()),
        })
    }

    pub fn listener(&self) -> ConnectionListener {
        self.listener
    }

    /// A connection was accepted: its slot, or `None` when it must be closed at once (at
    /// the limit, and nothing to shed). `stop` is the listener's own stop: the
    /// connection's close signal is a child of it.
    pub fn admit(self: &Arc<Self>, stop: &CancellationToken) -> Option<Arc<Slot>> {
        let open = self
            .counts
            .open(self.listener)
            .fetch_add(1, Ordering::AcqRel)
            + 1;
        let place = Place {
            budget: Arc::clone(self),
        };
        if open > self.limit && !self.shed_one() {
            drop(place);
            self.counts.count_shed(self.listener, Shed::Refused);
            return None;
        }
        let slot = Arc::new(Slot {
            budget: Arc::clone(self),
            started: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            answering: AtomicU32::new(0),
            moved_at_ms: AtomicU64::new(self.clock.now_ms()),
            recent: AtomicBool::new(false),
            queued: AtomicU8::new(Class::Fresh as u8),
            marks: Arc::new(ConnectionMarks::holding(Box::new(place))),
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
        Some(slot)
    }

    /// Asks the best candidate to close: the oldest idle connection that never carried a
    /// verified token; else a stalled one (among up to [`BUSY_LOOKS`] busy ones); else
    /// the oldest without a complete request; else the oldest idle verified one. An idle
    /// connection with a request since the last look gets a second chance first. `false`
    /// when there is none.
    ///
    /// Each entry is looked at a bounded number of times: entries move to their class's
    /// queue, get a second chance once, or are taken.
    pub fn shed_one(&self) -> bool {
        let mut queues = lock(&self.queues);
        for class in [
            Class::IdleUnverified,
            Class::Busy,
            Class::Fresh,
            Class::IdleVerified,
        ] {
            let len = queues[class as usize].len();
            // Twice the length: one pass that may give second chances, one that takes.
            let mut steps = match class {
                Class::Busy => len.min(BUSY_LOOKS),
                _ => 2 * len,
            };
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
                // A stalled connection found in a later pass than its own is taken: it
                // comes before fresh and idle verified ones.
                let stalled_here = actual == Class::Busy
                    && matches!(class, Class::Fresh | Class::IdleVerified)
                    && slot.stalled();
                if actual != class && !stalled_here {
                    slot.queued.store(actual as u8, Ordering::SeqCst);
                    queues[actual as usize].push_back(entry);
                    continue;
                }
                let why = match actual {
                    Class::Busy if slot.stalled() => Shed::Stalled,
                    Class::Busy => {
                        queues[actual as usize].push_back(entry);
                        continue;
                    }
                    Class::Fresh => Shed::IdleBeforeRequest,
                    _ if slot.recent.swap(false, Ordering::Relaxed) => {
                        queues[actual as usize].push_back(entry);
                        continue;
                    }
                    Class::IdleUnverified => Shed::IdleUnverified,
                    Class::IdleVerified => Shed::IdleVerified,
                };
                // Out of the queues for good: it is leaving.
                tracing::debug!(
                    listener = self.listener.as_str(),
                    reason = why.as_str(),
                    "asked a connection to close to make room"
                );
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

    /// Queues a connection under its class (an entry it had elsewhere is stale).
    fn queue(&self, slot: &Arc<Slot>) {
        let mut queues = lock(&self.queues);
        let class = slot.class();
        let queued = slot.queued.load(Ordering::SeqCst);
        if queued == class as u8 || queued == NOT_QUEUED {
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

    fn budget(limit: usize) -> (Arc<Budget>, Arc<ConnectionCounts>, Arc<CoarseClock>) {
        let counts = Arc::new(ConnectionCounts::default());
        let clock = CoarseClock::new();
        let budget = Budget::new(
            ConnectionListener::Ingress,
            limit,
            Arc::clone(&counts),
            Arc::clone(&clock),
        );
        (budget, counts, clock)
    }

    fn open(counts: &ConnectionCounts) -> usize {
        counts
            .open(ConnectionListener::Ingress)
            .load(Ordering::Acquire)
    }

    /// A request whose answer is ready at once, as the server reports it; `false` is
    /// the answer's state for [`Slot::request_ended`].
    fn answered(slot: &Arc<Slot>) -> bool {
        let mut waiting = true;
        slot.request_started(false);
        slot.answer_moved(&mut waiting, false);
        waiting
    }

    /// A request that starts and ends (its answer sent).
    fn one_request(slot: &Arc<Slot>, verified: bool) {
        let waiting = answered(slot);
        if verified {
            slot.marks().mark_verified();
        }
        slot.request_ended(waiting);
    }

    fn asked(slot: &Slot) -> Option<Shed> {
        slot.close_signal()
            .is_cancelled()
            .then(|| slot.shed_as())
            .flatten()
    }

    #[test]
    fn at_the_limit_the_oldest_connection_without_a_request_is_shed() {
        let (budget, counts, _) = budget(2);
        let stop = CancellationToken::new();
        let oldest = budget.admit(&stop).expect("first of two");
        let newer = budget.admit(&stop).expect("second of two");
        let third = budget.admit(&stop).expect("a third: room is made");
        assert_eq!(asked(&oldest), Some(Shed::IdleBeforeRequest));
        assert_eq!(asked(&newer), None, "the newer connection keeps its place");
        assert_eq!(open(&counts), 3);
        drop((oldest, newer, third));
        assert_eq!(open(&counts), 0, "the places are given back");
    }

    #[test]
    fn an_idle_keep_alive_connection_that_only_got_401s_goes_before_a_fresh_one() {
        let (budget, _, _) = budget(3);
        let stop = CancellationToken::new();
        let fresh = budget.admit(&stop).expect("fresh");
        let holder = budget.admit(&stop).expect("holder");
        let verified = budget.admit(&stop).expect("verified");
        one_request(&holder, false);
        one_request(&verified, true);
        // Both idle ones had a request since the last look: the first shed gives them
        // their second chance and takes the holder on the way round.
        let _new = budget.admit(&stop).expect("room is made");
        assert_eq!(asked(&holder), Some(Shed::IdleUnverified));
        assert_eq!(asked(&fresh), None);
        assert_eq!(asked(&verified), None);
    }

    #[test]
    fn a_verified_idle_connection_goes_last() {
        let (budget, _, _) = budget(2);
        let stop = CancellationToken::new();
        let verified = budget.admit(&stop).expect("verified");
        one_request(&verified, true);
        let fresh = budget.admit(&stop).expect("fresh");
        let third = budget.admit(&stop).expect("room is made");
        assert_eq!(asked(&fresh), Some(Shed::IdleBeforeRequest));
        assert_eq!(asked(&verified), None);
        // With nothing else idle, the verified idle one goes.
        answered(&third);
        let _fourth = budget.admit(&stop).expect("room again");
        assert_eq!(asked(&verified), Some(Shed::IdleVerified));
        assert_eq!(asked(&third), None, "being answered: never shed");
    }

    #[test]
    fn connections_being_answered_are_not_shed_and_a_new_one_is_refused() {
        let (budget, counts, clock) = budget(2);
        let stop = CancellationToken::new();
        let first = budget.admit(&stop).expect("first");
        let second = budget.admit(&stop).expect("second");
        // The backend works on both, however long.
        first.request_started(false);
        second.request_started(false);
        clock.advance(STALLED_AFTER * 10);
        assert!(budget.admit(&stop).is_none(), "nothing to shed: refused");
        assert_eq!(open(&counts), 2);
        assert_eq!(
            counts.shed_count(ConnectionListener::Ingress, Shed::Refused),
            1
        );
        // The first answer is sent: that connection is idle again, and the next one in
        // gets its place.
        let mut waiting = true;
        first.answer_moved(&mut waiting, false);
        first.request_ended(waiting);
        assert!(budget.admit(&stop).is_some());
        assert_eq!(asked(&first), Some(Shed::IdleUnverified));
        assert_eq!(asked(&second), None);
    }

    #[test]
    fn a_response_its_client_leaves_unread_makes_the_connection_sheddable_after_a_while() {
        let (budget, _, clock) = budget(2);
        let stop = CancellationToken::new();
        // Both answered (a 401, say), and neither client takes the body: a window of 0.
        let pinned = budget.admit(&stop).expect("pinned");
        let other = budget.admit(&stop).expect("other");
        answered(&pinned);
        answered(&other);
        clock.advance(STALLED_AFTER / 2);
        assert!(budget.admit(&stop).is_none(), "not stalled yet: refused");
        // `other` takes a frame now: it moves, `pinned` does not.
        let mut waiting = false;
        other.answer_moved(&mut waiting, false);
        clock.advance(STALLED_AFTER / 2 + Duration::from_millis(1));
        assert!(budget.admit(&stop).is_some(), "the stalled one makes room");
        assert_eq!(asked(&pinned), Some(Shed::Stalled));
        assert_eq!(asked(&other), None);
    }

    #[test]
    fn a_body_waiting_on_the_backend_is_not_stalled() {
        let (budget, _, clock) = budget(1);
        let stop = CancellationToken::new();
        let streaming = budget.admit(&stop).expect("streaming");
        let mut waiting = true;
        streaming.request_started(false);
        streaming.answer_moved(&mut waiting, false); // the head
        streaming.answer_moved(&mut waiting, true); // the body waits on the backend
        clock.advance(STALLED_AFTER * 10);
        assert!(!streaming.stalled());
        assert!(budget.admit(&stop).is_none());
        assert_eq!(asked(&streaming), None);
    }

    #[test]
    fn a_connection_that_goes_idle_again_is_queued_again() {
        let (budget, _, _) = budget(1);
        let stop = CancellationToken::new();
        let conn = budget.admit(&stop).expect("first");
        let waiting = answered(&conn);
        // A shed walks past it while busy: it moves to the busy queue.
        assert!(!budget.shed_one());
        conn.request_ended(waiting);
        assert!(budget.shed_one(), "idle again, it is a candidate again");
        assert_eq!(asked(&conn), Some(Shed::IdleUnverified));
    }

    #[test]
    fn the_place_is_kept_while_the_marks_live_on_in_a_tunnel() {
        let (budget, counts, _) = budget(4);
        let stop = CancellationToken::new();
        let conn = budget.admit(&stop).expect("first");
        let tunnel = Arc::clone(conn.marks());
        drop(conn);
        assert_eq!(open(&counts), 1, "the tunnel holds the place");
        drop(tunnel);
        assert_eq!(open(&counts), 0);
    }

    #[test]
    fn the_stop_of_the_listener_reaches_every_connection() {
        let (budget, _, _) = budget(4);
        let stop = CancellationToken::new();
        let conn = budget.admit(&stop).expect("first");
        stop.cancel();
        assert!(conn.close_signal().is_cancelled());
        assert_eq!(conn.shed_as(), None, "stopped, not shed");
    }

    #[test]
    fn the_queues_stay_bounded_when_the_oldest_never_leaves() {
        let (budget, _, _) = budget(4);
        let stop = CancellationToken::new();
        let _stuck = budget.admit(&stop).expect("stuck");
        for _ in 0..10_000 {
            let slot = budget.admit(&stop).expect("room");
            slot.request_started(false);
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
