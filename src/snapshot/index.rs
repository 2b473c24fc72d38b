//! The snapshot index: chain id -> short numeric directory. Numbers keep overlay `lowerdir`
//! option strings short (a page is the limit); hashes would allow only ~40 layers.
//!
//! Crash safety: a layer is unpacked into `tmp-<random>/fs`, renamed to `<n>` and only then
//! entered in `index.json` (replaced atomically). A directory that is not in the index is
//! incomplete or being removed, and [`Snapshots::recover`] deletes it. Removal goes the other
//! way: index first, then the directory.
//!
//! Index writes (commit, remove, recover) must be made under the image store lock; unpacking
//! into a temp snapshot need not: every live [`TmpSnapshot`] holds `tmp.lock` shared, and
//! [`Snapshots::recover`] deletes temp directories only when it gets that lock exclusive.

use super::SnapshotError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const INDEX_VERSION: u32 = 1;
const TMP_PREFIX: &str = "tmp-";
const TMP_LOCK: &str = "tmp.lock";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Directory number: the snapshot lives in `<dir>/<id>/fs`.
    pub id: u64,
    /// Chain id of the layer below, if any.
    pub parent: Option<String>,
    pub diff_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    next: u64,
    snapshots: BTreeMap<String, SnapshotEntry>,
}

#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
}

/// A snapshot being unpacked. Dropped without [`Snapshots::commit`], it is removed.
#[derive(Debug)]
pub struct TmpSnapshot {
    dir: PathBuf,
    committed: bool,
    /// `tmp.lock`, flocked shared while this snapshot is being filled.
    _busy: std::fs::File,
}

impl TmpSnapshot {
    /// The directory to unpack into.
    pub fn fs(&self) -> PathBuf {
        self.dir.join("fs")
    }
}

impl Drop for TmpSnapshot {
    fn drop(&mut self) {
        if !self.committed
            && let Err(e) = crate::util::remove_dir_all_if_exists(&self.dir)
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing unfinished snapshot");
        }
    }
}

