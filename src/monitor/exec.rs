//! `crius monitor --exec`: one process run inside a running container, for ExecSync and the
//! streaming Exec.
//!
//! The daemon starts this with the OCI process JSON on stdin (a 4-byte big-endian length, then
//! the JSON), pipes it reads as stdout and stderr, and a status pipe as fd 3. We call
//! libcontainer's tenant builder (here, never in the daemon), which makes the process our child
//! with our stdout and stderr; we wait for it and write an [`ExecReport`] to fd 3. SIGTERM
//! (the daemon's timeout, or a streaming client that went away) kills the process and
//! everything in its session, then we report and exit.
//!
//! With `--stdin` the rest of our stdin is the process's stdin (handed over as is without a
//! tty; copied to the pty with one). With `--tty` the process gets a pty whose master we
//! relay to stdout; fd 4, when open, carries window sizes (4 bytes each: columns, rows, both
//! big-endian u16) that we apply with TIOCSWINSZ.

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::runtime::{self, ExecError};
use super::stdio::{ChildStdio, ConsoleSocket, ContainerStdio};
use super::sys;

/// The descriptor the report is written to.
pub const STATUS_FD: RawFd = 3;
/// The descriptor window sizes arrive on (tty only, optional).
pub const RESIZE_FD: RawFd = 4;
/// Upper bound on the process JSON (args and env of a real process are far smaller).
const MAX_PROCESS_JSON: u64 = 4 << 20;
/// How long a tty's output may stay readable after the process exited.
const TTY_DRAIN: Duration = Duration::from_secs(2);

/// What the helper tells the daemon on fd 3 (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ExecReport {
    /// The process ended; `killed` when we killed it on request (timeout).
    Exited {
        exit_code: i32,
        signal: Option<i32>,
        killed: bool,
    },
    /// The container is not running (exited, deleted or never started).
    NotRunning {
        reason: String,
    },
    Failed {
        reason: String,
    },
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

/// What the process gets besides its command.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecMode {
    /// A pty (its master relayed to our stdout).
    pub tty: bool,
    /// Our stdin after the process JSON is the process's stdin (else /dev/null).
    pub stdin: bool,
}

