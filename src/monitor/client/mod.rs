//! The daemon's side: launching monitors and talking to them (tokio). Never runs libcontainer.
//! `mod.rs` holds create and the control requests; `exec.rs` runs the `--exec` helper,
//! `attach.rs` holds an attach connection, `standby.rs` keeps a monitor process ready.

mod attach;
mod exec;
mod standby;

pub(crate) use attach::{AttachInput, AttachOutput, OutputStream};
pub use exec::{ExecRequest, exec_sync};
pub(crate) use exec::{ExecStream, Resizer, exec_stream};
pub use standby::Standby;

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::process::Command;

use crate::monitor::exit::{self, ExitInfo};
use crate::monitor::launch::Created;
use crate::monitor::proto::{self, request::Op, state::Status};
use crate::monitor::{paths, validate_id, wire};

/// How long creating a container may take (libcontainer's create is ~10 ms; hooks are slower).
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one control request may take, so a wedged monitor yields an error, not a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Before a request a live monitor dropped is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a `--delete-only` run may take.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`MonitorClient::wait_exited`] looks at the exit record besides waiting on the
/// monitor's pidfd (a stale pid file can name a reused pid, whose pidfd would never fire), or
/// instead of it where no pidfd can be had.
const WAIT_RECHECK: Duration = Duration::from_millis(500);
/// The poll interval when the monitor's pid is unknown.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// A pidfd of `pid` (Linux 5.3+): readable once the process has exited.
pub fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("invalid monitor configuration: {0}")]
    InvalidConfig(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("create container {id}: {reason}")]
    CreateFailed { id: String, reason: String },
    #[error("delete container {id}: {reason}")]
    DeleteFailed { id: String, reason: String },
    #[error("{op} timed out after {timeout:?} (monitor dir {dir})")]
    Timeout {
        op: &'static str,
        dir: PathBuf,
        timeout: Duration,
    },
    #[error("monitor in {dir}: {op} refused: {reason}")]
    Rejected {
        op: &'static str,
        dir: PathBuf,
        reason: String,
    },
    #[error("monitor in {dir}: {op}: the container has exited")]
    Exited { op: &'static str, dir: PathBuf },
    #[error("monitor in {dir} is gone and left no exit record")]
    Gone { dir: PathBuf },
    #[error("container {id} is not running: {reason}")]
    NotRunning { id: String, reason: String },
    #[error("exec in container {id}: {reason}")]
    ExecFailed { id: String, reason: String },
}

/// What the daemon needs to launch a monitor for one container.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    pub id: String,
    pub bundle: PathBuf,
    /// The monitor directory; keep it short (the control socket path must fit in 108 bytes).
    pub dir: PathBuf,
    /// libcontainer's state root.
    pub runtime_root: PathBuf,
    /// The crius binary to run as `crius monitor`.
    pub exe: PathBuf,
    /// The container's stdio: CRI log, tty, stdin. Default: all on /dev/null.
    pub stdio: crate::monitor::stdio::Stdio,
    /// Start the container as soon as it is created, in the same helper (the pod sandbox:
    /// nothing has to happen between its create and its start). [`MonitorClient::start`] is
    /// then a no-op.
    pub start: bool,
    /// A cgroup the caller made for the container (see [`crate::monitor::own_cgroup`]); `bundle` then
    /// holds the spec without resources that [`crate::monitor::own_cgroup::write_bundle`] wrote.
    pub own_cgroup: Option<crate::monitor::own_cgroup::Plan>,
}

impl MonitorConfig {
    /// What the launcher is sent.
    fn serve_config(&self) -> crate::monitor::serve::ServeConfig {
        crate::monitor::serve::ServeConfig {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            dir: self.dir.clone(),
            runtime_root: self.runtime_root.clone(),
            stdio: self.stdio.clone(),
            start: self.start,
            own_cgroup: self.own_cgroup.clone(),
        }
    }

    /// A config that runs the current executable. `/proc/self/exe` is kept unresolved on
    /// purpose: it still execs the running binary when the file was replaced by an upgrade.
    pub fn new(id: &str, bundle: &Path, dir: &Path, runtime_root: &Path) -> Self {
        Self {
            id: id.to_owned(),
            bundle: bundle.to_owned(),
            dir: dir.to_owned(),
            runtime_root: runtime_root.to_owned(),
            exe: PathBuf::from("/proc/self/exe"),
            stdio: crate::monitor::stdio::Stdio::default(),
            start: false,
            own_cgroup: None,
        }
    }
}

