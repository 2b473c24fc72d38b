//! Facts about the node that change what goes into a container spec. Detected once by the caller
//! (side effects: a few stat/reads under /sys), then passed to the pure builders.

use std::path::Path;

/// What this node supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFeatures {
    /// AppArmor is enabled in the kernel (securityfs shows it and the module says so).
    pub apparmor: bool,
    /// The memory controller accounts swap, so `memory.swap` may be set (cgroup v1:
    /// memory.memsw.limit_in_bytes exists; absent without `swapaccount=1`).
    pub swap: bool,
    /// The hugetlb controller exists, so hugepage limits may be set.
    pub hugetlb: bool,
    /// The runtime's own capability bounding set (bit N = capability N, /proc/self/status
    /// `CapBnd`): no container can be given more, so "all capabilities" means these.
    pub bounding_caps: u64,
}

impl HostFeatures {
    /// Probe this node (cgroup v1 layout, which is what this runtime targets; on a v2 host the
    /// v1 paths are absent and the features read as unavailable, the safe answer).
    pub fn detect() -> Self {
        let features = HostFeatures {
            apparmor: apparmor_enabled(),
            swap: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists(),
            hugetlb: Path::new("/sys/fs/cgroup/hugetlb").is_dir(),
            bounding_caps: own_bounding_set(),
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
    }
}
