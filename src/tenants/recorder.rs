//! Tenants recorded on request (SPEC §7, `tenants.record_on_request`). JTL's current
//! templates make no connect-tenant call and JTL sends no install hook, so the first
//! verified request of a tenant the store does not hold inserts it (`installed_by` = that
//! request's user, the slug from the token or empty). A row that is there is left as it
//! is: only connect-tenant updates rows.
//!
//! The ingress calls [`TenantRecorder::saw`] after every successful verification. Which
//! tenants are known is kept in a moka cache:
//! - a known tenant costs one lock-free lookup (`contains_key`, which records no read and
//!   so writes nothing shared), and nothing else;
//! - an unknown one is handed to a task on the main runtime, never awaited by the
//!   request: a slow or unreachable store neither delays nor fails it;
//! - the task asks the store through `try_get_with`, a single flight per tenant: requests
//!   of one tenant arriving together wait for the one insert; a success is cached, a
//!   failure is not (counted, and tried again on the tenant's next request);
//! - entries live [`KNOWN_FOR`], so a tenant an operator deleted is recorded again on its
//!   first request after that; the cache holds at most [`KNOWN_TENANTS`] tenants.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

// moka, not quick_cache (which the verified-token cache uses): entries expire
// ([`KNOWN_FOR`]) and an unknown tenant is inserted through one single flight
// (`try_get_with`); quick_cache has neither. The per-request cost is `contains_key`,
// which records no read: moka's costlier `get` (measured in docs/benchmarks.md) is not
// on the request path.
use moka::future::Cache;
use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::store::{StoreError, TenantStore};
use crate::jose::Session;
use crate::telemetry::{Collector, DescriptorEncoder, Metrics, encode_counts, encode_gauge};

/// Tenants remembered as known. Far more than one app has installations; beyond it the
/// least useful entries go (and cost one more store query when their tenant comes back).
pub const KNOWN_TENANTS: u64 = 100_000;
/// How long a tenant stays known without asking the store again: a tenant deleted from
/// the store by an operator is recorded again within this time of its next request. One
/// query per active tenant per hour is nothing to the store.
pub const KNOWN_FOR: Duration = Duration::from_secs(60 * 60);
/// At most this many records in flight (tasks, coalesced ones included). Beyond it a
/// request's tenant is not recorded this time (counted as `skipped`): a store that
/// hangs does not pile up tasks without bound.
pub const MAX_IN_FLIGHT: usize = 256;

pub struct TenantRecorder {
    /// ahash rather than SipHash: measured 57 ns instead of 92 ns per lookup (release
    /// build, one thread). The keys are tenant ids from verified tokens, not chosen by a
    /// client, and the hasher is randomly seeded anyway.
    known: Cache<Uuid, (), ahash::RandomState>,
    store: Arc<TenantStore>,
    counts: Arc<TenantRecords>,
    /// Where records run: the main runtime, not the ingress worker that saw the request.
    runtime: Handle,
    tasks: TaskTracker,
}

impl TenantRecorder {
    /// Records run on `runtime` (the main one; the store's health check runs there too);
    /// `counts` are where they are counted ([`TenantRecords::registered`]).
    pub fn new(
        store: Arc<TenantStore>,
        counts: Arc<TenantRecords>,
        runtime: Handle,
    ) -> TenantRecorder {
        TenantRecorder {
            known: Cache::builder()
                .max_capacity(KNOWN_TENANTS)
                .time_to_live(KNOWN_FOR)
                .build_with_hasher(ahash::RandomState::new()),
            store,
            counts,
            runtime,
            tasks: TaskTracker::new(),
        }
    }

    /// A verified request of this session's tenant: recorded unless known. Returns at
    /// once; the store is asked, when at all, by a task of its own.
    pub fn saw(&self, session: &Session) {
        if self.known.contains_key(&session.tenant_id) {
            return;
        }
        self.record(
            session.tenant_id,
            session.tenant_slug.clone().unwrap_or_default(),
            session.user_id.clone(),
        );
    }

    /// The tenant is in the store (connect-tenant has just upserted it).
    pub async fn mark_known(&self, tenant_id: Uuid) {
        self.known.insert(tenant_id, ()).await;
    }