/// Launches a monitor that creates the container, and returns once it is created (init waits
/// for `start`). On failure nothing of the attempt is left: libcontainer state and cgroup are
/// removed by the monitor, and the monitor directory by us if we made it.
pub async fn spawn_create(cfg: &MonitorConfig) -> Result<Created, MonitorError> {
    prepare_create(cfg)?.go().await
}

/// Starts `crius monitor --standby` for `cfg` without creating anything yet: the process waits
/// for [`PendingCreate::go`]. Its exec and start-up (a few milliseconds) then overlap with the
/// caller's preparation of the bundle. The bundle must be complete before `go`.
pub fn prepare_create(cfg: &MonitorConfig) -> Result<PendingCreate, MonitorError> {
    check_config(cfg)?;
    let child = spawn_standby(&cfg.exe)?;
    pending_create(cfg, child)
}

/// Checks `cfg` before anything is made for it.
pub(super) fn check_config(cfg: &MonitorConfig) -> Result<(), MonitorError> {
    validate_id(&cfg.id).map_err(MonitorError::InvalidConfig)
}

/// Creates the monitor directory and pairs it with `child`, a `crius monitor --standby`.
pub(super) fn pending_create(
    cfg: &MonitorConfig,
    child: tokio::process::Child,
) -> Result<PendingCreate, MonitorError> {
    let made_dir = !cfg.dir.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.dir)
        .map_err(|source| MonitorError::Io {
            what: "create monitor dir",
            path: cfg.dir.clone(),
            source,
        })?;
    Ok(PendingCreate {
        cfg: cfg.clone(),
        made_dir,
        child: Some(child),
        standby: None,
    })
}

/// A monitor process waiting for its bundle. Dropped without [`go`](Self::go), it is killed
/// before it created anything, and the monitor directory is removed if we made it.
pub struct PendingCreate {
    cfg: MonitorConfig,
    made_dir: bool,
    child: Option<tokio::process::Child>,
    /// Refilled once this create is over (see [`Standby`]).
    pub(super) standby: Option<std::sync::Arc<Standby>>,
}

impl PendingCreate {
    /// The monitor directory, where [`crate::monitor::own_cgroup::write_bundle`] may put its bundle.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// The container joins `plan`'s cgroup (made by the caller) and is created from `bundle`.
    pub fn use_own_cgroup(&mut self, plan: crate::monitor::own_cgroup::Plan, bundle: PathBuf) {
        self.cfg.own_cgroup = Some(plan);
        self.cfg.bundle = bundle;
    }

    /// Lets the monitor create the container and waits until it is created.
    pub async fn go(mut self) -> Result<Created, MonitorError> {
        let child = self.child.take().expect("a pending create has its process");
        let result = self.finish(child).await;
        if result.is_err() {
            self.remove_files();
        }
        if let Some(standby) = self.standby.take() {
            standby.refill();
        }
        result
    }

    async fn finish(&self, mut child: tokio::process::Child) -> Result<Created, MonitorError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cfg = &self.cfg;
        if let Some(mut stdin) = child.stdin.take() {
            let mut request = serde_json::to_vec(&cfg.serve_config()).map_err(|e| {
                MonitorError::InvalidConfig(format!("cannot encode the configuration: {e}"))
            })?;
            request.push(b'\n');
            // A launcher that died already fails below with its own message.
            let _ = stdin.write_all(&request).await;
        }
        // The launcher prints the outcome as one line and exits: a success is taken from that
        // line as soon as it is complete, and the launcher's exit is reaped later.
        let mut stdout = child.stdout.take();
        let read = async {
            let mut out = Vec::new();
            let mut buf = [0u8; 512];
            while let Some(stdout) = &mut stdout {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
                if out.ends_with(b"\n") {
                    break;
                }
            }
            out
        };
        let out = tokio::time::timeout(CREATE_TIMEOUT, read)
            .await
            .map_err(|_| MonitorError::Timeout {
                op: "create",
                dir: cfg.dir.clone(),
                timeout: CREATE_TIMEOUT,
            })?;
        if let Ok(created) = serde_json::from_slice::<Created>(out.trim_ascii()) {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            return Ok(created);
        }
        let output = wait_with_timeout(child, CREATE_TIMEOUT, &cfg.exe, &cfg.dir, "create").await?;
        let stdout = String::from_utf8_lossy(&out);
        Err(MonitorError::CreateFailed {
            id: cfg.id.clone(),
            reason: if output.status.success() {
                format!("unreadable launcher output {stdout:?}")
            } else {
                failure_text(&output)
            },
        })
    }

    fn remove_files(&self) {
        if self.made_dir {
            let _ = crate::util::remove_dir_all_if_exists(&self.cfg.dir);
        } else {
            let _ = std::fs::remove_file(self.cfg.dir.join(paths::LOG_FILE));
        }
    }
}

