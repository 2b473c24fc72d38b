//! crius-bench: the measuring half of hack/bench/run. It talks CRI v1 over a runtime's unix socket
//! and writes JSON; hack/bench/run installs, configures and cleans up around it.

mod cri;
mod daemon;
mod exec;
mod floor;
mod idle;
mod podcgroup;
mod procs;
mod report;
mod scenarios;
mod spdy;
mod stats;
mod suite;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde::{Serialize, de::DeserializeOwned};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(about = "Measures a CRI runtime over its unix socket (driven by hack/bench/run)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a runtime daemon, run every scenario against it, stop it, write JSON.
    Suite(Box<SuiteArgs>),
    /// Time the no-runtime floor: unshare + overlay of the pause layer + exec pause.
    Floor {
        #[arg(long)]
        layer: PathBuf,
        #[arg(long)]
        work: PathBuf,
        #[arg(long, default_value_t = 50)]
        n: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Compare two suite results: print the table, write the combined JSON.
    Report {
        #[arg(long)]
        crius: PathBuf,
        #[arg(long)]
        containerd: PathBuf,
        #[arg(long)]
        floor: Option<PathBuf>,
        /// Extra facts (machine, options) merged into the JSON as "meta".
        #[arg(long)]
        meta: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Stop and remove every pod of a bench run (used by hack/bench/run's cleanup trap).
    Cleanup {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        tag: String,
    },
}

#[derive(clap::Args)]
struct SuiteArgs {
    /// Name in the report: "crius" or "containerd".
    #[arg(long)]
    name: String,
    #[arg(long)]
    socket: PathBuf,
    #[arg(long)]
    pidfile: PathBuf,
    #[arg(long)]
    daemon_log: PathBuf,
    /// KEY=VALUE set in the daemon's environment; helper processes are found by it.
    #[arg(long)]
    marker: String,
    /// Substring of a helper's command line (repeatable; all must match).
    #[arg(long = "helper", required = true)]
    helper_tokens: Vec<String>,
    /// Unique per bench run: pod labels, uids and the cgroup parent derive from it.
    #[arg(long)]
    tag: String,
    #[arg(long)]
    cgroup_root: String,
    #[arg(long)]
    log_root: PathBuf,
    #[arg(long)]
    busybox: String,
    #[arg(long)]
    pull_image: Option<String>,
    /// PullImage + RemoveImage repetitions per run.
    #[arg(long, default_value_t = 10)]
    pulls: usize,
    /// Where the per-pod files kubelet bind-mounts (hosts, termination log, token) are made.
    #[arg(long)]
    pod_root: PathBuf,
    #[arg(long, default_value_t = 100)]
    pods: usize,
    #[arg(long, default_value_t = 50)]
    burst: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 5)]
    cold_starts: usize,
    #[arg(long, value_enum, default_value = "auto")]
    burst_containers: suite::Containers,
    /// Streaming Exec round trips of `true` per run.
    #[arg(long, default_value_t = 100)]
    exec_rounds: usize,
    /// Execs per run that write --exec-bytes to stdout (throughput).
    #[arg(long, default_value_t = 3)]
    exec_streams: usize,
    #[arg(long, default_value_t = 100 << 20)]
    exec_bytes: u64,
    /// Containers running while idle CPU is measured (0 skips the scenario).
    #[arg(long, default_value_t = 50)]
    idle_containers: usize,
    /// Length of the idle-CPU window, seconds.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    #[arg(long)]
    out: PathBuf,
    /// The daemon command line.
    #[arg(last = true, required = true)]
    daemon: Vec<String>,
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

async fn run_suite(a: SuiteArgs) -> Result<()> {
    let cfg = suite::SuiteConfig {
        name: a.name,
        daemon: daemon::DaemonSpec {
            argv: a.daemon,
            socket: a.socket,
            log: a.daemon_log,
            pidfile: a.pidfile,
            marker: a.marker,
        },
        helper_tokens: a.helper_tokens,
        template: cri::PodTemplate {
            tag: a.tag,
            cgroup_root: a.cgroup_root,
            log_root: a.log_root,
            pod_root: a.pod_root,
            busybox: a.busybox,
        },
        pull_image: a.pull_image,
        pulls: a.pulls,
        pods: a.pods,
        burst: a.burst,
        runs: a.runs,
        cold_starts: a.cold_starts,
        burst_containers: a.burst_containers,
        exec_rounds: a.exec_rounds,
        exec_streams: a.exec_streams,
        exec_bytes: a.exec_bytes,
        idle_containers: a.idle_containers,
        idle_window: std::time::Duration::from_secs(a.idle_seconds),
    };
    let result = suite::run(&cfg).await?;
    write_json(&a.out, &result)
}

fn run_report(
    crius: &Path,
    containerd: &Path,
    floor: Option<&Path>,
    meta: Option<&Path>,
    out: &Path,
) -> Result<()> {
    let c: suite::SuiteResult = read_json(crius)?;
    let d: suite::SuiteResult = read_json(containerd)?;
    let f: Option<stats::Percentiles> = floor.map(read_json).transpose()?;
    let m: Option<serde_json::Value> = meta.map(read_json).transpose()?;
    let report = report::build(&c, &d, f);
    print!("{}", report::render(&report, &c, &d));
    let all = serde_json::json!({
        "meta": m,
        "report": report,
        "crius": c,
        "containerd": d,
    });
    write_json(out, &all)
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Suite(a) => run_suite(*a).await,
        Cmd::Floor {
            layer,
            work,
            n,
            out,
        } => {
            let p = tokio::task::spawn_blocking(move || floor::measure(&layer, &work, n)).await??;
            write_json(&out, &p)
        }
        Cmd::Report {
            crius,
            containerd,
            floor,
            meta,
            out,
        } => run_report(&crius, &containerd, floor.as_deref(), meta.as_deref(), &out),
        Cmd::Cleanup { socket, tag } => {
            let mut c = cri::connect(&socket).await?;
            suite::remove_ours(&mut c, &tag).await
        }
    }
}
