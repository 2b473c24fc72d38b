//! Idempotent pieces of taking a sandbox apart, shared by Stop, Remove, recovery and rollback.
//! Each one treats "already gone" as success.

use super::{Context, SandboxService};
use crate::error::{CriError, CriResult};
use crate::monitor::{MonitorClient, MonitorError};
use std::time::Duration;

/// How long a killed pause process may take to be reaped before Stop reports an error.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long systemd may take to remove a stopped scope's cgroup.
const SCOPE_WAIT: Duration = Duration::from_secs(10);

/// Shared with the container verbs: a pause and an app container are killed and their monitor
/// directories removed the same way.
impl Context {
    /// Kill a container's init (and anything else in its cgroup) and wait until its monitor has
    /// reaped it and deleted libcontainer's state and cgroup. Used for pause and app containers.
    pub async fn kill_now(&self, id: &str) -> CriResult<()> {
        let client = MonitorClient::new(&self.monitor_dir(id));
        match client.state().await {
            Ok(state) if state.is_exited() => Ok(()),
            Ok(_) => {
                client
                    .kill(libc::SIGKILL, true)
                    .await
                    .map_err(|e| CriError::internal(format!("killing container {id}"), e))?;
                match client.wait_exited(KILL_WAIT).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(CriError::Internal(format!(
                        "container {id}: init did not exit within {KILL_WAIT:?} of SIGKILL"
                    ))),
                    Err(e) => Err(CriError::internal(format!("waiting for container {id}"), e)),
                }
            }
            // No monitor (never started, or killed): libcontainer may still have state and a
            // cgroup for it; delete those through a one-shot monitor process.
            Err(MonitorError::Gone { .. }) => {
                let state_dir = self.runtime_root().join(id);
                if crate::util::blocking(|| state_dir.exists()) {
                    crate::monitor::cleanup_orphan(&self.exe, &self.runtime_root(), id)
                        .await
                        .map_err(|e| CriError::internal(format!("cleaning container {id}"), e))?;
                }
                Ok(())
            }
            Err(e) => Err(CriError::internal(format!("container {id} monitor"), e)),
        }
    }

    pub async fn remove_monitor_dir(&self, id: &str) {
        let dir = self.monitor_dir(id);
        if let Err(e) = crate::util::blocking(|| crate::util::remove_dir_all_if_exists(&dir)) {
            tracing::warn!(path = %dir.display(), error = %e, "removing monitor dir");
        }
    }
}

impl SandboxService {
    /// CNI DEL (from the cached result, so it works after restarts and config changes) and
    /// unpin the network namespace.
    pub async fn teardown_network(&self, id: &str) -> CriResult<()> {
        let netns = self.netns_path(id);
        let pinned = crate::util::blocking(|| netns.exists());
        self.cni
            .teardown(id, pinned.then_some(netns.as_path()))
            .await
            .map_err(|e| {
                CriError::internal(format!("tearing down the network of sandbox {id}"), e)
            })?;
        crate::util::blocking(|| crate::network::netns::unpin(&netns))
            .map_err(|e| CriError::internal(format!("unpinning netns of sandbox {id}"), e))
    }

    /// Unmount the rootfs and the pod's /dev/shm and remove the overlay upper/work dirs.
    pub async fn remove_rootfs(&self, id: &str) -> CriResult<()> {
        let dir = self.sandbox_dir(id);
        let shm = self.sandbox_shm_dir(id);
        tokio::task::spawn_blocking(move || {
            crate::snapshot::unmount(&shm)?;
            let _ = std::fs::remove_dir(&shm);
            crate::snapshot::remove_rootfs(&dir)
        })
        .await
        .map_err(|e| CriError::Internal(format!("remove rootfs task: {e}")))?
        .map_err(|e| CriError::internal(format!("removing rootfs of sandbox {id}"), e))
    }

    /// Remove the pause's cgroup if it is still there: the monitor's delete removes it, but a
    /// failed RunPodSandbox (rollback) or a daemon that died between making it and creating
    /// the pause leaves it to us. Found again from the record, as the daemon made it.
    pub async fn remove_own_cgroup(&self, id: &str) -> CriResult<()> {
        let Some(record) = self.sandboxes.get(id) else {
            return Ok(());
        };
        if crate::cgroup_driver::is_scope(&record.cgroups_path) {
            // systemd driver: the pause's scope is systemd's to remove once stopped.
            let path = record.cgroups_path.clone();
            return tokio::task::spawn_blocking(move || {
                crate::cgroup_driver::stop_scope_and_wait(&path, SCOPE_WAIT)
            })
            .await
            .map_err(|e| CriError::Internal(format!("stop scope task: {e}")))?
            .map_err(|e| CriError::internal(format!("removing the scope of sandbox {id}"), e));
        }
        let spec = crate::oci::spec::sandbox_cgroup_spec(&record.config, &record.cgroups_path);
        tokio::task::spawn_blocking(move || crate::monitor::own_cgroup::remove_for(&spec))
            .await
            .map_err(|e| CriError::Internal(format!("remove cgroup task: {e}")))?
            .map_err(|e| CriError::internal(format!("removing the cgroup of sandbox {id}"), e))
    }
}
