//! A generic record store: one directory per object under a parent dir, holding `record.json`
//! next to the object's own files, plus the name reservations that keep two create calls for
//! the same kubelet name from both succeeding.
//!
//! The first record of an object is made durable by [`RecordStore::sync`] (fsync of the file,
//! its directory and the parent), which the caller runs alongside its next steps and waits for
//! before the first side effect that outlives a power loss outside the root directory (a CNI
//! IP allocation): whatever a power loss interrupts can then be found and undone. Files under
//! the root that lose their record are removed as orphans at start-up. Updates replace the
//! file through a rename without fsync: they describe processes, which a power loss ends
//! anyway, and a daemon crash keeps them in the page cache. After a power loss a record reads
//! as its durable first version or as a later one, both of which recovery handles (an
//! interrupted create is torn down, a gone process is reported exited). Keeping the fsyncs
//! off the request's path saves about 1.5 ms per create on the test VM.
//!
//! Every change is one read-modify-write under the record's own write lock (containerd's
//! `UpdateSync`): read the current version, let the caller's closure change it or refuse the
//! transition, persist, publish. Two writers of one record (a StartContainer and the exit
//! watcher) can then never lose each other's change, and a delete waits for a write in
//! flight. Readers never wait for a write: they see the old version until the new one is on
//! disk.
//!
//! The file work of every change runs through [`crate::util::blocking`], so handlers may call
//! the store from async code without stalling a worker.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

