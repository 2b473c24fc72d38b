//! Start-up recovery: the records on disk are the truth about which pods exist; the monitors
//! tell which of them still run.

use super::Context;
use crate::monitor::MonitorClient;
use crate::store::SandboxState;
use std::path::PathBuf;

impl Context {
    /// Reconcile every loaded record with its monitor, and clean directories that a crash left
    /// without a record (a RunPodSandbox killed before its first write holds nothing else).
    pub async fn recover_sandboxes(&self, orphans: Vec<PathBuf>) {
        self.remove_orphan_dirs(orphans).await;
        let (mut ready, mut not_ready) = (0usize, 0usize);
        for record in self.sandboxes.list() {
            let id = record.id.clone();
            let next = match record.state {
                // Interrupted RunPodSandbox: left NotReady so Stop/Remove finish the cleanup.
                SandboxState::Creating => SandboxState::NotReady,
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
    }
}
