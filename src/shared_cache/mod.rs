//! Several replicas share one access token through Redis (SPEC §12).
//!
//! The access-token manager ([`crate::jtl::AccessTokens`]) asks this store only when it
//! needs a token (at start, at refresh, after a 401), never per request:
//!
//! 1. [`SharedTokenStore::acquire`] reads the shared entry; one the caller accepts is used
//!    as it is. Otherwise it takes the lock (`SET {lock} {random} NX PX {jtl.timeout_ms}`):
//!    the winner asks JTL and [`SharedTokenStore::publish`]es the sealed entry (`SET … PX`
//!    until the token's expiry), then releases the lock (compare and delete). The others
//!    poll every [`POLL_INTERVAL`] for the new entry, or for a free lock, up to
//!    `jtl.timeout_ms`, then ask JTL themselves.
//! 2. An entry holding a token JTL refused is deleted only while it still holds exactly
//!    the value read (compare and delete, one Lua script).
//! 3. Redis is never a dependency: a failed or slow call (at most `jtl.timeout_ms` for a
//!    whole [`SharedTokenStore::acquire`]) makes the caller behave as without Redis, and
//!    Redis is left alone for a while (1 s, doubling to 30 s on the token clock). One
//!    warning per outage, one info line when it is back.
//!
//! Waiting polls rather than subscribing: a wait happens a few times per token lifetime and
//! lasts at most `jtl.timeout_ms`, so polling costs a few dozen GETs per replica at
//! rollout or refresh time, needs no second connection held open per replica, and sees
//! the one thing pub/sub cannot tell: a lock released without a result (a winner whose
//! JTL request failed), which the next poll takes over.

pub mod connection;
mod password;
pub mod seal;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use connection::RedisFailure;
pub use seal::{Entry, SealingKey, digest_key, entry_key, lock_key};

use crate::clock::{Clock, duration_ms};
use crate::config::{Config, RedisTarget};
use crate::secrets::Secret;
use crate::tls::TlsRoots;
use connection::Connection;
use password::Login;

/// How often a replica waiting for another's token looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// After a failed call, Redis is left alone this long at first...
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// ...doubling up to this.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Deletes `KEYS[1]` only while it holds `ARGV[1]`: releases a lock this replica holds,
/// and drops an entry whose token JTL refused unless another replica replaced it.
const COMPARE_AND_DELETE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) else return 0 end";

/// How long the test entry of [`SharedTokenStore::probe`] lives if it is not deleted.
pub const PROBE_TTL: Duration = Duration::from_secs(10);

/// What [`SharedTokenStore::probe`] found.
#[derive(Debug)]
pub struct Probe {
    /// Milliseconds the test entry's write, read and delete took.
    pub written_ms: i64,
    /// The real entry of this app, as it is now.
    pub entry: EntryNow,
}

/// The real entry, read and never written by [`SharedTokenStore::probe`].
#[derive(Debug)]
pub enum EntryNow {
    /// No replica has published a token (or it expired).
    Missing,
    /// It opens with this client secret.
    Opens(Entry),
    /// Present, but another client secret (or another format) sealed it.
    DoesNotOpen,
    /// Present; not opened, as the client secret could not be read.
    NotOpened,
}

/// Why the shared token store of `[shared_cache]` could not be set up: its password
/// file, its `redis_url`, or the TLS of a `rediss://` URL. Nothing is connected yet when
/// this is decided.
#[derive(Debug, thiserror::Error)]
pub enum SharedCacheSetupError {
    #[error("shared_cache.redis_password_file: cannot read {path}: {reason}")]
    PasswordFile { path: String, reason: String },
    #[error("shared_cache.redis_url: {0}")]
    Target(String),
    #[error("shared_cache.redis_url (rediss://): {0}")]
    Tls(String),
}

/// What the shared store did, for `/metrics` and the tests.
#[derive(Debug, Default)]
pub struct SharedCounts {
    /// Shared entries read (each GET).
    pub reads: AtomicU64,
    /// Reads whose entry was used (no JTL request).
    pub hits: AtomicU64,
    /// Times a replica waited for another's token.
    pub waits: AtomicU64,
    /// Locks won: this replica asked JTL for all.
    pub lock_wins: AtomicU64,
    /// Failed or timed-out Redis calls.
    pub errors: AtomicU64,
}

