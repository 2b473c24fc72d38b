//! The exit record (`exit.json`): how the container ended, kept after the monitor is gone.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Version of the exit record's schema; bumped on incompatible changes.
pub const EXIT_RECORD_VERSION: u32 = 1;

/// How a container ended. Written by the monitor after it reaped the container's init process
/// and deleted the container, then read by the daemon (also after daemon restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub version: u32,
    /// The container's init process (host pid namespace); it no longer exists.
    pub pid: i32,
    /// The exit status as shells report it: the code of a normal exit, 128 + signal otherwise.
    pub exit_code: i32,
    /// The signal that killed init, if it was killed by one.
    pub signal: Option<i32>,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// Unix nanoseconds; 0 if the container was never started.
    pub started_at: i64,
    /// Unix nanoseconds.
    pub finished_at: i64,
    /// The kernel's OOM killer killed a process of the container (its memory cgroup counted
    /// an OOM kill before the cgroup was removed): kubelet's "OOMKilled" reason.
    #[serde(default)]
    pub oom_killed: bool,
    /// Set when deleting the container (cgroup, libcontainer state) failed after the exit; the
    /// daemon should then run `cleanup_orphan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
}

/// Exit status of a reaped process in shell convention.
pub fn exit_code(status: nix::sys::wait::WaitStatus) -> Option<(i32, Option<i32>)> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, sig, _) => Some((128 + sig as i32, Some(sig as i32))),
        _ => None,
    }
}

/// Room reserved for the record: a few hundred bytes, plus a cleanup error message.
const RESERVE_SLACK: usize = 3072;

/// Takes the space the exit record will need (see [`write`]), at `reserve`.
pub fn reserve(reserve: &Path) -> std::io::Result<()> {
    crate::util::replace_file(reserve, &crate::util::padded(b"{}", RESERVE_SLACK))
}

/// Writes the record crash-safely: into the space taken by [`reserve`] (fsync, rename), so a
/// full disk cannot keep the exit from being recorded; without a reserve, through a new temp
/// file.
pub fn write(path: &Path, reserve: &Path, info: &ExitInfo) -> std::io::Result<()> {
    let data = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
    match crate::util::overwrite_in_place(reserve, &data, true) {
        Ok(()) => {
            std::fs::rename(reserve, path)?;
            if let Some(dir) = path.parent()
                && let Ok(d) = std::fs::File::open(dir)
            {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %reserve.display(), error = %e, "exit record reserve unusable");
            }
            crate::util::atomic_write(path, &data)
        }
    }
}

/// Reads the record; `None` if it does not exist (yet) or cannot be parsed.
pub fn read(path: &Path) -> Option<ExitInfo> {
    let data = std::fs::read(path).ok()?;
    match serde_json::from_slice(&data) {
        Ok(info) => Some(info),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable exit record");
            None
        }
    }
}
