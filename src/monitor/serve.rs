//! The long-lived monitor process: creates the container through a helper, then reaps it and
//! answers the control socket until it exits, records the exit and deletes the container.
//!
//! Single-threaded by design: one poll(2) loop over the listening socket and a signalfd; one
//! connection at a time with short socket timeouts so a stuck client cannot wedge it.

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::attach::Fanout;
use super::cgroup::{ContainerCgroup, MemoryCgroup};
use super::cri_log::CriLog;
use super::exit::{self, ExitInfo};
use super::proto::{self, request::Op, state::Status};
use super::pump::Pump;
use super::stdio::{ChildStdio, Plumbing, Stdio};
use super::{helper, own_cgroup, paths, runtime, sys, wire};
use crate::util::now_nanos;

/// How long one client may take to send its request or read the response.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a killed container's cgroup may take to empty before the delete is tried anyway.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);
/// Deletes tried again after the first fails, with a growing pause between them.
const DELETE_RETRIES: u32 = 3;
const DELETE_BACKOFF: Duration = Duration::from_millis(200);
/// How long the container's output may stay open after it exited and its cgroup was
/// emptied (only a process outside the container could still hold it).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long attached clients may take to read the last output after the container exited.
const ATTACH_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for the pty master after the create helper returned (it is queued by then).
const CONSOLE_TIMEOUT_MS: u16 = 2000;
/// Logging touches code (formatting, file writes) whose pages stay resident; trim them at
/// most this often while the container writes output.
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// What the monitor supervises: the configuration the daemon sends a standby monitor.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServeConfig {
    pub id: String,
    pub bundle: PathBuf,
    pub dir: PathBuf,
    pub runtime_root: PathBuf,
    pub stdio: Stdio,
    /// Start the container in the create helper, right after creating it.
    pub start: bool,
    /// The cgroup the daemon made for the container; the create helper joins it, and
    /// `bundle` holds a spec without resources (see `own_cgroup`).
    pub own_cgroup: Option<own_cgroup::Plan>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("container {id} already exists in {root}")]
    Exists { id: String, root: PathBuf },
    #[error(transparent)]
    Helper(#[from] helper::HelperError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ServeError + use<> {
    let path = path.to_owned();
    move |source| ServeError::Io { what, path, source }
}

/// The container as the monitor sees it.
struct Container {
    init: Pid,
    status: Status,
    created_at: i64,
    started_at: i64,
    cgroup: Option<ContainerCgroup>,
    memory: Option<MemoryCgroup>,
}

/// Creates the container and returns the monitor ready to serve. On error, everything this
/// attempt made (libcontainer state, cgroup, socket, pid file) is removed again.
pub fn setup(cfg: &ServeConfig) -> Result<Monitor, ServeError> {
    if let Err(e) = sys::set_subreaper() {
        return Err(ServeError::Setup(format!("PR_SET_CHILD_SUBREAPER: {e}")));
    }
    let signals = sys::signalfd().map_err(|e| ServeError::Setup(format!("signalfd: {e}")))?;
    let socket = paths::socket_path(&cfg.dir);
    let listener = bind(&socket)?;
    let pid_file = cfg.dir.join(paths::PID_FILE);
    // An exit record in the directory belongs to an earlier container; the daemon would take
    // it for this one's.
    let exit_file = cfg.dir.join(paths::EXIT_FILE);
    if let Err(e) = std::fs::remove_file(&exit_file)
        && e.kind() != io::ErrorKind::NotFound
    {
        let _ = std::fs::remove_file(&socket);
        return Err(io_err("remove stale", &exit_file)(e));
    }
    let reserve = cfg.dir.join(paths::EXIT_RESERVE);
    let undo_files = || {
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(&reserve);
    };
    // Taken now or never: a container whose exit could not be recorded would be reported as
    // lost (MonitorDied) instead of with its exit code.
    if let Err(e) = exit::reserve(&reserve) {
        undo_files();
        return Err(io_err("reserve space for the exit record at", &reserve)(e));
    }
    if let Err(e) = crate::util::replace_file(&pid_file, std::process::id().to_string().as_bytes())
    {
        undo_files();
        return Err(io_err("write", &pid_file)(e));
    }
    let (container, pump, fanout) = match create(cfg) {
        Ok(c) => c,
        Err(e) => {
            undo_files();
            return Err(e);
        }
    };
    Ok(Monitor {
        id: cfg.id.clone(),
        runtime_root: cfg.runtime_root.clone(),
        dir: cfg.dir.clone(),
        listener,
        signals,
        container,
        pump,
        fanout,
        exited: None,
    })
}

