//! One `crius monitor` process per container, and the daemon's side of it ([`client`]).
//! Everything here but `client/` is the monitor process itself, and the types both sides
//! share (`proto`, `wire`, `paths`, the exit record, the launch and exec reports).
//!
//! The monitor is the same binary re-executed (`crius monitor --id ... --bundle ... --dir ...
//! --runtime-root ...`). It is single-threaded (no tokio, no threads) and small: every
//! libcontainer call runs in a short-lived helper child forked for it, so libcontainer's side
//! effects on its caller (oom_score_adj, dumpable, cwd) and its memory never reach the monitor
//! or the multi-threaded daemon.
//!
//! Lifecycle:
//! 1. The daemon keeps one `crius monitor --standby` process ready ([`Standby`]) and hands it
//!    the container's configuration once the bundle is written ([`PendingCreate::go`];
//!    [`spawn_create`] starts a process of its own and does both at once). That process
//!    (the launcher) forks the real monitor, which leaves the daemon's session, becomes a
//!    child subreaper, binds
//!    `<dir>/monitor.sock`, writes `<dir>/monitor.pid` and creates the container in a helper.
//!    init is the helper's child; when the helper exits, init is handed to the monitor. The
//!    launcher prints `{"init_pid":..,"monitor_pid":..}` (or the error) and exits, so the
//!    monitor is reparented away from the daemon and outlives it.
//!    For the pod sandbox on cgroup v1 the daemon makes the cgroup and the create helper joins
//!    it itself instead of libcontainer ([`own_cgroup`]): that avoids an RCU grace period per
//!    create.
//! 2. The daemon talks to it through [`MonitorClient`] (proto/monitor.proto): start, kill,
//!    state. One request per connection, except attach: its connection stays open and is
//!    served from the poll loop without blocking (`attach.rs`, `client/attach.rs`).
//! 3. When init exits the monitor reaps it, kills what is left in the container's cgroup,
//!    deletes the container (helper), writes `<dir>/exit.json` atomically, removes its socket
//!    and pid file and exits.
//!
//! Container output: with a log path the monitor holds the read ends of the container's
//! stdout/stderr pipes (or the pty master of a tty container) in its poll loop and writes the
//! CRI log format (`cri_log.rs`); `ReopenLog` starts a new file after kubelet's rotation. The
//! log is drained to EOF before `exit.json` is written, and the exit record says whether the
//! kernel OOM-killed a process in the container's memory cgroup.
//!
//! Exec: `crius monitor --exec` is a one-shot helper the daemon runs per ExecSync
//! ([`exec_sync`]); it uses libcontainer's tenant builder, so the daemon never does.
//!
//! SIGTERM, SIGINT and SIGHUP are logged and ignored: stopping or restarting the daemon must
//! never stop containers. The way to stop a container is a kill request; a monitor that is
//! killed outright leaves the container to be removed with [`cleanup_orphan`].

mod attach;
mod cause;
mod cgroup;
mod client;
mod cri_log;
mod exec;
mod exit;
mod helper;
mod launch;
pub(crate) mod own_cgroup;
mod paths;
mod pump;
mod runtime;
mod serve;
mod stdio;
mod sys;
mod title;
mod wire;

#[cfg(test)]
mod tests;

pub mod proto {
    //! Generated from proto/monitor.proto.
    include!(concat!(env!("OUT_DIR"), "/crius.monitor.v1.rs"));
}

pub(crate) use client::{
    AttachInput, AttachOutput, ExecStream, OutputStream, Resizer, exec_stream,
};
pub use client::{
    ContainerStatus, ExecRequest, MonitorClient, MonitorConfig, MonitorError, Standby,
    cleanup_orphan, exec_sync, spawn_create,
};
pub(crate) use client::{PendingCreate, pidfd_open};
pub use cri_log::MAX_LINE as MAX_LOG_LINE;
pub use exit::ExitInfo;
pub(crate) use paths::BUNDLE_DIR;
pub use paths::SOCKET;
pub use stdio::Stdio;

use std::path::PathBuf;

/// Arguments of `crius monitor` (internal: the daemon builds them).
#[derive(clap::Args, Debug, Clone)]
pub struct MonitorArgs {
    /// Container id (libcontainer's rules: letters, digits, `_+-.`).
    #[arg(long, required_unless_present = "standby")]
    pub id: Option<String>,
    /// libcontainer's state root; the container's state lives in `<root>/<id>`.
    #[arg(long, required_unless_present = "standby")]
    pub runtime_root: Option<PathBuf>,
    /// Wait for a container to create and supervise: its configuration arrives as one line
    /// of JSON on stdin once its bundle is ready (EOF: give up quietly). The daemon keeps one
    /// such process ready, so a create does not wait for an exec.
    #[arg(long, conflicts_with_all = ["delete_only", "exec"])]
    pub standby: bool,
    /// Do not supervise: delete the container (kill its processes, remove its cgroup and
    /// libcontainer state) and exit. For containers whose monitor is gone.
    #[arg(long, conflicts_with = "exec")]
    pub delete_only: bool,
    /// Do not supervise: run one process (its OCI process JSON on stdin) inside the running
    /// container, with this process's stdout and stderr, wait for it and report its exit on
    /// fd 3. SIGTERM kills it. See [`exec_sync`].
    #[arg(long)]
    pub exec: bool,
    /// Give the exec'd process a pty.
    #[arg(long)]
    pub tty: bool,
    /// Command-line room for the monitor's title (see `title.rs`); the value is ignored.
    #[arg(long = "title-room", hide = true)]
    pub title_room: Option<String>,
    /// The exec'd process reads our stdin (after the process JSON) instead of /dev/null.
    #[arg(long)]
    pub stdin: bool,
}

/// Entry point of `crius monitor`; returns the process exit code (0 success, 1 failure,
/// 2 bad arguments). Must be called while the process is still single-threaded.
pub fn run(args: MonitorArgs) -> u8 {
    let (id, runtime_root) = match (args.id, args.runtime_root) {
        (Some(id), Some(root)) if !args.standby => (id, root),
        _ if args.standby => {
            return match launch::read_request() {
                Ok(Some(cfg)) => launch_checked(cfg),
                Ok(None) => {
                    eprintln!("cancelled before the bundle was ready");
                    1
                }
                Err(reason) => {
                    eprintln!("{reason}");
                    2
                }
            };
        }
        _ => {
            eprintln!("--id and --runtime-root are required");
            return 2;
        }
    };
    if let Err(reason) = validate_id(&id) {
        eprintln!("{reason}");
        return 2;
    }
    if args.delete_only {
        return match runtime::delete(&id, &runtime_root) {
            Ok(()) => 0,
            Err(reason) => {
                eprintln!("delete container {id}: {reason}");
                1
            }
        };
    }
    if args.exec {
        let mode = exec::ExecMode {
            tty: args.tty,
            stdin: args.stdin,
        };
        return exec::run(&id, &runtime_root, mode);
    }
    eprintln!("one of --standby, --delete-only or --exec is required");
    2
}

/// Checks what the daemon sent before anything is made from it.
fn launch_checked(cfg: serve::ServeConfig) -> u8 {
    if let Err(reason) = validate_id(&cfg.id) {
        eprintln!("{reason}");
        return 2;
    }
    if !cfg.dir.is_dir() {
        eprintln!("monitor directory {} does not exist", cfg.dir.display());
        return 2;
    }
    launch::launch(cfg)
}

/// The container id becomes a path component under the runtime root; reject anything that is
/// not a plain name before it is used as one (libcontainer applies the same rule later).
pub(crate) fn validate_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid container id {id:?}"))
    }
}
