//! StopContainer: the image's stop signal, then SIGKILL to everything in the container's cgroup
//! when the grace period ends. Idempotent.

use super::ContainerService;
use crate::error::{CriError, CriResult};
use crate::monitor::{MonitorClient, MonitorError};
use crate::store::ContainerState;
use std::time::Duration;

impl ContainerService {
    pub async fn stop_container(&self, id: &str, timeout: i64) -> CriResult<()> {
        let id = match self.container(id) {
            Ok(r) => r.id,
            // Stopping a container that is already gone succeeds, as Stop must be idempotent.
            Err(CriError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let ctx = self.clone();
        tokio::spawn(async move { ctx.stop_container_locked(&id, timeout).await })
            .await
            .map_err(|e| CriError::Internal(format!("StopContainer task: {e}")))?
    }

    async fn stop_container_locked(&self, id: &str, timeout: i64) -> CriResult<()> {
        let _op = self.locks.lock(id).await;
        let Some(record) = self.containers.get(id) else {
            return Ok(());
        };
        let record = self.refresh_container(record);
        match record.state {
            ContainerState::Exited => return Ok(()),
            ContainerState::Creating => return self.kill_now(id).await,
            ContainerState::Created | ContainerState::Running => {}
        }
        if timeout > 0 && record.state == ContainerState::Running {
            let client = MonitorClient::new(&self.monitor_dir(id));
            match client.kill(record.stop_signal, false).await {
                Ok(()) => {
                    let grace = Duration::from_secs(timeout as u64);
                    match client.wait_exited(grace).await {
                        Ok(Some(_)) => {
                            self.refresh_container_id(id);
                            tracing::info!(container = %id, "container stopped by its stop signal");
                            return Ok(());
                        }
                        Ok(None) => {
                            tracing::info!(container = %id, ?grace, "grace period over; SIGKILL")
                        }
                        // The monitor died meanwhile: what is left is killed below.
                        Err(MonitorError::Gone { .. }) => {}
                        Err(e) => return Err(CriError::internal(format!("waiting for {id}"), e)),
                    }
                }
                // No monitor to signal through: kill what is left directly, below.
                Err(MonitorError::Gone { .. }) => {}
                Err(e) => {
                    return Err(CriError::internal(format!("signalling container {id}"), e));
                }
            }
        }
        self.kill_now(id).await?;
        self.refresh_container_id(id);
        self.confirm_stopped(id).await?;
        tracing::info!(container = %id, "container stopped");
        Ok(())
    }

    /// Stop never reports success for a container it did not stop: after the kill, the
    /// record is Exited, or the monitor is gone (its leftovers were killed by `kill_now`) and
    /// the record says so.
    async fn confirm_stopped(&self, id: &str) -> CriResult<()> {
        let Some(record) = self.containers.get(id) else {
            return Ok(());
        };
        if !matches!(
            record.state,
            ContainerState::Created | ContainerState::Running
        ) {
            return Ok(());
        }
        match MonitorClient::new(&self.monitor_dir(id)).state().await {
            Err(MonitorError::Gone { .. }) => {
                self.record_monitor_gone(id);
                Ok(())
            }
            Ok(state) if state.is_exited() => {
                self.refresh_container_id(id);
                Ok(())
            }
            Ok(_) => Err(CriError::Internal(format!(
                "container {id} still runs after SIGKILL"
            ))),
            Err(e) => Err(CriError::internal(
                format!("container {id}: cannot confirm it stopped"),
                e,
            )),
        }
    }
}
