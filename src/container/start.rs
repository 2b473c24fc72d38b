//! StartContainer: the monitor starts the created container.

use super::ContainerService;
use crate::error::{CriError, CriResult};
use crate::monitor::MonitorClient;
use crate::store::{ContainerState, UpdateError};
use k8s_cri::v1::ContainerEventType;

impl ContainerService {
    pub async fn start_container(&self, id: &str) -> CriResult<()> {
        let id = self.container(id)?.id;
        let ctx = self.clone();
        tokio::spawn(async move { ctx.start_locked(&id).await })
            .await
            .map_err(|e| CriError::Internal(format!("StartContainer task: {e}")))?
    }

    async fn start_locked(&self, id: &str) -> CriResult<()> {
        let _op = self.locks.lock(id).await;
        let record = self.refresh_container(self.container(id)?);
        if record.state != ContainerState::Created {
            return Err(CriError::FailedPrecondition(format!(
                "container {id} is {:?}, not created",
                record.state
            )));
        }
        if let Some(log) = &record.log_path
            && let Some(parent) = log.parent()
            && !crate::util::blocking(|| parent.exists())
        {
            return Err(CriError::FailedPrecondition(format!(
                "log directory {} does not exist",
                parent.display()
            )));
        }
        MonitorClient::new(&self.monitor_dir(id))
            .start()
            .await
            .map_err(|e| CriError::internal(format!("starting container {id}"), e))?;
        // The exit watcher does not take the op lock: a container that exited at once may
        // already be recorded Exited, which a late "Running" must not overwrite.
        let started = self.containers.try_update(id, |r| {
            if r.state != ContainerState::Created {
                return Err(r.state);
            }
            r.state = ContainerState::Running;
            r.started_at = crate::util::now_nanos();
            Ok(())
        });
        match started {
            Ok(_) => {
                self.emit(id, ContainerEventType::ContainerStartedEvent);
                tracing::info!(container = %id, "container started");
            }
            Err(UpdateError::Refused(state)) => {
                tracing::info!(container = %id, ?state, "container exited before its start was recorded");
            }
            Err(UpdateError::Store(e)) => {
                return Err(CriError::internal("updating container record", e));
            }
        }
        Ok(())
    }
}

impl ContainerService {
    /// ReopenContainerLog: kubelet has renamed the log file to rotate it; the monitor opens a
    /// new one at the same path.
    pub async fn reopen_container_log(&self, id: &str) -> CriResult<()> {
        let record = self.refresh_container(self.container(id)?);
        if record.state != ContainerState::Running {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        MonitorClient::new(&self.monitor_dir(&record.id))
            .reopen_log()
            .await
            .map_err(|e| CriError::internal(format!("reopening the log of {}", record.id), e))
    }
}