    /// Stops taking records and waits, at most `within`, for those in flight.
    pub async fn close(&self, within: Duration) {
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "tenant records still in flight at shutdown were dropped; \
                 those tenants are recorded on their next request"
            );
        }
    }

    fn record(&self, tenant_id: Uuid, tenant_slug: String, installed_by: String) {
        let Some(slot) = Slot::take(&self.counts) else {
            self.counts.count(TenantRecord::Skipped);
            return;
        };
        let known = self.known.clone();
        let store = Arc::clone(&self.store);
        let counts = Arc::clone(&self.counts);
        let task = async move {
            let _slot = slot;
            // Requests of one tenant that arrive together wait for one insert here; an
            // error is not cached, so the tenant's next request tries again.
            let _ = known
                .try_get_with(tenant_id, async {
                    let result = ask_store(&store, tenant_id, &tenant_slug, &installed_by).await;
                    counts.count(match result {
                        Ok(true) => TenantRecord::Inserted,
                        Ok(false) => TenantRecord::Known,
                        Err(_) => TenantRecord::Failure,
                    });
                    result.map(drop)
                })
                .await;
        };
        self.tasks.spawn_on(task, &self.runtime);
    }
}

/// Inserts the tenant unless it is there; `true` when inserted. A failure is logged as
/// a warning when the store was reachable until now (a lasting outage is the health
/// check's to report, once, not every tenant's).
async fn ask_store(
    store: &TenantStore,
    tenant_id: Uuid,
    tenant_slug: &str,
    installed_by: &str,
) -> Result<bool, StoreError> {
    let was_reachable = store.is_reachable();
    let result = store
        .insert_if_absent(tenant_id, tenant_slug, installed_by)
        .await;
    match &result {
        Ok(true) => tracing::info!(tenant_id = %tenant_id, "recorded a new tenant"),
        Ok(false) => {}
        Err(error) if was_reachable => tracing::warn!(
            tenant_id = %tenant_id,
            "the tenant could not be recorded ({error}); tried again on its next request"
        ),
        Err(error) => tracing::debug!(
            tenant_id = %tenant_id,
            "the tenant could not be recorded ({error}); tried again on its next request"
        ),
    }
    result
}

/// One record in flight, counted until dropped.
struct Slot(Arc<TenantRecords>);

impl Slot {
    fn take(counts: &Arc<TenantRecords>) -> Option<Slot> {
        counts
            .begin(MAX_IN_FLIGHT)
            .then(|| Slot(Arc::clone(counts)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// What asking the store about a tenant seen on a request found (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantRecord {
    /// The store did not hold the tenant: it does now.
    Inserted = 0,
    /// The store held the tenant already (left as it was).
    Known = 1,
    /// The store could not be asked, or refused the insert: tried again on a later
    /// request of the tenant.
    Failure = 2,
    /// Not asked: too many records were in flight (a slow store); tried again on a
    /// later request of the tenant.
    Skipped = 3,
}

/// The recorder's results, and how many records are in flight. Written only when a
/// tenant is not known yet (rarely), so plain atomics.
#[derive(Debug, Default)]
pub struct TenantRecords {
    results: [AtomicU64; 4],
    in_flight: AtomicUsize,
}

impl TenantRecords {
    /// New counts, read by `/metrics` from now on (zeros where no recorder runs, so
    /// dashboards need no guard).
    pub fn registered(metrics: &Metrics) -> Arc<TenantRecords> {
        let counts = Arc::new(TenantRecords::default());
        metrics.register(TenantRecordCollector(Arc::clone(&counts)));
        counts
    }

    pub fn count(&self, result: TenantRecord) {
        self.results[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn counted(&self, result: TenantRecord) -> u64 {
        self.results[result as usize].load(Ordering::Relaxed)
    }

    /// Counts one more record in flight, unless `limit` are already: then `false`.
    pub fn begin(&self, limit: usize) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// One record (counted by a `begin` that returned `true`) is over.
    pub fn end(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// Reads the recorder's counts at scrape time.
#[derive(Debug)]
struct TenantRecordCollector(Arc<TenantRecords>);

impl Collector for TenantRecordCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let records = &self.0;
        encode_counts(
            &mut encoder,
            "tenant_records",
            "Tenants seen on verified requests and not known in memory, by what the store \
             said: inserted, known (held already), failure (tried again later), skipped \
             (too many in flight, tried again later)",
            "result",
            [
                ("inserted", records.counted(TenantRecord::Inserted)),
                ("known", records.counted(TenantRecord::Known)),
                ("failure", records.counted(TenantRecord::Failure)),
                ("skipped", records.counted(TenantRecord::Skipped)),
            ],
        )?;
        encode_gauge(
            &mut encoder,
            "tenant_records_in_flight",
            "Tenants being recorded in the store now",
            records.in_flight(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_records_in_flight_stop_at_the_limit_and_never_go_below_zero() {
        let records = TenantRecords::default();
        assert!(records.begin(2));
        assert!(records.begin(2));
        assert!(!records.begin(2), "a third record past the limit of 2");
        assert_eq!(records.in_flight(), 2);
        records.end();
        assert!(records.begin(2));
        records.end();
        records.end();
        records.end();
        assert_eq!(records.in_flight(), 0);
    }
}