impl SharedCounts {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The caller's verdict on an entry read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Good: use it instead of asking JTL.
    Use,
    /// It holds a token JTL refused: delete it (if unchanged) and treat as missing.
    Refused,
    /// Present but due for refresh (or expired): someone must ask JTL.
    Stale,
}

/// What [`SharedTokenStore::acquire`] found.
#[derive(Debug)]
pub enum Acquired {
    /// An entry the caller accepted.
    Entry(Entry),
    /// This replica holds the lock: it asks JTL, then publishes with the lock.
    Won(Lock),
    /// Another replica held the lock for `jtl.timeout_ms` without a result: ask JTL
    /// without the lock, then publish.
    TimedOut,
    /// Redis cannot be used now: behave as without it.
    Unavailable,
}

/// The lock on the entry, held by this replica until released or expired.
#[derive(Debug)]
pub struct Lock {
    value: String,
}

/// Where one shared entry lives: its Redis key and the key of its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub key: String,
    pub lock_key: String,
}

impl Place {
    pub fn of(key: String) -> Place {
        Place {
            lock_key: lock_key(&key),
            key,
        }
    }
}

pub struct SharedTokenStore {
    connection: Connection,
    key_prefix: String,
    /// The access token's entry.
    place: Place,
    timeout: Duration,
    clock: Clock,
    counts: SharedCounts,
    health: Mutex<Health>,
}

#[derive(Debug)]
struct Health {
    /// Between a failure and the next success.
    down: bool,
    /// While down: when Redis is tried again (monotonic clock: a delay from the failure).
    retry_at_mono_ms: i64,
    retry_delay: Duration,
}

impl std::fmt::Debug for SharedTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTokenStore")
            .field("redis", &self.connection.address())
            .field("key", &self.place.key)
            .finish()
    }
}

/// The password file's content, less one trailing line break (`\n` or `\r\n`): Redis
/// passwords are written on one line of redis.conf or an ACL rule and cannot end in
/// one, while `echo pw > file` and most Secret tooling add one.
pub fn read_password_file(path: &std::path::Path) -> Result<Secret, SharedCacheSetupError> {
    let failed = |reason: String| SharedCacheSetupError::PasswordFile {
        path: path.display().to_string(),
        reason,
    };
    let mut text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(failed("the file is empty".into()));
    }
    Ok(Secret::new(text))
}

impl SharedTokenStore {
    /// The store `[shared_cache]` asks for; `None` when `redis_url` is empty. Reads the
    /// password file; connects to nothing yet. `rediss://` trusts what JTL's connections
    /// trust: `roots`, the webpki roots and `jtl.ca_file`.
    /// The connection to Redis is opened and driven on `runtime` (the server's main
    /// runtime), whichever runtime the first call comes from.
    pub fn from_config(
        config: &Config,
        roots: Arc<TlsRoots>,
        clock: Clock,
        runtime: tokio::runtime::Handle,
    ) -> Result<Option<Self>, SharedCacheSetupError> {
        let Some(target) = &config.shared_cache.redis else {
            return Ok(None);
        };
        let tls = target.tls.then_some(roots);
        SharedTokenStore::new(
            target,
            &config.shared_cache.key_prefix,
            config.jtl.token_url.as_str(),
            &config.jtl.client_id,
            config.jtl.scope.as_deref(),
            config.jtl.timeout,
            tls,
            clock,
            runtime,
        )
        .map(Some)
    }