impl Drop for PendingCreate {
    fn drop(&mut self) {
        // Not let go: the process (killed on drop) never read its bundle.
        if self.child.take().is_some() {
            self.remove_files();
        }
        if let Some(standby) = self.standby.take() {
            standby.refill();
        }
    }
}

/// Starts `crius monitor --standby`: it waits for a configuration on stdin.
pub(super) fn spawn_standby(exe: &Path) -> Result<tokio::process::Child, MonitorError> {
    let mut cmd = Command::new(exe);
    cmd.arg("monitor")
        .arg("--standby")
        .arg(crate::monitor::title::ROOM_ARG)
        .arg(crate::monitor::title::room())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // If we are cancelled, the launcher dies; the monitor then cannot report and removes
        // the container it made. A standby that is never used dies with the daemon.
        .kill_on_drop(true);
    spawn(&mut cmd, exe)
}

async fn run_with_timeout(
    mut cmd: Command,
    timeout: Duration,
    exe: &Path,
    dir: &Path,
    op: &'static str,
) -> Result<std::process::Output, MonitorError> {
    let child = spawn(&mut cmd, exe)?;
    wait_with_timeout(child, timeout, exe, dir, op).await
}

fn spawn(cmd: &mut Command, exe: &Path) -> Result<tokio::process::Child, MonitorError> {
    cmd.spawn().map_err(|source| MonitorError::Io {
        what: "execute",
        path: exe.to_owned(),
        source,
    })
}

/// Waits for `child` and collects its output; `op` names it in the timeout error.
async fn wait_with_timeout(
    child: tokio::process::Child,
    timeout: Duration,
    exe: &Path,
    dir: &Path,
    op: &'static str,
) -> Result<std::process::Output, MonitorError> {
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(MonitorError::Timeout {
            op,
            dir: dir.to_owned(),
            timeout,
        }),
        Ok(output) => output.map_err(|source| MonitorError::Io {
            what: "wait for",
            path: exe.to_owned(),
            source,
        }),
    }
}

fn failure_text(output: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if text.is_empty() {
        format!("crius monitor failed ({})", output.status)
    } else {
        text
    }
}

/// Deletes a container whose monitor is gone (killed, or lost with the node's state): kills
/// its processes, removes its cgroup and libcontainer state. Runs `crius monitor --delete-only`
/// so that libcontainer stays out of the daemon. Succeeds when there is nothing to delete.
pub async fn cleanup_orphan(exe: &Path, runtime_root: &Path, id: &str) -> Result<(), MonitorError> {
    validate_id(id).map_err(MonitorError::InvalidConfig)?;
    let mut cmd = Command::new(exe);
    cmd.arg("monitor")
        .arg("--delete-only")
        .arg("--id")
        .arg(id)
        .arg("--runtime-root")
        .arg(runtime_root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = run_with_timeout(cmd, DELETE_TIMEOUT, exe, runtime_root, "delete").await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(MonitorError::DeleteFailed {
            id: id.to_owned(),
            reason: failure_text(&output),
        })
    }
}

/// The container's lifecycle state, as the monitor (or its exit record) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub status: ContainerStatus,
    /// init's pid (host pid namespace).
    pub pid: i32,
    /// Set once exited.
    pub exit_code: Option<i32>,
    /// Unix nanoseconds; 0 when it has not happened.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    /// Set once exited: the kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
}

impl ContainerState {
    pub fn is_exited(&self) -> bool {
        self.status == ContainerStatus::Exited
    }
}

impl From<&ExitInfo> for ContainerState {
    fn from(e: &ExitInfo) -> Self {
        Self {
            status: ContainerStatus::Exited,
            pid: e.pid,
            exit_code: Some(e.exit_code),
            created_at: e.created_at,
            started_at: e.started_at,
            finished_at: e.finished_at,
            oom_killed: e.oom_killed,
        }
    }
}

fn state_from_proto(s: &proto::State) -> Result<ContainerState, String> {
    let status = match Status::try_from(s.status) {
        Ok(Status::Created) => ContainerStatus::Created,
        Ok(Status::Running) => ContainerStatus::Running,
        Ok(Status::Exited) => ContainerStatus::Exited,
        _ => return Err(format!("unknown status {}", s.status)),
    };
    Ok(ContainerState {
        status,
        pid: s.pid,
        exit_code: (status == ContainerStatus::Exited).then_some(s.exit_code),
        created_at: s.created_at,
        started_at: s.started_at,
        finished_at: s.finished_at,
        oom_killed: status == ContainerStatus::Exited && s.oom_killed,
    })
}

