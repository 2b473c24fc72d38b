//! StopPodSandbox: kill the sandbox's processes, release its network, keep its record and
//! files for RemovePodSandbox. Idempotent.

use super::SandboxService;
use crate::error::{CriError, CriResult};
use crate::store::SandboxState;

impl SandboxService {
    pub async fn stop_pod_sandbox(&self, id: &str) -> CriResult<()> {
        if id.is_empty() {
            return Err(CriError::InvalidArgument("pod sandbox id is empty".into()));
        }
        // Stopping a sandbox that was already removed succeeds: kubelet retries Stop after
        // Remove in some paths and must not get stuck on it.
        let Some(id) = self.sandboxes.resolve(id) else {
            return Ok(());
        };
        let ctx = self.clone();
        tokio::spawn(async move { ctx.stop_locked(&id).await })
            .await
            .map_err(|e| CriError::Internal(format!("StopPodSandbox task: {e}")))?
    }

    async fn stop_locked(&self, id: &str) -> CriResult<()> {
        let _op = self.locks.lock(id).await;
        if self.sandboxes.get(id).is_none() {
            return Ok(());
        }
        self.stop_sandbox_resources(id).await
    }

    /// The body of Stop, for callers that already hold the sandbox's op lock.
    pub(crate) async fn stop_sandbox_resources(&self, id: &str) -> CriResult<()> {
        // The pod's containers first: they live in the namespaces the pause holds.
        for container in self.containers_of(id) {
            let _op = self.locks.lock(&container).await;
            self.kill_now(&container).await?;
            self.container_service.refresh_container_id(&container);
        }
        self.kill_now(id).await?;
        self.teardown_network(id).await?;
        self.sandboxes
            .update(id, |r| {
                r.state = SandboxState::NotReady;
                r.netns_path = None;
            })
            .map_err(|e| CriError::internal("updating sandbox record", e))?;
        tracing::info!(sandbox = %id, "pod sandbox stopped");
        Ok(())
    }
}
