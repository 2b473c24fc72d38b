//! The measured workloads. Each one cleans up the pods it made before returning, also on error.

use crate::cri::{Cri, Net, Pod, PodTemplate};
use crate::podcgroup;
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
        let pod = tpl.pod(&format!("{prefix}-{i}"), i, net);
        // kubelet makes the pod cgroup before RunPodSandbox and removes it after the pod is gone.
        podcgroup::make_pod(&pod.cgroup, pod.qos)?;
        let t = Instant::now();
        let id = cri.run_pod(pod.config.clone()).await;
        run.push(t.elapsed());
        let id = match id {
            Ok(id) => id,
            Err(e) => {
                podcgroup::remove_pod(&pod.cgroup);
                return Err(anyhow::Error::from(e).context("RunPodSandbox"));
            }
        };
        let t = Instant::now();
        let stopped = cri.stop_pod(&id).await;
        stop.push(t.elapsed());
        let t = Instant::now();
        let removed = cri.remove_pod(&id).await;
        remove.push(t.elapsed());
        podcgroup::remove_pod(&pod.cgroup);
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

/// A pod this bench started: what kubelet would know about it, and the runtime's id.
pub struct Started {
    pub pod: Pod,
    pub id: String,
    /// The sleeper container's id, when the pod got one.
    pub container: Option<String>,
}

/// Stops and removes a started pod, then does kubelet's part: pod cgroup and files removed.
pub async fn teardown(cri: &mut Cri, tpl: &PodTemplate, started: &Started) -> Result<()> {
    let r = cri.teardown_pod(&started.id).await;
    podcgroup::remove_pod(&started.pod.cgroup);
    tpl.remove_pod_files(&started.pod);
    r.with_context(|| format!("tear down {}", started.id))
}

/// One pod with (optionally) one running sleeper; returns it and the time until running.
/// On failure the pod is torn down before the error is returned.
pub async fn start_pod(
    cri: &mut Cri,
    tpl: &PodTemplate,
    name: &str,
    index: usize,
    with_container: bool,
) -> Result<(Started, Duration)> {
    let pod = tpl.pod(name, index, Net::Bridge);
    // kubelet's preparations, outside the timed part: the pod cgroup with its QoS limits, the
    // pod's log directory and the files it bind-mounts into containers.
    podcgroup::make_pod(&pod.cgroup, pod.qos)?;
    let files = match tpl.prepare_pod_files(&pod) {
        Ok(f) => f,
        Err(e) => {
            podcgroup::remove_pod(&pod.cgroup);
            tpl.remove_pod_files(&pod);
            return Err(e);
        }
    };
    let t = Instant::now();
    let id = match cri.run_pod(pod.config.clone()).await {
        Ok(id) => id,
        Err(e) => {
            podcgroup::remove_pod(&pod.cgroup);
            tpl.remove_pod_files(&pod);
            return Err(anyhow::Error::from(e).context("RunPodSandbox"));
        }
    };
    let mut started = Started {
        pod,
        id,
        container: None,
    };
    if !with_container {
        return Ok((started, t.elapsed()));
    }
    let result = async {
        let ctr = cri
            .create_container(
                &started.id,
                tpl.sleeper(&started.pod, &files),
                started.pod.config.clone(),
            )
            .await
            .context("CreateContainer")?;
        cri.start_container(&ctr).await.context("StartContainer")?;
        loop {
            let state = cri.container_state(&ctr).await.context("ContainerStatus")?;
            if state == ContainerState::ContainerRunning as i32 {
                return Ok((t.elapsed(), ctr));
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
        Ok((elapsed, ctr)) => {
            started.container = Some(ctr);
            Ok((started, elapsed))
        }
        Err(e) => {
            let _ = teardown(cri, tpl, &started).await;
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
        let (started, elapsed) = start_pod(cri, tpl, &format!("{prefix}-{i}"), i, true).await?;
        samples.push(elapsed);
        teardown(cri, tpl, &started).await?;
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
) -> (Result<Burst>, Vec<Started>) {
    let t = Instant::now();
    let tasks: Vec<_> = (0..k)
        .map(|i| {
            let (mut cri, tpl) = (cri.clone(), tpl.clone());
            let name = format!("{prefix}-{i}");
            tokio::spawn(async move { start_pod(&mut cri, &tpl, &name, i, with_containers).await })
        })
        .collect();
    let (mut pods, mut samples, mut first_err) = (Vec::new(), Vec::new(), None);
    for task in tasks {
        match task.await.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok((started, elapsed)) => {
                pods.push(started);
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

/// Stops and removes started pods concurrently; returns the first error after trying them all.
pub async fn teardown_all(cri: &Cri, tpl: &PodTemplate, pods: Vec<Started>) -> Result<()> {
    let tasks: Vec<_> = pods
        .into_iter()
        .map(|started| {
            let (mut cri, tpl) = (cri.clone(), tpl.clone());
            tokio::spawn(async move { teardown(&mut cri, &tpl, &started).await })
        })
        .collect();
    first_error(tasks).await
}

/// Awaits every task; the first error after all have finished.
async fn first_error(tasks: Vec<tokio::task::JoinHandle<Result<()>>>) -> Result<()> {
    let mut first_err = None;
    for task in tasks {
        if let Err(e) = task.await.map_err(anyhow::Error::from).and_then(|r| r) {
            first_err = first_err.or(Some(e));
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Stops and removes pods known only by id (the cleanup of whatever a failed scenario left).
pub async fn teardown_ids(cri: &Cri, ids: Vec<String>) -> Result<()> {
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let mut cri = cri.clone();
            tokio::spawn(async move {
                cri.teardown_pod(&id)
                    .await
                    .with_context(|| format!("tear down {id}"))
            })
        })
        .collect();
    first_error(tasks).await
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageLatency {
    pub pull: Percentiles,
    pub remove: Percentiles,
}

/// PullImage then RemoveImage of an image absent from the runtime, `n` times, each timed.
pub async fn pull_remove(cri: &mut Cri, image: &str, n: usize) -> Result<ImageLatency> {
    // Absent before we time it: a leftover from an earlier run would make the pull a no-op.
    let _ = cri.remove_image(image).await;
    let (mut pull, mut remove) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        cri.pull(image).await.context("PullImage")?;
        pull.push(t.elapsed());
        let t = Instant::now();
        cri.remove_image(image).await.context("RemoveImage")?;
        remove.push(t.elapsed());
    }
    let p = |v: &[Duration]| Percentiles::of(v).ok_or_else(|| anyhow!("no samples"));
    Ok(ImageLatency {
        pull: p(&pull)?,
        remove: p(&remove)?,
    })
}
