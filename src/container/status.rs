//! ContainerStatus, the refresh of a record from its monitor's exit record, and the conversion
//! of a record into the CRI view.

use super::ContainerService;
use crate::error::CriResult;
use crate::monitor::{ExitInfo, MonitorClient};
use crate::store::{ContainerRecord, ContainerState, UpdateError};
use k8s_cri::v1 as cri;
use k8s_cri::v1::ContainerEventType;
use std::collections::HashMap;

/// kubelet's reasons for a terminated container.
pub const REASON_COMPLETED: &str = "Completed";
pub const REASON_ERROR: &str = "Error";
pub const REASON_OOM: &str = "OOMKilled";
pub const REASON_UNKNOWN: &str = "Unknown";
/// A container whose monitor died without recording its exit (crius's own reason).
pub const REASON_MONITOR_GONE: &str = "MonitorDied";

fn exit_reason(exit: &ExitInfo) -> &'static str {
    if exit.oom_killed {
        REASON_OOM
    } else if exit.exit_code == 0 {
        REASON_COMPLETED
    } else {
        REASON_ERROR
    }
}

impl ContainerService {
    /// The record, with a container whose init has exited since turned Exited (with its exit
    /// code, time and reason) and a stopped event sent. Cheap: one stat of the exit file.
    pub fn refresh_container(&self, record: ContainerRecord) -> ContainerRecord {
        if !matches!(
            record.state,
            ContainerState::Created | ContainerState::Running
        ) {
            return record;
        }
        let client = MonitorClient::new(&self.monitor_dir(&record.id));
        let Some(exit) = crate::util::blocking(|| client.read_exit()) else {
            return record;
        };
        self.record_exit(&record.id, &exit).unwrap_or(record)
    }

    pub fn refresh_container_id(&self, id: &str) {
        if let Some(r) = self.containers.get(id) {
            self.refresh_container(r);
        }
    }

    fn record_exit(&self, id: &str, exit: &ExitInfo) -> Option<ContainerRecord> {
        let updated = self.containers.try_update(id, |r| {
            // Only a live container can exit; an Exited one keeps its first exit.
            if !matches!(r.state, ContainerState::Created | ContainerState::Running) {
                return Err(());
            }
            r.state = ContainerState::Exited;
            r.exit_code = exit.exit_code;
            r.finished_at = exit.finished_at;
            if exit.started_at > 0 {
                r.started_at = exit.started_at;
            }
            r.reason = exit_reason(exit).to_string();
            if let Some(e) = &exit.cleanup_error {
                r.message = format!("cleanup after exit: {e}");
            }
            Ok(())
        });
        match updated {
            Ok(updated) => {
                tracing::info!(container = %id, exit_code = exit.exit_code, reason = %updated.reason, "container exited");
                self.emit(id, ContainerEventType::ContainerStoppedEvent);
                Some(updated)
            }
            Err(UpdateError::Refused(())) => self.containers.get(id),
            Err(UpdateError::Store(e)) => {
                tracing::warn!(container = %id, error = %e, "recording exit");
                None
            }
        }
    }

    pub fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> CriResult<cri::ContainerStatusResponse> {
        let record = self.refresh_container(self.container(id)?);
        let mut info = HashMap::new();
        if verbose {
            info.insert("info".to_string(), verbose_info(&record));
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(status_of(&record)),
            info,
        })
    }
}

pub fn cri_state(state: ContainerState) -> cri::ContainerState {
    match state {
        ContainerState::Creating => cri::ContainerState::ContainerUnknown,
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
    }
}

/// The image fields as containerd reports them: the spec as requested, the repo digest (or id)
/// as image_ref, and the id.
pub fn image_fields(r: &ContainerRecord) -> (cri::ImageSpec, String) {
    let spec = cri::ImageSpec {
        image: r.image_ref.clone(),
        ..Default::default()
    };
    let image_ref = r.repo_digest.clone().unwrap_or_else(|| r.image_id.clone());
    (spec, image_ref)
}

pub fn status_of(r: &ContainerRecord) -> cri::ContainerStatus {
    let (image, image_ref) = image_fields(r);
    let reason = match r.state {
        ContainerState::Creating => REASON_UNKNOWN.to_string(),
        _ => r.reason.clone(),
    };
    cri::ContainerStatus {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: cri_state(r.state) as i32,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        exit_code: r.exit_code,
        image: Some(image),
        image_ref,
        reason,
        message: r.message.clone(),
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        mounts: r.config.mounts.clone(),
        log_path: r
            .log_path
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        resources: r.resources.clone().map(|linux| cri::ContainerResources {
            linux: Some(linux),
            windows: None,
        }),
        image_id: r.image_id.clone(),
        user: r
            .user
            .as_ref()
            .map(|(uid, gid, groups)| cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: *uid as i64,
                    gid: *gid as i64,
                    supplemental_groups: groups.iter().map(|g| *g as i64).collect(),
                }),
            }),
    }
}

fn verbose_info(r: &ContainerRecord) -> String {
    serde_json::json!({
        "sandboxID": r.sandbox_id,
        "pid": r.init_pid,
        "state": r.state,
        "image": r.image_ref,
        "imageId": r.image_id,
        "cgroupsPath": r.cgroups_path,
        "logPath": r.log_path,
        "stopSignal": r.stop_signal,
        "config": r.config,
    })
    .to_string()
}
