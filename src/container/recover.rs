//! Start-up recovery of containers: records are the truth about which containers exist, their
//! monitors (or exit records) about whether they still run.

use super::ContainerService;
use super::status::REASON_UNKNOWN;
use crate::monitor::{MonitorClient, MonitorError};
use crate::store::{ContainerRecord, ContainerState};
use std::path::PathBuf;

impl ContainerService {
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
            } else if record.state == ContainerState::Creating {
                // An interrupted CreateContainer, reported as CONTAINER_UNKNOWN until kubelet
                // removes it (Remove cleans whatever it had made).
                self.recover_interrupted_create(record).await
            } else {
                record
            };
            let state = record.state.as_str();
            tracing::debug!(container = %id, state, "recovered container");
            *counts.entry(state).or_default() += 1;
        }
        let total: usize = counts.values().sum();
        tracing::info!(total, by_state = ?counts, "recovered containers");
    }

    /// A create cut off by a daemon crash may have got as far as a live container process
    /// (created, never started), not yet written to the record: show its pid, as status must
    /// show what exists. The state stays unknown, since the create never finished.
    async fn recover_interrupted_create(&self, record: ContainerRecord) -> ContainerRecord {
        let state = match MonitorClient::new(&self.monitor_dir(&record.id))
            .state()
            .await
        {
            Ok(state) if !state.is_exited() && state.pid > 0 => state,
            _ => return record,
        };
        tracing::info!(container = %record.id, pid = state.pid, "CreateContainer was interrupted; its process is alive");
        self.containers
            .update(&record.id, |r| {
                r.init_pid = Some(state.pid);
                r.reason = REASON_UNKNOWN.into();
                r.message = "CreateContainer was interrupted by a daemon restart; \
                             RemoveContainer removes what it made"
                    .into();
            })
            .unwrap_or(record)
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
                // The monitor died without an exit record while the daemon was down: as the
                // live watch does, kill what is left and mark it Exited (MonitorDied).
                tracing::warn!(container = %record.id, "monitor gone without an exit record");
                self.monitor_exited(&record.id).await;
                self.containers.get(&record.id).unwrap_or(record)
            }
            Err(e) => {
                tracing::warn!(container = %record.id, error = %e, "monitor did not answer");
                record
            }
        }
    }
}
