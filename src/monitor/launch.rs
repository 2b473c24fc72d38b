//! The process the daemon executes (`crius monitor ...`). It forks the real monitor, waits
//! until that one reports the container created (or failed), prints the outcome and exits, so
//! the monitor is reparented away from the daemon and survives its restarts.

use nix::fcntl::OFlag;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use super::serve::{self, ServeConfig};
use super::{paths, sys};

/// What `crius monitor` prints on stdout when the container is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    /// The container's init process (in the host pid namespace).
    pub init_pid: i32,
    /// The monitor that reaps it.
    pub monitor_pid: i32,
}

/// The monitor's report to the launcher, over a pipe.
#[derive(Debug, Serialize, Deserialize)]
enum Report {
    Created(Created),
    Failed(String),
}

/// Longest configuration a standby monitor accepts (paths and a few flags).
const MAX_REQUEST: u64 = 64 * 1024;

/// Blocks until the daemon sends the container's configuration (one line of JSON on stdin,
/// written once the bundle is ready). `None` on EOF: the daemon gave up on it, or is gone.
pub fn read_request() -> Result<Option<ServeConfig>, String> {
    use std::io::BufRead;
    let mut line = String::new();
    let mut stdin = std::io::stdin().lock().take(MAX_REQUEST);
    loop {
        match stdin.read_line(&mut line) {
            Ok(0) if line.is_empty() => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the container configuration: {e}")),
        }
    }
    if !line.ends_with('\n') {
        // Cut off by EOF or the size limit: never create from half a configuration.
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| format!("bad container configuration: {e}"))
}

/// Launches the monitor and returns the launcher's exit code.
pub fn launch(cfg: ServeConfig) -> u8 {
    let (rx, tx) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(&format!("pipe: {e}")),
    };
    // SAFETY: `crius monitor` is single-threaded (main calls us before anything starts a
    // thread), so the child is a consistent copy.
    match unsafe { fork() } {
        Err(e) => fail(&format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(rx);
            super::title::set(&format!("crius monitor {}", cfg.id));
            monitor(cfg, tx)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(tx);
            let mut text = String::new();
            let read = std::fs::File::from(rx).read_to_string(&mut text);
            match (read, serde_json::from_str::<Report>(&text)) {
                (Ok(_), Ok(Report::Created(created))) => {
                    let line = serde_json::to_string(&created).unwrap_or_default();
                    let mut out = std::io::stdout().lock();
                    // The monitor treats a lost report as "nobody will supervise this"; our own
                    // lost stdout is the daemon's problem now (it will find the monitor).
                    match writeln!(out, "{line}").and_then(|()| out.flush()) {
                        Ok(()) => 0,
                        Err(_) => 1,
                    }
                }
                (Ok(_), Ok(Report::Failed(reason))) => fail(&reason),
                _ => fail(&format!(
                    "the monitor ended without reporting ({})",
                    child_status(child)
                )),
            }
        }
    }
}

fn fail(reason: &str) -> u8 {
    eprintln!("{reason}");
    1
}

fn child_status(child: nix::unistd::Pid) -> String {
    for _ in 0..100 {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => return format!("exit code {c}"),
            Ok(WaitStatus::Signaled(_, s, _)) => return format!("killed by {s}"),
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
            Ok(other) => return format!("{other:?}"),
            Err(e) => return format!("waitpid: {e}"),
        }
    }
    "still running".to_owned()
}

/// The real monitor: detach, create the container, report, serve. Never returns.
fn monitor(cfg: ServeConfig, report: OwnedFd) -> ! {
    let code = match detach(&cfg) {
        Err(reason) => {
            send(report, &Report::Failed(reason));
            1
        }
        Ok(()) => match serve::setup(&cfg) {
            Err(e) => {
                tracing::error!(id = %cfg.id, error = %e, "create failed");
                send(report, &Report::Failed(e.to_string()));
                1
            }
            Ok(monitor) => {
                let created = Created {
                    init_pid: monitor.init_pid(),
                    monitor_pid: std::process::id() as i32,
                };
                if send(report, &Report::Created(created)) {
                    monitor.run()
                } else {
                    monitor.abandon();
                    1
                }
            }
        },
    };
    std::process::exit(code.into())
}

/// Leaves the daemon's session, working directory and stdio behind.
fn detach(cfg: &ServeConfig) -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    let log = cfg.dir.join(paths::LOG_FILE);
    sys::redirect_stdio(&log).map_err(|e| format!("redirect stdio to {}: {e}", log.display()))?;
    // Logging goes to the monitor log through its own descriptor, never through fd 2: the
    // helpers' children become the container's init and have the container's stderr as fd 2,
    // so libcontainer's own warnings would otherwise land in the container's CRI log.
    let writer = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log)
        .map_err(|e| format!("open {}: {e}", log.display()))?;
    let _ = tracing_subscriber::fmt()
        .with_writer(MonitorLog {
            file: std::sync::Mutex::new(writer),
            pid: std::process::id(),
        })
        .with_ansi(false)
        .with_target(false)
        .try_init();
    Ok(())
}

/// The monitor's log writer. Forked helpers inherit the subscriber but have closed (and maybe
/// reused) the log's descriptor, and their children are the container's processes: anything
/// they log is dropped rather than written to whatever that descriptor now is.
struct MonitorLog {
    file: std::sync::Mutex<std::fs::File>,
    pid: u32,
}

impl std::io::Write for &MonitorLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::process::id() != self.pid {
            return Ok(buf.len());
        }
        match self.file.lock() {
            Ok(mut f) => f.write(buf),
            Err(_) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MonitorLog {
    type Writer = &'a MonitorLog;
    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// Sends the report; false if the launcher is gone (so nobody will learn of the container).
fn send(report: OwnedFd, msg: &Report) -> bool {
    let data = serde_json::to_vec(msg).unwrap_or_default();
    std::fs::File::from(report).write_all(&data).is_ok()
}