/// Binds the control socket; a socket file left by a dead monitor is replaced, a live one is
/// an error (two monitors for one container must never happen).
fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let short = paths::ShortPath::new(path).map_err(io_err("open the directory of", path))?;
    if path.exists() {
        if UnixStream::connect(short.path()).is_ok() {
            return Err(ServeError::Setup(format!(
                "another monitor is serving {}",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(io_err("remove stale socket", path))?;
    }
    let listener = UnixListener::bind(short.path()).map_err(io_err("bind", path))?;
    let restrict = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| listener.set_nonblocking(true));
    if let Err(e) = restrict {
        let _ = std::fs::remove_file(path);
        return Err(io_err("prepare socket", path)(e));
    }
    Ok(listener)
}

fn create(cfg: &ServeConfig) -> Result<(Container, Pump, Fanout), ServeError> {
    let state_dir = cfg.runtime_root.join(&cfg.id);
    // Never clean up what an earlier attempt (or another container) owns.
    if state_dir.exists() {
        return Err(ServeError::Exists {
            id: cfg.id.clone(),
            root: cfg.runtime_root.clone(),
        });
    }
    // The log opens first: a bad log path fails the create before anything exists.
    let log = match &cfg.stdio.log_path {
        Some(path) => Some(CriLog::open(path).map_err(io_err("open container log", path))?),
        None => None,
    };
    let plumbing = Plumbing::new(&cfg.stdio, &cfg.dir)
        .map_err(|e| ServeError::Setup(format!("container stdio: {e}")))?;
    let Plumbing {
        child,
        monitor: ends,
        console,
    } = plumbing;
    let keep: Vec<i32> = match &child {
        ChildStdio::Fds(f) => vec![
            f.stdin.as_raw_fd(),
            f.stdout.as_raw_fd(),
            f.stderr.as_raw_fd(),
        ],
        ChildStdio::Console(_) => Vec::new(),
    };
    // With our own cgroup, libcontainer's cleanup of a failed create only sees the decoy tree
    // and fails to remove it: its complaints are noise (crius removes the real cgroup).
    let ignore: &[&str] = match cfg.own_cgroup {
        Some(_) => runtime::DECOY_CLEANUP_NOISE,
        None => &[],
    };
    let reply = helper::run_keeping_reply_first("libcontainer create", &keep, ignore, || {
        if let Some(plan) = &cfg.own_cgroup {
            own_cgroup::enter(plan).map_err(|e| format!("cgroup: {e}"))?;
        }
        let decoy = cfg.own_cgroup.is_some();
        runtime::create(
            &cfg.id,
            &cfg.bundle,
            &cfg.runtime_root,
            child,
            cfg.start,
            decoy,
        )
        .map(|p| p.to_string())
    });
    let reply = reply.map_err(ServeError::from).and_then(|r| {
        r.parse::<i32>()
            .map(Pid::from_raw)
            .map_err(|_| ServeError::Setup(format!("libcontainer create: bad init pid {r:?}")))
    });
    // With a tty the output comes from the pty master that the container's setup sent.
    let reply = reply.and_then(|init| {
        let mut ends = ends;
        let mut tty = None;
        if let Some(console) = &console {
            let master = console
                .receive_master(CONSOLE_TIMEOUT_MS)
                .map_err(io_err("receive the pty master on", console.path()))?;
            tty = Some(
                master
                    .try_clone()
                    .map_err(io_err("duplicate the pty master from", console.path()))?,
            );
            ends.stdout = Some(master);
        }
        let fanout = attach_ends(cfg, &mut ends, tty)
            .map_err(|e| ServeError::Setup(format!("container stdin: {e}")))?;
        let pump = Pump::new(ends, log)
            .map_err(|e| ServeError::Setup(format!("container output: {e}")))?;
        Ok((init, pump, fanout))
    });
    drop(console);
    let (init, pump, fanout) = match reply {
        Ok(created) => created,
        Err(e) => {
            // A container that was created but whose output cannot be taken is killed first.
            if let Some(pid) = created_init_pid(&cfg.runtime_root, &cfg.id) {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
            // libcontainer cleans up most failures itself, but not all (e.g. a state dir made
            // before the spec turned out invalid); delete whatever is left.
            if let Err(d) = helper::run("libcontainer delete", || {
                runtime::delete(&cfg.id, &cfg.runtime_root).map(|()| String::new())
            }) {
                tracing::error!(id = %cfg.id, error = %d, "cleanup after a failed create");
            }
            if let Some(plan) = &cfg.own_cgroup
                && let Err(r) = own_cgroup::remove(plan)
            {
                tracing::error!(id = %cfg.id, error = %r, "removing the cgroup after a failed create");
            }
            return Err(e);
        }
    };
    // The helper is exiting (its reply came first); init becomes ours, the subreaper's, when it
    // is gone, and the run loop reaps both. init's cgroups are looked up there too, after the
    // daemon has its answer.
    let created_at = now_nanos();
    let (status, started_at) = if cfg.start {
        tracing::info!(id = %cfg.id, pid = %init, "container created and started");
        (Status::Running, created_at)
    } else {
        tracing::info!(id = %cfg.id, pid = %init, "container created");
        (Status::Created, 0)
    };
    let container = Container {
        init,
        status,
        created_at,
        started_at,
        cgroup: None,
        memory: None,
    };
    Ok((container, pump, fanout))
}

/// The attach side of the container's streams: where attached clients' stdin goes (the
/// stdin pipe, or the pty master of a tty container created with stdin) and the pty master
/// for window sizes. Both are non-blocking: the monitor never waits on the container.
fn attach_ends(
    cfg: &ServeConfig,
    ends: &mut super::stdio::MonitorStdio,
    tty: Option<std::os::fd::OwnedFd>,
) -> io::Result<Fanout> {
    let stdin = match (&tty, ends.stdin_writer.take()) {
        (Some(master), _) if cfg.stdio.stdin => Some(master.try_clone()?),
        (Some(_), _) => None,
        (None, writer) => writer,
    };
    for fd in stdin.iter().chain(tty.iter()) {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
    }
    Ok(Fanout::new(&cfg.id, stdin, tty, cfg.stdio.stdin_once))
}

/// init's pid from libcontainer's state, for cleaning up a create that succeeded in
/// libcontainer but failed afterwards in the monitor.
fn created_init_pid(runtime_root: &Path, id: &str) -> Option<Pid> {
    let text = std::fs::read_to_string(runtime_root.join(id).join("state.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let pid = value.get("pid")?.as_i64()?;
    (pid > 0).then(|| Pid::from_raw(pid as i32))
}

/// A monitor with a created container.
pub struct Monitor {
    id: String,
    runtime_root: PathBuf,
    dir: PathBuf,
    listener: UnixListener,
    signals: SignalFd,
    container: Container,
    pump: Pump,
    fanout: Fanout,
    exited: Option<ExitInfo>,
}

impl Monitor {
    /// Finds init's cgroups (for kill --all, the cgroup's leftovers and OOM kills). init is our
    /// unreaped child, so even an init that has exited is still there to ask.
    fn locate_cgroups(&mut self) {
        let (id, init) = (&self.id, self.container.init);
        self.container.cgroup = ContainerCgroup::of(init.as_raw()).unwrap_or_else(|e| {
            tracing::warn!(%id, pid = %init, error = %e, "cannot read init's cgroup");
            None
        });
        if self.container.cgroup.is_none() {
            tracing::warn!(%id, "container cgroup unknown: kill --all signals init only");
        }
        self.container.memory = MemoryCgroup::of(init.as_raw()).unwrap_or_else(|e| {
            tracing::warn!(%id, error = %e, "cannot read init's memory cgroup");
            None
        });
    }

    pub fn init_pid(&self) -> i32 {
        self.container.init.as_raw()
    }

    /// Gives up a container nobody will supervise (the launcher that was to report it is
    /// gone): kill it, delete it and remove our files.
    pub fn abandon(mut self) {
        tracing::warn!(id = %self.id, "launcher gone before the container was reported; removing it");
        self.locate_cgroups();
        let _ = kill(self.container.init, Signal::SIGKILL);
        let _ = waitpid(self.container.init, None);
        self.reap();
        self.delete();
        self.remove_files();
    }

    /// Serves until the container has exited and is recorded. Returns the process exit code.
    pub fn run(mut self) -> u8 {
        self.locate_cgroups();
        // init may have died before we started watching SIGCHLD for it.
        self.reap();
        sys::trim_file_pages();
        let mut last_trim = Instant::now();
        while self.exited.is_none() {
            let (sig_ready, conn_ready, output_ready, attach_ready, oom_ready) = {
                let mut fds = Vec::with_capacity(9);
                fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
                fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
                let oom_watch = self.container.memory.as_ref().and_then(|m| m.watch_fd());
                fds.extend(oom_watch.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
                let outputs_start = fds.len();
                fds.extend(self.pump.fds().map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
                let outputs_end = fds.len();
                fds.extend(
                    self.fanout
                        .poll_fds()
                        .into_iter()
                        .map(|(fd, flags)| PollFd::new(fd, flags)),
                );
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "poll failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                let outputs: Vec<usize> = fds[outputs_start..outputs_end]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| ready(f))
                    .map(|(i, _)| i)
                    .collect();
                let attach: Vec<PollFlags> = fds[outputs_end..]
                    .iter()
                    .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                    .collect();
                let oom = outputs_start > 2 && ready(&fds[2]);
                (ready(&fds[0]), ready(&fds[1]), outputs, attach, oom)
            };
            // Before the exit is handled: the counter must be read while the cgroup exists.
            if oom_ready && let Some(memory) = self.container.memory.as_mut() {
                memory.on_watch_ready();
            }
            // Clients first: their indexes are only valid until new output drops a slow one.
            if attach_ready.iter().any(|r| !r.is_empty()) {
                self.fanout.on_ready(&attach_ready);
            }
            // Output first: what the container wrote before it exited is logged before the
            // exit is handled.
            if !output_ready.is_empty() {
                self.pump.on_ready(&output_ready, &mut self.fanout);
                if last_trim.elapsed() >= TRIM_INTERVAL {
                    sys::trim_file_pages();
                    last_trim = Instant::now();
                }
            }
            if sig_ready {
                self.drain_signals();
            }
            if conn_ready && self.exited.is_none() {
                self.accept();
                // Requests (start in particular) touch code that is not needed again.
                sys::trim_file_pages();
            }
        }
        self.finish()
    }

    fn drain_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => {}
                Ok(s) => {
                    tracing::info!(id = %self.id, signal = %s, "ignored: the container outlives its monitor's callers")
                }
                Err(_) => {}
            }
        }
        // SIGCHLD coalesces, so always reap everything there is.
        self.reap();
    }

    /// Reaps every exited child: init (recording its status) and orphans reparented to us.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "waitpid failed");
                    break;
                }
                Ok(status) => {
                    if status.pid() == Some(self.container.init) {
                        self.record_exit(status);
                    } else {
                        tracing::debug!(?status, "reaped an orphan");
                    }
                }
            }
        }
    }

    fn record_exit(&mut self, status: WaitStatus) {
        let Some((exit_code, signal)) = exit::exit_code(status) else {
            return;
        };
        // Read before the cgroup is deleted with the container.
        let memory = self.container.memory.as_ref();
        let memory_dir = memory.map(|m| m.dir().to_path_buf());
        let oom_kills = memory.and_then(MemoryCgroup::oom_kills);
        let oom_killed = oom_kills.is_some_and(|n| n > 0);
        tracing::info!(id = %self.id, exit_code, ?signal, oom_killed, ?oom_kills, ?memory_dir, "container exited");
        self.container.status = Status::Exited;
        self.exited = Some(ExitInfo {
            version: exit::EXIT_RECORD_VERSION,
            pid: self.container.init.as_raw(),
            exit_code,
            signal,
            created_at: self.container.created_at,
            started_at: self.container.started_at,
            finished_at: now_nanos(),
            oom_killed,
            cleanup_error: None,
        });
    }

    /// After init's exit: delete the container, then publish the exit record and go away.
    fn finish(mut self) -> u8 {
        let cleanup_error = self.delete();
        // Every process of the container is gone now, so its output reaches EOF; the log is
        // complete before the exit record says the container ended.
        self.pump
            .drain(Instant::now() + DRAIN_TIMEOUT, &mut self.fanout);
        // Attached clients get what is queued for them, then EOF: the output is complete.
        self.fanout.finish(Instant::now() + ATTACH_FLUSH_TIMEOUT);
        let Some(mut info) = self.exited.take() else {
            return 1;
        };
        info.cleanup_error = cleanup_error;
        let path = self.dir.join(paths::EXIT_FILE);
        let code = match exit::write(&path, &self.dir.join(paths::EXIT_RESERVE), &info) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot write the exit record");
                1
            }
        };
        self.remove_files();
        code
    }

    /// Kills what is left of the container and deletes it; returns the error, if any.
    fn delete(&mut self) -> Option<String> {
        // Without a pid namespace, init's exit leaves its children running; libcontainer's
        // delete only kills them when it believes the container still runs.
        // libcontainer removes the cgroup directory with only ~100 ms of retries: wait for the
        // cgroup to empty first, and retry the delete while it does not.
        let mut result = Err(String::new());
        for attempt in 0..=DELETE_RETRIES {
            if let Some(cg) = &self.container.cgroup
                && !cg.kill_and_wait_empty(EMPTY_TIMEOUT)
            {
                tracing::warn!(id = %self.id, dir = %cg.dir().display(), pids = ?cg.pids(),
                    "the container's cgroup is not empty {EMPTY_TIMEOUT:?} after SIGKILL");
            }
            self.reap();
            result = helper::run("libcontainer delete", || {
                runtime::delete(&self.id, &self.runtime_root).map(|()| String::new())
            })
            .map_err(|e| e.to_string());
            match &result {
                Ok(_) => break,
                Err(e) if attempt < DELETE_RETRIES => {
                    tracing::warn!(id = %self.id, error = %e, attempt, "deleting the container; retrying");
                    std::thread::sleep(DELETE_BACKOFF * (attempt + 1));
                }
                Err(_) => {}
            }
        }
        self.reap();
        match result {
            Ok(_) => None,
            Err(e) => {
                tracing::error!(id = %self.id, error = %e, "deleting the container");
                Some(e)
            }
        }
    }

    fn remove_files(&self) {
        let _ = std::fs::remove_file(paths::socket_path(&self.dir));
        let _ = std::fs::remove_file(self.dir.join(paths::PID_FILE));
    }

    fn accept(&mut self) {
        let stream = match self.listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                return;
            }
        };
        match self.serve_one(stream) {
            Ok(()) => {}
            // A connect-and-close probe (bind's check for a live monitor does that).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::debug!(error = %e, "control connection closed before a request")
            }
            // The daemon takes a dropped request for a failure of the call: say why.
            Err(e) => tracing::warn!(id = %self.id, error = %e, "control connection failed"),
        }
    }

    /// One request and its response per connection; an answered Attach keeps its connection
    /// as an attached client.
    fn serve_one(&mut self, mut stream: UnixStream) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        // The socket is 0600 already; checking the peer also covers a directory handed to
        // another user by mistake.
        let peer = getsockopt(&stream, sockopt::PeerCredentials).map_err(io::Error::from)?;
        if peer.uid() != nix::unistd::geteuid().as_raw() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "foreign peer",
            ));
        }
        let request: proto::Request = wire::read_msg(&mut stream)?;
        let response = match request.op {
            Some(Op::Attach(a)) => return self.attach(stream, a.stdin),
            Some(Op::Start(_)) => self.start(),
            Some(Op::Kill(k)) => self.kill(k.signal, k.all),
            Some(Op::State(_)) => Ok(()),
            Some(Op::ReopenLog(_)) => self.reopen_log(),
            None => Err("empty request".to_owned()),
        };
        let response = proto::Response {
            error: response.err().unwrap_or_default(),
            state: Some(self.state()),
        };
        wire::write_msg(&mut stream, &response)
    }

    fn attach(&mut self, mut stream: UnixStream, stdin: bool) -> io::Result<()> {
        let refused = if self.container.status == Status::Exited {
            Some("container is not running")
        } else if !self.fanout.has_room() {
            Some("too many attached clients")
        } else {
            None
        };
        let response = proto::Response {
            error: refused.unwrap_or_default().to_owned(),
            state: Some(self.state()),
        };
        wire::write_msg(&mut stream, &response)?;
        if refused.is_some() {
            return Ok(());
        }
        self.fanout.add(stream, stdin)
    }

    fn state(&self) -> proto::State {
        let c = &self.container;
        let exited = self.exited.as_ref();
        proto::State {
            status: c.status as i32,
            pid: c.init.as_raw(),
            exit_code: exited.map_or(0, |e| e.exit_code),
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: exited.map_or(0, |e| e.finished_at),
            oom_killed: exited.is_some_and(|e| e.oom_killed),
        }
    }

    fn reopen_log(&mut self) -> Result<(), String> {
        if self.container.status == Status::Exited {
            return Err("container is not running".to_owned());
        }
        self.pump.reopen_log()
    }

    fn start(&mut self) -> Result<(), String> {
        match self.container.status {
            Status::Running => return Ok(()),
            Status::Created => {}
            other => return Err(format!("container is {}", other.as_str_name())),
        }
        helper::run("libcontainer start", || {
            runtime::start(&self.id, &self.runtime_root).map(|()| String::new())
        })
        .map_err(|e| e.to_string())?;
        self.container.status = Status::Running;
        self.container.started_at = now_nanos();
        tracing::info!(id = %self.id, "container started");
        Ok(())
    }

    fn kill(&mut self, signal: i32, all: bool) -> Result<(), String> {
        let signal = Signal::try_from(signal).map_err(|_| format!("invalid signal {signal}"))?;
        if self.container.status == Status::Exited {
            return Ok(());
        }
        tracing::info!(id = %self.id, %signal, all, "signalling the container");
        if all && let Some(cg) = &self.container.cgroup {
            return cg
                .kill_all(signal)
                .map(drop)
                .map_err(|e| format!("signal cgroup {}: {e}", cg.dir().display()));
        }
        // init is our unreaped child, so its pid cannot have been reused: the signal reaches
        // the container or a zombie of it, never a stranger.
        kill(self.container.init, signal).map_err(|e| format!("kill {}: {e}", self.container.init))
    }
}
