//! Exits pushed, not polled: every live container's monitor, and every Ready sandbox's pause
//! monitor, is watched through a pidfd.
//!
//! A monitor writes the container's exit record and then exits, so its pidfd turning readable
//! is the moment the container's exit can be recorded; a monitor that exits without a record
//! was killed or crashed, and its container is cleaned up and marked Exited with the reason.
//! An idle node does no work for its containers: one parked task and one pidfd each.
//!
//! Only when a pidfd cannot be had (an old kernel, out of descriptors) does a container fall
//! back to a check of its exit record and monitor every [`FALLBACK_POLL`].

use super::ContainerService;
use super::status::REASON_MONITOR_GONE;
use crate::context::Context;
use crate::monitor::pidfd_open;
use crate::monitor::{MonitorClient, MonitorError};
use crate::store::{ContainerState, SandboxState, UpdateError};
use k8s_cri::v1::ContainerEventType;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

const FALLBACK_POLL: Duration = Duration::from_millis(500);

/// How the watch of one monitor began.
enum Watch {
    /// The monitor is alive; this fd turns readable when it exits.
    Pidfd(AsyncFd<OwnedFd>),
    /// The monitor has already exited (with or without an exit record).
    Over,
    /// No pidfd: check periodically.
    Poll,
}

async fn begin(client: &MonitorClient, id: &str) -> Watch {
    let Some(pid) = client.monitor_pid() else {
        // The pid file is removed by a monitor that exits normally.
        return Watch::Over;
    };
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Watch::Over,
        Err(e) => {
            tracing::warn!(container = %id, pid, error = %e, "no pidfd for the monitor; polling");
            return Watch::Poll;
        }
    };
    // A killed monitor leaves its pid file, and the pid may have been reused since: the fd
    // is the monitor's only if the monitor answers now (a live process keeps its pid).
    match client.state().await {
        Ok(state) if state.is_exited() => Watch::Over,
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and unchanged until the
        // AsyncFd is dropped.
        Ok(_) => match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            Ok(fd) => Watch::Pidfd(fd),
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "cannot register the pidfd; polling");
                Watch::Poll
            }
        },
        Err(MonitorError::Gone { .. }) => Watch::Over,
        Err(e) => {
            tracing::warn!(container = %id, error = %e, "monitor did not answer; polling");
            Watch::Poll
        }
    }
}

impl ContainerService {
    /// Watch a Created or Running container until its exit is recorded.
    pub fn watch_container(&self, id: &str) {
        let ctx = Arc::downgrade(&self.ctx);
        let id = id.to_string();
        tokio::spawn(async move { watch(ctx, id, Kind::Container).await });
    }

    /// Watch a Ready sandbox's pause monitor: its end makes the sandbox NotReady at once.
    pub fn watch_sandbox(&self, id: &str) {
        let ctx = Arc::downgrade(&self.ctx);
        let id = id.to_string();
        tokio::spawn(async move { watch(ctx, id, Kind::Sandbox).await });
    }

    /// Watch every Ready sandbox (at start-up, after recovery).
    pub fn watch_all_sandboxes(&self) {
        for record in self.sandboxes.list() {
            if record.state == SandboxState::Ready {
                self.watch_sandbox(&record.id);
            }
        }
    }

