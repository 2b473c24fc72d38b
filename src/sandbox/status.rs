//! PodSandboxStatus, and the conversion of a record into the CRI view of it.

use super::{Context, SandboxService};
use crate::error::{CriError, CriResult};
use crate::monitor::MonitorClient;
use crate::store::{SandboxRecord, SandboxState};
use k8s_cri::v1 as cri;
use std::collections::HashMap;

/// Lookups the container verbs share (a container's pod, its state).
impl Context {
    /// The record, with a Ready sandbox whose init has exited since turned NotReady.
    pub fn refreshed(&self, record: SandboxRecord) -> SandboxRecord {
        let client = MonitorClient::new(&self.monitor_dir(&record.id));
        if record.state == SandboxState::Ready
            && crate::util::blocking(|| client.read_exit()).is_some()
        {
            match self
                .sandboxes
                .update(&record.id, |r| r.state = SandboxState::NotReady)
            {
                Ok(updated) => return updated,
                Err(e) => {
                    tracing::warn!(sandbox = %record.id, error = %e, "marking exited sandbox NotReady")
                }
            }
        }
        record
    }

    /// The sandbox record for a full id or unique prefix, or NotFound.
    pub fn sandbox(&self, id: &str) -> CriResult<SandboxRecord> {
        self.sandboxes
            .resolve(id)
            .and_then(|id| self.sandboxes.get(&id))
            .ok_or_else(|| CriError::NotFound(format!("pod sandbox {id:?} not found")))
    }
}

impl SandboxService {
    pub fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> CriResult<cri::PodSandboxStatusResponse> {
        let record = self.refreshed(self.sandbox(id)?);
        let mut info = HashMap::new();
        if verbose {
            info.insert("info".to_string(), verbose_info(&record));
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(status_of(&record)),
            info,
            containers_statuses: Vec::new(),
            timestamp: crate::util::now_nanos(),
        })
    }
}

pub fn cri_state(state: SandboxState) -> cri::PodSandboxState {
    match state {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady,
        SandboxState::Creating | SandboxState::NotReady => cri::PodSandboxState::SandboxNotready,
    }
}

pub fn status_of(record: &SandboxRecord) -> cri::PodSandboxStatus {
    let config = &record.config;
    let network = record
        .network
        .as_ref()
        .map(|n| cri::PodSandboxNetworkStatus {
            ip: n.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            additional_ips: n
                .additional_ips
                .iter()
                .map(|ip| cri::PodIp { ip: ip.to_string() })
                .collect(),
        });
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    cri::PodSandboxStatus {
        id: record.id.clone(),
        metadata: config.metadata.clone(),
        state: cri_state(record.state) as i32,
        created_at: record.created_at,
        network: Some(network.unwrap_or_default()),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace { options }),
        }),
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        runtime_handler: record.runtime_handler.clone(),
    }
}

/// `verbose` detail for operators (crictl inspectp): what containerd shows, in JSON.
fn verbose_info(record: &SandboxRecord) -> String {
    let info = serde_json::json!({
        "pid": record.init_pid,
        "monitorPid": record.monitor_pid,
        "state": record.state,
        "image": record.image_ref,
        "imageId": record.image_id,
        "runtimeHandler": record.runtime_handler,
        "netNamespace": record.netns_path,
        "network": record.network,
        "cgroupsPath": record.cgroups_path,
        "hostNetwork": record.host_network,
        "config": record.config,
    });
    info.to_string()
}