/// Entry point; returns the process exit code (0 when a report was written).
pub fn run(id: &str, runtime_root: &Path, mode: ExecMode) -> u8 {
    if fcntl(STATUS_FD, FcntlArg::F_GETFD).is_err() {
        eprintln!("crius monitor --exec: fd {STATUS_FD} (the status pipe) is not open");
        return 2;
    }
    // SAFETY: fd 3 is ours by contract with the daemon, and F_GETFD just checked it is open;
    // nothing else in this process owns it.
    let status = unsafe { OwnedFd::from_raw_fd(STATUS_FD) };
    // The exec'd process must not inherit the status pipe.
    let _ = fcntl(status.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    // Only a tty uses window sizes; a resize fd that is not open is simply absent.
    let resize = (mode.tty && fcntl(RESIZE_FD, FcntlArg::F_GETFD).is_ok()).then(|| {
        let _ = fcntl(RESIZE_FD, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        // SAFETY: fd 4 is ours by the same contract as fd 3, and was just checked open.
        unsafe { OwnedFd::from_raw_fd(RESIZE_FD) }
    });
    let report = execute(id, runtime_root, mode, status.as_raw_fd(), resize);
    let data = serde_json::to_vec(&report).unwrap_or_default();
    match File::from(status).write_all(&data) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn failed(reason: impl Into<String>) -> ExecReport {
    ExecReport::Failed {
        reason: reason.into(),
    }
}

/// A command that could not be started because it is missing (127) or not executable (126):
/// reported as a shell reports it, the exit code plus the reason where the client sees it
/// (stderr; with a tty, whose output is our stdout, there).
fn not_started(exit_code: i32, msg: &str, tty: bool) -> ExecReport {
    let line = format!("crius: exec failed: {msg}\n");
    let _ = if tty {
        std::io::stdout().write_all(line.as_bytes())
    } else {
        std::io::stderr().write_all(line.as_bytes())
    };
    ExecReport::Exited {
        exit_code,
        signal: None,
        killed: false,
    }
}

fn execute(
    id: &str,
    runtime_root: &Path,
    mode: ExecMode,
    status_fd: RawFd,
    resize: Option<OwnedFd>,
) -> ExecReport {
    let tty = mode.tty;
    // Dispositions we inherited (Rust ignores SIGPIPE) would pass to the process: libcontainer
    // clones it from us, so start it from the defaults.
    sys::reset_signals();
    // Until the process runs, SIGTERM only sets a flag (SA_RESTART keeps libcontainer's
    // syscalls uninterrupted); caught handlers revert to default in the exec'd process.
    let action = SigAction::new(
        SigHandler::Handler(on_terminate),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        if let Err(e) = unsafe { signal::sigaction(s, &action) } {
            return failed(format!("install {s} handler: {e}"));
        }
    }
    let json = match read_process_json() {
        Ok(j) => j,
        Err(e) => return failed(format!("read the process JSON from stdin: {e}")),
    };
    let process = match prepare_process(&json, tty) {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let memfd = match process_file(&process) {
        Ok(fd) => fd,
        Err(e) => return failed(format!("process JSON memfd: {e}")),
    };
    // Nothing of the daemon's reaches the process: only stdio, the status pipe and the memfd
    // (close-on-exec, read by libcontainer before it clones) stay open.
    let mut keep = vec![status_fd, memfd.as_raw_fd()];
    keep.extend(resize.as_ref().map(|r| r.as_raw_fd()));
    sys::close_fds_except(&keep);
    let process_path = PathBuf::from(format!("/proc/self/fd/{}", memfd.as_raw_fd()));

    let console = if tty {
        // Directly in the runtime root: below the container's dir the path would not fit
        // sun_path for a long state dir (the config check budgets `<state>/m/<id>/...` only).
        let path = runtime_root.join(format!("exec-{}.sock", std::process::id()));
        match ConsoleSocket::bind(&path) {
            Ok(c) => Some(c),
            Err(e) => return failed(format!("console socket {}: {e}", path.display())),
        }
    } else {
        None
    };
    let stdio = match &console {
        Some(c) => ChildStdio::Console(c.path().to_owned()),
        None => match own_stdio(mode.stdin) {
            Ok(s) => ChildStdio::Fds(s),
            Err(e) => return failed(format!("stdio for the process: {e}")),
        },
    };
    if TERMINATE.load(Ordering::SeqCst) {
        return failed("cancelled before the process started");
    }
    let pid = match runtime::exec(id, runtime_root, &process_path, stdio) {
        Ok(pid) => Pid::from_raw(pid),
        Err(ExecError::NotRunning(reason)) => return ExecReport::NotRunning { reason },
        Err(ExecError::NotFound(msg)) => return not_started(127, &msg, tty),
        Err(ExecError::NotExecutable(msg)) => return not_started(126, &msg, tty),
        Err(ExecError::Failed(reason)) => return failed(reason),
    };
    drop(memfd);
    let master = match &console {
        Some(c) => match c.receive_master(2000) {
            Ok(m) => Some(m),
            Err(e) => {
                kill_session(pid);
                let _ = waitpid(pid, None);
                return failed(format!("receive the exec pty master: {e}"));
            }
        },
        None => None,
    };
    drop(console);
    let tty_input = if tty {
        TtyInput {
            stdin: mode.stdin.then(|| dup_cloexec(0)).and_then(Result::ok),
            resize,
            pending: Vec::new(),
        }
    } else {
        TtyInput::default()
    };
    supervise(pid, master, tty_input)
}

/// Reads the length-prefixed process JSON with unbuffered reads, so not one byte of the
/// process's own stdin behind it is consumed.
fn read_process_json() -> std::io::Result<Vec<u8>> {
    // SAFETY: fd 0 stays open for the whole process; ManuallyDrop keeps it from being closed.
    let mut stdin = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    let mut len = [0u8; 4];
    stdin.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as u64;
    if len > MAX_PROCESS_JSON {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("process JSON of {len} bytes is over the limit"),
        ));
    }
    let mut json = vec![0u8; len as usize];
    stdin.read_exact(&mut json)?;
    Ok(json)
}

fn dup_cloexec(fd: RawFd) -> std::io::Result<OwnedFd> {
    let new = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Parses the process (so a bad one is reported as such, not as a libcontainer error) and
/// makes its `terminal` agree with the tty we set up.
fn prepare_process(json: &[u8], tty: bool) -> Result<Vec<u8>, String> {
    let mut process: oci_spec::runtime::Process =
        serde_json::from_slice(json).map_err(|e| format!("invalid process JSON: {e}"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err("the process has no args".to_owned());
    }
    process.set_terminal(Some(tty));
    serde_json::to_vec(&process).map_err(|e| format!("encode the process: {e}"))
}

fn process_file(json: &[u8]) -> std::io::Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(
        c"crius-exec-process",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    let mut file = File::from(fd);
    file.write_all(json)?;
    Ok(file.into())
}

/// The process's stdin is ours (the rest of the daemon's pipe) or /dev/null; stdout and
/// stderr are copies of ours (the daemon's pipes), so the process talks straight to the daemon.
fn own_stdio(stdin: bool) -> std::io::Result<ContainerStdio> {
    Ok(ContainerStdio {
        stdin: if stdin {
            dup_cloexec(0)?
        } else {
            File::open("/dev/null")?.into()
        },
        stdout: dup_cloexec(1)?,
        stderr: dup_cloexec(2)?,
    })
}

/// What flows into a tty process: our stdin (copied to the master) and window sizes.
#[derive(Default)]
struct TtyInput {
    stdin: Option<OwnedFd>,
    resize: Option<OwnedFd>,
    /// Read from stdin, not yet taken by the master (it is non-blocking).
    pending: Vec<u8>,
}

impl TtyInput {
    /// Reads one chunk of stdin into `pending`; drops stdin at its end.
    fn read_stdin(&mut self) {
        let Some(fd) = &self.stdin else { return };
        let mut buf = [0u8; 16 * 1024];
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => self.stdin = None,
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => self.stdin = None,
        }
    }

    /// Writes what the master takes of `pending`.
    fn flush_to(&mut self, master: &OwnedFd) {
        while !self.pending.is_empty() {
            match nix::unistd::write(master, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.pending.clear();
                    self.stdin = None;
                }
            }
        }
    }

    /// Applies every window size that arrived (the last one wins).
    fn apply_resizes(&mut self, master: Option<&OwnedFd>) {
        let Some(fd) = &self.resize else { return };
        let mut buf = [0u8; 4 * 64];
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => self.resize = None,
            Ok(n) => {
                if let (Some(m), Some(size)) = (master, buf[..n].chunks_exact(4).last()) {
                    let ws = libc::winsize {
                        ws_col: u16::from_be_bytes([size[0], size[1]]),
                        ws_row: u16::from_be_bytes([size[2], size[3]]),
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid.
                    unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                }
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => self.resize = None,
        }
    }
}

/// Waits for the process; kills it (and its session) on SIGTERM. Copies a tty's output to
/// stdout meanwhile.
fn supervise(pid: Pid, master: Option<OwnedFd>, mut input: TtyInput) -> ExecReport {
    let signals = match sys::signalfd() {
        Ok(s) => s,
        Err(e) => {
            kill_session(pid);
            let _ = waitpid(pid, None);
            return failed(format!("signalfd: {e}"));
        }
    };
    let mut killed = false;
    if TERMINATE.load(Ordering::SeqCst) {
        kill_session(pid);
        killed = true;
    }
    let mut master = master;
    if let Some(m) = &master {
        // Input to the pty must never block the loop that drains its output.
        let _ = fcntl(
            m.as_raw_fd(),
            FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    let status = loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => break status,
            Ok(_) => {}
            Err(e) => return failed(format!("waitpid {pid}: {e}")),
        }
        let (sig_ready, tty_ready, tty_writable, stdin_ready, resize_ready) = {
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            let out_flags = if input.pending.is_empty() {
                PollFlags::POLLIN
            } else {
                PollFlags::POLLIN | PollFlags::POLLOUT
            };
            // Read no more stdin while the master has not taken the last chunk.
            let stdin_fd = input
                .stdin
                .as_ref()
                .filter(|_| input.pending.is_empty() && master.is_some());
            let mut slots = [None; 3];
            for (slot, (fd, flags)) in slots.iter_mut().zip([
                (master.as_ref(), out_flags),
                (stdin_fd, PollFlags::POLLIN),
                (input.resize.as_ref(), PollFlags::POLLIN),
            ]) {
                if let Some(fd) = fd {
                    fds.push(PollFd::new(fd.as_fd(), flags));
                    *slot = Some(fds.len() - 1);
                }
            }
            let [m, i, r] = slots;
            let _ = poll(&mut fds, PollTimeout::NONE);
            let has = |i: Option<usize>, what: PollFlags| {
                i.and_then(|i| fds[i].revents())
                    .is_some_and(|r| r.intersects(what))
            };
            let any = PollFlags::all();
            (
                has(Some(0), any),
                has(
                    m,
                    PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR,
                ),
                has(m, PollFlags::POLLOUT),
                has(i, any),
                has(r, any),
            )
        };
        if resize_ready {
            input.apply_resizes(master.as_ref());
        }
        if stdin_ready {
            input.read_stdin();
        }
        if let Some(m) = &master
            && (tty_writable || stdin_ready)
        {
            input.flush_to(m);
        }
        if tty_ready && !copy_tty(&mut master) {
            master = None;
        }
        if sig_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                let sig = Signal::try_from(info.ssi_signo as i32);
                if matches!(sig, Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP)) && !killed {
                    kill_session(pid);
                    killed = true;
                }
            }
        }
    };
    if master.is_some() {
        let deadline = Instant::now() + TTY_DRAIN;
        while Instant::now() < deadline && copy_tty(&mut master) {}
    }
    let (exit_code, signal) = super::exit::exit_code(status).unwrap_or((-1, None));
    ExecReport::Exited {
        exit_code,
        signal,
        killed,
    }
}

