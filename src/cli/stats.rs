//! `crius stats` and `crius statsp`: resource usage of containers and pods.

use std::collections::HashMap;
use std::time::Duration;

use k8s_cri::v1::{
    ContainerStats, ContainerStatsFilter, CpuUsage, ListContainerStatsRequest,
    ListPodSandboxStatsRequest, MemoryUsage, PodSandboxStats, PodSandboxStatsFilter,
};
use serde_json::json;

use super::connect::{Client, Deadline};
use super::error::CliError;
use super::output::{self, Format, Table};

/// When the runtime gives no instantaneous CPU rate, it is computed from two samples this
/// far apart.
const SAMPLE_GAP: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Only this container (containers: `stats`) or pod (`statsp`).
    #[arg(long)]
    pub id: Option<String>,
    /// Only containers of this pod (`stats` only).
    #[arg(long, short)]
    pub pod: Option<String>,
    /// Only those with this label (key=value; repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
}

/// CPU use in percent of one core: the runtime's usage_nano_cores, or the rate between an
/// earlier and a later cumulative sample.
pub fn cpu_percent(earlier: Option<&CpuUsage>, later: Option<&CpuUsage>) -> Option<f64> {
    let later = later?;
    if let Some(n) = &later.usage_nano_cores {
        return Some(n.value as f64 / 1e7);
    }
    let earlier = earlier?;
    let used = later.usage_core_nano_seconds.as_ref()?.value as f64
        - earlier.usage_core_nano_seconds.as_ref()?.value as f64;
    let elapsed = (later.timestamp - earlier.timestamp) as f64;
    (elapsed > 0.0 && used >= 0.0).then(|| used / elapsed * 100.0)
}

fn percent(p: Option<f64>) -> String {
    p.map_or("-".to_string(), |p| format!("{p:.2}"))
}

fn memory(m: Option<&MemoryUsage>) -> String {
    m.and_then(|m| m.working_set_bytes.as_ref())
        .map_or("-".to_string(), |v| output::human_size(v.value))
}

fn needs_second_sample(cpus: impl Iterator<Item = Option<CpuUsage>>) -> bool {
    cpus.into_iter()
        .any(|c| c.is_some_and(|c| c.usage_nano_cores.is_none()))
}

async fn container_stats(c: &Client, args: &StatsArgs) -> Result<Vec<ContainerStats>, CliError> {
    let filter = ContainerStatsFilter {
        id: args.id.clone().unwrap_or_default(),
        pod_sandbox_id: args.pod.clone().unwrap_or_default(),
        label_selector: output::parse_labels(&args.label)?,
    };
    Ok(c.call(
        "ListContainerStats",
        Deadline::Normal,
        c.runtime
            .clone()
            .list_container_stats(ListContainerStatsRequest {
                filter: Some(filter),
            }),
    )
    .await?
    .stats)
}

pub async fn stats(c: &Client, args: &StatsArgs) -> Result<(), CliError> {
    let first = container_stats(c, args).await?;
    if args.output == Format::Json {
        return output::print_json(&json!({ "stats": first }));
    }
    let (earlier, later) = if needs_second_sample(first.iter().map(|s| s.cpu)) {
        tokio::time::sleep(SAMPLE_GAP).await;
        let second = container_stats(c, args).await?;
        let by_id: HashMap<String, ContainerStats> =
            first.into_iter().map(|s| (attr_id(&s), s)).collect();
        (by_id, second)
    } else {
        (HashMap::new(), first)
    };
    let mut t = Table::new(&["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"]);
    let mut rows = later;
    rows.sort_by_key(attr_name);
    for s in &rows {
        let prev = earlier.get(&attr_id(s)).and_then(|e| e.cpu.as_ref());
        let disk = s.writable_layer.as_ref();
        t.row(vec![
            output::short_id(&attr_id(s)),
            attr_name(s),
            percent(cpu_percent(prev, s.cpu.as_ref())),
            memory(s.memory.as_ref()),
            disk.and_then(|d| d.used_bytes.as_ref())
                .map_or("-".into(), |v| output::human_size(v.value)),
            disk.and_then(|d| d.inodes_used.as_ref())
                .map_or("-".into(), |v| v.value.to_string()),
        ]);
    }
    t.print()
}

fn attr_id(s: &ContainerStats) -> String {
    s.attributes
        .as_ref()
        .map(|a| a.id.clone())
        .unwrap_or_default()
}

fn attr_name(s: &ContainerStats) -> String {
    s.attributes
        .as_ref()
        .and_then(|a| a.metadata.as_ref())
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

async fn pod_stats(c: &Client, args: &StatsArgs) -> Result<Vec<PodSandboxStats>, CliError> {
    let filter = PodSandboxStatsFilter {
        id: args.id.clone().unwrap_or_default(),
        label_selector: output::parse_labels(&args.label)?,
    };
    Ok(c.call(
        "ListPodSandboxStats",
        Deadline::Normal,
        c.runtime
            .clone()
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
                filter: Some(filter),
            }),
    )
    .await?
    .stats)
}

fn pod_id(s: &PodSandboxStats) -> String {
    s.attributes
        .as_ref()
        .map(|a| a.id.clone())
        .unwrap_or_default()
}

pub async fn statsp(c: &Client, args: &StatsArgs) -> Result<(), CliError> {
    if args.pod.is_some() {
        return Err(CliError::Usage("statsp takes --id, not --pod".into()));
    }
    let first = pod_stats(c, args).await?;
    if args.output == Format::Json {
        return output::print_json(&json!({ "stats": first }));
    }
    let cpu = |s: &PodSandboxStats| s.linux.as_ref().and_then(|l| l.cpu);
    let (earlier, later) = if needs_second_sample(first.iter().map(cpu)) {
        tokio::time::sleep(SAMPLE_GAP).await;
        let second = pod_stats(c, args).await?;
        let by_id: HashMap<String, PodSandboxStats> =
            first.into_iter().map(|s| (pod_id(&s), s)).collect();
        (by_id, second)
    } else {
        (HashMap::new(), first)
    };
    let mut t = Table::new(&["POD", "POD ID", "CPU %", "MEM"]);
    for s in &later {
        let name = s
            .attributes
            .as_ref()
            .and_then(|a| a.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let prev = earlier.get(&pod_id(s)).and_then(cpu);
        t.row(vec![
            name,
            output::short_id(&pod_id(s)),
            percent(cpu_percent(prev.as_ref(), cpu(s).as_ref())),
            memory(s.linux.as_ref().and_then(|l| l.memory.as_ref())),
        ]);
    }
    t.print()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::UInt64Value;

    fn cpu(ts: i64, total: Option<u64>, rate: Option<u64>) -> CpuUsage {
        CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: total.map(|value| UInt64Value { value }),
            usage_nano_cores: rate.map(|value| UInt64Value { value }),
        }
    }

    #[test]
    fn cpu_percent_prefers_the_runtimes_rate() {
        // 0.25 cores.
        let p = cpu_percent(None, Some(&cpu(0, None, Some(250_000_000)))).unwrap();
        assert!((p - 25.0).abs() < 1e-9);
        // Half a core used over one second of samples.
        let p = cpu_percent(
            Some(&cpu(1_000_000_000, Some(1_000_000_000), None)),
            Some(&cpu(2_000_000_000, Some(1_500_000_000), None)),
        )
        .unwrap();
        assert!((p - 50.0).abs() < 1e-9);
        assert_eq!(cpu_percent(None, Some(&cpu(0, Some(1), None))), None);
        assert_eq!(percent(None), "-");
        assert_eq!(percent(Some(1.234)), "1.23");
    }
}
