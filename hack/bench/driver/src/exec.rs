//! Streaming Exec: the round trip of `true` (CRI Exec -> URL -> SPDY upgrade -> exit status on
//! the error stream) and the stdout throughput of one large exec, in one running sleeper pod.

use crate::cri::{Cri, PodTemplate};
use crate::scenarios::{start_pod, teardown};
use crate::spdy;
use crate::stats::Percentiles;
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecBench {
    /// Exec of `true` until its exit status is back, one round after the other.
    pub round_trip: Percentiles,
    /// MiB/s of each large exec (`head -c BYTES /dev/zero` to stdout), from the Exec call to
    /// its exit status.
    pub stdout_mib_s: Vec<f64>,
    pub stdout_bytes: u64,
}

/// The CRI Exec call and the streaming session behind its URL; what the session gave back.
async fn exec(cri: &mut Cri, container: &str, cmd: &[&str]) -> Result<spdy::ExecOutcome> {
    let url = cri.exec_url(container, cmd).await.context("Exec")?;
    let out = spdy::exec(&url)
        .await
        .with_context(|| format!("stream {url}"))?;
    out.success()?;
    Ok(out)
}

/// `rounds` round trips of `true`, then `streams` execs writing `bytes` to stdout.
pub async fn exec_bench(
    cri: &mut Cri,
    tpl: &PodTemplate,
    name: &str,
    rounds: usize,
    streams: usize,
    bytes: u64,
) -> Result<ExecBench> {
    let (started, _) = start_pod(cri, tpl, name, 0, true).await?;
    let r = measure(cri, &started.container, rounds, streams, bytes).await;
    let down = teardown(cri, tpl, &started).await;
    let bench = r?;
    down?;
    Ok(bench)
}

async fn measure(
    cri: &mut Cri,
    container: &Option<String>,
    rounds: usize,
    streams: usize,
    bytes: u64,
) -> Result<ExecBench> {
    let ctr = container
        .as_deref()
        .ok_or_else(|| anyhow!("pod without a container"))?;
    // One unmeasured exec: the first one pays for lazily set up state (the streaming server's
    // listener, the container's exec path) on both runtimes.
    exec(cri, ctr, &["true"]).await.context("warm-up exec")?;
    let mut samples: Vec<Duration> = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        exec(cri, ctr, &["true"]).await?;
        samples.push(t.elapsed());
    }
    let count = bytes.to_string();
    let mut stdout_mib_s = Vec::with_capacity(streams);
    for _ in 0..streams {
        let t = Instant::now();
        let out = exec(cri, ctr, &["head", "-c", &count, "/dev/zero"]).await?;
        let secs = t.elapsed().as_secs_f64();
        if out.stdout_bytes != bytes {
            bail!("stdout gave {} bytes, not {bytes}", out.stdout_bytes);
        }
        stdout_mib_s.push(bytes as f64 / (1 << 20) as f64 / secs);
    }
    Ok(ExecBench {
        round_trip: Percentiles::of(&samples).ok_or_else(|| anyhow!("no samples"))?,
        stdout_mib_s,
        stdout_bytes: bytes,
    })
}
