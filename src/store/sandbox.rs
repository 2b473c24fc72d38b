//! Pod sandbox records.

use super::records::{Record, RecordStore};
use crate::network::PodNetworkStatus;
use k8s_cri::v1::PodSandboxConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub const RECORD_VERSION: u32 = 1;

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

impl Record for SandboxRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// All sandbox records; see [`RecordStore`].
pub type SandboxStore = RecordStore<SandboxRecord>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

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