/// Copies one read of the pty to stdout; false at the tty's end.
fn copy_tty(master: &mut Option<OwnedFd>) -> bool {
    let Some(m) = master else { return false };
    let mut buf = [0u8; 16 * 1024];
    match nix::unistd::read(m.as_raw_fd(), &mut buf) {
        Ok(0) | Err(Errno::EIO) => false,
        Err(Errno::EINTR | Errno::EAGAIN) => true,
        Err(_) => false,
        Ok(n) => std::io::stdout().write_all(&buf[..n]).is_ok(),
    }
}

/// SIGKILLs the process and every process in its session (libcontainer makes it a session
/// leader; `sh -c` children stay in its session). Called before the process is reaped, so
/// its pid cannot have been reused.
fn kill_session(pid: Pid) {
    let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
    for member in session_members(pid.as_raw()) {
        let _ = kill(Pid::from_raw(member), Signal::SIGKILL);
    }
    let _ = kill(pid, Signal::SIGKILL);
}

fn session_members(sid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_session(&s))
                == Some(sid)
        })
        .collect()
}

/// The session id from /proc/PID/stat ("pid (comm) state ppid pgrp session ...").
fn stat_session(stat: &str) -> Option<i32> {
    crate::util::proc_stat_fields(stat)?.nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_is_read_after_the_command_name() {
        let stat = "1234 (a) b (c)) S 1 1234 1200 0 -1 4194560 98 0 0 0";
        assert_eq!(stat_session(stat), Some(1200));
        assert_eq!(stat_session("garbage"), None);
    }

    #[test]
    fn process_terminal_follows_the_tty_flag() {
        let json = br#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0},"terminal":true}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&prepare_process(json, false).unwrap()).unwrap();
        assert_eq!(out["terminal"], false);
        assert!(prepare_process(br#"{"args":[],"cwd":"/"}"#, false).is_err());
        assert!(prepare_process(b"{", false).is_err());
    }

    #[test]
    fn reports_round_trip() {
        let r = ExecReport::Exited {
            exit_code: 137,
            signal: Some(9),
            killed: true,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""result":"exited""#), "{text}");
        assert_eq!(serde_json::from_str::<ExecReport>(&text).unwrap(), r);
    }
}
