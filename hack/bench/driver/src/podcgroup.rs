//! What kubelet (cgroupfs driver, `cgroupsPerQOS: true`) does to the cgroup tree around a pod,
//! before and after it calls the runtime: the QoS parents `kubepods`, `kubepods/besteffort` and
//! `kubepods/burstable` exist, and each pod's own cgroup is made, given its pod-level limits and,
//! once the pod is gone, removed. The runtime then creates its sandbox and container cgroups
//! *inside* an existing pod cgroup, the way it does on a real node. This is done outside the timed
//! calls (kubelet does it outside the runtime) and identically for both runtimes.

use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// Kubernetes QoS classes; they decide the pod cgroup's place and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    BestEffort,
    Burstable,
    Guaranteed,
}

impl Qos {
    /// Pods rotate through the classes so every scenario has all three layouts in it.
    pub fn of_index(i: usize) -> Qos {
        [Qos::BestEffort, Qos::Burstable, Qos::Guaranteed][i % 3]
    }

    /// Path of the pod cgroup below the bench's cgroup root, as kubelet names it.
    pub fn pod_cgroup(self, root: &str, uid: &str) -> String {
        // cgroupfs driver: `pod<uid>` as is (the systemd driver would escape the dashes).
        match self {
            Qos::BestEffort => format!("{root}/kubepods/besteffort/pod{uid}"),
            Qos::Burstable => format!("{root}/kubepods/burstable/pod{uid}"),
            Qos::Guaranteed => format!("{root}/kubepods/pod{uid}"),
        }
    }
}

/// One mounted cgroup hierarchy (a v1 controller or the v2 tree).
#[derive(Debug, Clone)]
struct Hierarchy {
    mount: PathBuf,
    v2: bool,
    /// v1 controllers mounted here (empty for v2 and for named hierarchies).
    controllers: Vec<String>,
}

fn hierarchies() -> Result<Vec<Hierarchy>> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    let mut out = Vec::new();
    for line in info.lines() {
        // "... mountpoint opts ... - fstype source superopts"
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mount = pre.split(' ').nth(4).unwrap_or_default();
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or_default();
        let superopts = post.nth(1).unwrap_or_default();
        match fstype {
            "cgroup2" => out.push(Hierarchy {
                mount: mount.into(),
                v2: true,
                controllers: Vec::new(),
            }),
            "cgroup" => out.push(Hierarchy {
                mount: mount.into(),
                v2: false,
                controllers: superopts
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("name="))
                    .map(str::to_string)
                    .collect(),
            }),
            _ => {}
        }
    }
    Ok(out)
}

/// The pod-level limits kubelet writes to the pod cgroup.
#[derive(Debug, Clone, Copy)]
struct PodLimits {
    cpu_shares: u64,
    cpu_quota: Option<i64>,
    memory: Option<u64>,
}

fn limits(qos: Qos) -> PodLimits {
    match qos {
        Qos::BestEffort => PodLimits {
            cpu_shares: 2,
            cpu_quota: None,
            memory: None,
        },
        Qos::Burstable => PodLimits {
            cpu_shares: crate::cri::REQUEST_CPU_SHARES,
            cpu_quota: None,
            memory: Some(crate::cri::BURSTABLE_MEMORY_LIMIT as u64),
        },
        Qos::Guaranteed => PodLimits {
            cpu_shares: crate::cri::REQUEST_CPU_SHARES,
            cpu_quota: Some(crate::cri::GUARANTEED_CPU_QUOTA),
            memory: Some(crate::cri::GUARANTEED_MEMORY as u64),
        },
    }
}

/// cgroup v2 weight from v1 shares, the formula kubelet and runc use.
fn shares_to_weight(shares: u64) -> u64 {
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// Creates `rel` (and missing parents) in every hierarchy, as kubelet's cgroup manager would.
fn make_dirs(h: &Hierarchy, rel: &str) -> Result<PathBuf> {
    let mut dir = h.mount.clone();
    for part in rel.trim_start_matches('/').split('/') {
        let parent = dir.clone();
        dir.push(part);
        if dir.is_dir() {
            continue;
        }
        if h.v2 {
            // Controllers must be enabled in the parent before a child can use them; kubelet
            // enables cpu, memory and pids (and cpuset, hugetlb, io where present).
            enable_v2_controllers(&parent);
        }
        fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        if h.controllers.iter().any(|c| c == "cpuset") {
            // A new v1 cpuset is empty and accepts no task until cpus and mems are set.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = fs::read_to_string(parent.join(f)).unwrap_or_default();
                let _ = fs::write(dir.join(f), v.trim());
            }
        }
    }
    Ok(dir)
}

