//! CPU, memory and pids numbers of one cgroup, read straight from the kernel's control files
//! (cgroup v1 or v2), as kubelet's summary API needs them.

use super::error::StatsError;
use super::keyed::{read_keyed, read_u64};
use super::layout::{CgroupLayout, Source};
use std::path::{Component, Path, PathBuf};

/// A v1 memory limit at or above this means "unlimited" (the kernel reports its page counter
/// maximum, 0x7FFFFFFFFFFFF000 on 4K pages).
const V1_UNLIMITED: u64 = 1 << 62;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// When the numbers were read, in Unix nanoseconds.
    pub timestamp: i64,
    /// Cumulative CPU time of every task in the cgroup.
    pub cpu_usage_ns: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    /// Usage minus inactive file cache (floored at 0): what kubelet evicts on.
    pub memory_working_set_bytes: Option<u64>,
    /// Anonymous memory (v1 total_rss, v2 anon).
    pub memory_rss_bytes: Option<u64>,
    /// The memory limit, None when unlimited.
    pub memory_limit_bytes: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    /// Swap in use (v2 memory.swap.current; v1 memsw usage minus memory usage).
    pub swap_usage_bytes: Option<u64>,
    /// Tasks (threads) in the cgroup.
    pub pids: Option<u64>,
}

/// Stats of the cgroup at `cgroups_path` (the OCI `linux.cgroupsPath` given to libcontainer,
/// such as "/crius/<id>" or "/kubepods/pod<uid>/crius-<id>") on this host.
pub fn cgroup_stats(cgroups_path: &str) -> Result<CgroupStats, StatsError> {
    CgroupLayout::host()?.stats(cgroups_path)
}

/// Keys of memory.stat in each cgroup version.
struct MemKeys {
    inactive_file: &'static str,
    rss: &'static str,
    pgfault: &'static str,
    pgmajfault: &'static str,
}

const V1_KEYS: MemKeys = MemKeys {
    // total_*: hierarchical, so a pod-level cgroup includes its containers.
    inactive_file: "total_inactive_file",
    rss: "total_rss",
    pgfault: "total_pgfault",
    pgmajfault: "total_pgmajfault",
};

const V2_KEYS: MemKeys = MemKeys {
    inactive_file: "inactive_file",
    rss: "anon",
    pgfault: "pgfault",
    pgmajfault: "pgmajfault",
};

impl CgroupLayout {
    /// Stats of the cgroup at `cgroups_path` in this layout. `NotFound` when none of the
    /// hierarchies has the cgroup (the container exited and its cgroup was removed).
    pub fn stats(&self, cgroups_path: &str) -> Result<CgroupStats, StatsError> {
        let rel = relative(cgroups_path)?;
        // cpu usage lives in cpuacct on v1, and in the always-present cpu.stat on v2.
        let cpu = self.source("cpuacct", &rel);
        let memory = self.source("memory", &rel);
        let pids = self.source("pids", &rel);
        let present: Vec<&Source> = [&cpu, &memory, &pids]
            .into_iter()
            .flatten()
            .filter(|s| s.dir().is_dir())
            .collect();
        if present.is_empty() {
            let path = [&cpu, &memory, &pids]
                .into_iter()
                .flatten()
                .next()
                .map(|s| s.dir().to_owned())
                .unwrap_or_else(|| rel.clone());
            return Err(StatsError::NotFound {
                what: "cgroup",
                path,
            });
        }
        let exists = |s: &Option<Source>| s.as_ref().filter(|s| present.contains(s)).cloned();

        let mut stats = CgroupStats {
            timestamp: crate::util::now_nanos(),
            ..Default::default()
        };
        if let Some(src) = exists(&cpu) {
            stats.cpu_usage_ns = read_cpu(&src)?;
        }
        if let Some(src) = exists(&memory) {
            read_memory(&src, &mut stats)?;
        }
        if let Some(src) = exists(&pids) {
            stats.pids = read_u64(&src.dir().join("pids.current"))?;
        }
        Ok(stats)
    }
}

fn read_cpu(src: &Source) -> Result<Option<u64>, StatsError> {
    match src {
        Source::V1(dir) => read_u64(&dir.join("cpuacct.usage")),
        Source::V2(dir) => Ok(read_keyed(&dir.join("cpu.stat"))?
            .and_then(|m| m.get("usage_usec").copied())
            .map(|us| us.saturating_mul(1000))),
    }
}

