//! Idle CPU: what a runtime spends while nothing happens but N containers running (issue 13
//! item 6: exits pushed by pidfd instead of polled, so an idle node should cost next to
//! nothing). The daemon and its helpers (crius monitors, containerd shims) are measured
//! separately, as utime+stime from /proc over a fixed window, with no CRI call during it.

use crate::cri::{Cri, PodTemplate};
use crate::procs;
use crate::scenarios::{self, Started};
use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Time for start-up work of the pods (first stats, log opens) to finish before the window.
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleCpu {
    /// Running containers (one per pod, besides its pause).
    pub containers: usize,
    /// The measured window, seconds.
    pub seconds: f64,
    /// CPU time the daemon used in the window, ms.
    pub daemon_cpu_ms: f64,
    /// CPU time of all helpers alive at both ends of the window, ms.
    pub helpers_cpu_ms: f64,
    pub helpers: usize,
}

/// utime+stime of a process in clock ticks (None when it is gone), from /proc/PID/stat.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// Fields 14 and 15 of a stat line; the command (field 2) may hold spaces and parentheses, so
/// counting starts after its last ')'.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_to_ms(ticks: u64) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 * 1000.0 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// Starts `n` pods with a container each (the burst scenario's pods), lets them settle, then
/// measures CPU over `window` without touching the runtime. Returns the pods for the caller
/// to tear down, also on error.
pub async fn measure(
    cri: &Cri,
    tpl: &PodTemplate,
    daemon_pid: u32,
    helpers: (&str, &[String]),
    n: usize,
    window: Duration,
) -> (Result<IdleCpu>, Vec<Started>) {
    let (started, pods) = scenarios::burst(cri, tpl, "idle", n, true).await;
    if let Err(e) = started {
        return (Err(e.context("starting the idle pods")), pods);
    }
    tokio::time::sleep(SETTLE).await;
    let result = window_cpu(daemon_pid, helpers, window)
        .await
        .map(|mut idle| {
            idle.containers = n;
            idle
        });
    (result, pods)
}

async fn window_cpu(
    daemon_pid: u32,
    (marker, tokens): (&str, &[String]),
    window: Duration,
) -> Result<IdleCpu> {
    let helpers_now = || -> BTreeMap<u32, u64> {
        procs::find_helpers(marker, tokens)
            .into_iter()
            .filter_map(|pid| Some((pid, cpu_ticks(pid)?)))
            .collect()
    };
    let daemon0 = cpu_ticks(daemon_pid).context("daemon CPU")?;
    let helpers0 = helpers_now();
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let daemon1 = cpu_ticks(daemon_pid).ok_or_else(|| anyhow!("the daemon exited"))?;
    let helpers1 = helpers_now();
    let seconds = t.elapsed().as_secs_f64();
    let (mut count, mut ticks) = (0, 0);
    for (pid, before) in &helpers0 {
        if let Some(after) = helpers1.get(pid) {
            count += 1;
            ticks += after.saturating_sub(*before);
        }
    }
    Ok(IdleCpu {
        containers: 0,
        seconds,
        daemon_cpu_ms: ticks_to_ms(daemon1.saturating_sub(daemon0)),
        helpers_cpu_ms: ticks_to_ms(ticks),
        helpers: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_command() {
        let line = "4242 (crius (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(line), Some(22));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_a_live_process_and_not_a_gone_one() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert_eq!(cpu_ticks(u32::MAX), None);
    }
}
