//! The floor: what starting a pause process in fresh namespaces on an overlay of the pause layer
//! costs with no runtime at all (unshare(1) + mount + chroot + exec). A runtime cannot beat it, so
//! RunPodSandbox is judged against it.

use crate::stats::Percentiles;
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The shell step run inside the new namespaces: overlay over the layer, then become pause.
fn inner_script(layer: &Path, dir: &Path) -> String {
    format!(
        "mount -t overlay overlay -o lowerdir={l},upperdir={d}/upper,workdir={d}/work {d}/merged && exec chroot {d}/merged /pause",
        l = layer.display(),
        d = dir.display()
    )
}

fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Children of `pid` (its main thread), from /proc/PID/task/PID/children.
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn kill_and_reap(child: &mut Child, inner: Option<u32>) {
    if let Some(pid) = inner {
        // SAFETY: kill(2) of the pause process we started; it is PID 1 of its own PID namespace,
        // so SIGKILL ends the namespace and with it the private mount namespace and its overlay.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One start: spawn until a process named `pause` runs; returns the time and cleans up.
fn once(layer: &Path, dir: &Path) -> Result<Duration> {
    for sub in ["upper", "work", "merged"] {
        fs::create_dir_all(dir.join(sub)).with_context(|| format!("mkdir {}", dir.display()))?;
    }
    let t = Instant::now();
    let mut child = Command::new("unshare")
        .args([
            "-m",
            "-u",
            "-i",
            "-p",
            "-n",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "--",
        ])
        .args(["/bin/sh", "-c", &inner_script(layer, dir)])
        .stdin(Stdio::null())
        .spawn()
        .context("spawn unshare(1)")?;
    let outer = child.id();
    let result = loop {
        if let Some(pid) = children(outer)
            .into_iter()
            .find(|p| comm(*p).as_deref() == Some("pause"))
        {
            break Ok((t.elapsed(), pid));
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!(
                "unshare exited with {status} before pause ran"
            ));
        }
        if t.elapsed() > START_TIMEOUT {
            break Err(anyhow::anyhow!(
                "pause did not start within {START_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_micros(20));
    };
    kill_and_reap(&mut child, result.as_ref().ok().map(|(_, pid)| *pid));
    let _ = fs::remove_dir_all(dir);
    result.map(|(d, _)| d)
}

/// `n` sequential starts of pause from `layer` (an unpacked pause image layer).
pub fn measure(layer: &Path, work: &Path, n: usize) -> Result<Percentiles> {
    if !layer.join("pause").is_file() {
        bail!("{} has no /pause", layer.display());
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let dir: PathBuf = work.join(format!("floor-{i}"));
        samples.push(once(layer, &dir)?);
    }
    Percentiles::of(&samples).context("no samples")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_mounts_then_execs_pause() {
        let s = inner_script(Path::new("/l"), Path::new("/d"));
        assert!(s.starts_with(
            "mount -t overlay overlay -o lowerdir=/l,upperdir=/d/upper,workdir=/d/work /d/merged"
        ));
        assert!(s.ends_with("exec chroot /d/merged /pause"));
    }
}
