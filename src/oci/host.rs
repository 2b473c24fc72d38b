//! Facts about the node that change what goes into a container spec. Detected once by the caller
//! (side effects: a few stat/reads under /sys), then passed to the pure builders.

use std::path::Path;

/// What this node supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFeatures {
    /// AppArmor is enabled in the kernel (securityfs shows it and the module says so).
    pub apparmor: bool,
    /// The memory controller accounts swap, so `memory.swap` may be set (cgroup v1:
    /// memory.memsw.limit_in_bytes exists, absent without `swapaccount=1`; v2: cgroups have a
    /// memory.swap.max, even on a node without swap space).
    pub swap: bool,
    /// The hugetlb controller exists, so hugepage limits may be set.
    pub hugetlb: bool,
    /// The runtime's own capability bounding set (bit N = capability N, /proc/self/status
    /// `CapBnd`): no container can be given more, so "all capabilities" means these.
    pub bounding_caps: u64,
    /// /sys/fs/cgroup is the unified cgroup v2 hierarchy (no v1 controllers): containers get a
    /// private cgroup namespace, and limits are v2 files.
    pub cgroup_v2: bool,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl HostFeatures {
    /// Probe this node: the v1 controller paths, or on a unified (v2) host its controllers.
    pub fn detect() -> Self {
        let root = Path::new(CGROUP_ROOT);
        let features = if is_unified(root) {
            let controllers =
                std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            HostFeatures {
                apparmor: apparmor_enabled(),
                swap: has("memory") && v2_swap_accounted(root, &own_v2_cgroup()),
                hugetlb: has("hugetlb"),
                cgroup_v2: true,
                bounding_caps: own_bounding_set(),
            }
        } else {
            HostFeatures {
                apparmor: apparmor_enabled(),
                swap: root.join("memory/memory.memsw.limit_in_bytes").exists(),
                hugetlb: root.join("hugetlb").is_dir(),
                cgroup_v2: false,
                bounding_caps: own_bounding_set(),
            }
        };
        tracing::debug!(?features, "host features");
        features
    }
}

/// This process's capability bounding set; every capability if it cannot be read (the
/// kernel then refuses what it lacks, with the cause in the error). Read once: a bounding set
/// can only shrink, and the daemon never drops from its own.
pub fn own_bounding_set() -> u64 {
    static BOUNDING: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BOUNDING.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapBnd:"))
                    .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            })
            .unwrap_or(u64::MAX)
    })
}

/// The unified hierarchy is mounted at `root` itself (a hybrid host has v1 controllers there and
/// v2 only under `unified/`, which libcontainer drives as v1).
fn is_unified(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// This process's cgroup on the unified hierarchy ("0::/path" in /proc/self/cgroup).
fn own_v2_cgroup() -> String {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .to_string()
}

/// Whether v2 cgroups account swap: the root cgroup has no memory.swap.max, so look at this
/// process's own cgroup and its ancestors, then at the root's children (one of them has the memory
/// controller enabled on any systemd host). Absent everywhere when the kernel has no swap
/// accounting (`swapaccount=0`, no CONFIG_MEMCG_SWAP).
fn v2_swap_accounted(root: &Path, own: &str) -> bool {
    let mut dir = root.join(own.trim_start_matches('/'));
    while dir.starts_with(root) && dir != root {
        if dir.join("memory.swap.max").exists() {
            return true;
        }
        if !dir.pop() {
            break;
        }
    }
    std::fs::read_dir(root).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().join("memory.swap.max").exists())
    })
}

/// containerd's test: securityfs has an apparmor directory and the module parameter says "Y".
fn apparmor_enabled() -> bool {
    Path::new("/sys/kernel/security/apparmor").is_dir()
        && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim_start().starts_with('Y'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_matches_filesystem() {
        let f = HostFeatures::detect();
        assert_eq!(
            f.hugetlb,
            Path::new("/sys/fs/cgroup/hugetlb").is_dir(),
            "{f:?}"
        );
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
        assert_eq!(format!("CapBnd:\t{:016x}", f.bounding_caps), line);
        if !Path::new("/sys/kernel/security/apparmor").exists() {
            assert!(!f.apparmor);
        }
        assert_eq!(
            f.cgroup_v2,
            Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        );
    }

    fn put(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "max\n").unwrap();
    }

    #[test]
    fn v2_swap_found_in_own_cgroup_ancestors_or_root_children() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("system.slice/crius.service")).unwrap();
        assert!(!v2_swap_accounted(root, "/system.slice/crius.service"));
        // The root's own file does not count: the root cgroup never has one.
        put(&root.join("memory.swap.max"));
        assert!(!v2_swap_accounted(root, "/system.slice/crius.service"));
        put(&root.join("system.slice/memory.swap.max"));
        assert!(v2_swap_accounted(root, "/system.slice/crius.service"));
        assert!(v2_swap_accounted(root, "/"), "a child of the root has it");
        let t2 = tempfile::tempdir().unwrap();
        put(&t2.path().join("a/b/memory.swap.max"));
        assert!(v2_swap_accounted(t2.path(), "/a/b"));
        assert!(
            !v2_swap_accounted(t2.path(), "/"),
            "only one level below the root"
        );
    }
}