const RECORD_FILE: &str = "record.json";
/// Room kept in every record file beyond its content: more than a state change adds (an exit
/// code, a reason, a message), so that those fit in place on a full disk.
const RECORD_SLACK: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("name {name:?} is reserved for {id}")]
    NameReserved { name: String, id: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("record {path}: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// What the store needs to know about a record.
pub trait Record: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    fn id(&self) -> &str;
    /// The reserved, kubelet-visible name.
    fn name(&self) -> &str;
}

/// A refused or failed [`RecordStore::try_update`].
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    /// The closure refused the change; nothing was written.
    #[error("{0}")]
    Refused(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Slot<R> {
    record: R,
    /// Held across each read-modify-write of this record, and by its delete.
    write: Arc<Mutex<()>>,
}

struct Inner<R> {
    records: HashMap<String, Slot<R>>,
    names: HashMap<String, String>,
}

fn hold(m: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    // The unit inside cannot be inconsistent, whatever panicked while holding it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A record's fsync running in the background ([`RecordStore::sync_in_background`]).
pub type RecordSync = tokio::task::JoinHandle<Result<(), StoreError>>;

/// All records of one kind. Cloning shares the same store.
pub struct RecordStore<R> {
    dir: PathBuf,
    inner: Arc<RwLock<Inner<R>>>,
}

impl<R> Clone for RecordStore<R> {
    fn clone(&self) -> Self {
        RecordStore {
            dir: self.dir.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<R: Record> RecordStore<R> {
    /// Open the store and load every record. Directories without a readable record are
    /// returned as orphans for the caller to clean: they are what a crash between mkdir and
    /// the first record write leaves.
    pub fn open(dir: &Path) -> Result<(Self, Vec<PathBuf>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        let mut inner = Inner {
            records: HashMap::new(),
            names: HashMap::new(),
        };
        let mut orphans = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|source| StoreError::Io {
            action: "reading",
            path: dir.to_path_buf(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let file = path.join(RECORD_FILE);
            let parsed = std::fs::read(&file)
                .ok()
                .map(|bytes| serde_json::from_slice::<R>(&bytes));
            match parsed {
                Some(Ok(record)) => {
                    inner
                        .names
                        .insert(record.name().to_string(), record.id().to_string());
                    inner
                        .records
                        .insert(record.id().to_string(), Slot::new(record));
                }
                Some(Err(e)) => {
                    tracing::warn!(path = %file.display(), error = %e, "unreadable record");
                    orphans.push(path);
                }
                None => orphans.push(path),
            }
        }
        Ok((
            RecordStore {
                dir: dir.to_path_buf(),
                inner: Arc::new(RwLock::new(inner)),
            },
            orphans,
        ))
    }

    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Reserve the name and persist the first record: a second create for the same name gets
    /// `NameReserved` with the first one's id.
    pub fn create(&self, record: R) -> Result<(), StoreError> {
        {
            let mut inner = self.inner.write().expect("store lock");
            if let Some(id) = inner.names.get(record.name()) {
                return Err(StoreError::NameReserved {
                    name: record.name().to_string(),
                    id: id.clone(),
                });
            }
            inner
                .names
                .insert(record.name().to_string(), record.id().to_string());
        }
        let dir = self.dir_of(record.id());
        let result = crate::util::blocking(|| {
            std::fs::create_dir_all(&dir)
                .map_err(|source| StoreError::Io {
                    action: "creating",
                    path: dir.clone(),
                    source,
                })
                .and_then(|_| self.persist(&record))
        });
        let mut inner = self.inner.write().expect("store lock");
        match result {
            Ok(()) => {
                inner
                    .records
                    .insert(record.id().to_string(), Slot::new(record));
                Ok(())
            }
            Err(e) => {
                inner.names.remove(record.name());
                drop(inner);
                let _ = crate::util::blocking(|| std::fs::remove_dir_all(&dir));
                Err(e)
            }
        }
    }

    fn persist(&self, record: &R) -> Result<(), StoreError> {
        let path = self.dir_of(record.id()).join(RECORD_FILE);
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Corrupt {
            path: path.clone(),
            source,
        })?;
        // Padded, so that the file keeps room for the next versions: when the disk is full
        // (a container filled it) a Stop must still record an exit or a state, and the
        // rename of a new file is then impossible, but a rewrite in place within the
        // record's own pages is not (see `util::overwrite_in_place`).
        let padded = crate::util::padded(&bytes, RECORD_SLACK);
        match crate::util::replace_file(&path, &padded) {
            Ok(()) => Ok(()),
            Err(e) if crate::error::is_no_space(&e) && path.exists() => {
                tracing::warn!(path = %path.display(), "disk full: rewriting the record in place");
                crate::util::overwrite_in_place(&path, &bytes, false)
            }
            Err(e) => Err(e),
        }
        .map_err(|source| StoreError::Io {
            action: "writing",
            path,
            source,
        })
    }

    /// Starts [`sync`](Self::sync) of `id` on a blocking thread; await the handle where the
    /// record must be durable.
    pub fn sync_in_background(&self, id: &str) -> RecordSync
    where
        R: Send + Sync + 'static,
    {
        let store = self.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || store.sync(&id))
    }

    /// Make the record of `id` and its directory entries durable (see the module doc).
    /// Blocking: run it on a blocking thread.
    pub fn sync(&self, id: &str) -> Result<(), StoreError> {
        let dir = self.dir_of(id);
        for path in [dir.join(RECORD_FILE), dir.clone(), self.dir.clone()] {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|source| StoreError::Io {
                    action: "syncing",
                    path,
                    source,
                })?;
        }
        Ok(())
    }

    /// Change a record: the change is written (not fsynced, see the module doc) before it is
    /// visible in memory. See [`try_update`](Self::try_update).
    pub fn update<F>(&self, id: &str, change: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut R),
    {
        self.try_update(id, |r| {
            change(r);
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|e| match e {
            UpdateError::Refused(never) => match never {},
            UpdateError::Store(e) => e,
        })
    }

    /// One locked read-modify-write: `change` sees the current version and may refuse (an
    /// invalid transition); a refusal or a failed write leaves disk and memory as they were.
    /// Returns the new version.
    pub fn try_update<F, E>(&self, id: &str, change: F) -> Result<R, UpdateError<E>>
    where
        F: FnOnce(&mut R) -> Result<(), E>,
    {
        let write = self
            .write_lock_of(id)
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        let _writing = hold(&write);
        // Read under the write lock: no other writer can have a newer version in flight.
        let mut record = self
            .get(id)
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        change(&mut record).map_err(UpdateError::Refused)?;
        crate::util::blocking(|| self.persist(&record))?;
        let mut inner = self.inner.write().expect("store lock");
        match inner.records.get_mut(id) {
            Some(slot) => slot.record = record.clone(),
            // Deletes take the write lock too, so the record is still there.
            None => return Err(StoreError::NotFound(id.into()).into()),
        }
        Ok(record)
    }

    fn write_lock_of(&self, id: &str) -> Option<Arc<Mutex<()>>> {
        self.inner
            .read()
            .expect("store lock")
            .records
            .get(id)
            .map(|s| s.write.clone())
    }

    pub fn get(&self, id: &str) -> Option<R> {
        self.inner
            .read()
            .expect("store lock")
            .records
            .get(id)
            .map(|s| s.record.clone())
    }

    /// Find a record by full id or unique id prefix (as crictl users type them).
    pub fn resolve(&self, id_or_prefix: &str) -> Option<String> {
        if id_or_prefix.is_empty() {
            return None;
        }
        let inner = self.inner.read().expect("store lock");
        if inner.records.contains_key(id_or_prefix) {
            return Some(id_or_prefix.to_string());
        }
        let mut found = inner.records.keys().filter(|k| k.starts_with(id_or_prefix));
        match (found.next(), found.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        }
    }

    pub fn list(&self) -> Vec<R> {
        self.inner
            .read()
            .expect("store lock")
            .records
            .values()
            .map(|s| s.record.clone())
            .collect()
    }

    /// Drop the record and release the name. The caller has already removed everything the
    /// object owned; this removes its directory last.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        // Wait for a write in flight: it would put a file back into the directory.
        let write = self.write_lock_of(id);
        let _writing = write.as_deref().map(hold);
        let dir = self.dir_of(id);
        crate::util::blocking(|| crate::util::remove_dir_all_if_exists(&dir)).map_err(
            |source| StoreError::Io {
                action: "removing",
                path: dir,
                source,
            },
        )?;
        let mut inner = self.inner.write().expect("store lock");
        if let Some(slot) = inner.records.remove(id)
            && inner.names.get(slot.record.name()).map(String::as_str) == Some(id)
        {
            inner.names.remove(slot.record.name());
        }
        Ok(())
    }
}

impl<R> Slot<R> {
    fn new(record: R) -> Self {
        Slot {
            record,
            write: Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Counter {
        id: String,
        name: String,
        n: u32,
        state: String,
    }

    impl Record for Counter {
        fn id(&self) -> &str {
            &self.id
        }
        fn name(&self) -> &str {
            &self.name
        }
    }

    fn counter(id: &str) -> Counter {
        Counter {
            id: id.into(),
            name: format!("name-{id}"),
            n: 0,
            state: "created".into(),
        }
    }

    fn on_disk(store: &RecordStore<Counter>, id: &str) -> Counter {
        let bytes = std::fs::read(store.dir_of(id).join(RECORD_FILE)).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn concurrent_updates_of_one_record_are_never_lost() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = RecordStore::<Counter>::open(tmp.path()).unwrap();
        store.create(counter("a")).unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        store.update("a", |r| r.n += 1).unwrap();
                    }
                });
            }
        });
        assert_eq!(store.get("a").unwrap().n, 400);
        assert_eq!(on_disk(&store, "a").n, 400);
    }

    /// The race of issue 13: the exit watcher writes "exited" while a start is between its
    /// read and its write; the start's closure sees "exited" and refuses "running".
    #[test]
    fn a_closure_refuses_an_invalid_transition_and_nothing_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = RecordStore::<Counter>::open(tmp.path()).unwrap();
        store.create(counter("a")).unwrap();
        store.update("a", |r| r.state = "exited".into()).unwrap();
        let started = store.try_update("a", |r| {
            if r.state != "created" {
                return Err(format!("is {}", r.state));
            }
            r.state = "running".into();
            Ok(())
        });
        match started {
            Err(UpdateError::Refused(why)) => assert_eq!(why, "is exited"),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.get("a").unwrap().state, "exited");
        assert_eq!(on_disk(&store, "a").state, "exited");
    }

    /// A write that fails (here: record.json replaced by a non-empty directory, so the
    /// rename over it fails even for root) leaves memory and disk at the previous version,
    /// and the next update after the fault works.
    #[test]
    fn a_failed_write_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = RecordStore::<Counter>::open(tmp.path()).unwrap();
        store.create(counter("a")).unwrap();
        store.update("a", |r| r.n = 1).unwrap();
        let file = store.dir_of("a").join(RECORD_FILE);
        let saved = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        std::fs::write(file.join("blocker"), b"x").unwrap();

        let failed = store.update("a", |r| r.n = 2);
        assert!(matches!(failed, Err(StoreError::Io { .. })), "{failed:?}");
        assert_eq!(
            store.get("a").unwrap().n,
            1,
            "memory changed by a failed write"
        );
        let temps: Vec<_> = std::fs::read_dir(store.dir_of("a"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(temps.is_empty(), "temp files left: {temps:?}");

        std::fs::remove_dir_all(&file).unwrap();
        std::fs::write(&file, saved).unwrap();
        store.update("a", |r| r.n = 3).unwrap();
        assert_eq!(store.get("a").unwrap().n, 3);
        assert_eq!(on_disk(&store, "a").n, 3);
    }

    /// On a full disk (a 64 KiB tmpfs filled up) a new file cannot be written, but an update
    /// still lands, in place in the record's reserved room, and reads back after a reopen.
    #[test]
    fn updates_land_in_place_when_the_disk_is_full() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a tmpfs: run it as root"
        );
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("disk");
        std::fs::create_dir(&disk).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &disk,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=64k"),
        )
        .unwrap();
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _unmount = Unmount(&disk);

        let (store, _) = RecordStore::<Counter>::open(&disk.join("records")).unwrap();
        store.create(counter("a")).unwrap();
        // Fill the disk.
        let mut fill = std::fs::File::create(disk.join("fill")).unwrap();
        let chunk = vec![0u8; 4096];
        while std::io::Write::write_all(&mut fill, &chunk).is_ok() {}
        drop(fill);
        assert!(
            crate::util::replace_file(&disk.join("probe"), &chunk).is_err(),
            "the disk should be full"
        );

        let long_state = "exited: ".to_string() + &"x".repeat(600);
        store
            .update("a", |r| {
                r.n = 7;
                r.state = long_state.clone();
            })
            .expect("update on a full disk");
        assert_eq!(on_disk(&store, "a").state, long_state);
        let (reopened, orphans) = RecordStore::<Counter>::open(&disk.join("records")).unwrap();
        assert!(orphans.is_empty(), "{orphans:?}");
        assert_eq!(reopened.get("a").unwrap().n, 7);
        let temps: Vec<_> = std::fs::read_dir(store.dir_of("a"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(temps.is_empty(), "temp files left: {temps:?}");
        // More than the reserved room: refused, and the old version is intact.
        let huge = "y".repeat(20_000);
        assert!(store.update("a", |r| r.state = huge.clone()).is_err());
        assert_eq!(on_disk(&store, "a").state, long_state);
    }

    #[test]
    fn updates_of_missing_or_deleted_records_are_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = RecordStore::<Counter>::open(tmp.path()).unwrap();
        assert!(matches!(
            store.update("nope", |r| r.n = 1),
            Err(StoreError::NotFound(_))
        ));
        store.create(counter("a")).unwrap();
        // Deletes and updates racing: every update either lands before the delete or is
        // NotFound; the directory is gone in the end and nothing is resurrected.
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..200 {
                    match store.update("a", |r| r.n += 1) {
                        Ok(_) | Err(StoreError::NotFound(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            });
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                store.delete("a").unwrap();
            });
        });
        assert!(store.get("a").is_none());
        assert!(!store.dir_of("a").exists());
        // The name is free again.
        store.create(counter("a")).unwrap();
    }
}
