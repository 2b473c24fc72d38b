//! Disk usage kept between stats calls, as containerd's snapshot syncer keeps it: walking a
//! writable layer costs a syscall per file, and kubelet asks for every container's usage
//! every few seconds. A stats call answers from the cache; a value older than `max_age` is
//! still answered, while one background walk (on the blocking pool) replaces it, so a layer
//! that grows shows its new size within `max_age` plus one call. Only a key never walked
//! (a new container, or any after a daemon restart: the cache lives in memory only) is
//! walked while the caller waits. Nothing is walked for containers nobody asks about, so an
//! idle node does no work.
//!
//! Removal: the owner calls [`UsageCache::forget`] after it deleted the object's record; a
//! walk that finishes later writes back only into an entry that still exists, and a first
//! walk re-checks the caller's `exists` after inserting, so a removed object never keeps an
//! entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a walked usage is answered before a call starts a new walk (containerd's
/// default stats collection period).
pub const USAGE_MAX_AGE: Duration = Duration::from_secs(10);

struct Entry<V> {
    value: V,
    taken: Instant,
    /// A background walk is running: calls meanwhile answer `value` and start none.
    refreshing: bool,
}

pub struct UsageCache<V> {
    max_age: Duration,
    entries: Mutex<HashMap<String, Entry<V>>>,
}

impl<V: Clone + Send + 'static> UsageCache<V> {
    pub fn new(max_age: Duration) -> Arc<Self> {
        Arc::new(UsageCache {
            max_age,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<V>>> {
        // Entries are plain values: a panic elsewhere cannot leave one half-written.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The usage of `key`, from the cache when it has one. `walk` computes it (blocking; it
    /// returns None when there is nothing to measure, e.g. the directory is gone); `exists`
    /// tells whether the object is still there (its record). Call from a blocking thread:
    /// a first walk runs on the caller's thread.
    pub fn get<W>(self: &Arc<Self>, key: &str, walk: W, exists: impl Fn() -> bool) -> Option<V>
    where
        W: Fn() -> Option<V> + Send + 'static,
    {
        let cached = self.entries().get_mut(key).map(|e| {
            let start = e.taken.elapsed() >= self.max_age && !e.refreshing;
            e.refreshing |= start;
            (e.value.clone(), start)
        });
        if let Some((value, start)) = cached {
            // Outside the lock: without a runtime the walk runs right here.
            if start {
                self.refresh_in_background(key, walk);
            }
            return Some(value);
        }
        let value = walk()?;
        self.entries().insert(
            key.to_string(),
            Entry {
                value: value.clone(),
                taken: Instant::now(),
                refreshing: false,
            },
        );
        // A removal between the caller's lookup and the insert has already forgotten the
        // key; whichever of the two comes last drops the entry.
        if !exists() {
            self.forget(key);
        }
        Some(value)
    }

    fn refresh_in_background<W>(self: &Arc<Self>, key: &str, walk: W)
    where
        W: Fn() -> Option<V> + Send + 'static,
    {
        let cache = self.clone();
        let key = key.to_string();
        let run = move || {
            let value = walk();
            let mut entries = cache.entries();
            // Forgotten meanwhile (removed): nothing to write back.
            let Some(e) = entries.get_mut(&key) else {
                return;
            };
            e.refreshing = false;
            match value {
                Some(v) => {
                    e.value = v;
                    e.taken = Instant::now();
                }
                // Nothing to measure any more (the layer is being removed): answer the old
                // value until the owner forgets the key, and try again after max_age.
                None => e.taken = Instant::now(),
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(run)),
            // No runtime (unit tests): the caller's thread is a blocking one anyway.
            Err(_) => run(),
        }
    }

    /// Drop the entry of a removed object (and make a walk in flight discard its result).
    pub fn forget(&self, key: &str) {
        self.entries().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn counting(n: &Arc<AtomicU64>) -> impl Fn() -> Option<u64> + Send + 'static {
        let n = n.clone();
        move || Some(n.fetch_add(1, Ordering::SeqCst) + 1)
    }

    #[test]
    fn a_fresh_value_is_answered_without_a_walk() {
        let cache = UsageCache::new(Duration::from_secs(3600));
        let walks = Arc::new(AtomicU64::new(0));
        assert_eq!(cache.get("a", counting(&walks), || true), Some(1));
        assert_eq!(cache.get("a", counting(&walks), || true), Some(1));
        assert_eq!(walks.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_stale_value_is_answered_while_one_walk_replaces_it() {
        // No runtime here: the refresh runs on this thread, after the stale answer is taken.
        let cache = UsageCache::new(Duration::ZERO);
        let walks = Arc::new(AtomicU64::new(0));
        assert_eq!(cache.get("a", counting(&walks), || true), Some(1));
        assert_eq!(cache.get("a", counting(&walks), || true), Some(1));
        assert_eq!(cache.get("a", counting(&walks), || true), Some(2));
        assert_eq!(walks.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn nothing_to_measure_is_not_cached() {
        let cache = UsageCache::<u64>::new(Duration::from_secs(3600));
        assert_eq!(cache.get("a", || None, || true), None);
        assert!(cache.entries().is_empty());
    }

    #[test]
    fn a_removed_object_keeps_no_entry() {
        let cache = UsageCache::new(Duration::from_secs(3600));
        // Removed while its first walk ran: the walk's result is answered, not kept.
        assert_eq!(cache.get("a", || Some(7u64), || false), Some(7));
        assert!(cache.entries().is_empty());
        // Forgotten while a refresh ran: the refresh writes nothing back.
        let cache = UsageCache::new(Duration::ZERO);
        cache.get("b", || Some(1u64), || true);
        let inner = cache.clone();
        assert_eq!(
            cache.get(
                "b",
                move || {
                    inner.forget("b");
                    Some(2)
                },
                || true
            ),
            Some(1)
        );
        assert!(cache.entries().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refreshes_run_on_the_blocking_pool_one_at_a_time() {
        let cache = UsageCache::new(Duration::ZERO);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let walks = Arc::new(AtomicU64::new(0));
        let walk = {
            let walks = walks.clone();
            move || {
                let n = walks.fetch_add(1, Ordering::SeqCst);
                if n > 0 {
                    // Background walks wait here until the test lets them go.
                    rx.lock().unwrap().recv().unwrap();
                }
                Some(n)
            }
        };
        let c = cache.clone();
        let answers = tokio::task::spawn_blocking(move || {
            let first = c.get("a", walk.clone(), || true);
            // Each of these sees the stale value; only the first starts a walk.
            let more: Vec<_> = (0..5).map(|_| c.get("a", walk.clone(), || true)).collect();
            (first, more)
        })
        .await
        .unwrap();
        assert_eq!(answers.0, Some(0));
        assert!(answers.1.iter().all(|a| *a == Some(0)), "{answers:?}");
        tx.send(()).unwrap();
        // The walk has been let go; the entry turns 1 once it wrote back.
        loop {
            let c = cache.clone();
            let got = tokio::task::spawn_blocking(move || {
                let e = c.entries();
                (e["a"].value, e["a"].refreshing)
            })
            .await
            .unwrap();
            if got == (1, false) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(walks.load(Ordering::SeqCst), 2, "one background walk");
        drop(tx);
    }
}
