//! The daemon's side of ExecSync: runs `crius monitor --exec` (libcontainer's tenant builder
//! stays out of the daemon), feeds it the process, collects its output and exit code, and
//! enforces the timeout by asking the helper to kill the process.

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::Instant;

use super::MonitorError;
use crate::monitor::exec::{ExecReport, RESIZE_FD, STATUS_FD};
use crate::monitor::validate_id;

/// Most bytes kept per stream (kubelet's limit for ExecSync output); the rest is read and
/// dropped so the process never blocks on a full pipe.
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;
/// How long the helper may take to kill the process after SIGTERM before it is SIGKILLed
/// itself (the report is lost then).
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long output may still arrive after the process ended (a background child that kept
/// the pipes open is not waited for beyond this).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// One process to run in a running container.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The container's id (libcontainer's).
    pub id: String,
    /// libcontainer's state root.
    pub runtime_root: PathBuf,
    /// The container's bundle: libcontainer re-reads its config.json for every exec.
    pub bundle: PathBuf,
    /// What to run: args, env, cwd, user, capabilities, no_new_privileges..., built by the
    /// caller from the container's spec and the command. `terminal` is set from `tty`.
    pub process: oci_spec::runtime::Process,
    /// Run the process on a pty (its output then all arrives as stdout).
    pub tty: bool,
    /// Kill the process after this long (`None`: wait forever).
    pub timeout: Option<Duration>,
    /// The crius binary to run as `crius monitor --exec`.
    pub exe: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// At most [`MAX_EXEC_OUTPUT`] bytes each.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Shell convention: the exit code, or 128 + signal. With `timed_out`, the code of the
    /// killed process (137), or -1 if the helper itself had to be killed.
    pub exit_code: i32,
    /// The timeout expired and the process was killed. CRI callers map this to their
    /// timeout error (containerd: DeadlineExceeded "timeout ... exceeded").
    pub timed_out: bool,
}

/// A started helper: its pipes, its status pipe and the kill-on-drop guard.
struct Spawned {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
    stderr: tokio::process::ChildStderr,
    status: tokio::net::unix::pipe::Receiver,
    resize: Option<tokio::net::unix::pipe::Sender>,
    guard: TerminateOnDrop,
}

