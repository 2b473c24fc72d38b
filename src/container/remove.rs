//! RemoveContainer: kill whatever still runs, unmount and delete the rootfs, drop the record.
//! Idempotent.

use crate::context::Context;
use crate::error::{CriError, CriResult};
use crate::store::ContainerState;
use k8s_cri::v1::ContainerEventType;
use std::sync::Arc;

impl Context {
    pub async fn remove_container(self: &Arc<Self>, id: &str) -> CriResult<()> {
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
        if self.refresh_container(record).state != ContainerState::Exited {
            self.kill_now(id).await?;
        }
        self.remove_container_rootfs(id).await?;
        self.remove_monitor_dir(id).await;
        self.emit(id, ContainerEventType::ContainerDeletedEvent);
        self.containers
            .delete(id)
            .map_err(|e| CriError::internal("removing container record", e))?;
        self.cpu.forget(id);
        tracing::info!(container = %id, "container removed");
        Ok(())
    }

    pub(crate) async fn remove_container_rootfs(&self, id: &str) -> CriResult<()> {
        let dir = self.container_dir(id);
        tokio::task::spawn_blocking(move || crate::snapshot::remove_rootfs(&dir))
            .await
            .map_err(|e| CriError::Internal(format!("remove rootfs task: {e}")))?
            .map_err(|e| CriError::internal(format!("removing rootfs of container {id}"), e))
    }
}
