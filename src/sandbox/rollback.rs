//! The undo list of RunPodSandbox: one entry pushed after each step that changed the node, run in
//! reverse when a later step fails, dropped by `commit()` on success.
//!
//! Undo runs as plain async code in the request's own task (never from Drop): the RPC body is
//! spawned so that a client that cancels does not abort it half way.

use super::Context;
use crate::store::SandboxState;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Forget the record and release the name (last undo to run).
    DeleteRecord { id: String },
    /// Unmount the overlay rootfs and remove its upper/work dirs.
    RemoveRootfs { id: String },
    /// Kill the container and let its monitor delete libcontainer's state and cgroup.
    KillContainer { id: String },
    /// Unmount and remove the pinned network namespace.
    Unpin { path: PathBuf },
    /// CNI DEL from the cached config (pushed before ADD: a failed ADD may have allocated).
    CniTeardown { id: String, netns: PathBuf },
    /// Remove the cgroup the daemon made for the pause (after the pause is gone).
    RemoveOwnCgroup { id: String },
}

#[derive(Debug, Default)]
pub struct Rollback {
    steps: Vec<Undo>,
}

impl Rollback {
    pub fn push(&mut self, undo: Undo) {
        self.steps.push(undo);
    }

    /// Success: nothing to undo.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// The undo steps in the order they run.
    pub fn plan(&self) -> impl Iterator<Item = &Undo> {
        self.steps.iter().rev()
    }

    /// Undo everything, newest first. If some step fails the record is kept as NotReady (not
    /// deleted) so that kubelet's StopPodSandbox/RemovePodSandbox can retry the cleanup later;
    /// losing the record would leak whatever could not be undone.
    pub async fn run(self, ctx: &Context) {
        let mut failed = false;
        for step in self.steps.iter().rev() {
            let result = match step {
                Undo::DeleteRecord { id } => {
                    if failed {
                        if let Err(e) = ctx
                            .sandboxes
                            .update(id, |r| r.state = SandboxState::NotReady)
                        {
                            tracing::error!(sandbox = %id, error = %e, "rollback: marking record NotReady");
                        }
                        continue;
                    }
                    ctx.remove_monitor_dir(id).await;
                    ctx.sandboxes.delete(id).map_err(|e| e.to_string())
                }
                Undo::RemoveRootfs { id } => ctx.remove_rootfs(id).await.map_err(|e| e.to_string()),
                Undo::KillContainer { id } => ctx.kill_now(id).await.map_err(|e| e.to_string()),
                Undo::Unpin { path } => {
                    crate::network::netns::unpin(path).map_err(|e| e.to_string())
                }
                Undo::RemoveOwnCgroup { id } => {
                    ctx.remove_own_cgroup(id).await.map_err(|e| e.to_string())
                }
                Undo::CniTeardown { id, netns } => ctx
                    .cni
                    .teardown(id, Some(netns))
                    .await
                    .map_err(|e| e.to_string()),
            };
            if let Err(error) = result {
                failed = true;
                tracing::error!(?step, %error, "rollback step failed; record kept for a later Stop/Remove");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_runs_newest_first_and_commit_clears() {
        let mut rb = Rollback::default();
        rb.push(Undo::DeleteRecord { id: "a".into() });
        rb.push(Undo::RemoveRootfs { id: "a".into() });
        rb.push(Undo::KillContainer { id: "a".into() });
        let plan: Vec<_> = rb.plan().cloned().collect();
        assert_eq!(
            plan,
            vec![
                Undo::KillContainer { id: "a".into() },
                Undo::RemoveRootfs { id: "a".into() },
                Undo::DeleteRecord { id: "a".into() },
            ]
        );
        rb.commit();
    }
}