impl Snapshots {
    /// `dir` is `<root>/snapshots`; created if missing.
    pub fn open(dir: &Path) -> Result<Snapshots, SnapshotError> {
        std::fs::create_dir_all(dir).map_err(SnapshotError::io(dir))?;
        Ok(Snapshots {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    fn load(&self) -> Result<IndexFile, SnapshotError> {
        let path = self.index_path();
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(IndexFile {
                    version: INDEX_VERSION,
                    next: 1,
                    snapshots: BTreeMap::new(),
                });
            }
            Err(e) => return Err(SnapshotError::Io { path, source: e }),
        };
        let idx: IndexFile = serde_json::from_slice(&data).map_err(|e| SnapshotError::Index {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if idx.version != INDEX_VERSION {
            return Err(SnapshotError::Index {
                path,
                reason: format!("unsupported version {}", idx.version),
            });
        }
        Ok(idx)
    }

    fn save(&self, idx: &IndexFile) -> Result<(), SnapshotError> {
        let path = self.index_path();
        let data = serde_json::to_vec_pretty(idx).map_err(|e| SnapshotError::Index {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        crate::util::atomic_write(&path, &data).map_err(SnapshotError::io(path))
    }

    pub fn fs_path(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string()).join("fs")
    }

    pub fn get(&self, chain_id: &str) -> Result<Option<SnapshotEntry>, SnapshotError> {
        Ok(self.load()?.snapshots.get(chain_id).cloned())
    }

    pub fn list(&self) -> Result<BTreeMap<String, SnapshotEntry>, SnapshotError> {
        Ok(self.load()?.snapshots)
    }

    /// A fresh temp snapshot directory (`tmp-<random>/fs`, mode 0755).
    pub fn prepare(&self) -> Result<TmpSnapshot, SnapshotError> {
        let busy = self.tmp_lock(libc::LOCK_SH)?;
        let dir = self
            .dir
            .join(format!("{TMP_PREFIX}{}", crate::util::new_id()));
        std::fs::create_dir(&dir).map_err(SnapshotError::io(&dir))?;
        let tmp = TmpSnapshot {
            dir,
            committed: false,
            _busy: busy,
        };
        let fs = tmp.fs();
        std::fs::create_dir(&fs).map_err(SnapshotError::io(&fs))?;
        Ok(tmp)
    }

    /// `tmp.lock`, opened and flocked with `op`; Err(WouldBlock) for a non-blocking op
    /// that did not get it.
    fn tmp_lock(&self, op: libc::c_int) -> Result<std::fs::File, SnapshotError> {
        use std::os::fd::AsRawFd;
        let path = self.dir.join(TMP_LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(SnapshotError::io(&path))?;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(file);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(SnapshotError::Io { path, source: e });
            }
        }
    }

    /// Publish a fully unpacked snapshot under `chain_id`. If the chain id is already present
    /// (a racing unpack), the temp snapshot is discarded and the existing entry returned.
    pub fn commit(
        &self,
        mut tmp: TmpSnapshot,
        chain_id: &str,
        parent: Option<&str>,
        diff_id: &str,
    ) -> Result<SnapshotEntry, SnapshotError> {
        let mut idx = self.load()?;
        if let Some(existing) = idx.snapshots.get(chain_id) {
            return Ok(existing.clone());
        }
        let mut id = idx.next.max(1);
        // Skip numbers whose directory is a leftover of a crash between rename and index
        // write: removing it here would race nobody (we hold the store lock) but recover()
        // owns that job; just never reuse a path that exists.
        while self.dir.join(id.to_string()).exists() {
            id += 1;
        }
        let dest = self.dir.join(id.to_string());
        std::fs::rename(&tmp.dir, &dest).map_err(SnapshotError::io(&dest))?;
        tmp.committed = true;
        let entry = SnapshotEntry {
            id,
            parent: parent.map(str::to_string),
            diff_id: diff_id.to_string(),
        };
        idx.snapshots.insert(chain_id.to_string(), entry.clone());
        idx.next = id + 1;
        if let Err(e) = self.save(&idx) {
            let _ = crate::util::remove_dir_all_if_exists(&dest);
            return Err(e);
        }
        Ok(entry)
    }

    /// Forget `chain_id` and delete its directory; absent is fine.
    pub fn remove(&self, chain_id: &str) -> Result<(), SnapshotError> {
        let mut idx = self.load()?;
        let Some(entry) = idx.snapshots.remove(chain_id) else {
            return Ok(());
        };
        self.save(&idx)?;
        let dir = self.dir.join(entry.id.to_string());
        crate::util::remove_dir_all_if_exists(&dir).map_err(SnapshotError::io(dir))
    }

    /// Delete temp snapshots and numbered directories the index does not know (crash
    /// leftovers). Call under the store lock. Temp snapshots are left alone while any unpack
    /// (in any process) is running: they go at the next recovery.
    pub fn recover(&self) -> Result<(), SnapshotError> {
        let no_unpack = match self.tmp_lock(libc::LOCK_EX | libc::LOCK_NB) {
            Ok(f) => Some(f),
            Err(SnapshotError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::WouldBlock =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        let idx = self.load()?;
        let known: std::collections::HashSet<String> =
            idx.snapshots.values().map(|e| e.id.to_string()).collect();
        let entries = std::fs::read_dir(&self.dir).map_err(SnapshotError::io(&self.dir))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = (name.starts_with(TMP_PREFIX) && no_unpack.is_some())
                || (name.bytes().all(|b| b.is_ascii_digit()) && !known.contains(&name));
            if stale && e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                tracing::info!(dir = %e.path().display(), "removing incomplete snapshot");
                crate::util::remove_dir_all_if_exists(&e.path())
                    .map_err(SnapshotError::io(e.path()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_lookup_remove_and_recover() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Snapshots::open(tmp.path()).unwrap();
        let t = s.prepare().unwrap();
        std::fs::write(t.fs().join("f"), b"x").unwrap();
        let e = s.commit(t, "sha256:c1", None, "sha256:d1").unwrap();
        assert_eq!(e.id, 1);
        assert!(s.fs_path(1).join("f").exists());
        // Second commit of the same chain id keeps the first.
        let t2 = s.prepare().unwrap();
        let t2dir = t2.dir.clone();
        assert_eq!(s.commit(t2, "sha256:c1", None, "sha256:d1").unwrap().id, 1);
        drop(t2dir);
        let e2 = s
            .commit(
                s.prepare().unwrap(),
                "sha256:c2",
                Some("sha256:c1"),
                "sha256:d2",
            )
            .unwrap();
        assert_eq!(e2.id, 2);

        // Crash leftovers: a temp dir, a renamed-but-unindexed dir.
        std::fs::create_dir_all(tmp.path().join("tmp-abc/fs")).unwrap();
        std::fs::create_dir_all(tmp.path().join("7/fs")).unwrap();
        s.recover().unwrap();
        let mut names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["1", "2", "index.json", "tmp.lock"]);

        // A temp snapshot being filled survives a recovery (here or in another process).
        let live = s.prepare().unwrap();
        std::fs::create_dir_all(tmp.path().join("tmp-dead/fs")).unwrap();
        s.recover().unwrap();
        assert!(live.fs().exists());
        drop(live);
        s.recover().unwrap();
        assert!(!tmp.path().join("tmp-dead").exists());

        s.remove("sha256:c1").unwrap();
        s.remove("sha256:c1").unwrap();
        assert!(!tmp.path().join("1").exists());
        assert!(s.get("sha256:c1").unwrap().is_none());
        assert_eq!(s.get("sha256:c2").unwrap().unwrap().id, 2);
    }

    #[test]
    fn dropped_tmp_snapshot_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Snapshots::open(tmp.path()).unwrap();
        let t = s.prepare().unwrap();
        let dir = t.dir.clone();
        assert!(dir.exists());
        drop(t);
        assert!(!dir.exists());
    }
}