    /// Nothing is connected yet: the first [`SharedTokenStore::acquire`] does. `tls` holds
    /// the configuration of JTL's connections, used for `rediss://`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: &RedisTarget,
        key_prefix: &str,
        token_url: &str,
        client_id: &str,
        scope: Option<&str>,
        timeout: Duration,
        tls: Option<Arc<TlsRoots>>,
        clock: Clock,
        runtime: tokio::runtime::Handle,
    ) -> Result<SharedTokenStore, SharedCacheSetupError> {
        // Read here at start (never on a request's path; again at each new connection).
        let login = Login::of(target.password.as_ref())?;
        let connection = Connection::new(target.clone(), login, tls, runtime)
            .map_err(SharedCacheSetupError::Target)?;
        let key = entry_key(key_prefix, token_url, client_id, scope);
        Ok(SharedTokenStore {
            connection,
            key_prefix: key_prefix.to_owned(),
            place: Place::of(key),
            timeout,
            clock,
            counts: SharedCounts::default(),
            health: Mutex::new(Health {
                down: false,
                retry_at_mono_ms: i64::MIN,
                retry_delay: RETRY_FIRST,
            }),
        })
    }

    pub fn counts(&self) -> &SharedCounts {
        &self.counts
    }

    /// The Redis key of the entry (`{key_prefix}:access-token:{digest}`).
    pub fn key(&self) -> &str {
        &self.place.key
    }

    /// `shared_cache.key_prefix`, under which other entries (exchanged tokens) live.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// `redis://host:port/db` or `rediss://…`, for `check` (never the credentials).
    pub fn shown_target(&self) -> String {
        self.connection.shown_target()
    }

    /// What `check --online` asks (SPEC §12), within `jtl.timeout_ms`: writes a sealed
    /// test entry under `{key_prefix}:check:{random}` (expiring after [`PROBE_TTL`]), reads
    /// it back, opens it and deletes it; then reads the real entry without writing it.
    /// `key` opens the real entry (`None` when the client secret cannot be read); the test
    /// entry is sealed with it or with a random key. Counts and health are left alone.
    pub async fn probe(&self, key: Option<&SealingKey>) -> Result<Probe, RedisFailure> {
        let started = Instant::now();
        let work = async {
            let random;
            let seal_with = match key {
                Some(key) => key,
                None => {
                    random = SealingKey::derive(uuid::Uuid::new_v4().as_bytes());
                    &random
                }
            };
            let check_key = format!(
                "{}:check:{}",
                self.key_prefix,
                uuid::Uuid::new_v4().simple()
            );
            let now_ms = self.clock.now_ms();
            let test = Entry {
                token: format!("check-{}", uuid::Uuid::new_v4().simple()),
                expires_at_ms: now_ms.saturating_add(duration_ms(PROBE_TTL)),
                obtained_at_ms: now_ms,
                lifetime_source: 0,
            };
            let sealed = seal_with
                .seal(&check_key, &test)
                .ok_or_else(|| RedisFailure::Command("the system's random source failed".into()))?;
            let _: () = self
                .connection
                .query(
                    redis::cmd("SET")
                        .arg(&check_key)
                        .arg(sealed)
                        .arg("PX")
                        .arg(duration_ms(PROBE_TTL)),
                    self.timeout,
                )
                .await?;
            let back: Option<Vec<u8>> = self
                .connection
                .query(redis::cmd("GET").arg(&check_key), self.timeout)
                .await?;
            let _: i64 = self
                .connection
                .query(redis::cmd("DEL").arg(&check_key), self.timeout)
                .await?;
            match back.and_then(|raw| seal_with.open(&check_key, &raw)) {
                Some(opened) if opened == test => {}
                Some(_) => {
                    return Err(RedisFailure::Command(format!(
                        "the test entry {check_key} read back differs from the one written"
                    )));
                }
                None => {
                    return Err(RedisFailure::Command(format!(
                        "the test entry {check_key} written was not read back (evicted at once? maxmemory with no room)"
                    )));
                }
            }
            let written_ms = duration_ms(started.elapsed());
            let raw: Option<Vec<u8>> = self
                .connection
                .query(redis::cmd("GET").arg(&self.place.key), self.timeout)
                .await?;
            let entry = match (raw, key) {
                (None, _) => EntryNow::Missing,
                (Some(_), None) => EntryNow::NotOpened,
                (Some(raw), Some(key)) => match key.open(&self.place.key, &raw) {
                    Some(entry) => EntryNow::Opens(entry),
                    None => EntryNow::DoesNotOpen,
                },
            };
            Ok(Probe { written_ms, entry })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or(Err(RedisFailure::Timeout(self.timeout.as_millis())))
    }

    /// Whether the last call failed (until the next one succeeds).
    pub fn is_down(&self) -> bool {
        self.health().down
    }

    /// A shared entry `judge` accepts, or the lock, or why neither: all within
    /// `jtl.timeout_ms`.
    pub async fn acquire(
        &self,
        key: &SealingKey,
        judge: impl FnMut(&Entry) -> Judgement + Send,
    ) -> Acquired {
        self.acquire_at(&self.place, key, judge).await
    }

    /// [`SharedTokenStore::acquire`] for the entry at `place`.
    pub async fn acquire_at(
        &self,
        place: &Place,
        key: &SealingKey,
        mut judge: impl FnMut(&Entry) -> Judgement + Send,
    ) -> Acquired {
        if !self.worth_trying() {
            return Acquired::Unavailable;
        }
        let deadline = Instant::now() + self.timeout;
        let attempt = self.acquire_until(place, deadline, key, &mut judge);
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(acquired)) => {
                self.succeeded();
                acquired
            }
            Ok(Err(failure)) => {
                self.failed(&failure);
                Acquired::Unavailable
            }
            Err(_) => {
                self.failed(&RedisFailure::Timeout(self.timeout.as_millis()));
                Acquired::Unavailable
            }
        }
    }

    async fn acquire_until(
        &self,
        place: &Place,
        deadline: Instant,
        key: &SealingKey,
        judge: &mut (impl FnMut(&Entry) -> Judgement + Send),
    ) -> Result<Acquired, RedisFailure> {
        let mut waited = false;
        loop {
            if let Some(entry) = self.read(place, key, judge).await? {
                return Ok(Acquired::Entry(entry));
            }
            if let Some(lock) = self.try_lock(place).await? {
                // Another replica may have published between the read and the lock.
                if let Some(entry) = self.read(place, key, judge).await? {
                    self.release_lock(place, lock).await?;
                    return Ok(Acquired::Entry(entry));
                }
                SharedCounts::add(&self.counts.lock_wins);
                return Ok(Acquired::Won(lock));
            }
            if !waited {
                waited = true;
                SharedCounts::add(&self.counts.waits);
                tracing::debug!("another replica is asking JTL for the access token; waiting");
            }
            if Instant::now() + POLL_INTERVAL >= deadline {
                tracing::info!(
                    timeout_ms = self.timeout.as_millis() as u64,
                    "no shared access token within jtl.timeout_ms of waiting; asking JTL"
                );
                return Ok(Acquired::TimedOut);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The entry at `place` as it is now (one that does not open is none), for a lock
    /// holder that wants what the stale entry holds. A failure counts and is `None`.
    pub async fn read_at(&self, place: &Place, key: &SealingKey) -> Option<Entry> {
        SharedCounts::add(&self.counts.reads);
        let mut get = redis::cmd("GET");
        get.arg(&place.key);
        match self
            .connection
            .query::<Option<Vec<u8>>>(&get, self.timeout)
            .await
        {
            Ok(raw) => {
                self.succeeded();
                raw.and_then(|raw| key.open(&place.key, &raw))
            }
            Err(failure) => {
                self.failed(&failure);
                None
            }
        }
    }

    /// Reads the entry; one that opens and that `judge` accepts is returned, one holding
    /// a refused token is deleted unless it changed meanwhile.
    async fn read(
        &self,
        place: &Place,
        key: &SealingKey,
        judge: &mut (impl FnMut(&Entry) -> Judgement + Send),
    ) -> Result<Option<Entry>, RedisFailure> {
        SharedCounts::add(&self.counts.reads);
        let raw: Option<Vec<u8>> = self
            .connection
            .query(redis::cmd("GET").arg(&place.key), self.timeout)
            .await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        // A value that does not open (another secret, tampered with, another version)
        // is no entry: it is overwritten by the next publish.
        let Some(entry) = key.open(&place.key, &raw) else {
            tracing::debug!("the shared entry does not open with this client secret; ignored");
            return Ok(None);
        };
        match judge(&entry) {
            Judgement::Use => {
                SharedCounts::add(&self.counts.hits);
                Ok(Some(entry))
            }
            Judgement::Refused => {
                let deleted: i64 = self
                    .connection
                    .query(
                        redis::cmd("EVAL")
                            .arg(COMPARE_AND_DELETE)
                            .arg(1)
                            .arg(&place.key)
                            .arg(raw),
                        self.timeout,
                    )
                    .await?;
                if deleted == 1 {
                    tracing::info!(
                        key = %place.key,
                        "dropped the shared entry whose token JTL refused"
                    );
                }
                Ok(None)
            }
            Judgement::Stale => Ok(None),
        }
    }

    async fn try_lock(&self, place: &Place) -> Result<Option<Lock>, RedisFailure> {
        let value = uuid::Uuid::new_v4().simple().to_string();
        let set: Option<String> = self
            .connection
            .query(
                redis::cmd("SET")
                    .arg(&place.lock_key)
                    .arg(&value)
                    .arg("NX")
                    .arg("PX")
                    .arg(duration_ms(self.timeout).max(1)),
                self.timeout,
            )
            .await?;
        Ok(set.map(|_| Lock { value }))
    }

    async fn release_lock(&self, place: &Place, lock: Lock) -> Result<(), RedisFailure> {
        let _: i64 = self
            .connection
            .query(
                redis::cmd("EVAL")
                    .arg(COMPARE_AND_DELETE)
                    .arg(1)
                    .arg(&place.lock_key)
                    .arg(&lock.value),
                self.timeout,
            )
            .await?;
        Ok(())
    }

    /// Writes the entry (sealed, expiring with the token), then releases `lock` when this
    /// replica holds it. Within `jtl.timeout_ms`; a failure only counts and logs.
    pub async fn publish(&self, key: &SealingKey, entry: &Entry, lock: Option<Lock>) {
        self.publish_at(&self.place, key, entry, lock).await
    }

    /// [`SharedTokenStore::publish`] at `place`.
    pub async fn publish_at(
        &self,
        place: &Place,
        key: &SealingKey,
        entry: &Entry,
        lock: Option<Lock>,
    ) {
        if !self.worth_trying() {
            return;
        }
        // The entry's expiry is absolute wall-clock time on purpose: every replica reads
        // it, and only the wall clock is common to them (a monotonic reading is per
        // process). The Redis TTL follows from it.
        let ttl_ms = entry.expires_at_ms.saturating_sub(self.clock.now_ms());
        let work = async {
            if ttl_ms > 0
                && let Some(sealed) = key.seal(&place.key, entry)
            {
                let _: () = self
                    .connection
                    .query(
                        redis::cmd("SET")
                            .arg(&place.key)
                            .arg(sealed)
                            .arg("PX")
                            .arg(ttl_ms),
                        self.timeout,
                    )
                    .await?;
            }
            if let Some(lock) = lock {
                self.release_lock(place, lock).await?;
            }
            Ok::<(), RedisFailure>(())
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(())) => self.succeeded(),
            Ok(Err(failure)) => self.failed(&failure),
            Err(_) => self.failed(&RedisFailure::Timeout(self.timeout.as_millis())),
        }
    }

    /// Releases a lock this replica won but has no token for (its JTL request failed), so
    /// a waiting replica takes over at once.
    pub async fn release(&self, lock: Lock) {
        self.release_at(&self.place, lock).await
    }

    /// [`SharedTokenStore::release`] at `place`.
    pub async fn release_at(&self, place: &Place, lock: Lock) {
        match tokio::time::timeout(self.timeout, self.release_lock(place, lock)).await {
            Ok(Ok(())) => self.succeeded(),
            Ok(Err(failure)) => self.failed(&failure),
            Err(_) => self.failed(&RedisFailure::Timeout(self.timeout.as_millis())),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn worth_trying(&self) -> bool {
        let health = self.health();
        !health.down || self.clock.mono_ms() >= health.retry_at_mono_ms
    }

    fn succeeded(&self) {
        let mut health = self.health();
        if health.down {
            tracing::info!(
                redis = %self.connection.address(),
                "Redis is reachable again; the replicas share the access token again"
            );
        }
        health.down = false;
        health.retry_delay = RETRY_FIRST;
    }

    fn failed(&self, failure: &RedisFailure) {
        SharedCounts::add(&self.counts.errors);
        let mut health = self.health();
        if health.down {
            tracing::debug!(redis = %self.connection.address(), "Redis still unusable: {failure}");
            health.retry_delay = (health.retry_delay * 2).min(RETRY_MAX);
        } else {
            tracing::warn!(
                redis = %self.connection.address(),
                "Redis is unusable ({failure}); this replica gets and refreshes its own access token until it is back"
            );
            health.down = true;
            health.retry_delay = RETRY_FIRST;
        }
        health.retry_at_mono_ms = self
            .clock
            .mono_ms()
            .saturating_add(duration_ms(health.retry_delay));
    }
}