fn enable_v2_controllers(dir: &Path) {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = available
        .split_whitespace()
        .filter(|c| matches!(*c, "cpu" | "cpuset" | "memory" | "pids" | "hugetlb" | "io"))
        .map(|c| format!("+{c}"))
        .collect();
    if !wanted.is_empty() {
        let _ = fs::write(dir.join("cgroup.subtree_control"), wanted.join(" "));
    }
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    fs::write(dir.join(file), value)
        .with_context(|| format!("write {value} to {file} in {}", dir.display()))
}

fn apply_limits(h: &Hierarchy, dir: &Path, l: PodLimits) -> Result<()> {
    if h.v2 {
        let has = |f: &str| dir.join(f).exists();
        if has("cpu.weight") {
            write(
                dir,
                "cpu.weight",
                &shares_to_weight(l.cpu_shares).to_string(),
            )?;
        }
        if let Some(q) = l.cpu_quota
            && has("cpu.max")
        {
            write(dir, "cpu.max", &format!("{q} 100000"))?;
        }
        if let Some(m) = l.memory
            && has("memory.max")
        {
            write(dir, "memory.max", &m.to_string())?;
        }
        return Ok(());
    }
    let has = |c: &str| h.controllers.iter().any(|x| x == c);
    if has("cpu") {
        write(dir, "cpu.shares", &l.cpu_shares.to_string())?;
        if let Some(q) = l.cpu_quota {
            write(dir, "cpu.cfs_period_us", "100000")?;
            write(dir, "cpu.cfs_quota_us", &q.to_string())?;
        }
    }
    if has("memory")
        && let Some(m) = l.memory
    {
        write(dir, "memory.limit_in_bytes", &m.to_string())?;
    }
    Ok(())
}

/// Makes the QoS parents once per bench run; besteffort gets kubelet's minimal cpu weight.
pub fn make_qos_parents(root: &str) -> Result<()> {
    for h in hierarchies()? {
        for rel in ["kubepods", "kubepods/besteffort", "kubepods/burstable"] {
            make_dirs(&h, &format!("{root}/{rel}"))?;
        }
        let be = h.mount.join(format!(
            "{}/kubepods/besteffort",
            root.trim_start_matches('/')
        ));
        if !h.v2 && h.controllers.iter().any(|c| c == "cpu") {
            write(&be, "cpu.shares", "2")?;
        }
    }
    Ok(())
}

/// Makes one pod's cgroup with its limits, in every hierarchy; undone on failure.
pub fn make_pod(cgroup: &str, qos: Qos) -> Result<()> {
    let made = (|| {
        for h in hierarchies()? {
            let dir = make_dirs(&h, cgroup)?;
            apply_limits(&h, &dir, limits(qos))?;
        }
        Ok(())
    })();
    if made.is_err() {
        remove_pod(cgroup);
    }
    made
}

/// Removes a pod cgroup after the runtime removed the pod (it must then be empty). Runtimes
/// remove their own child cgroups; anything left below is removed too, children first, so a
/// leftover of one runtime never fails the next pod. Best effort: hack/bench/run sweeps the
/// whole bench cgroup root at the end as well.
pub fn remove_pod(cgroup: &str) {
    let Ok(hs) = hierarchies() else { return };
    for h in hs {
        let dir = h.mount.join(cgroup.trim_start_matches('/'));
        remove_tree(&dir);
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cgroups_follow_kubelets_layout() {
        assert_eq!(
            Qos::BestEffort.pod_cgroup("/r", "ab-cd"),
            "/r/kubepods/besteffort/podab-cd"
        );
        assert_eq!(
            Qos::Burstable.pod_cgroup("/r", "u"),
            "/r/kubepods/burstable/podu"
        );
        assert_eq!(Qos::Guaranteed.pod_cgroup("/r", "u"), "/r/kubepods/podu");
    }

    #[test]
    fn weights_match_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10000);
    }
}
