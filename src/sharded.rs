//! Hot-path metrics without shared cache lines. Two worker threads adding to one atomic
//! (or taking one lock) would pass its cache line back and forth on every request; here
//! each thread writes to a shard of its own, and a scrape adds the shards up.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// More shards than worker threads; threads beyond that share shards, which stays
/// correct (every write is atomic), only slower.
const SHARDS: usize = 16;

/// This thread's shard, handed out round robin on first use.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

/// One cache line (two, for adjacent-line prefetching) per shard.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

fn shards<T: Default>() -> Box<[Padded<T>]> {
    (0..SHARDS).map(|_| Padded::default()).collect()
}

pub struct ShardedCounter {
    shards: Box<[Padded<AtomicU64>]>,
}

impl Default for ShardedCounter {
    fn default() -> Self {
        ShardedCounter { shards: shards() }
    }
}

impl ShardedCounter {
    pub fn inc(&self) {
        self.shards[shard_index()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

pub struct ShardedGauge {
    shards: Box<[Padded<AtomicI64>]>,
}

impl Default for ShardedGauge {
    fn default() -> Self {
        ShardedGauge { shards: shards() }
    }
}

impl ShardedGauge {
    pub fn add(&self, delta: i64) {
        self.shards[shard_index()]
            .0
            .fetch_add(delta, Ordering::Relaxed);
    }

    /// The sum over all shards (a guard may be dropped on another thread than the one
    /// that counted it up, so single shards can go negative).
    pub fn get(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// A histogram of durations with fixed bucket bounds (in seconds, ascending; the last
/// bucket, +Inf, is implied).
pub struct ShardedHistogram {
    bounds: &'static [f64],
    shards: Box<[Padded<HistogramShard>]>,
}

#[derive(Default)]
struct HistogramShard {
    /// One count per bound, plus +Inf.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_ns: AtomicU64,
}

/// What a scrape reads: the sum in seconds, the count, and per-bucket counts (not
/// cumulative) with their upper bounds, +Inf as `f64::MAX` (as prometheus-client's
/// encoder expects).
pub struct HistogramSnapshot {
    pub sum_s: f64,
    pub count: u64,
    pub buckets: Vec<(f64, u64)>,
}

impl ShardedHistogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Padded(HistogramShard {
                    buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                    ..HistogramShard::default()
                })
            })
            .collect();
        ShardedHistogram { bounds, shards }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        let shard = &self.shards[shard_index()].0;
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        shard.sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .map(|bound| (bound, 0))
            .collect();
        let (mut count, mut sum_ns) = (0u64, 0u64);
        for shard in self.shards.iter() {
            for (total, counted) in buckets.iter_mut().zip(&shard.0.buckets) {
                total.1 += counted.load(Ordering::Relaxed);
            }
            count += shard.0.count.load(Ordering::Relaxed);
            sum_ns = sum_ns.saturating_add(shard.0.sum_ns.load(Ordering::Relaxed));
        }
        HistogramSnapshot {
            sum_s: sum_ns as f64 / 1e9,
            count,
            buckets,
        }
    }
}

/// Counters keyed by a small label set (a handful of distinct values in practice): each
/// shard keeps its own short list, so the lock it takes is its thread's alone.
/// One shard's counts: a short list, searched linearly.
type CountList<K> = Mutex<Vec<(K, u64)>>;

pub struct ShardedCounterMap<K> {
    shards: Box<[Padded<CountList<K>>]>,
}

impl<K> Default for ShardedCounterMap<K> {
    fn default() -> Self {
        ShardedCounterMap {
            shards: (0..SHARDS)
                .map(|_| Padded(Mutex::new(Vec::new())))
                .collect(),
        }
    }
}

impl<K: PartialEq + Clone> ShardedCounterMap<K> {
    pub fn inc(&self, key: K) {
        let mut entries = self.shards[shard_index()]
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, count)) => *count += 1,
            None => entries.push((key, 1)),
        }
    }

    /// Every key seen, with its total, in the order keys were first seen per shard.
    pub fn totals(&self) -> Vec<(K, u64)> {
        let mut totals: Vec<(K, u64)> = Vec::new();
        for shard in self.shards.iter() {
            let entries = shard
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (key, count) in entries.iter() {
                match totals.iter_mut().find(|(k, _)| k == key) {
                    Some((_, total)) => *total += count,
                    None => totals.push((key.clone(), *count)),
                }
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_from_many_threads_add_up() {
        let counter = Arc::new(ShardedCounter::default());
        let gauge = Arc::new(ShardedGauge::default());
        let map = Arc::new(ShardedCounterMap::<u16>::default());
        let threads: Vec<_> = (0..SHARDS + 4)
            .map(|i| {
                let (counter, gauge, map) = (counter.clone(), gauge.clone(), map.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.inc();
                        gauge.add(1);
                        map.inc(if i % 2 == 0 { 200 } else { 401 });
                    }
                    gauge.add(-500);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let threads = (SHARDS + 4) as u64;
        assert_eq!(counter.get(), threads * 1000);
        assert_eq!(gauge.get(), threads as i64 * 500);
        let mut totals = map.totals();
        totals.sort();
        assert_eq!(
            totals,
            vec![(200, threads / 2 * 1000), (401, threads / 2 * 1000)]
        );
    }

    #[test]
    fn histogram_puts_each_value_in_its_bucket() {
        static BOUNDS: [f64; 2] = [0.001, 0.1];
        let histogram = ShardedHistogram::new(&BOUNDS);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(50));
        histogram.observe(Duration::from_secs(2));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.buckets, vec![(0.001, 2), (0.1, 1), (f64::MAX, 1)]);
        assert!((snapshot.sum_s - 2.0515).abs() < 1e-9);
    }
}