/// A handle on one container's monitor, by its directory. Cheap; holds no connection.
#[derive(Debug, Clone)]
pub struct MonitorClient {
    dir: PathBuf,
    call_timeout: Duration,
}

/// Outcome of one control call.
enum Reply {
    Response(proto::Response),
    /// The monitor is gone (or going) and left this exit record.
    Exited(ExitInfo),
}

impl MonitorClient {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            call_timeout: CALL_TIMEOUT,
        }
    }

    /// Overrides how long one request may take (default 10 s).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The monitor's pid from its pid file (present while it serves).
    pub fn monitor_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join(paths::PID_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Starts the created container; Ok if it already runs.
    pub async fn start(&self) -> Result<(), MonitorError> {
        match self
            .call("start", Op::Start(proto::StartRequest {}))
            .await?
        {
            Reply::Response(r) => self.check("start", r).map(drop),
            Reply::Exited(_) => Err(MonitorError::Exited {
                op: "start",
                dir: self.dir.clone(),
            }),
        }
    }

    /// Signals init, or with `all` every process in the container's cgroup. Ok (nothing to do)
    /// once the container has exited.
    pub async fn kill(&self, signal: i32, all: bool) -> Result<(), MonitorError> {
        match self
            .call("kill", Op::Kill(proto::KillRequest { signal, all }))
            .await?
        {
            Reply::Response(r) => self.check("kill", r).map(drop),
            Reply::Exited(_) => Ok(()),
        }
    }

    /// Reopens the container's log file at its path, after kubelet renamed the old one
    /// (ReopenContainerLog). [`MonitorError::Exited`] once the container has exited
    /// (containerd answers FailedPrecondition then); `Rejected` without a log path.
    pub async fn reopen_log(&self) -> Result<(), MonitorError> {
        let op = "reopen log";
        match self
            .call(op, Op::ReopenLog(proto::ReopenLogRequest {}))
            .await?
        {
            Reply::Exited(_) => Err(MonitorError::Exited {
                op,
                dir: self.dir.clone(),
            }),
            Reply::Response(r) => {
                let exited = r
                    .state
                    .as_ref()
                    .is_some_and(|s| s.status == Status::Exited as i32);
                if exited {
                    return Err(MonitorError::Exited {
                        op,
                        dir: self.dir.clone(),
                    });
                }
                self.check(op, r).map(drop)
            }
        }
    }

    /// The container's state; from the exit record once the monitor is gone.
    pub async fn state(&self) -> Result<ContainerState, MonitorError> {
        match self
            .call("state", Op::State(proto::StateRequest {}))
            .await?
        {
            Reply::Exited(e) => Ok(ContainerState::from(&e)),
            Reply::Response(r) => {
                let r = self.check("state", r)?;
                let state = r
                    .state
                    .ok_or_else(|| self.rejected("state", "no state in response"))?;
                state_from_proto(&state).map_err(|e| self.rejected("state", &e))
            }
        }
    }

    /// Waits up to `timeout` for the exit record; `None` if the container still runs then.
    /// The monitor writes the record and then exits, so this sleeps on the monitor's pidfd
    /// and wakes the moment it exits (no pid or pidfd: a short poll instead).
    pub async fn wait_exited(&self, timeout: Duration) -> Result<Option<ExitInfo>, MonitorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let pidfd = self
            .monitor_pid()
            .and_then(|pid| pidfd_open(pid).ok())
            .and_then(|fd| {
                // SAFETY: the AsyncFd owns the OwnedFd, which stays open until it is dropped.
                unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        fd,
                        tokio::io::Interest::READABLE,
                    )
                }
                .ok()
            });
        loop {
            if let Some(e) = self.read_exit() {
                return Ok(Some(e));
            }
            if !paths::socket_path(&self.dir).exists() {
                // The record is written before the socket is removed; look once more.
                return self
                    .read_exit()
                    .map(Some)
                    .ok_or_else(|| MonitorError::Gone {
                        dir: self.dir.clone(),
                    });
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match &pidfd {
                Some(fd) => {
                    let nap = (deadline - now).min(WAIT_RECHECK);
                    if let Ok(Ok(_)) = tokio::time::timeout(nap, fd.readable()).await {
                        // The monitor has exited: the record is there, or never will be.
                        return self
                            .read_exit()
                            .map(Some)
                            .ok_or_else(|| MonitorError::Gone {
                                dir: self.dir.clone(),
                            });
                    }
                }
                None => tokio::time::sleep(WAIT_POLL).await,
            }
        }
    }

    /// The exit record, if the container has exited and been cleaned up.
    pub fn read_exit(&self) -> Option<ExitInfo> {
        exit::read(&self.dir.join(paths::EXIT_FILE))
    }

    fn rejected(&self, op: &'static str, reason: &str) -> MonitorError {
        MonitorError::Rejected {
            op,
            dir: self.dir.clone(),
            reason: reason.to_owned(),
        }
    }

    fn check(&self, op: &'static str, r: proto::Response) -> Result<proto::Response, MonitorError> {
        if r.error.is_empty() {
            Ok(r)
        } else {
            Err(self.rejected(op, &r.error))
        }
    }

    async fn call(&self, op_name: &'static str, op: Op) -> Result<Reply, MonitorError> {
        let request = proto::Request { op: Some(op) };
        let mut retried = false;
        loop {
            match tokio::time::timeout(self.call_timeout, self.exchange(&request)).await {
                Ok(Ok(response)) => return Ok(Reply::Response(response)),
                // A refused or dropped connection means the monitor is gone or finishing: it
                // writes the exit record before it closes its socket.
                Ok(Err(e)) => {
                    if let Some(info) = self.read_exit() {
                        return Ok(Reply::Exited(info));
                    }
                    if !is_gone(&e) {
                        return Err(MonitorError::Io {
                            what: op_name,
                            path: paths::socket_path(&self.dir),
                            source: e,
                        });
                    }
                    // Callers take Gone for a dead monitor (and its container for lost), so a
                    // live monitor that dropped one connection (seen under heavy load) is asked
                    // again, once: every request it serves is idempotent.
                    let Some(pid) = self.live_monitor_pid() else {
                        return Err(MonitorError::Gone {
                            dir: self.dir.clone(),
                        });
                    };
                    if retried {
                        return Err(MonitorError::Io {
                            what: op_name,
                            path: paths::socket_path(&self.dir),
                            source: io::Error::new(
                                e.kind(),
                                format!(
                                    "monitor pid {pid} is alive but dropped the request twice: {e}"
                                ),
                            ),
                        });
                    }
                    tracing::warn!(dir = %self.dir.display(), pid, op = op_name, error = %e, "a live monitor dropped its control connection; asking again");
                    retried = true;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(_) => {
                    return Err(MonitorError::Timeout {
                        op: op_name,
                        dir: self.dir.clone(),
                        timeout: self.call_timeout,
                    });
                }
            }
        }
    }

    async fn exchange(&self, request: &proto::Request) -> io::Result<proto::Response> {
        let socket = paths::ShortPath::new(&paths::socket_path(&self.dir))?;
        let mut stream = UnixStream::connect(socket.path()).await?;
        drop(socket);
        wire::write_msg_async(&mut stream, request).await?;
        wire::read_msg_async::<proto::Response>(&mut stream).await
    }

    /// The monitor's pid while that process lives (a zombie, not yet reaped by the daemon
    /// that spawned it, counts as dead; a crashed monitor's pid reused by another process
    /// only costs one retry).
    fn live_monitor_pid(&self) -> Option<i32> {
        let pid = self.monitor_pid()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = crate::util::proc_stat_fields(&stat)?.next()?;
        (!matches!(state, "Z" | "X")).then_some(pid)
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_with_pid(dir: &Path, pid: u32) -> MonitorClient {
        std::fs::write(dir.join(paths::PID_FILE), pid.to_string()).unwrap();
        MonitorClient::new(dir)
    }

    #[test]
    fn a_zombie_or_missing_monitor_is_not_live() {
        let t = tempfile::tempdir().unwrap();
        let me = client_with_pid(t.path(), std::process::id());
        assert_eq!(me.live_monitor_pid(), Some(std::process::id() as i32));

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie until wait().
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .contains(") Z ")
        {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(client_with_pid(t.path(), pid).live_monitor_pid(), None);
        child.wait().unwrap();
        assert_eq!(client_with_pid(t.path(), pid).live_monitor_pid(), None);

        std::fs::remove_file(t.path().join(paths::PID_FILE)).unwrap();
        assert_eq!(MonitorClient::new(t.path()).live_monitor_pid(), None);
    }
}
