//! Owns the runtime daemon under test: start (with the helper marker in its environment), wait until
//! it answers, stop. The daemon's pid goes to a file so hack/bench/run can kill it if we die.

use crate::cri::{self, Cri};
use anyhow::{Context, Result, bail};
use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to answer before the bench calls it broken.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct DaemonSpec {
    pub argv: Vec<String>,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub pidfile: PathBuf,
    /// KEY=VALUE put in the daemon's environment; its helpers inherit it.
    pub marker: String,
}

pub struct Daemon {
    child: Child,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Spawns the daemon and returns it with the time until it answered Version and Status.
    pub async fn start(spec: &DaemonSpec) -> Result<(Self, Duration, Cri)> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("open daemon log {}", spec.log.display()))?;
        let (key, value) = spec
            .marker
            .split_once('=')
            .context("marker must be KEY=VALUE")?;
        let started = Instant::now();
        let child = Command::new(&spec.argv[0])
            .args(&spec.argv[1..])
            .env(key, value)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C to the bench reaches the trap, not the daemon.
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {:?}", spec.argv))?;
        fs::write(&spec.pidfile, child.id().to_string())
            .with_context(|| format!("write {}", spec.pidfile.display()))?;
        let mut daemon = Daemon { child };
        loop {
            if let Ok(mut c) = cri::connect(&spec.socket).await
                && cri::answers(&mut c).await
            {
                return Ok((daemon, started.elapsed(), c));
            }
            if let Some(status) = daemon.child.try_wait()? {
                bail!(
                    "daemon exited with {status} before answering; see {}",
                    spec.log.display()
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                daemon.stop().await?;
                bail!(
                    "daemon did not answer within {READY_TIMEOUT:?}; see {}",
                    spec.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// SIGTERM, then SIGKILL after a grace period; waits for the exit either way.
    pub async fn stop(&mut self) -> Result<()> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Removes a stale socket so that "answers" always means the new daemon.
pub fn remove_stale_socket(socket: &Path) {
    let _ = fs::remove_file(socket);
}
