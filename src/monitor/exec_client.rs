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

use super::client::MonitorError;
use super::exec::{ExecReport, STATUS_FD};
use super::validate_id;

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

/// Runs `req.process` in the container and returns its output and exit code.
pub async fn exec_sync(req: &ExecRequest) -> Result<ExecOutput, MonitorError> {
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
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Cancelled callers still get the process killed: see TerminateOnDrop.
        .kill_on_drop(false);
    let tx = status_tx.as_raw_fd();
    // SAFETY: runs in the forked child before exec and only calls async-signal-safe
    // functions (dup2, fcntl) on a descriptor that is open in the child.
    unsafe {
        cmd.pre_exec(move || {
            if tx == STATUS_FD {
                // dup2 onto itself keeps close-on-exec set; clear it instead.
                if libc::fcntl(tx, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(tx, STATUS_FD) < 0 {
                return Err(std::io::Error::last_os_error());
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

    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
        return Err(fail("the helper's pipes are missing".to_owned()));
    };
    // The helper reads the whole process before anything else, so this cannot deadlock.
    // A helper that died early shows up as a missing report below.
    let _ = stdin.write_all(&json).await;
    drop(stdin);

    let status = tokio::net::unix::pipe::Receiver::from_owned_fd(status_rx)
        .map_err(|e| fail(format!("status pipe: {e}")))?;
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