fn read_memory(src: &Source, stats: &mut CgroupStats) -> Result<(), StatsError> {
    let (dir, keys, usage_file, limit_file) = match src {
        Source::V1(d) => (
            d,
            &V1_KEYS,
            "memory.usage_in_bytes",
            "memory.limit_in_bytes",
        ),
        Source::V2(d) => (d, &V2_KEYS, "memory.current", "memory.max"),
    };
    let usage = read_u64(&dir.join(usage_file))?;
    let stat = read_keyed(&dir.join("memory.stat"))?;
    let limit = read_u64(&dir.join(limit_file))?;

    stats.memory_usage_bytes = usage;
    if let Some(stat) = &stat {
        let inactive = stat.get(keys.inactive_file).copied().unwrap_or(0);
        stats.memory_working_set_bytes = usage.map(|u| u.saturating_sub(inactive));
        stats.memory_rss_bytes = stat.get(keys.rss).copied();
        stats.page_faults = stat.get(keys.pgfault).copied();
        stats.major_page_faults = stat.get(keys.pgmajfault).copied();
    } else {
        stats.memory_working_set_bytes = usage;
    }
    stats.memory_limit_bytes = limit.filter(|l| match src {
        Source::V1(_) => *l < V1_UNLIMITED,
        Source::V2(_) => *l != u64::MAX,
    });
    stats.swap_usage_bytes = match src {
        Source::V1(d) => {
            // Only with swap accounting enabled; memsw counts memory + swap.
            let memsw = read_u64(&d.join("memory.memsw.usage_in_bytes"))?;
            memsw.zip(usage).map(|(m, u)| m.saturating_sub(u))
        }
        Source::V2(d) => read_u64(&d.join("memory.swap.current"))?,
    };
    Ok(())
}

/// The cgroup's path relative to a hierarchy root. Refuses `..` so that a crafted path can
/// never make us read outside the cgroup filesystem.
fn relative(cgroups_path: &str) -> Result<PathBuf, StatsError> {
    let invalid = |reason| StatsError::InvalidCgroupsPath {
        path: cgroups_path.to_owned(),
        reason,
    };
    if cgroups_path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let mut rel = PathBuf::new();
    for c in Path::new(cgroups_path).components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(invalid("contains \"..\"")),
            Component::Prefix(_) => return Err(invalid("has a prefix")),
        }
    }
    Ok(rel)
}

