//! RemoveContainer: kill whatever still runs, unmount and delete the rootfs, drop the record.
//! Idempotent.

use super::ContainerService;
use crate::error::{CriError, CriResult};
use crate::store::ContainerState;
use k8s_cri::v1::ContainerEventType;
use std::path::PathBuf;
use std::time::Duration;

/// One-shot deletes tried when the monitor's own delete left libcontainer state behind.
const DELETE_ATTEMPTS: u32 = 3;
const DELETE_BACKOFF: Duration = Duration::from_millis(200);
/// How long a cgroup left after the delete may take to empty.
const CGROUP_WAIT: Duration = Duration::from_secs(10);

/// The container's cgroup on a cgroup v2 (unified) host; None on v1 or for an empty path.
fn v2_cgroup_dir(cgroups_path: &str) -> Option<PathBuf> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let rel = cgroups_path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
        return None;
    }
    crate::cgroup_driver::unified_hierarchy().then(|| root.join(rel))
}

impl ContainerService {
    pub async fn remove_container(&self, id: &str) -> CriResult<()> {
        let id = match self.container(id) {
            Ok(r) => r.id,
            Err(CriError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let ctx = self.clone();
        tokio::spawn(async move {
            let _op = ctx.locks.lock(&id).await;
            ctx.remove_container_files(&id).await
        })
        .await
        .map_err(|e| CriError::Internal(format!("RemoveContainer task: {e}")))?
    }

    /// The body of Remove, for callers holding the container's op lock.
    pub(crate) async fn remove_container_files(&self, id: &str) -> CriResult<()> {
        let Some(record) = self.containers.get(id) else {
            return Ok(());
        };
        let cgroups_path = record.cgroups_path.clone();
        if self.refresh_container(record).state != ContainerState::Exited {
            self.kill_now(id).await?;
        }
        // The writable layer first: its processes are dead now, and on a disk the container
        // filled, freeing its space is what lets the deletes below write what they need.
        self.remove_container_rootfs(id).await?;
        self.ensure_container_deleted(id, &cgroups_path).await?;
        self.remove_monitor_dir(id).await;
        self.emit(id, ContainerEventType::ContainerDeletedEvent);
        self.containers
            .delete(id)
            .map_err(|e| CriError::internal("removing container record", e))?;
        self.cpu.forget(id);
        self.layer_usage.forget(id);
        tracing::info!(container = %id, "container removed");
        Ok(())
    }

    /// The monitor deletes the container (libcontainer state, cgroup) after init exits, and
    /// reports a failure only in the exit record. Remove must not succeed while either is left:
    /// delete again through a one-shot monitor, then check the cgroup itself (cgroup v2, where
    /// the record's path is the whole story; v1 hierarchies are libcontainer's to clean).
    async fn ensure_container_deleted(&self, id: &str, cgroups_path: &str) -> CriResult<()> {
        let state_dir = self.runtime_root().join(id);
        for attempt in 1..=DELETE_ATTEMPTS {
            if !crate::util::blocking(|| state_dir.exists()) {
                break;
            }
            tracing::warn!(container = %id, attempt, "libcontainer state left after exit; deleting again");
            match crate::monitor::cleanup_orphan(&self.exe, &self.runtime_root(), id).await {
                Ok(()) => break,
                Err(e) if attempt == DELETE_ATTEMPTS => {
                    tracing::warn!(container = %id, error = %e, "deleting the container failed");
                    return Err(CriError::internal(format!("deleting container {id}"), e));
                }
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, attempt, "deleting the container; retrying");
                    tokio::time::sleep(DELETE_BACKOFF * attempt).await;
                }
            }
        }
        if crate::cgroup_driver::is_scope(cgroups_path) {
            // The monitor's delete asked systemd to stop the scope; ask again (a no-op when it
            // is gone) and clear a failed state, so no unit is left listed.
            let path = cgroups_path.to_owned();
            let stopped =
                tokio::task::spawn_blocking(move || crate::cgroup_driver::stop_scope(&path))
                    .await
                    .map_err(|e| CriError::Internal(format!("stop scope task: {e}")))?;
            if let Err(e) = stopped {
                tracing::warn!(container = %id, error = %e, "stopping the systemd scope");
                return Err(CriError::internal(format!("container {id}"), e));
            }
        }
        let Some(dir) = crate::util::blocking(|| v2_cgroup_dir(cgroups_path)) else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + CGROUP_WAIT;
        loop {
            match crate::util::blocking(|| std::fs::remove_dir(&dir)) {
                Ok(()) => {
                    tracing::warn!(container = %id, dir = %dir.display(), "removed a cgroup left after delete");
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(container = %id, dir = %dir.display(), error = %e, "container cgroup left");
                    return Err(CriError::Internal(format!(
                        "container {id}: cgroup {} cannot be removed: {e}",
                        dir.display()
                    )));
                }
                Err(_) => {
                    // Still populated (processes exiting) or busy: kill what is left, wait.
                    let _ = crate::util::blocking(|| std::fs::write(dir.join("cgroup.kill"), "1"));
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    pub(crate) async fn remove_container_rootfs(&self, id: &str) -> CriResult<()> {
        let dir = self.container_dir(id);
        tokio::task::spawn_blocking(move || crate::snapshot::remove_rootfs(&dir))
            .await
            .map_err(|e| CriError::Internal(format!("remove rootfs task: {e}")))?
            .map_err(|e| CriError::internal(format!("removing rootfs of container {id}"), e))
    }
}
