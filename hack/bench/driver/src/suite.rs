//! Runs every scenario against one runtime: owns its daemon from first start to final stop, and
//! leaves no pod of this run behind.

use crate::cri::{Cri, Net, PodTemplate};
use crate::daemon::{Daemon, DaemonSpec, remove_stale_socket};
use crate::exec::{self, ExecBench};
use crate::procs::{self, GroupMemory};
use crate::scenarios::{self, Burst, ImageLatency, SandboxLatency, is_unimplemented};
use crate::stats::{Percentiles, millis};
use anyhow::{Context, Result};
use clap::ValueEnum;
use k8s_cri::v1::VersionRequest;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Containers {
    /// Burst pods get a container when pod start works on this runtime.
    Auto,
    Yes,
    No,
}

pub struct SuiteConfig {
    pub name: String,
    pub daemon: DaemonSpec,
    pub helper_tokens: Vec<String>,
    pub template: PodTemplate,
    pub pull_image: Option<String>,
    pub pulls: usize,
    pub pods: usize,
    pub burst: usize,
    pub runs: usize,
    pub cold_starts: usize,
    pub burst_containers: Containers,
    /// Streaming Exec: round trips of `true` per run, large execs per run, their stdout size.
    pub exec_rounds: usize,
    pub exec_streams: usize,
    pub exec_bytes: u64,
    /// Running containers during the idle-CPU window (0: not measured).
    pub idle_containers: usize,
    pub idle_window: Duration,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Memory {
    pub pods: usize,
    pub containers: usize,
    pub daemon_rss_kib: u64,
    pub helpers: GroupMemory,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Run {
    pub host: Option<SandboxLatency>,
    pub bridge: Option<SandboxLatency>,
    pub pod_start: Option<Percentiles>,
    pub burst: Option<Burst>,
    pub memory: Option<Memory>,
    pub image: Option<ImageLatency>,
    pub exec: Option<ExecBench>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SuiteResult {
    pub name: String,
    pub runtime_name: String,
    pub runtime_version: String,
    pub first_start_ms: f64,
    pub idle_rss_kib: u64,
    pub containers_supported: bool,
    pub runs: Vec<Run>,
    pub cold_start_ms: Vec<f64>,
    /// CPU over a quiet window with containers running (once, after the runs).
    pub idle_cpu: Option<crate::idle::IdleCpu>,
    /// Why a number is missing ("n/a"), one line per scenario and run.
    pub notes: Vec<String>,
}

impl SuiteResult {
    fn note(&mut self, what: &str, err: &anyhow::Error) {
        let kind = if is_unimplemented(err) {
            "unimplemented"
        } else {
            "error"
        };
        tracing_line(&format!("{}: {what}: {kind}: {err:#}", self.name));
        self.notes.push(format!("{what}: {kind}: {err:#}"));
    }
}

fn tracing_line(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// Turns a scenario error into a note and removes whatever pods of ours it left.
async fn settle<T>(
    res: &mut SuiteResult,
    cri: &mut Cri,
    tag: &str,
    what: &str,
    r: Result<T>,
) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            res.note(what, &e);
            if let Err(e) = remove_ours(cri, tag).await {
                res.note("cleanup", &e);
            }
            None
        }
    }
}

pub async fn remove_ours(cri: &mut Cri, tag: &str) -> Result<()> {
    let pods = cri.our_pods(tag).await.context("ListPodSandbox")?;
    scenarios::teardown_ids(cri, pods).await
}

pub async fn run(cfg: &SuiteConfig) -> Result<SuiteResult> {
    let mut res = SuiteResult {
        name: cfg.name.clone(),
        ..Default::default()
    };
    remove_stale_socket(&cfg.daemon.socket);
    let (mut daemon, first, mut cri) = Daemon::start(&cfg.daemon).await?;
    res.first_start_ms = millis(first);
    let outcome = measure(cfg, &mut res, &mut daemon, &mut cri).await;
    // Whatever happened, no pod of ours stays and the daemon stops.
    if let Ok(mut c) = crate::cri::connect(&cfg.daemon.socket).await
        && let Err(e) = remove_ours(&mut c, &cfg.template.tag).await
    {
        res.note("final cleanup", &e);
    }
    daemon.stop().await?;
    outcome.map(|()| res)
}

async fn measure(
    cfg: &SuiteConfig,
    res: &mut SuiteResult,
    daemon: &mut Daemon,
    cri: &mut Cri,
) -> Result<()> {
    let version = cri
        .rt
        .version(VersionRequest::default())
        .await?
        .into_inner();
    res.runtime_name = version.runtime_name;
    res.runtime_version = version.runtime_version;
    // Let start-up work (image import, GC timers) settle before calling the daemon idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    res.idle_rss_kib = procs::rss_kib(daemon.pid()).context("daemon RSS")?;
    let tag = cfg.template.tag.clone();
    let tpl = &cfg.template;
    // kubelet's QoS cgroups exist before any pod (cgroupsPerQOS: true).
    crate::podcgroup::make_qos_parents(&tpl.cgroup_root).context("QoS cgroups")?;

    // Warm-up, not measured: first use unpacks the images and loads the CNI config.
    for net in [Net::Host, Net::Bridge] {
        let r = scenarios::sandbox_latency(cri, tpl, net, &format!("warm-{net:?}"), 1).await;
        settle(res, cri, &tag, &format!("warm-up {net:?}"), r.map(|_| ())).await;
    }
    let r = scenarios::pod_start(cri, tpl, "warm-ctr", 1).await;
    res.containers_supported = settle(res, cri, &tag, "warm-up pod start", r)
        .await
        .is_some();
    let burst_containers = match cfg.burst_containers {
        Containers::Auto => res.containers_supported,
        Containers::Yes => true,
        Containers::No => false,
    };

    for i in 0..cfg.runs {
        tracing_line(&format!("{}: run {}/{}", cfg.name, i + 1, cfg.runs));
        let mut run = Run::default();
        let r =
            scenarios::sandbox_latency(cri, tpl, Net::Host, &format!("host-{i}"), cfg.pods).await;
        run.host = settle(
            res,
            cri,
            &tag,
            &format!("run {i} host-network sandboxes"),
            r,
        )
        .await;
        let r = scenarios::sandbox_latency(cri, tpl, Net::Bridge, &format!("bridge-{i}"), cfg.pods)
            .await;
        run.bridge = settle(res, cri, &tag, &format!("run {i} bridge sandboxes"), r).await;
        if res.containers_supported {
            let r = scenarios::pod_start(cri, tpl, &format!("start-{i}"), cfg.pods).await;
            run.pod_start = settle(res, cri, &tag, &format!("run {i} pod start"), r).await;
            let r = exec::exec_bench(
                cri,
                tpl,
                &format!("exec-{i}"),
                cfg.exec_rounds,
                cfg.exec_streams,
                cfg.exec_bytes,
            )
            .await;
            run.exec = settle(res, cri, &tag, &format!("run {i} streaming exec"), r).await;
        }
        let (r, pods) =
            scenarios::burst(cri, tpl, &format!("burst-{i}"), cfg.burst, burst_containers).await;
        if let Some(b) = settle(res, cri, &tag, &format!("run {i} burst"), r).await {
            // Give the helpers a moment past start-up before weighing them.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let helpers =
                procs::group_memory(&procs::find_helpers(&cfg.daemon.marker, &cfg.helper_tokens));
            run.memory = Some(Memory {
                pods: b.pods,
                containers: b.pods * if b.with_containers { 2 } else { 1 },
                daemon_rss_kib: procs::rss_kib(daemon.pid()).unwrap_or(0),
                helpers,
            });
            run.burst = Some(b);
            let r = scenarios::teardown_all(cri, tpl, pods).await;
            settle(res, cri, &tag, &format!("run {i} burst teardown"), r).await;
        }
        if let Some(image) = &cfg.pull_image {
            let r = scenarios::pull_remove(cri, image, cfg.pulls).await;
            run.image = settle(res, cri, &tag, &format!("run {i} image pull"), r).await;
        }
        res.runs.push(run);
    }

    if cfg.idle_containers > 0 && res.containers_supported {
        tracing_line(&format!(
            "{}: idle CPU, {} containers, {:?}",
            cfg.name, cfg.idle_containers, cfg.idle_window
        ));
        let helpers = (cfg.daemon.marker.as_str(), cfg.helper_tokens.as_slice());
        let (r, pods) = crate::idle::measure(
            cri,
            tpl,
            daemon.pid(),
            helpers,
            cfg.idle_containers,
            cfg.idle_window,
        )
        .await;
        res.idle_cpu = settle(res, cri, &tag, "idle CPU", r).await;
        let r = scenarios::teardown_all(cri, tpl, pods).await;
        settle(res, cri, &tag, "idle CPU teardown", r).await;
    }

    for i in 0..cfg.cold_starts {
        daemon.stop().await?;
        remove_stale_socket(&cfg.daemon.socket);
        let (d, took, c) = Daemon::start(&cfg.daemon)
            .await
            .with_context(|| format!("cold start {i}"))?;
        *daemon = d;
        *cri = c;
        res.cold_start_ms.push(millis(took));
    }
    Ok(())
}