    /// A sandbox's pause monitor has exited: with an exit record the pause ended; without one
    /// the monitor was killed, and what is left of the pause is killed and cleaned up as for a
    /// container (a pod whose pause nobody watches cannot be trusted to be Ready). Either way
    /// the sandbox is NotReady now, so kubelet recreates it. Returns whether it is settled.
    pub(crate) async fn sandbox_monitor_exited(&self, id: &str) -> bool {
        let ready = |ctx: &Self| {
            ctx.sandboxes
                .get(id)
                .is_some_and(|r| r.state == SandboxState::Ready)
        };
        if !ready(self) {
            return true;
        }
        let _op = self.locks.lock(id).await;
        // A Stop or Remove may have settled it while we waited for the lock.
        if !ready(self) {
            return true;
        }
        match MonitorClient::new(&self.monitor_dir(id)).state().await {
            Ok(state) if !state.is_exited() => return false,
            Ok(_) => {}
            Err(MonitorError::Gone { .. }) => {
                tracing::warn!(sandbox = %id, "pause monitor died without an exit record");
                if let Err(e) = self.kill_now(id).await {
                    tracing::error!(sandbox = %id, error = %e, "cleaning up after a dead pause monitor");
                }
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "pause monitor state");
                return false;
            }
        }
        let marked = self.sandboxes.try_update(id, |r| {
            if r.state != SandboxState::Ready {
                return Err(());
            }
            r.state = SandboxState::NotReady;
            Ok(())
        });
        match marked {
            Ok(_) => tracing::warn!(sandbox = %id, "pause monitor exited; sandbox NotReady"),
            Err(UpdateError::Refused(())) => {}
            Err(UpdateError::Store(e)) => {
                tracing::error!(sandbox = %id, error = %e, "marking a sandbox NotReady")
            }
        }
        true
    }

    /// Watch every live container (at start-up, after recovery).
    pub fn watch_all_containers(&self) {
        for record in self.containers.list() {
            if matches!(
                record.state,
                ContainerState::Created | ContainerState::Running
            ) {
                self.watch_container(&record.id);
            }
        }
    }

    /// The container's monitor has exited: record the exit it wrote, or, without one, clean
    /// up what the monitor left and mark the container Exited because its monitor died.
    /// Returns whether the container is no longer live.
    pub(crate) async fn monitor_exited(&self, id: &str) -> bool {
        let Some(record) = self.containers.get(id) else {
            return true;
        };
        if !is_live(self.refresh_container(record).state) {
            return true;
        }
        let _op = self.locks.lock(id).await;
        // A Stop or Remove may have settled it while we waited for the lock.
        let Some(record) = self.containers.get(id) else {
            return true;
        };
        if !is_live(self.refresh_container(record).state) {
            return true;
        }
        let client = MonitorClient::new(&self.monitor_dir(id));
        match client.state().await {
            Err(MonitorError::Gone { .. }) => {}
            // A live monitor after all (the poll fallback asks this often).
            Ok(state) if !state.is_exited() => return false,
            Ok(_) => {
                self.refresh_container_id(id);
                return true;
            }
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "monitor state");
                return false;
            }
        }
        // kill_now on a gone monitor kills what is left in the container's cgroup and
        // deletes libcontainer's state through a one-shot helper.
        if let Err(e) = self.kill_now(id).await {
            tracing::error!(container = %id, error = %e, "cleaning up after a dead monitor");
        }
        self.record_monitor_gone(id);
        true
    }

    /// Mark a container whose monitor died without an exit record: its exit code is lost
    /// (255, as containerd reports a lost exit) and the reason says why.
    pub(crate) fn record_monitor_gone(&self, id: &str) {
        let marked = self.containers.try_update(id, |r| {
            if !is_live(r.state) {
                return Err(());
            }
            r.state = ContainerState::Exited;
            r.exit_code = 255;
            r.reason = REASON_MONITOR_GONE.into();
            r.message = "the container's crius monitor died without recording its exit; \
                         what was left of the container was killed"
                .into();
            r.finished_at = crate::util::now_nanos();
            Ok(())
        });
        match marked {
            Ok(_) => {
                tracing::warn!(container = %id, "monitor died; container marked exited");
                self.emit(id, ContainerEventType::ContainerStoppedEvent);
            }
            Err(UpdateError::Refused(())) => {}
            Err(UpdateError::Store(e)) => {
                tracing::error!(container = %id, error = %e, "recording a dead monitor")
            }
        }
    }
}

fn is_live(state: ContainerState) -> bool {
    matches!(state, ContainerState::Created | ContainerState::Running)
}

/// What a watched monitor runs: an app container or a sandbox's pause.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Container,
    Sandbox,
}

impl Kind {
    /// The monitor has exited (or looks gone): settle the object; true once it is settled.
    async fn exited(self, ctx: &ContainerService, id: &str) -> bool {
        match self {
            Kind::Container => ctx.monitor_exited(id).await,
            Kind::Sandbox => ctx.sandbox_monitor_exited(id).await,
        }
    }

    /// Whether the object is still one whose monitor must be watched.
    fn still_live(self, ctx: &ContainerService, id: &str) -> bool {
        match self {
            Kind::Container => ctx
                .containers
                .get(id)
                .is_some_and(|r| is_live(ctx.refresh_container(r).state)),
            Kind::Sandbox => ctx
                .sandboxes
                .get(id)
                .is_some_and(|r| ctx.refreshed(r).state == SandboxState::Ready),
        }
    }
}

async fn watch(ctx: Weak<Context>, id: String, kind: Kind) {
    let client = {
        let Some(ctx) = ctx.upgrade() else { return };
        MonitorClient::new(&ctx.monitor_dir(&id))
    };
    match begin(&client, &id).await {
        Watch::Pidfd(fd) => {
            // Readable (POLLIN) once the process has exited; nothing else wakes it.
            let _ = fd.readable().await;
            // Tests read this line to tell a pushed exit from a polled one.
            tracing::debug!(id = %id, ?kind, "monitor exit pushed by its pidfd");
            if let Some(ctx) = ctx.upgrade() {
                kind.exited(&ContainerService::new(ctx), &id).await;
            }
        }
        Watch::Over => {
            if let Some(ctx) = ctx.upgrade() {
                kind.exited(&ContainerService::new(ctx), &id).await;
            }
        }
        Watch::Poll => loop {
            tokio::time::sleep(FALLBACK_POLL).await;
            let Some(ctx) = ctx.upgrade() else { return };
            let ctx = ContainerService::new(ctx);
            if !kind.still_live(&ctx, &id) {
                return;
            }
            // A killed monitor leaves its pid file and socket behind: ask it.
            if matches!(client.state().await, Err(MonitorError::Gone { .. }))
                && kind.exited(&ctx, &id).await
            {
                return;
            }
        },
    }
}
