//! Side-by-side table of two suite results, ratios (crius / containerd), and the budgets.

use crate::stats::{Percentiles, Spread};
use crate::suite::{Run, SuiteResult};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub unit: String,
    pub crius: Option<Spread>,
    pub containerd: Option<Spread>,
    /// crius / containerd of the medians (below 1 means crius is smaller or faster).
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Budget {
    pub name: String,
    /// "PASS", "MISS" or "n/a".
    pub status: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub metrics: Vec<Metric>,
    pub floor: Option<Percentiles>,
    pub budgets: Vec<Budget>,
}

type Extract = fn(&Run) -> Option<f64>;

const EXEC_P50: &str = "Exec round trip p50 (true, SPDY)";
/// Higher is better: the one metric whose ratio above 1 favours crius.
const EXEC_THROUGHPUT: &str = "Exec stdout throughput (higher=better)";

/// The per-run metrics: name, unit, how to read one run.
fn per_run_metrics() -> Vec<(&'static str, &'static str, Extract)> {
    fn kib_to_mib(k: u64) -> f64 {
        k as f64 / 1024.0
    }
    vec![
        ("RunPodSandbox p50, host network", "ms", |r| {
            r.host.as_ref().map(|l| l.run.p50)
        }),
        ("RunPodSandbox p95, host network", "ms", |r| {
            r.host.as_ref().map(|l| l.run.p95)
        }),
        ("RunPodSandbox p99, host network", "ms", |r| {
            r.host.as_ref().map(|l| l.run.p99)
        }),
        ("StopPodSandbox p50, host network", "ms", |r| {
            r.host.as_ref().map(|l| l.stop.p50)
        }),
        ("RemovePodSandbox p50, host network", "ms", |r| {
            r.host.as_ref().map(|l| l.remove.p50)
        }),
        ("RunPodSandbox p50, bridge CNI", "ms", |r| {
            r.bridge.as_ref().map(|l| l.run.p50)
        }),
        ("RunPodSandbox p95, bridge CNI", "ms", |r| {
            r.bridge.as_ref().map(|l| l.run.p95)
        }),
        ("RunPodSandbox p99, bridge CNI", "ms", |r| {
            r.bridge.as_ref().map(|l| l.run.p99)
        }),
        ("StopPodSandbox p50, bridge CNI", "ms", |r| {
            r.bridge.as_ref().map(|l| l.stop.p50)
        }),
        ("RemovePodSandbox p50, bridge CNI", "ms", |r| {
            r.bridge.as_ref().map(|l| l.remove.p50)
        }),
        ("Pod start p50 (sandbox+container)", "ms", |r| {
            r.pod_start.map(|p| p.p50)
        }),
        ("Pod start p95 (sandbox+container)", "ms", |r| {
            r.pod_start.map(|p| p.p95)
        }),
        ("Burst: total for all pods", "ms", |r| {
            r.burst.as_ref().map(|b| b.total_ms)
        }),
        ("Burst: per-pod p95", "ms", |r| {
            r.burst.as_ref().map(|b| b.per_pod.p95)
        }),
        ("Daemon RSS with burst pods running", "MiB", |r| {
            r.memory.as_ref().map(|m| kib_to_mib(m.daemon_rss_kib))
        }),
        ("Helper processes (monitors / shims)", "count", |r| {
            r.memory.as_ref().map(|m| m.helpers.count as f64)
        }),
        ("Helper PSS per pod", "KiB", |r| {
            r.memory
                .as_ref()
                .map(|m| m.helpers.pss_kib as f64 / m.pods as f64)
        }),
        ("Helper RSS per pod", "KiB", |r| {
            r.memory
                .as_ref()
                .map(|m| m.helpers.rss_kib as f64 / m.pods as f64)
        }),
        ("Helper PSS per container (incl. pause)", "KiB", |r| {
            r.memory
                .as_ref()
                .map(|m| m.helpers.pss_kib as f64 / m.containers as f64)
        }),
        ("PullImage p50 (5 layers, local registry)", "ms", |r| {
            r.image.as_ref().map(|i| i.pull.p50)
        }),
        ("RemoveImage p50", "ms", |r| {
            r.image.as_ref().map(|i| i.remove.p50)
        }),
        (EXEC_P50, "ms", |r| {
            r.exec.as_ref().map(|e| e.round_trip.p50)
        }),
        ("Exec round trip p95 (true, SPDY)", "ms", |r| {
            r.exec.as_ref().map(|e| e.round_trip.p95)
        }),
        (EXEC_THROUGHPUT, "MiB/s", |r| {
            r.exec
                .as_ref()
                .and_then(|e| Spread::of(&e.stdout_mib_s))
                .map(|s| s.median)
        }),
    ]
}

