//! The measured workloads. Each one cleans up the pods it made before returning, also on error.

use crate::cri::{Cri, Net, PodTemplate};
use crate::stats::{Percentiles, millis};
use anyhow::{Context, Result, anyhow};
use k8s_cri::v1::ContainerState;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tonic::Code;

/// Longest a started container may take to be reported RUNNING.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxLatency {
    pub run: Percentiles,
    pub stop: Percentiles,
    pub remove: Percentiles,
}

/// RunPodSandbox, StopPodSandbox and RemovePodSandbox of `n` pods, one after the other.
pub async fn sandbox_latency(
    cri: &mut Cri,
    tpl: &PodTemplate,
    net: Net,
    prefix: &str,
    n: usize,
) -> Result<SandboxLatency> {
    let (mut run, mut stop, mut remove) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let config = tpl.sandbox(&format!("{prefix}-{i}"), net);
        let t = Instant::now();
        let id = cri.run_pod(config).await.context("RunPodSandbox")?;
        run.push(t.elapsed());
        let t = Instant::now();
        let stopped = cri.stop_pod(&id).await;
        stop.push(t.elapsed());
        let t = Instant::now();
        let removed = cri.remove_pod(&id).await;
        remove.push(t.elapsed());
        stopped.context("StopPodSandbox")?;
        removed.context("RemovePodSandbox")?;
    }
    let p = |v: &[Duration]| Percentiles::of(v).ok_or_else(|| anyhow!("no samples"));
    Ok(SandboxLatency {
        run: p(&run)?,
        stop: p(&stop)?,
        remove: p(&remove)?,
    })
}

/// Why a measurement has no number: the runtime does not implement the call yet.
pub fn is_unimplemented(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<tonic::Status>()
            .is_some_and(|s| s.code() == Code::Unimplemented)
    })
}

/// One pod with (optionally) one running sleeper; returns the pod id and the time until running.
/// On failure the pod is torn down before the error is returned.
async fn start_pod(
    cri: &mut Cri,
    tpl: &PodTemplate,
    name: &str,
    with_container: bool,
) -> Result<(String, Duration)> {
    let config = tpl.sandbox(name, Net::Bridge);
    // kubelet creates the pod log directory before it asks for containers; so do we.
    std::fs::create_dir_all(&config.log_directory)
        .with_context(|| format!("create {}", config.log_directory))?;
    let t = Instant::now();
    let pod = cri.run_pod(config.clone()).await.context("RunPodSandbox")?;
    if !with_container {
        return Ok((pod, t.elapsed()));
    }
    let result = async {
        let ctr = cri
            .create_container(&pod, tpl.sleeper(), config)
            .await
            .context("CreateContainer")?;
        cri.start_container(&ctr).await.context("StartContainer")?;
        loop {
            let state = cri.container_state(&ctr).await.context("ContainerStatus")?;
            if state == ContainerState::ContainerRunning as i32 {
                return Ok(t.elapsed());
            }
            if t.elapsed() > RUNNING_TIMEOUT {
                return Err(anyhow!(
                    "container {ctr} not RUNNING after {RUNNING_TIMEOUT:?} (state {state})"
                ));
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    .await;
    match result {
        Ok(elapsed) => Ok((pod, elapsed)),
        Err(e) => {
            let _ = cri.teardown_pod(&pod).await;
            Err(e)
        }
    }
}

/// Pod start (sandbox + container until RUNNING) of `n` pods one after the other.
pub async fn pod_start(
    cri: &mut Cri,
    tpl: &PodTemplate,
    prefix: &str,
    n: usize,
) -> Result<Percentiles> {
    let mut samples = Vec::new();
    for i in 0..n {
        let (pod, elapsed) = start_pod(cri, tpl, &format!("{prefix}-{i}"), true).await?;
        samples.push(elapsed);
        cri.teardown_pod(&pod).await.context("tear down pod")?;
    }
    Percentiles::of(&samples).ok_or_else(|| anyhow!("no samples"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Burst {
    pub pods: usize,
    pub with_containers: bool,
    pub total_ms: f64,
    pub per_pod: Percentiles,
}

/// `k` pods started at once; returns the measurement and the ids of the running pods, which the
/// caller measures memory on and then tears down with [`teardown_all`].
pub async fn burst(
    cri: &Cri,
    tpl: &PodTemplate,
    prefix: &str,
    k: usize,
    with_containers: bool,
) -> (Result<Burst>, Vec<String>) {
    let t = Instant::now();
    let tasks: Vec<_> = (0..k)
        .map(|i| {
            let (mut cri, tpl) = (cri.clone(), tpl.clone());
            let name = format!("{prefix}-{i}");
            tokio::spawn(async move { start_pod(&mut cri, &tpl, &name, with_containers).await })
        })
        .collect();
    let (mut pods, mut samples, mut first_err) = (Vec::new(), Vec::new(), None);
    for task in tasks {
        match task.await.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok((pod, elapsed)) => {
                pods.push(pod);
                samples.push(elapsed);
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    let total_ms = millis(t.elapsed());
    if let Some(e) = first_err {
        return (Err(e.context("burst pod start")), pods);
    }
    let result = Percentiles::of(&samples)
        .map(|per_pod| Burst {
            pods: k,
            with_containers,
            total_ms,
            per_pod,
        })
        .ok_or_else(|| anyhow!("no samples"));
    (result, pods)
}

/// Stops and removes pods concurrently; returns the first error after trying them all.
pub async fn teardown_all(cri: &Cri, pods: Vec<String>) -> Result<()> {
    let tasks: Vec<_> = pods
        .into_iter()
        .map(|pod| {
            let mut cri = cri.clone();
            tokio::spawn(async move {
                cri.teardown_pod(&pod)
                    .await
                    .with_context(|| format!("tear down {pod}"))
            })
        })
        .collect();
    let mut first_err = None;
    for task in tasks {
        if let Err(e) = task.await.map_err(anyhow::Error::from).and_then(|r| r) {
            first_err = first_err.or(Some(e));
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// PullImage of an image absent from the runtime, in milliseconds; the image is removed again.
pub async fn pull(cri: &mut Cri, image: &str) -> Result<f64> {
    // Absent before we time it: a leftover from an earlier run would make the pull a no-op.
    let _ = cri.remove_image(image).await;
    let t = Instant::now();
    cri.pull(image).await.context("PullImage")?;
    let ms = millis(t.elapsed());
    cri.remove_image(image).await.context("RemoveImage")?;
    Ok(ms)
}
