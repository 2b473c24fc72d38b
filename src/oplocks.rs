//! Per-object operation locks: lifecycle verbs on one id run one at a time (libcontainer takes
//! no lock of its own, and a Stop racing a Run must see the Run's finished record).
//!
//! Each id's entry counts the callers that hold or wait for its lock, and the last one to
//! leave removes it: the map is exactly as large as the work in flight, whether the operation
//! succeeded, failed or was cancelled while waiting, and an entry is never removed while
//! anyone still holds or waits for its mutex (so two callers can never get different mutexes
//! for the same id).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

struct Slot {
    mutex: Arc<AsyncMutex<()>>,
    /// Holders and waiters.
    users: usize,
}

type Map = Arc<Mutex<HashMap<String, Slot>>>;

fn locked(map: &Map) -> MutexGuard<'_, HashMap<String, Slot>> {
    // Nothing panics while holding it; if something did, the counts are still consistent.
    map.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
pub struct OpLocks {
    map: Map,
}

/// One caller's claim on an id's entry; dropping it (after the lock, or instead of getting
/// it when the caller was cancelled) gives the claim back.
struct Claim {
    map: Map,
    id: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut map = locked(&self.map);
        if let Some(slot) = map.get_mut(&self.id) {
            slot.users -= 1;
            if slot.users == 0 {
                map.remove(&self.id);
            }
        }
    }
}

/// The operation lock of one id, held until dropped.
pub struct OpGuard {
    // Field order is drop order: the mutex is released before the claim can remove the
    // entry, so a newcomer never gets a fresh mutex while this one is still held.
    _guard: OwnedMutexGuard<()>,
    _claim: Claim,
}

impl OpLocks {
    pub async fn lock(&self, id: &str) -> OpGuard {
        let (mutex, claim) = {
            let mut map = locked(&self.map);
            let slot = map.entry(id.to_string()).or_insert_with(|| Slot {
                mutex: Arc::default(),
                users: 0,
            });
            slot.users += 1;
            let claim = Claim {
                map: self.map.clone(),
                id: id.to_string(),
            };
            (slot.mutex.clone(), claim)
        };
        let guard = mutex.lock_owned().await;
        OpGuard {
            _guard: guard,
            _claim: claim,
        }
    }

    /// How many ids have an operation running or waiting.
    pub fn len(&self) -> usize {
        locked(&self.map).len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_thousand_failed_operations_leave_no_entry() {
        let locks = OpLocks::default();
        async fn failing(locks: &OpLocks, id: &str) -> Result<(), String> {
            let _op = locks.lock(id).await;
            Err(format!("create {id} failed"))
        }
        for i in 0..1000 {
            let id = format!("{i:064x}");
            assert!(failing(&locks, &id).await.is_err());
        }
        assert!(locks.is_empty(), "{} entries left", locks.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn same_id_serialises_other_ids_do_not_and_nothing_is_left() {
        let locks = Arc::new(OpLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, inside, max) = (locks.clone(), inside.clone(), max.clone());
            tasks.push(tokio::spawn(async move {
                let _op = locks.lock("a").await;
                let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        // Another id is not held up by "a".
        tokio::time::timeout(Duration::from_secs(1), locks.lock("b"))
            .await
            .expect("b is free");
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            max.load(Ordering::SeqCst),
            1,
            "two holders of one id at once"
        );
        assert!(locks.is_empty());
    }

    /// The split the old map allowed: an entry forgotten while a waiter still wanted it gave
    /// the next caller a second mutex for the same id.
    #[tokio::test]
    async fn no_second_mutex_while_one_is_held_or_awaited() {
        let locks = Arc::new(OpLocks::default());
        let held = locks.lock("x").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _op = locks.lock("x").await;
            })
        };
        tokio::task::yield_now().await;
        // A third caller must wait too: the entry is shared, not replaced.
        let third = tokio::time::timeout(Duration::from_millis(50), locks.lock("x")).await;
        assert!(third.is_err(), "a second mutex for the same id");
        assert_eq!(locks.len(), 1);
        drop(held);
        waiter.await.unwrap();
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_its_claim_back() {
        let locks = OpLocks::default();
        let held = locks.lock("x").await;
        for _ in 0..100 {
            let waited = tokio::time::timeout(Duration::from_millis(1), locks.lock("x")).await;
            assert!(waited.is_err());
        }
        assert_eq!(locks.len(), 1);
        drop(held);
        assert!(locks.is_empty());
        // And the id still locks normally afterwards.
        drop(locks.lock("x").await);
        assert!(locks.is_empty());
    }
}
