//! Start-up recovery of containers: records are the truth about which containers exist, their
//! monitors (or exit records) about whether they still run.

use super::status::REASON_UNKNOWN;
use crate::context::Context;
use crate::monitor::{MonitorClient, MonitorError};
use crate::store::{ContainerRecord, ContainerState};
use std::path::PathBuf;

impl Context {
    pub async fn recover_containers(&self, orphans: Vec<PathBuf>) {
        self.remove_orphan_dirs(orphans).await;
        let mut counts = std::collections::BTreeMap::<&'static str, usize>::new();
        for record in self.containers.list() {
            let id = record.id.clone();
            let record = if matches!(
                record.state,
                ContainerState::Created | ContainerState::Running
            ) {
                self.recover_live_container(record).await
            } else {
                // Creating: an interrupted CreateContainer, reported as CONTAINER_UNKNOWN until
                // kubelet removes it (Remove cleans whatever it had made).
                record
            };
            let state = record.state.as_str();
            tracing::debug!(container = %id, state, "recovered container");
            *counts.entry(state).or_default() += 1;
        }
        let total: usize = counts.values().sum();
        tracing::info!(total, by_state = ?counts, "recovered containers");
    }

    /// A container that was created or running when the daemon stopped: its exit record if it
    /// ended meanwhile, else whether its monitor still answers.
    async fn recover_live_container(&self, record: ContainerRecord) -> ContainerRecord {
        let record = self.refresh_container(record);
        if record.state == ContainerState::Exited {
            return record;
        }
        match MonitorClient::new(&self.monitor_dir(&record.id))
            .state()
            .await
        {
            Ok(_) => record,
            Err(MonitorError::Gone { .. }) => {
                // The monitor died without an exit record: the exit code is lost.
                tracing::warn!(container = %record.id, "monitor gone without an exit record");
                let updated = self.containers.update(&record.id, |r| {
                    r.state = ContainerState::Exited;
                    r.exit_code = 255;
                    r.reason = REASON_UNKNOWN.into();
                    r.message = "the container's monitor is gone".into();
                    r.finished_at = crate::util::now_nanos();
                });
                updated.unwrap_or(record)
            }
            Err(e) => {
                tracing::warn!(container = %record.id, error = %e, "monitor did not answer");
                record
            }
        }
    }
}