fn ratio(a: Option<Spread>, b: Option<Spread>) -> Option<f64> {
    let (a, b) = (a?.median, b?.median);
    (b > 0.0).then(|| a / b)
}

fn over_runs(s: &SuiteResult, f: Extract) -> Option<Spread> {
    Spread::of(&s.runs.iter().filter_map(f).collect::<Vec<_>>())
}

fn metric(name: &str, unit: &str, crius: Option<Spread>, containerd: Option<Spread>) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        crius,
        containerd,
        ratio: ratio(crius, containerd),
    }
}

/// Daemon RSS growth per running burst pod, over the idle figure.
fn daemon_delta_per_pod(s: &SuiteResult) -> Option<Spread> {
    let v: Vec<f64> = s
        .runs
        .iter()
        .filter_map(|r| r.memory.as_ref())
        .map(|m| (m.daemon_rss_kib as f64 - s.idle_rss_kib as f64) / m.pods as f64)
        .collect();
    Spread::of(&v)
}

/// Idle CPU per minute of wall time of the daemon and of its helpers, with the container count
/// in the name (both runtimes run the same number). Names stay within the table's name column.
fn idle_cpu_metrics(crius: &SuiteResult, containerd: &SuiteResult) -> Vec<Metric> {
    let n = crius
        .idle_cpu
        .as_ref()
        .or(containerd.idle_cpu.as_ref())
        .map_or(0, |i| i.containers);
    let per_minute = |s: &SuiteResult, f: fn(&crate::idle::IdleCpu) -> f64| {
        let i = s.idle_cpu.as_ref().filter(|i| i.seconds > 0.0)?;
        Spread::of(&[f(i) * 60.0 / i.seconds])
    };
    vec![
        metric(
            &format!("Idle daemon CPU/min, {n} containers"),
            "ms",
            per_minute(crius, |i| i.daemon_cpu_ms),
            per_minute(containerd, |i| i.daemon_cpu_ms),
        ),
        metric(
            &format!("Idle helper CPU/min, {n} containers"),
            "ms",
            per_minute(crius, |i| i.helpers_cpu_ms),
            per_minute(containerd, |i| i.helpers_cpu_ms),
        ),
    ]
}

pub fn build(crius: &SuiteResult, containerd: &SuiteResult, floor: Option<Percentiles>) -> Report {
    let mut metrics: Vec<Metric> = per_run_metrics()
        .into_iter()
        .map(|(name, unit, f)| metric(name, unit, over_runs(crius, f), over_runs(containerd, f)))
        .collect();
    metrics.push(metric(
        "Daemon RSS growth per burst pod",
        "KiB",
        daemon_delta_per_pod(crius),
        daemon_delta_per_pod(containerd),
    ));
    let idle = |s: &SuiteResult| {
        (s.idle_rss_kib > 0)
            .then(|| Spread::of(&[s.idle_rss_kib as f64 / 1024.0]))
            .flatten()
    };
    metrics.push(metric(
        "Daemon RSS idle after start",
        "MiB",
        idle(crius),
        idle(containerd),
    ));
    metrics.push(metric(
        "Cold start to Version+Status (restarts)",
        "ms",
        Spread::of(&crius.cold_start_ms),
        Spread::of(&containerd.cold_start_ms),
    ));
    metrics.push(metric(
        "First start (empty state)",
        "ms",
        Spread::of(&[crius.first_start_ms]).filter(|s| s.median > 0.0),
        Spread::of(&[containerd.first_start_ms]).filter(|s| s.median > 0.0),
    ));
    metrics.extend(idle_cpu_metrics(crius, containerd));
    let budgets = budgets(&metrics, floor);
    Report {
        metrics,
        floor,
        budgets,
    }
}

