//! One `crius monitor --standby` kept ready by the daemon, so that a create does not wait for
//! an exec.
//!
//! Starting a monitor costs the daemon a blocked `posix_spawn` (about 1.5 ms: the spawning
//! thread waits until the new process has exec'd) and the new process its loader and start-up
//! before it can fork the real monitor. A standby process has done both and sits in a read on
//! its stdin; the create hands it the configuration when the bundle is ready, and a new
//! standby is started in the background for the next create. Under a burst the first create
//! takes the standby and the others start their own, as without one.
//!
//! The standby holds nothing but its three pipes: when the daemon exits (or drops it) it reads
//! EOF, or is killed, and exits without having made anything.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{
    MonitorConfig, MonitorError, PendingCreate, check_config, pending_create, spawn_standby,
};

pub struct Standby {
    exe: PathBuf,
    spare: Mutex<Option<tokio::process::Child>>,
    /// A background start of the next spare is under way.
    refilling: AtomicBool,
}

impl Standby {
    /// A pool for monitors of `exe`; empty until [`refill`](Self::refill) (or a create) runs.
    pub fn new(exe: PathBuf) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            exe,
            spare: Mutex::new(None),
            refilling: AtomicBool::new(false),
        })
    }

    /// Like [`super::prepare_create`], with the ready process when there is one (and `cfg`
    /// runs the same binary). The next standby is started when this create is over (or
    /// dropped): started alongside, it would compete with the create for CPU.
    pub fn prepare_create(
        self: &std::sync::Arc<Self>,
        cfg: &MonitorConfig,
    ) -> Result<PendingCreate, MonitorError> {
        check_config(cfg)?;
        let spare = if cfg.exe == self.exe {
            self.take_live()
        } else {
            None
        };
        let child = match spare {
            Some(child) => child,
            None => spawn_standby(&cfg.exe)?,
        };
        let mut pending = pending_create(cfg, child)?;
        pending.standby = Some(self.clone());
        Ok(pending)
    }

    /// Starts a spare in the background unless there is one or one is being started (or there
    /// is no tokio runtime to do it on).
    pub fn refill(self: &std::sync::Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.spare.lock().expect("standby lock").is_some()
            || self.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let this = self.clone();
        // The spawn blocks its thread until the exec is done: not on a request's path.
        runtime.spawn_blocking(move || {
            match spawn_standby(&this.exe) {
                Ok(child) => *this.spare.lock().expect("standby lock") = Some(child),
                Err(e) => tracing::warn!(error = %e, "cannot start a standby monitor"),
            }
            this.refilling.store(false, Ordering::Release);
        });
    }

    /// The spare, unless it has died (killed by someone, or out of memory at start-up).
    fn take_live(&self) -> Option<tokio::process::Child> {
        let mut child = self.spare.lock().expect("standby lock").take()?;
        match child.try_wait() {
            Ok(None) => Some(child),
            Ok(Some(status)) => {
                tracing::warn!(%status, "the standby monitor had exited; starting another");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the standby monitor; starting another");
                None
            }
        }
    }

    /// The spare's pid, if one is ready (for tests and diagnostics).
    pub fn spare_pid(&self) -> Option<u32> {
        self.spare
            .lock()
            .expect("standby lock")
            .as_ref()
            .and_then(|c| c.id())
    }
}
