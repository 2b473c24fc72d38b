//! Pod sandbox records and the name reservations that keep two RunPodSandbox calls for the same
//! pod from both succeeding.

use crate::network::PodNetworkStatus;
use k8s_cri::v1::PodSandboxConfig;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub const RECORD_VERSION: u32 = 1;
const RECORD_FILE: &str = "record.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("pod sandbox name {name:?} is reserved for {id}")]
    NameReserved { name: String, id: String },
    #[error("pod sandbox {0} not found")]
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

/// Lifecycle of a sandbox as CRI sees it, plus `Creating` for a RunPodSandbox in flight (shown to
/// kubelet as NotReady; after a crash it stays NotReady so Stop/Remove clean up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Creating,
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub version: u32,
    pub id: String,
    /// The reserved name: name_namespace_uid_attempt.
    pub name: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    pub created_at: i64,
    pub state: SandboxState,
    pub image_ref: String,
    pub image_id: String,
    pub host_network: bool,
    /// The pinned network namespace, once pinned.
    pub netns_path: Option<PathBuf>,
    pub network: Option<PodNetworkStatus>,
    pub init_pid: Option<i32>,
    pub monitor_pid: Option<i32>,
    pub cgroups_path: String,
}

impl SandboxRecord {
    pub fn is_ready(&self) -> bool {
        self.state == SandboxState::Ready
    }
}

/// The kubelet-visible name of a pod sandbox: unique per pod and attempt.
pub fn sandbox_name(meta: &k8s_cri::v1::PodSandboxMetadata) -> String {
    format!(
        "{}_{}_{}_{}",
        meta.name, meta.namespace, meta.uid, meta.attempt
    )
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, SandboxRecord>,
    names: HashMap<String, String>,
}

/// All sandbox records. Cloning shares the same store.
#[derive(Clone)]
pub struct SandboxStore {
    dir: PathBuf,
    inner: Arc<RwLock<Inner>>,
}

impl SandboxStore {
    /// Open the store and load every record. Directories without a readable record are left
    /// for the caller to clean (returned as orphans): they are what a crash between mkdir and
    /// the first record write leaves.
    pub fn open(dir: &Path) -> Result<(SandboxStore, Vec<PathBuf>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        let mut inner = Inner::default();
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
            let record = match std::fs::read(&file) {
                Ok(bytes) => match serde_json::from_slice::<SandboxRecord>(&bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(path = %file.display(), error = %e, "unreadable sandbox record");
                        orphans.push(path);
                        continue;
                    }
                },
                Err(_) => {
                    orphans.push(path);
                    continue;
                }
            };
            inner.names.insert(record.name.clone(), record.id.clone());
            inner.records.insert(record.id.clone(), record);
        }
        Ok((
            SandboxStore {
                dir: dir.to_path_buf(),
                inner: Arc::new(RwLock::new(inner)),
            },
            orphans,
        ))
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Reserve the name and persist the first record, atomically with respect to other callers:
    /// a second RunPodSandbox for the same pod gets `NameReserved` with the first one's id.
    pub fn create(&self, record: SandboxRecord) -> Result<(), StoreError> {
        {
            let mut inner = self.inner.write().expect("store lock");
            if let Some(id) = inner.names.get(&record.name) {
                return Err(StoreError::NameReserved {
                    name: record.name.clone(),
                    id: id.clone(),
                });
            }
            inner.names.insert(record.name.clone(), record.id.clone());
        }
        let dir = self.sandbox_dir(&record.id);
        let result = std::fs::create_dir_all(&dir)
            .map_err(|source| StoreError::Io {
                action: "creating",
                path: dir.clone(),
                source,
            })
            .and_then(|_| self.persist(&record));
        match result {
            Ok(()) => {
                let mut inner = self.inner.write().expect("store lock");
                inner.records.insert(record.id.clone(), record);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                self.inner
                    .write()
                    .expect("store lock")
                    .names
                    .remove(&record.name);
                Err(e)
            }
        }
    }

    fn persist(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        let path = self.sandbox_dir(&record.id).join(RECORD_FILE);
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Corrupt {
            path: path.clone(),
            source,
        })?;
        crate::util::atomic_write(&path, &bytes).map_err(|source| StoreError::Io {
            action: "writing",
            path,
            source,
        })
    }

    /// Change a record: the change is on disk before it is visible in memory.
    pub fn update<F>(&self, id: &str, change: F) -> Result<SandboxRecord, StoreError>
    where
        F: FnOnce(&mut SandboxRecord),
    {
        let mut record = self
            .get(id)
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        change(&mut record);
        self.persist(&record)?;
        let mut inner = self.inner.write().expect("store lock");
        if inner.records.contains_key(id) {
            inner.records.insert(id.to_string(), record.clone());
        }
        Ok(record)
    }

    pub fn get(&self, id: &str) -> Option<SandboxRecord> {
        self.inner
            .read()
            .expect("store lock")
            .records
            .get(id)
            .cloned()
    }

    /// Find a sandbox by full id or unique id prefix (as crictl users type them).
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

    pub fn list(&self) -> Vec<SandboxRecord> {
        self.inner
            .read()
            .expect("store lock")
            .records
            .values()
            .cloned()
            .collect()
    }

    /// Drop the record and release the name. The caller has already removed everything the
    /// sandbox owned; this removes its directory last.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let dir = self.sandbox_dir(id);
        crate::util::remove_dir_all_if_exists(&dir).map_err(|source| StoreError::Io {
            action: "removing",
            path: dir,
            source,
        })?;
        let mut inner = self.inner.write().expect("store lock");
        if let Some(r) = inner.records.remove(id) {
            if inner.names.get(&r.name).map(String::as_str) == Some(id) {
                inner.names.remove(&r.name);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> SandboxRecord {
        SandboxRecord {
            version: RECORD_VERSION,
            id: id.into(),
            name: name.into(),
            config: PodSandboxConfig::default(),
            runtime_handler: String::new(),
            created_at: 1,
            state: SandboxState::Creating,
            image_ref: "img".into(),
            image_id: "sha256:x".into(),
            host_network: false,
            netns_path: None,
            network: None,
            init_pid: None,
            monitor_pid: None,
            cgroups_path: "/crius/x".into(),
        }
    }

    #[test]
    fn name_is_reserved_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = SandboxStore::open(tmp.path()).unwrap();
        store.create(record("a1", "pod_ns_uid_0")).unwrap();
        match store.create(record("b2", "pod_ns_uid_0")) {
            Err(StoreError::NameReserved { id, .. }) => assert_eq!(id, "a1"),
            other => panic!("{other:?}"),
        }
        store.delete("a1").unwrap();
        store.create(record("b2", "pod_ns_uid_0")).unwrap();
    }

    #[test]
    fn records_survive_reopen_and_orphans_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let (store, _) = SandboxStore::open(tmp.path()).unwrap();
            store.create(record("a1", "n1")).unwrap();
            store
                .update("a1", |r| r.state = SandboxState::Ready)
                .unwrap();
        }
        std::fs::create_dir(tmp.path().join("half")).unwrap();
        let (store, orphans) = SandboxStore::open(tmp.path()).unwrap();
        assert_eq!(store.get("a1").unwrap().state, SandboxState::Ready);
        assert_eq!(orphans, vec![tmp.path().join("half")]);
        assert_eq!(store.resolve("a"), Some("a1".into()));
        assert!(store.create(record("c3", "n1")).is_err());
    }
}
