//! RemovePodSandbox: stop whatever still runs, then remove the rootfs, files and record.
//! Idempotent: removing an unknown or already removed sandbox succeeds.

use super::SandboxService;
use crate::error::{CriError, CriResult};

impl SandboxService {
    pub async fn remove_pod_sandbox(&self, id: &str) -> CriResult<()> {
        if id.is_empty() {
            return Err(CriError::InvalidArgument("pod sandbox id is empty".into()));
        }
        let Some(id) = self.sandboxes.resolve(id) else {
            return Ok(());
        };
        let ctx = self.clone();
        tokio::spawn(async move { ctx.remove_locked(&id).await })
            .await
            .map_err(|e| CriError::Internal(format!("RemovePodSandbox task: {e}")))?
    }

    async fn remove_locked(&self, id: &str) -> CriResult<()> {
        let _op = self.locks.lock(id).await;
        if self.sandboxes.get(id).is_none() {
            return Ok(());
        }
        // The CRI contract: anything still running in the sandbox is forcibly terminated.
        self.stop_sandbox_resources(id).await?;
        for container in self.containers_of(id) {
            let _op = self.locks.lock(&container).await;
            self.container_service
                .remove_container_files(&container)
                .await?;
        }
        self.remove_rootfs(id).await?;
        self.remove_own_cgroup(id).await?;
        self.remove_monitor_dir(id).await;
        self.sandboxes
            .delete(id)
            .map_err(|e| CriError::internal("removing sandbox record", e))?;
        tracing::info!(sandbox = %id, "pod sandbox removed");
        Ok(())
    }
}
