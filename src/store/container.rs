//! Application container records.

use super::records::{Record, RecordStore};
use k8s_cri::v1::ContainerConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub const CONTAINER_RECORD_VERSION: u32 = 1;

/// A container's lifecycle as crius tracks it. `Creating` is a CreateContainer in flight (or
/// interrupted by a crash: reported as CONTAINER_UNKNOWN until kubelet removes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Creating,
    Created,
    Running,
    Exited,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Creating => "creating",
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub version: u32,
    pub id: String,
    /// The reserved name: name_sandboxname_namespace_uid_attempt.
    pub name: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    /// The image as kubelet named it, and what it resolved to.
    pub image_ref: String,
    pub image_id: String,
    pub repo_digest: Option<String>,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub state: ContainerState,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// Absolute CRI log path, when kubelet asked for logs.
    pub log_path: Option<PathBuf>,
    pub cgroups_path: String,
    pub init_pid: Option<i32>,
    /// The image's StopSignal (SIGTERM when it names none).
    pub stop_signal: i32,
    /// The resources the container runs with now (UpdateContainerResources changes them).
    pub resources: Option<k8s_cri::v1::LinuxContainerResources>,
    /// uid, gid and groups of the container's process, from its spec.
    pub user: Option<(u32, u32, Vec<u32>)>,
}

impl Record for ContainerRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// All container records; see [`RecordStore`].
pub type ContainerStore = RecordStore<ContainerRecord>;

/// The kubelet-visible name of a container: unique per pod, container name and attempt.
pub fn container_name(
    meta: &k8s_cri::v1::ContainerMetadata,
    pod: &k8s_cri::v1::PodSandboxMetadata,
) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        meta.name, pod.name, pod.namespace, pod.uid, meta.attempt
    )
}
