//! Start-up recovery: the records on disk are the truth about which pods exist; the monitors
//! tell which of them still run.

use super::SandboxService;
use crate::monitor::MonitorClient;
use crate::store::SandboxState;
use std::path::PathBuf;

impl SandboxService {
    /// Reconcile every loaded record with its monitor, and clean directories that a crash left
    /// without a record (a RunPodSandbox killed before its first write holds nothing else).
    pub async fn recover_sandboxes(&self, orphans: Vec<PathBuf>) {
        self.remove_orphan_dirs(orphans).await;
        let (mut ready, mut not_ready) = (0usize, 0usize);
        for record in self.sandboxes.list() {
            let id = record.id.clone();
            let next = match record.state {
                // Interrupted RunPodSandbox: left NotReady so Stop/Remove finish the cleanup,
                // with what it had made so far in the record (see `record_what_an_interrupted_run_made`).
                SandboxState::Creating => {
                    self.record_what_an_interrupted_run_made(&id).await;
                    SandboxState::NotReady
                }
                SandboxState::NotReady => SandboxState::NotReady,
                SandboxState::Ready => {
                    match MonitorClient::new(&self.monitor_dir(&id)).state().await {
                        Ok(state) if !state.is_exited() => SandboxState::Ready,
                        _ => SandboxState::NotReady,
                    }
                }
            };
            match next {
                SandboxState::Ready => ready += 1,
                _ => not_ready += 1,
            }
            tracing::debug!(sandbox = %id, from = ?record.state, to = ?next, "recovered sandbox");
            if next == record.state {
                continue;
            }
            tracing::info!(sandbox = %id, from = ?record.state, to = ?next, "sandbox changed state while the daemon was down");
            if let Err(e) = self.sandboxes.update(&id, |r| r.state = next) {
                tracing::error!(sandbox = %id, error = %e, "updating recovered sandbox");
            }
        }
        tracing::info!(ready, not_ready, "recovered pod sandboxes");
        self.release_networks_without_a_sandbox().await;
    }

    /// A CNI attachment whose sandbox record is gone (the state dir edited by hand, a record
    /// lost to a full disk) still holds an address and host-side rules: release it, since no
    /// RemovePodSandbox will ever ask for it again.
    async fn release_networks_without_a_sandbox(&self) {
        let ids = match self.cni.cached_ids() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "listing the CNI cache");
                return;
            }
        };
        for id in ids {
            if self.sandboxes.get(&id).is_some() {
                continue;
            }
            match self.cni.teardown(&id, None).await {
                Ok(()) => {
                    tracing::info!(sandbox = %id, "released the network of a sandbox with no record")
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "releasing the network of a sandbox with no record")
                }
            }
        }
    }

    /// A RunPodSandbox cut off by a daemon crash may have got far: the pause runs, the netns
    /// is pinned and CNI has handed out an address, none of it written to the record yet
    /// (that happens only at Ready). Status must show what exists, so fill the record in from
    /// the node: the monitor's pid and its container's, the pin, and the addresses.
    async fn record_what_an_interrupted_run_made(&self, id: &str) {
        let client = MonitorClient::new(&self.monitor_dir(id));
        let (monitor_pid, init_pid) = match client.state().await {
            Ok(state) if !state.is_exited() && state.pid > 0 => {
                (client.monitor_pid(), Some(state.pid))
            }
            _ => (None, None),
        };
        let netns = self.netns_path(id);
        let netns_path = crate::network::netns::is_pinned(&netns).then_some(netns);
        let network = match self.cni.recovered_status(id).await {
            Ok(network) => network,
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "reading an interrupted sandbox's network");
                None
            }
        };
        tracing::info!(
            sandbox = %id, ?init_pid, ?monitor_pid, netns = ?netns_path,
            ip = ?network.as_ref().and_then(|n| n.ip),
            "RunPodSandbox was interrupted; recording what it made"
        );
        let updated = self.sandboxes.update(id, |r| {
            r.monitor_pid = monitor_pid;
            r.init_pid = init_pid;
            r.netns_path = netns_path;
            r.network = network;
        });
        if let Err(e) = updated {
            tracing::error!(sandbox = %id, error = %e, "recording an interrupted sandbox");
        }
    }
}
