//! What keeps content alive while no image record references it yet, and the locks that let
//! pulls, imports and removals of different images run side by side.
//!
//! - [`Leases`]: a pull registers each blob and snapshot chain id it is about to use *before*
//!   it checks whether it is present, and holds the lease until its image record is written.
//!   Garbage collection and RemoveImage hold the lease table while they delete, so they never
//!   delete something a pull in this process still needs (containerd's leases, in memory).
//! - [`GcLock`]: the same for other processes. `crius image import` holds `<root>/gc.lock`
//!   shared from its first staged blob to its last record; every deletion of blobs or
//!   snapshots needs it exclusive and is skipped (left to the next collection) while anyone
//!   holds it shared.
//! - [`KeyedMutex`]: one unpack per snapshot chain id at a time.
//! - [`UseLocks`]: per image id; CreateContainer holds it shared from its image lookup until
//!   its container record names the image, RemoveImage exclusive over its in-use check and the
//!   removal, so no container is ever created on a removed image.

use super::ImageError;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Counts of leased keys (blob digests and chain ids), over all live [`Lease`]s.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<String, usize>>,
}

impl Leases {
    pub fn lease(self: &Arc<Self>) -> Lease {
        Lease {
            leases: self.clone(),
            keys: Mutex::new(Vec::new()),
        }
    }

    /// The leased keys, locked: no lease can be added until the guard is dropped. Deleters
    /// hold it over "is it leased?" and the deletion.
    pub(crate) fn table(&self) -> LeaseTable<'_> {
        LeaseTable(self.held.lock().unwrap_or_else(|p| p.into_inner()))
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.table().0.len()
    }
}

pub(crate) struct LeaseTable<'a>(MutexGuard<'a, HashMap<String, usize>>);

impl LeaseTable<'_> {
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
}

/// Keys one operation keeps alive; released when dropped.
#[derive(Debug)]
pub struct Lease {
    leases: Arc<Leases>,
    keys: Mutex<Vec<String>>,
}

impl Lease {
    /// Keep `key` alive until this lease is dropped. Call before checking that it exists.
    pub fn add(&self, key: &str) {
        let mut held = self.leases.held.lock().unwrap_or_else(|p| p.into_inner());
        *held.entry(key.to_string()).or_default() += 1;
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.to_string());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let keys = std::mem::take(&mut *self.keys.lock().unwrap_or_else(|p| p.into_inner()));
        let mut held = self.leases.held.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            if let Some(n) = held.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&k);
                }
            }
        }
    }
}

/// An flock on `<root>/gc.lock`: shared while staging content no record references yet,
/// exclusive while deleting. Released when dropped.
#[derive(Debug)]
pub struct GcLock {
    _file: File,
}

impl GcLock {
    fn open(path: &Path) -> Result<File, ImageError> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(ImageError::io(path))
    }

    /// Wait for any deletion to finish, then hold the lock shared.
    pub fn shared(path: &Path) -> Result<GcLock, ImageError> {
        let file = Self::open(path)?;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) } == 0 {
                return Ok(GcLock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(ImageError::io(path)(e));
            }
        }
    }

    /// The lock exclusive, or None while someone stages content (never waits: deleting can
    /// always be left to the next collection).
    pub fn try_exclusive(path: &Path) -> Result<Option<GcLock>, ImageError> {
        let file = Self::open(path)?;
        Ok(super::lock::try_flock(&file).then_some(GcLock { _file: file }))
    }
}

/// Blocking per-key mutexes whose entries go when nobody holds them.
#[derive(Debug, Default)]
pub struct KeyedMutex {
    map: Mutex<HashMap<String, Weak<Mutex<()>>>>,
}

impl KeyedMutex {
    /// The mutex for `key`; lock it for as long as the work on `key` lasts.
    pub fn entry(&self, key: &str) -> Arc<Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(m) = map.get(key).and_then(Weak::upgrade) {
            return m;
        }
        let m = Arc::new(Mutex::new(()));
        map.insert(key.to_string(), Arc::downgrade(&m));
        m
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let mut map = self.map.lock().unwrap();
        map.retain(|_, w| w.strong_count() > 0);
        map.len()
    }
}

/// Per-image-id reader/writer locks (async): users shared, RemoveImage exclusive.
#[derive(Debug, Default)]
pub struct UseLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::RwLock<()>>>>,
}

pub type ImageUse = tokio::sync::OwnedRwLockReadGuard<()>;
pub type ImageRemoval = tokio::sync::OwnedRwLockWriteGuard<()>;

impl UseLocks {
    fn entry(&self, id: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(m) = map.get(id).and_then(Weak::upgrade) {
            return m;
        }
        let m = Arc::new(tokio::sync::RwLock::new(()));
        map.insert(id.to_string(), Arc::downgrade(&m));
        m
    }

    /// Hold image `id` in use (shared with other users).
    pub async fn share(&self, id: &str) -> ImageUse {
        self.entry(id).read_owned().await
    }

    /// Wait until nobody is taking `id` into use, and keep them out while held.
    pub async fn exclusive(&self, id: &str) -> ImageRemoval {
        self.entry(id).write_owned().await
    }

    /// Entries still in the map (for tests: they go when the last holder does).
    pub fn live_entries(&self) -> usize {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_count_per_key_and_go_with_their_owner() {
        let leases = Arc::new(Leases::default());
        let a = leases.lease();
        a.add("k1");
        a.add("k2");
        let b = leases.lease();
        b.add("k1");
        assert!(leases.table().contains("k1"));
        drop(a);
        assert!(leases.table().contains("k1"), "still held by b");
        assert!(!leases.table().contains("k2"));
        drop(b);
        assert_eq!(leases.count(), 0);
    }

    #[test]
    fn gc_lock_exclusive_only_without_sharers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gc.lock");
        let s = GcLock::shared(&p).unwrap();
        assert!(GcLock::try_exclusive(&p).unwrap().is_none());
        drop(s);
        let x = GcLock::try_exclusive(&p).unwrap();
        assert!(x.is_some());
        assert!(GcLock::try_exclusive(&p).unwrap().is_none());
    }

    #[test]
    fn keyed_mutex_entries_go_when_released() {
        let k = KeyedMutex::default();
        let m = k.entry("a");
        assert!(Arc::ptr_eq(&m, &k.entry("a")));
        drop(m);
        assert_eq!(k.len(), 0);
    }

    #[tokio::test]
    async fn removal_waits_for_users_and_keeps_new_ones_out() {
        let locks = Arc::new(UseLocks::default());
        let user = locks.share("img").await;
        let l2 = locks.clone();
        let removal = tokio::spawn(async move { l2.exclusive("img").await });
        tokio::task::yield_now().await;
        assert!(!removal.is_finished());
        drop(user);
        let held = removal.await.unwrap();
        let l3 = locks.clone();
        let late = tokio::spawn(async move { l3.share("img").await });
        tokio::task::yield_now().await;
        assert!(!late.is_finished());
        drop(held);
        drop(late.await.unwrap());
        assert_eq!(locks.live_entries(), 0);
    }
}