fn find<'a>(metrics: &'a [Metric], name: &str) -> Option<&'a Metric> {
    metrics.iter().find(|m| m.name == name)
}

fn judge(name: &str, ok: Option<bool>, detail: String) -> Budget {
    let status = match ok {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "n/a",
    };
    Budget {
        name: name.into(),
        status: status.into(),
        detail,
    }
}

/// "containerd is k× slower": the budget speed-ups, as containerd / crius.
fn speedup(metrics: &[Metric], name: &str, need: f64, label: &str) -> Budget {
    let s = find(metrics, name).and_then(|m| m.ratio).map(|r| 1.0 / r);
    judge(
        label,
        s.map(|s| s >= need),
        s.map_or("no number".into(), |s| {
            format!("{s:.2}x faster (need >= {need}x)")
        }),
    )
}

fn crius_median(metrics: &[Metric], name: &str) -> Option<f64> {
    find(metrics, name)?.crius.map(|s| s.median)
}

pub fn budgets(metrics: &[Metric], floor: Option<Percentiles>) -> Vec<Budget> {
    let host = "RunPodSandbox p50, host network";
    let mut out = vec![
        speedup(
            metrics,
            host,
            5.0,
            "RunPodSandbox p50 >= 5x faster than containerd (host network)",
        ),
        speedup(
            metrics,
            "RunPodSandbox p50, bridge CNI",
            3.0,
            "RunPodSandbox p50 >= 3x faster than containerd (bridge)",
        ),
    ];
    let vs_floor = crius_median(metrics, host)
        .zip(floor.map(|f| f.p50))
        .map(|(c, f)| c / f);
    out.push(judge(
        "RunPodSandbox p50 within 3x of the floor (host network)",
        vs_floor.map(|x| x <= 3.0),
        vs_floor.map_or("no number".into(), |x| format!("{x:.2}x the floor")),
    ));
    out.push(speedup(
        metrics,
        "Pod start p50 (sandbox+container)",
        3.0,
        "Pod start p50 >= 3x faster than containerd",
    ));
    let idle = find(metrics, "Daemon RSS idle after start").and_then(|m| m.ratio);
    out.push(judge(
        "Daemon idle RSS <= 1/3 of containerd's",
        idle.map(|r| r <= 1.0 / 3.0),
        idle.map_or("no number".into(), |r| format!("{r:.2} of containerd's")),
    ));
    // Per container: helper PSS per container plus the daemon's growth per container.
    let per_ctr = crius_median(metrics, "Helper PSS per container (incl. pause)");
    out.push(judge(
        "Per-container overhead < 1 MiB PSS",
        per_ctr.map(|k| k < 1024.0),
        per_ctr.map_or("no number".into(), |k| {
            format!("{k:.0} KiB helper PSS per container")
        }),
    ));
    // Issue 13: image operations must not be slower than containerd's.
    for (name, label) in [
        (
            "PullImage p50 (5 layers, local registry)",
            "PullImage p50 not slower than containerd",
        ),
        (
            "RemoveImage p50",
            "RemoveImage p50 not slower than containerd",
        ),
    ] {
        out.push(speedup(metrics, name, 1.0, label));
    }
    // Issue 11: streaming Exec.
    out.push(speedup(
        metrics,
        EXEC_P50,
        2.0,
        "Exec round trip p50 >= 2x faster than containerd",
    ));
    let tput = find(metrics, EXEC_THROUGHPUT).and_then(|m| m.ratio);
    out.push(judge(
        "Exec stdout throughput >= containerd's",
        tput.map(|r| r >= 1.0),
        tput.map_or("no number".into(), |r| format!("{r:.2}x containerd's")),
    ));
    let cold = crius_median(metrics, "Cold start to Version+Status (restarts)");
    out.push(judge(
        "Cold start < 100 ms",
        cold.map(|c| c < 100.0),
        cold.map_or("no number".into(), |c| format!("{c:.1} ms")),
    ));
    out
}