/// Add up the stats of several cgroups (a pod's containers when the pod has no cgroup of its
/// own). Counters are summed where any cgroup has them; the limit is not additive and is left
/// out; the timestamp is the latest. None for an empty list.
pub fn sum_cgroup_stats(all: &[CgroupStats]) -> Option<CgroupStats> {
    fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
        match (a, b) {
            (Some(x), Some(y)) => Some(x.saturating_add(y)),
            (x, y) => x.or(y),
        }
    }
    let first = all.first()?;
    let mut sum = CgroupStats {
        memory_limit_bytes: None,
        ..first.clone()
    };
    for s in &all[1..] {
        sum.timestamp = sum.timestamp.max(s.timestamp);
        sum.cpu_usage_ns = add(sum.cpu_usage_ns, s.cpu_usage_ns);
        sum.memory_usage_bytes = add(sum.memory_usage_bytes, s.memory_usage_bytes);
        sum.memory_working_set_bytes =
            add(sum.memory_working_set_bytes, s.memory_working_set_bytes);
        sum.memory_rss_bytes = add(sum.memory_rss_bytes, s.memory_rss_bytes);
        sum.page_faults = add(sum.page_faults, s.page_faults);
        sum.major_page_faults = add(sum.major_page_faults, s.major_page_faults);
        sum.swap_usage_bytes = add(sum.swap_usage_bytes, s.swap_usage_bytes);
        sum.pids = add(sum.pids, s.pids);
    }
    Some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const HYBRID: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    const V2: &str = "25 1 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

    fn put(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn fake(mountinfo: &str) -> (tempfile::TempDir, CgroupLayout) {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "proc/self/mountinfo", mountinfo);
        let layout = CgroupLayout::detect(dir.path()).unwrap();
        (dir, layout)
    }

    #[test]
    fn v1_reads_cpuacct_memory_and_pids() {
        let (dir, layout) = fake(HYBRID);
        let r = dir.path();
        let c = "sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/crius-abc";
        let m = "sys/fs/cgroup/memory/kubepods/pod1/crius-abc";
        put(r, &format!("{c}/cpuacct.usage"), "123456789\n");
        put(r, &format!("{m}/memory.usage_in_bytes"), "10000\n");
        put(
            r,
            &format!("{m}/memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        put(r, &format!("{m}/memory.memsw.usage_in_bytes"), "10500\n");
        put(
            r,
            &format!("{m}/memory.stat"),
            "cache 4000\nrss 100\ninactive_file 1\ntotal_inactive_file 3000\ntotal_rss 6000\n\
             total_pgfault 77\ntotal_pgmajfault 2\n",
        );
        put(
            r,
            "sys/fs/cgroup/pids/kubepods/pod1/crius-abc/pids.current",
            "3\n",
        );

        let s = layout.stats("/kubepods/pod1/crius-abc").unwrap();
        assert!(s.timestamp > 0);
        assert_eq!(s.cpu_usage_ns, Some(123456789));
        assert_eq!(s.memory_usage_bytes, Some(10000));
        assert_eq!(s.memory_working_set_bytes, Some(7000));
        assert_eq!(s.memory_rss_bytes, Some(6000));
        assert_eq!(
            s.memory_limit_bytes, None,
            "page counter max means unlimited"
        );
        assert_eq!(s.page_faults, Some(77));
        assert_eq!(s.major_page_faults, Some(2));
        assert_eq!(s.swap_usage_bytes, Some(500));
        assert_eq!(s.pids, Some(3));
    }

    #[test]
    fn v1_working_set_floors_at_zero_and_missing_controllers_are_none() {
        let (dir, layout) = fake(HYBRID);
        let m = "sys/fs/cgroup/memory/crius/x";
        put(dir.path(), &format!("{m}/memory.usage_in_bytes"), "100\n");
        put(
            dir.path(),
            &format!("{m}/memory.limit_in_bytes"),
            "1048576\n",
        );
        put(
            dir.path(),
            &format!("{m}/memory.stat"),
            "total_inactive_file 500\n",
        );
        let s = layout.stats("crius/x").unwrap();
        assert_eq!(s.memory_working_set_bytes, Some(0));
        assert_eq!(s.memory_limit_bytes, Some(1048576));
        assert_eq!(s.cpu_usage_ns, None, "no cpuacct dir for this cgroup");
        assert_eq!(s.pids, None);
        assert_eq!(s.swap_usage_bytes, None, "no swap accounting");
    }

    #[test]
    fn v2_reads_unified_files() {
        let (dir, layout) = fake(V2);
        let d = "sys/fs/cgroup/kubepods/pod1/crius-abc";
        let r = dir.path();
        put(
            r,
            &format!("{d}/cpu.stat"),
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
        );
        put(r, &format!("{d}/memory.current"), "8192\n");
        put(r, &format!("{d}/memory.max"), "max\n");
        put(r, &format!("{d}/memory.swap.current"), "0\n");
        put(
            r,
            &format!("{d}/memory.stat"),
            "anon 4096\nfile 4096\ninactive_file 1024\npgfault 10\npgmajfault 1\n",
        );
        put(r, &format!("{d}/pids.current"), "2\n");

        let s = layout.stats("/kubepods/pod1/crius-abc").unwrap();
        assert_eq!(s.cpu_usage_ns, Some(2_500_000));
        assert_eq!(s.memory_usage_bytes, Some(8192));
        assert_eq!(s.memory_working_set_bytes, Some(7168));
        assert_eq!(s.memory_rss_bytes, Some(4096));
        assert_eq!(s.memory_limit_bytes, None);
        assert_eq!(s.page_faults, Some(10));
        assert_eq!(s.major_page_faults, Some(1));
        assert_eq!(s.swap_usage_bytes, Some(0));
        assert_eq!(s.pids, Some(2));
    }

    #[test]
    fn v2_without_memory_controller_reports_cpu_only() {
        let (dir, layout) = fake(V2);
        put(
            dir.path(),
            "sys/fs/cgroup/crius/a/cpu.stat",
            "usage_usec 7\n",
        );
        let s = layout.stats("/crius/a").unwrap();
        assert_eq!(s.cpu_usage_ns, Some(7000));
        assert_eq!(s.memory_usage_bytes, None);
        assert_eq!(s.memory_working_set_bytes, None);
    }

    #[test]
    fn missing_cgroup_is_not_found() {
        for info in [HYBRID, V2] {
            let (_dir, layout) = fake(info);
            let err = layout.stats("/crius/gone").unwrap_err();
            assert!(err.is_not_found(), "{err}");
        }
    }

    #[test]
    fn garbage_counter_is_a_parse_error() {
        let (dir, layout) = fake(HYBRID);
        put(
            dir.path(),
            "sys/fs/cgroup/cpu,cpuacct/crius/a/cpuacct.usage",
            "lots\n",
        );
        assert!(matches!(
            layout.stats("/crius/a"),
            Err(StatsError::Parse { .. })
        ));
    }

    #[test]
    fn parent_components_are_refused() {
        let (_dir, layout) = fake(V2);
        assert!(matches!(
            layout.stats("/crius/../../etc"),
            Err(StatsError::InvalidCgroupsPath { .. })
        ));
        assert_eq!(relative("/a/./b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(relative("/").unwrap(), PathBuf::new());
    }

    #[test]
    fn sums_counters_and_keeps_latest_timestamp() {
        let a = CgroupStats {
            timestamp: 5,
            cpu_usage_ns: Some(10),
            memory_working_set_bytes: Some(100),
            memory_limit_bytes: Some(1000),
            pids: Some(1),
            ..Default::default()
        };
        let b = CgroupStats {
            timestamp: 9,
            cpu_usage_ns: Some(5),
            memory_working_set_bytes: None,
            pids: Some(2),
            page_faults: Some(4),
            ..Default::default()
        };
        let s = sum_cgroup_stats(&[a, b]).unwrap();
        assert_eq!(s.timestamp, 9);
        assert_eq!(s.cpu_usage_ns, Some(15));
        assert_eq!(s.memory_working_set_bytes, Some(100));
        assert_eq!(s.memory_limit_bytes, None);
        assert_eq!(s.pids, Some(3));
        assert_eq!(s.page_faults, Some(4));
        assert!(sum_cgroup_stats(&[]).is_none());
    }
}
