//! The undo list of RunPodSandbox: one entry pushed after each step that changed the node, run in
//! reverse when a later step fails, dropped by `commit()` on success.
//!
//! Undo runs as plain async code in the request's own task (never from Drop): the RPC body is
//! spawned so that a client that cancels does not abort it half way.

use super::SandboxService;
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

    /// Undo everything, newest first, until a step fails. A failed step means something is
    /// still there that the later steps depend on (a container that could not be killed
    /// still uses its rootfs, netns and cgroup): undoing those anyway would pull them from
    /// under a live process and lose the only record of what is left. So the rollback stops,
    /// the record is kept as NotReady, and kubelet's StopPodSandbox/RemovePodSandbox finish
    /// the cleanup later from the record.
    pub async fn run(self, ctx: &SandboxService) {
        let outcome = undo_until_failure(self.plan(), |step| ctx.undo(step)).await;
        let Err((step, error)) = outcome else {
            return;
        };
        let id = match self.steps.first() {
            Some(Undo::DeleteRecord { id }) => id,
            _ => return,
        };
        tracing::error!(
            sandbox = %id, ?step, %error,
            "rollback step failed; rollback stopped, sandbox kept NotReady for a later Stop/Remove"
        );
        if let Err(e) = ctx
            .sandboxes
            .update(id, |r| r.state = SandboxState::NotReady)
        {
            tracing::error!(sandbox = %id, error = %e, "rollback: marking record NotReady");
        }
    }
}

/// Runs `undo` on each step in turn and stops at the first that fails, returning it with its
/// error: what comes after a failed undo step is not safe to undo (see [`Rollback::run`]).
/// Shared by RunPodSandbox's and CreateContainer's rollbacks.
pub(crate) async fn undo_until_failure<T, E, I, F, Fut>(steps: I, mut undo: F) -> Result<(), (T, E)>
where
    I: IntoIterator<Item = T>,
    T: Clone,
    F: FnMut(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    for step in steps {
        if let Err(e) = undo(step.clone()).await {
            return Err((step, e));
        }
    }
    Ok(())
}

impl SandboxService {
    /// One undo step of RunPodSandbox.
    async fn undo(&self, step: &Undo) -> Result<(), String> {
        match step {
            Undo::DeleteRecord { id } => {
                self.remove_monitor_dir(id).await;
                self.sandboxes.delete(id).map_err(|e| e.to_string())
            }
            Undo::RemoveRootfs { id } => self.remove_rootfs(id).await.map_err(|e| e.to_string()),
            Undo::KillContainer { id } => self.kill_now(id).await.map_err(|e| e.to_string()),
            Undo::Unpin { path } => crate::network::netns::unpin(path).map_err(|e| e.to_string()),
            Undo::RemoveOwnCgroup { id } => {
                self.remove_own_cgroup(id).await.map_err(|e| e.to_string())
            }
            Undo::CniTeardown { id, netns } => self
                .cni
                .teardown(id, Some(netns))
                .await
                .map_err(|e| e.to_string()),
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

    /// A failing step stops the undo: nothing after it runs, and the failure names the step.
    #[tokio::test]
    async fn undo_stops_at_the_first_failure() {
        let steps = ["kill", "rootfs", "record"];
        let mut ran = Vec::new();
        let outcome = undo_until_failure(steps, |step| {
            ran.push(step);
            async move {
                if step == "kill" {
                    Err("monitor did not answer")
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(outcome, Err(("kill", "monitor did not answer")));
        assert_eq!(ran, vec!["kill"], "steps after the failed one ran");

        let mut ran = Vec::new();
        let outcome: Result<(), (&str, &str)> = undo_until_failure(steps, |step| {
            ran.push(step);
            async { Ok(()) }
        })
        .await;
        assert_eq!(outcome, Ok(()));
        assert_eq!(ran, steps.to_vec());
    }
}