/// Starts `crius monitor --exec` for `req` and hands it the process JSON. `stdin`: the
/// helper's stdin stays open for the process after the JSON.
async fn spawn_helper(req: &ExecRequest, stdin: bool) -> Result<Spawned, MonitorError> {
    validate_id(&req.id).map_err(MonitorError::InvalidConfig)?;
    let fail = |reason: String| MonitorError::ExecFailed {
        id: req.id.clone(),
        reason,
    };
    let spec = req.bundle.join("config.json");
    if !spec.exists() {
        return Err(fail(format!(
            "bundle spec {} does not exist",
            spec.display()
        )));
    }
    let json = serde_json::to_vec(&req.process).map_err(|e| fail(format!("encode: {e}")))?;
    let (status_rx, status_tx) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(format!("status pipe: {e}")))?;
    // Window sizes for a tty; the helper sees fd 4 closed without one.
    let resize_pipe = if req.tty {
        Some(nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(format!("resize pipe: {e}")))?)
    } else {
        None
    };

    let mut cmd = Command::new(&req.exe);
    cmd.arg("monitor")
        .arg("--exec")
        .arg("--id")
        .arg(&req.id)
        .arg("--runtime-root")
        .arg(&req.runtime_root);
    if req.tty {
        cmd.arg("--tty");
    }
    if stdin {
        cmd.arg("--stdin");
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Cancelled callers still get the process killed: see TerminateOnDrop.
        .kill_on_drop(false);
    let tx = status_tx.as_raw_fd();
    let resize_rx = resize_pipe.as_ref().map(|(r, _)| r.as_raw_fd());
    // SAFETY: runs in the forked child before exec and only calls async-signal-safe
    // functions (dup2, fcntl) on descriptors that are open in the child.
    unsafe {
        cmd.pre_exec(move || {
            let place = |fd: i32, target: i32| {
                if fd == target {
                    // dup2 onto itself keeps close-on-exec set; clear it instead.
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            // The resize pipe first: it may sit on fd 3, which the status pipe takes next.
            if let Some(r) = resize_rx {
                let moved = if r == STATUS_FD {
                    let m = libc::fcntl(r, libc::F_DUPFD_CLOEXEC, 10);
                    if m < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    m
                } else {
                    r
                };
                place(tx, STATUS_FD)?;
                place(moved, RESIZE_FD)?;
            } else {
                place(tx, STATUS_FD)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| MonitorError::Io {
        what: "execute",
        path: req.exe.clone(),
        source,
    })?;
    drop(status_tx);
    let guard = TerminateOnDrop(child.id().map(|p| p as i32));
    let resize = match resize_pipe {
        Some((r, w)) => {
            drop(r);
            Some(
                tokio::net::unix::pipe::Sender::from_owned_fd(w)
                    .map_err(|e| fail(format!("resize pipe: {e}")))?,
            )
        }
        None => None,
    };

    let (stdin_pipe, stdout, stderr) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(mut stdin_pipe), Some(stdout), Some(stderr)) = (stdin_pipe, stdout, stderr) else {
        return Err(fail("the helper's pipes are missing".to_owned()));
    };
    // The helper reads the whole process before anything else, so this cannot deadlock.
    // A helper that died early shows up as a missing report.
    let mut framed = (json.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&json);
    let _ = stdin_pipe.write_all(&framed).await;
    let status = tokio::net::unix::pipe::Receiver::from_owned_fd(status_rx)
        .map_err(|e| fail(format!("status pipe: {e}")))?;
    Ok(Spawned {
        child,
        stdin: stdin_pipe,
        stdout,
        stderr,
        status,
        resize,
        guard,
    })
}

/// Runs `req.process` in the container and returns its output and exit code.
pub async fn exec_sync(req: &ExecRequest) -> Result<ExecOutput, MonitorError> {
    let fail = |reason: String| MonitorError::ExecFailed {
        id: req.id.clone(),
        reason,
    };
    let Spawned {
        mut child,
        stdin,
        stdout,
        stderr,
        status,
        resize: _,
        guard,
    } = spawn_helper(req, false).await?;
    drop(stdin);
    let (deadline_tx, deadline_rx) = watch::channel(None);
    let supervise = async {
        let result = supervise(&mut child, status, req.timeout).await;
        // Output written before the exit is in the pipes already; give stragglers a moment.
        let _ = deadline_tx.send(Some(Instant::now() + OUTPUT_GRACE));
        result
    };
    let (out, err, result) = tokio::join!(
        read_capped(stdout, deadline_rx.clone()),
        read_capped(stderr, deadline_rx),
        supervise
    );
    guard.disarm();
    let (report, timed_out) = result.map_err(fail)?;
    match report {
        Some(ExecReport::Exited { exit_code, .. }) => Ok(ExecOutput {
            stdout: out,
            stderr: err,
            exit_code,
            timed_out,
        }),
        Some(ExecReport::NotRunning { reason }) => Err(MonitorError::NotRunning {
            id: req.id.clone(),
            reason,
        }),
        Some(ExecReport::Failed { reason }) => Err(fail(reason)),
        // Killed before it could report: only acceptable when we killed it.
        None if timed_out => Ok(ExecOutput {
            stdout: out,
            stderr: err,
            exit_code: -1,
            timed_out,
        }),
        None => Err(fail(format!(
            "the exec helper ended without a report: {}",
            String::from_utf8_lossy(&err).trim()
        ))),
    }
}

/// A process running in a container for a streaming Exec: its stdio, window sizes and exit.
/// Dropping it before [`ExecStream::wait`] returned kills the process (and its session).
pub struct ExecStream {
    /// The process's stdin (`None` unless asked for); dropping it is EOF.
    pub stdin: Option<tokio::process::ChildStdin>,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    resize: Option<Resizer>,
    tty: bool,
    child: tokio::process::Child,
    status: Option<tokio::net::unix::pipe::Receiver>,
    /// The report read so far (kept across cancelled waits).
    report: Vec<u8>,
    guard: Option<TerminateOnDrop>,
    id: String,
}

/// Starts `req.process` (no timeout: `req.timeout` is ignored) with its stdin open when
/// `stdin` is set, and returns its streams.
pub async fn exec_stream(req: &ExecRequest, stdin: bool) -> Result<ExecStream, MonitorError> {
    let s = spawn_helper(req, stdin).await?;
    Ok(ExecStream {
        stdin: stdin.then_some(s.stdin),
        stdout: Some(s.stdout),
        stderr: Some(s.stderr),
        resize: s.resize.map(|pipe| Resizer { pipe: Some(pipe) }),
        tty: req.tty,
        child: s.child,
        status: Some(s.status),
        report: Vec::new(),
        guard: Some(s.guard),
        id: req.id.clone(),
    })
}

/// Sets a tty process's window size.
pub struct Resizer {
    pipe: Option<tokio::net::unix::pipe::Sender>,
}

impl Resizer {
    /// A no-op once the process is gone.
    pub async fn resize(&mut self, columns: u16, rows: u16) {
        let Some(pipe) = &mut self.pipe else { return };
        let mut msg = [0u8; 4];
        msg[..2].copy_from_slice(&columns.to_be_bytes());
        msg[2..].copy_from_slice(&rows.to_be_bytes());
        if pipe.write_all(&msg).await.is_err() {
            self.pipe = None;
        }
    }
}

impl ExecStream {
    /// The process's stdout (with a tty: everything the pty printed); taken once.
    pub fn stdout_take(&mut self) -> Option<tokio::process::ChildStdout> {
        self.stdout.take()
    }

    /// The process's stderr (with a tty: only the helper's own complaints); taken once.
    pub fn stderr_take(&mut self) -> Option<tokio::process::ChildStderr> {
        self.stderr.take()
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// The window-size setter of a tty process (`None` without a tty); taken once.
    pub fn resizer(&mut self) -> Option<Resizer> {
        self.resize.take()
    }

    /// Waits for the process to end; returns its exit code (128 + signal when killed by one).
    /// Cancel-safe: a dropped call can be repeated.
    pub async fn wait(&mut self) -> Result<i32, MonitorError> {
        let fail = |reason: String| MonitorError::ExecFailed {
            id: self.id.clone(),
            reason,
        };
        if let Some(status) = &mut self.status {
            // read_to_end is not cancel-safe; read in chunks into a buffer we keep instead.
            let mut chunk = [0u8; 512];
            loop {
                match status.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.report.extend_from_slice(&chunk[..n]),
                }
            }
        }
        self.status = None;
        let buf = std::mem::take(&mut self.report);
        let _ = self.child.wait().await;
        if let Some(g) = self.guard.take() {
            g.disarm();
        }
        if buf.is_empty() {
            return Err(fail("the exec helper ended without a report".to_owned()));
        }
        match serde_json::from_slice(&buf) {
            Ok(ExecReport::Exited { exit_code, .. }) => Ok(exit_code),
            Ok(ExecReport::NotRunning { reason }) => Err(MonitorError::NotRunning {
                id: self.id.clone(),
                reason,
            }),
            Ok(ExecReport::Failed { reason }) => Err(fail(reason)),
            Err(e) => Err(fail(format!(
                "unreadable exec report {:?}: {e}",
                String::from_utf8_lossy(&buf)
            ))),
        }
    }
}

/// Waits for the helper's report and exit; on timeout asks it (SIGTERM) to kill the process.
/// Returns the report (if any) and whether the timeout fired.
async fn supervise(
    child: &mut tokio::process::Child,
    mut status: tokio::net::unix::pipe::Receiver,
    timeout: Option<Duration>,
) -> Result<(Option<ExecReport>, bool), String> {
    let mut buf = Vec::new();
    let mut timed_out = false;
    {
        let mut read = std::pin::pin!(status.read_to_end(&mut buf));
        let finished = match timeout {
            None => Some(read.as_mut().await),
            Some(t) => tokio::time::timeout(t, read.as_mut()).await.ok(),
        };
        if finished.is_none() {
            timed_out = true;
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            if tokio::time::timeout(KILL_GRACE, read.as_mut())
                .await
                .is_err()
            {
                tracing::error!("exec helper did not stop after SIGTERM; killing it");
                let _ = child.start_kill();
            }
        }
    }
    child
        .wait()
        .await
        .map_err(|e| format!("wait for the exec helper: {e}"))?;
    if buf.is_empty() {
        return Ok((None, timed_out));
    }
    serde_json::from_slice(&buf)
        .map(|r| (Some(r), timed_out))
        .map_err(|e| {
            format!(
                "unreadable exec report {:?}: {e}",
                String::from_utf8_lossy(&buf)
            )
        })
}

/// Reads a stream to its end, keeping at most [`MAX_EXEC_OUTPUT`] bytes, or until the
/// deadline that is announced once the process has ended.
async fn read_capped(
    mut r: impl AsyncRead + Unpin,
    mut deadline: watch::Receiver<Option<Instant>>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let expired = async move {
        let d = loop {
            if let Some(d) = *deadline.borrow_and_update() {
                break d;
            }
            if deadline.changed().await.is_err() {
                // The sender is gone without a deadline: never expire on our own.
                std::future::pending::<()>().await;
            }
        };
        tokio::time::sleep_until(d).await;
    };
    let mut expired = std::pin::pin!(expired);
    loop {
        tokio::select! {
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = MAX_EXEC_OUTPUT.saturating_sub(out.len());
                    out.extend_from_slice(&buf[..n.min(room)]);
                }
            },
            () = expired.as_mut() => break,
        }
    }
    out
}

/// Asks the helper to kill the process if the caller's future is dropped (gRPC cancel)
/// before the helper finished: the process must not outlive an abandoned ExecSync.
struct TerminateOnDrop(Option<i32>);

impl TerminateOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TerminateOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_capped_but_fully_read() {
        let data = vec![b'x'; MAX_EXEC_OUTPUT + 1000];
        let (_tx, rx) = watch::channel(None);
        let out = read_capped(&data[..], rx).await;
        assert_eq!(out.len(), MAX_EXEC_OUTPUT);
    }

    #[tokio::test]
    async fn a_deadline_ends_a_stream_that_stays_open() {
        let (_w, r) = tokio::io::duplex(64);
        let (tx, rx) = watch::channel(None);
        let reader = tokio::spawn(read_capped(r, rx));
        tx.send(Some(Instant::now() + Duration::from_millis(50)))
            .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("deadline honoured")
            .unwrap();
        assert!(out.is_empty());
    }
}
