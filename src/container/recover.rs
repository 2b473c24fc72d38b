//! Start-up recovery of containers: records are the truth about which containers exist, their
//! monitors (or exit records) about whether they still run.

use super::status::REASON_UNKNOWN;
use crate::context::Context;
use crate::monitor::{MonitorClient, MonitorError};
use crate::store::ContainerState;
use std::path::PathBuf;

impl Context {
    pub async fn recover_containers(&self, orphans: Vec<PathBuf>) {
        self.remove_orphan_dirs(orphans).await;
        for record in self.containers.list() {
            if !matches!(
                record.state,
                ContainerState::Created | ContainerState::Running
            ) {
                // Creating: an interrupted CreateContainer, reported as CONTAINER_UNKNOWN until
                // kubelet removes it (Remove cleans whatever it had made).
                continue;
            }
            let record = self.refresh_container(record);
            if record.state == ContainerState::Exited {
                continue;
            }
            match MonitorClient::new(&self.monitor_dir(&record.id))
                .state()
                .await
            {
                Ok(_) => {}
                Err(MonitorError::Gone { .. }) => {
                    // The monitor died without an exit record: the exit code is lost.
                    tracing::warn!(container = %record.id, "monitor gone without an exit record");
                    let _ = self.containers.update(&record.id, |r| {
                        r.state = ContainerState::Exited;
                        r.exit_code = 255;
                        r.reason = REASON_UNKNOWN.into();
                        r.message = "the container's monitor is gone".into();
                        r.finished_at = crate::util::now_nanos();
                    });
                }
                Err(e) => {
                    tracing::warn!(container = %record.id, error = %e, "monitor did not answer")
                }
            }
        }
    }
}
