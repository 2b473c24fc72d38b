//! CRI `LinuxContainerResources` → OCI `LinuxResources` (used at create time and by
//! UpdateContainerResources).

use k8s_cri::v1::LinuxContainerResources;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use super::host::HostFeatures;

/// Map the CRI resources. Zero (or negative, for fields that cannot be) means "not set", as in
/// containerd. Devices are not touched here (the caller adds the device cgroup rules).
///
/// - A memory limit without a swap limit also caps memory+swap at the limit, so containers do
///   not swap by default (containerd's behaviour); both only when the node accounts swap.
/// - Hugepage limits are dropped when the node has no hugetlb controller (kubelet sends one per
///   supported page size, usually 0, and containerd tolerates the missing controller by default).
/// - `unified` (cgroup v2 keys) is passed through; `oom_score_adj` belongs to the process and is
///   handled by the caller.
pub fn linux_resources(r: &LinuxContainerResources, host: &HostFeatures) -> LinuxResources {
    let mut cpu = LinuxCpu::default();
    if r.cpu_shares > 0 {
        cpu.set_shares(Some(r.cpu_shares as u64));
    }
    if r.cpu_quota != 0 {
        cpu.set_quota(Some(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.set_period(Some(r.cpu_period as u64));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
    }

    let mut memory = LinuxMemory::default();
    if r.memory_limit_in_bytes != 0 {
        memory.set_limit(Some(r.memory_limit_in_bytes));
        if r.memory_swap_limit_in_bytes == 0 && host.swap {
            memory.set_swap(Some(r.memory_limit_in_bytes));
        }
    }
    if r.memory_swap_limit_in_bytes != 0 && host.swap {
        memory.set_swap(Some(r.memory_swap_limit_in_bytes));
    }

    let hugepages: Vec<LinuxHugepageLimit> = if host.hugetlb {
        r.hugepage_limits
            .iter()
            .map(|h| {
                let mut l = LinuxHugepageLimit::default();
                l.set_page_size(h.page_size.clone());
                // The kernel takes a u64; oci-spec stores i64. Saturate instead of wrapping
                // "unlimited" into a negative number.
                l.set_limit(i64::try_from(h.limit).unwrap_or(i64::MAX));
                l
            })
            .collect()
    } else {
        Vec::new()
    };

    let mut out = LinuxResources::default();
    out.set_devices(None);
    out.set_cpu((cpu != LinuxCpu::default()).then_some(cpu));
    out.set_memory((memory != LinuxMemory::default()).then_some(memory));
    out.set_hugepage_limits((!hugepages.is_empty()).then_some(hugepages));
    out.set_unified((!r.unified.is_empty()).then(|| r.unified.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::HugepageLimit;
    use std::collections::HashMap;

    const ALL: HostFeatures = HostFeatures {
        apparmor: false,
        swap: true,
        hugetlb: true,
        bounding_caps: u64::MAX,
    };
    const NONE: HostFeatures = HostFeatures {
        apparmor: false,
        swap: false,
        hugetlb: false,
        bounding_caps: u64::MAX,
    };

    fn kubelet_burstable() -> LinuxContainerResources {
        LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 256,
            memory_limit_in_bytes: 128 << 20,
            oom_score_adj: 936,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![
                HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 0,
                },
                HugepageLimit {
                    page_size: "1GB".into(),
                    limit: u64::MAX,
                },
            ],
            unified: HashMap::from([("memory.high".into(), "100000000".into())]),
            memory_swap_limit_in_bytes: 0,
        }
    }

    #[test]
    fn full_mapping() {
        let r = linux_resources(&kubelet_burstable(), &ALL);
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!(cpu.shares(), Some(256));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let mem = r.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(128 << 20));
        assert_eq!(mem.swap(), Some(128 << 20), "no swap beyond the limit");
        let huge = r.hugepage_limits().as_ref().unwrap();
        assert_eq!(huge.len(), 2);
        assert_eq!(huge[0].page_size(), "2MB");
        assert_eq!(huge[0].limit(), 0);
        assert_eq!(huge[1].limit(), i64::MAX);
        assert_eq!(r.unified().as_ref().unwrap()["memory.high"], "100000000");
        assert!(r.devices().is_none());
    }

    #[test]
    fn explicit_swap_and_missing_controllers() {
        let mut c = kubelet_burstable();
        c.memory_swap_limit_in_bytes = 256 << 20;
        let r = linux_resources(&c, &ALL);
        assert_eq!(r.memory().as_ref().unwrap().swap(), Some(256 << 20));
        let r = linux_resources(&c, &NONE);
        assert_eq!(r.memory().as_ref().unwrap().swap(), None);
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(128 << 20));
        assert!(r.hugepage_limits().is_none());
    }

    #[test]
    fn empty_is_all_unset() {
        let r = linux_resources(&LinuxContainerResources::default(), &ALL);
        assert!(r.cpu().is_none());
        assert!(r.memory().is_none());
        assert!(r.hugepage_limits().is_none());
        assert!(r.unified().is_none());
        // Unlimited quota (-1) is passed through.
        let c = LinuxContainerResources {
            cpu_quota: -1,
            ..Default::default()
        };
        let r = linux_resources(&c, &ALL);
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(-1));
    }
}