fn cell(s: Option<Spread>) -> String {
    match s {
        None => "n/a".into(),
        Some(s) if s.runs > 1 && (s.max - s.min) > f64::EPSILON => {
            format!("{} [{}-{}]", num(s.median), num(s.min), num(s.max))
        }
        Some(s) => num(s.median),
    }
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The human table: one line per metric, then the budgets.
pub fn render(r: &Report, crius: &SuiteResult, containerd: &SuiteResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "crius: {} {}   containerd: {} {}   (median [min-max] over runs; ratio = crius/containerd)\n",
        crius.runtime_name,
        crius.runtime_version,
        containerd.runtime_name,
        containerd.runtime_version
    );
    let _ = writeln!(
        out,
        "{:<44} {:>5}  {:>24}  {:>24}  {:>7}",
        "metric", "unit", "crius", "containerd", "ratio"
    );
    for m in &r.metrics {
        let ratio = m.ratio.map_or("n/a".into(), |x| format!("{x:.2}"));
        let _ = writeln!(
            out,
            "{:<44} {:>5}  {:>24}  {:>24}  {:>7}",
            m.name,
            m.unit,
            cell(m.crius),
            cell(m.containerd),
            ratio
        );
    }
    if let Some(f) = r.floor {
        let _ = writeln!(
            out,
            "{:<44} {:>5}  {:>24}  (unshare+overlay+exec pause, p95 {})",
            "Floor p50",
            "ms",
            num(f.p50),
            num(f.p95)
        );
    }
    let _ = writeln!(out, "\nbudgets (crius):");
    for b in &r.budgets {
        let _ = writeln!(out, "  {:<5} {:<58} {}", b.status, b.name, b.detail);
    }
    for s in [crius, containerd] {
        if !s.notes.is_empty() {
            let _ = writeln!(out, "\nn/a and errors, {}:", s.name);
            for n in &s.notes {
                let _ = writeln!(out, "  {}", first_line(n, 160));
            }
        }
    }
    out
}

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    line.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::SandboxLatency;

    fn p(ms: f64) -> Percentiles {
        Percentiles {
            n: 1,
            p50: ms,
            p95: ms,
            p99: ms,
            max: ms,
        }
    }

    fn suite(run_ms: f64, idle_kib: u64, cold: f64) -> SuiteResult {
        let lat = SandboxLatency {
            run: p(run_ms),
            stop: p(1.0),
            remove: p(1.0),
        };
        SuiteResult {
            name: "x".into(),
            idle_rss_kib: idle_kib,
            runs: vec![Run {
                host: Some(lat.clone()),
                bridge: Some(lat),
                ..Default::default()
            }],
            cold_start_ms: vec![cold],
            ..Default::default()
        }
    }

    #[test]
    fn ratios_and_budgets() {
        let r = build(
            &suite(10.0, 10_000, 50.0),
            &suite(100.0, 60_000, 300.0),
            Some(p(4.0)),
        );
        let host = find(&r.metrics, "RunPodSandbox p50, host network").unwrap();
        assert_eq!(host.ratio, Some(0.1));
        let status: Vec<&str> = r.budgets.iter().map(|b| b.status.as_str()).collect();
        // 10x host and bridge, 2.5x floor, no pod start, 1/6 idle RSS, no memory or image numbers,
        // 50 ms cold.
        assert_eq!(
            status,
            [
                "PASS", "PASS", "PASS", "n/a", "PASS", "n/a", "n/a", "n/a", "n/a", "n/a", "PASS"
            ]
        );
        let text = render(&r, &suite(10.0, 1, 1.0), &suite(100.0, 1, 1.0));
        assert!(text.contains("RunPodSandbox p50, host network"));
        assert!(text.contains("n/a"));
    }

    #[test]
    fn misses_are_reported() {
        let r = build(
            &suite(50.0, 50_000, 150.0),
            &suite(100.0, 60_000, 300.0),
            Some(p(4.0)),
        );
        let status: Vec<&str> = r.budgets.iter().map(|b| b.status.as_str()).collect();
        assert_eq!(
            status,
            [
                "MISS", "MISS", "MISS", "n/a", "MISS", "n/a", "n/a", "n/a", "n/a", "n/a", "MISS"
            ]
        );
    }

    fn with_exec(p50: f64, mib_s: &[f64]) -> SuiteResult {
        SuiteResult {
            runs: vec![Run {
                exec: Some(crate::exec::ExecBench {
                    round_trip: p(p50),
                    stdout_mib_s: mib_s.to_vec(),
                    stdout_bytes: 100 << 20,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn status_of<'a>(r: &'a Report, prefix: &str) -> &'a str {
        let b = r.budgets.iter().find(|b| b.name.starts_with(prefix));
        b.map(|b| b.status.as_str()).unwrap()
    }

    #[test]
    fn exec_budgets_latency_lower_and_throughput_higher_is_better() {
        // 4x faster round trip, throughput median 800 vs 400 MiB/s.
        let r = build(
            &with_exec(5.0, &[700.0, 800.0, 900.0]),
            &with_exec(20.0, &[400.0]),
            None,
        );
        let tput = find(&r.metrics, EXEC_THROUGHPUT).unwrap();
        assert_eq!(tput.ratio, Some(2.0));
        assert_eq!(status_of(&r, "Exec round trip"), "PASS");
        assert_eq!(status_of(&r, "Exec stdout"), "PASS");
        // 1.5x faster is not 2x; half the throughput misses.
        let r = build(&with_exec(10.0, &[200.0]), &with_exec(15.0, &[400.0]), None);
        assert_eq!(status_of(&r, "Exec round trip"), "MISS");
        assert_eq!(status_of(&r, "Exec stdout"), "MISS");
        let r = build(&with_exec(10.0, &[200.0]), &SuiteResult::default(), None);
        assert_eq!(status_of(&r, "Exec round trip"), "n/a");
    }

    #[test]
    fn idle_cpu_is_per_minute_and_named_by_its_containers() {
        let idle = |daemon_cpu_ms, helpers_cpu_ms| crate::idle::IdleCpu {
            containers: 50,
            seconds: 30.0,
            daemon_cpu_ms,
            helpers_cpu_ms,
            helpers: 100,
        };
        let mut c = suite(10.0, 1, 1.0);
        c.idle_cpu = Some(idle(10.0, 40.0));
        let mut d = suite(10.0, 1, 1.0);
        d.idle_cpu = Some(idle(100.0, 40.0));
        let r = build(&c, &d, None);
        let daemon = find(&r.metrics, "Idle daemon CPU/min, 50 containers").unwrap();
        assert_eq!(daemon.crius.unwrap().median, 20.0);
        assert_eq!(daemon.ratio, Some(0.1));
        let helpers = find(&r.metrics, "Idle helper CPU/min, 50 containers").unwrap();
        assert_eq!(helpers.crius.unwrap().median, 80.0);
        assert_eq!(helpers.ratio, Some(1.0));
        // Not measured on one side (--only, --idle 0): that cell and the ratio are n/a.
        let r = build(&suite(10.0, 1, 1.0), &d, None);
        let daemon = find(&r.metrics, "Idle daemon CPU/min, 50 containers").unwrap();
        assert_eq!((daemon.crius, daemon.ratio), (None, None));
    }

    #[test]
    fn cells_show_spread_only_when_it_exists() {
        assert_eq!(cell(None), "n/a");
        assert_eq!(cell(Spread::of(&[2.0, 2.0])), "2.00");
        assert_eq!(cell(Spread::of(&[1.0, 2.0, 30.0])), "2.00 [1.00-30.0]");
    }
}
