//! Building the CRI stats messages from the raw readings. Absent readings (exited container,
//! controller not enabled) become absent fields, which kubelet treats as "unknown", never as a
//! misleading zero.

use super::cgroup::CgroupStats;
use super::fs::FsUsage;
use super::net::{InterfaceStats, NetworkStats};
use k8s_cri::v1::{
    ContainerAttributes, ContainerStats, CpuUsage, FilesystemIdentifier, FilesystemUsage,
    LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxStats, ProcessUsage, SwapUsage, UInt64Value,
};

/// The interface kubelet reports as the pod's network (CNI plugins name it eth0).
pub const DEFAULT_INTERFACE: &str = "eth0";

fn v(x: Option<u64>) -> Option<UInt64Value> {
    x.map(|value| UInt64Value { value })
}

pub fn cpu_usage(cg: &CgroupStats, nano_cores: Option<u64>) -> CpuUsage {
    CpuUsage {
        timestamp: cg.timestamp,
        usage_core_nano_seconds: v(cg.cpu_usage_ns),
        usage_nano_cores: v(nano_cores),
    }
}

pub fn memory_usage(cg: &CgroupStats) -> MemoryUsage {
    // Available = limit - working set, as kubelet's eviction manager computes it; unknown when
    // there is no limit.
    let available = cg
        .memory_limit_bytes
        .zip(cg.memory_working_set_bytes)
        .map(|(limit, ws)| limit.saturating_sub(ws));
    MemoryUsage {
        timestamp: cg.timestamp,
        working_set_bytes: v(cg.memory_working_set_bytes),
        available_bytes: v(available),
        usage_bytes: v(cg.memory_usage_bytes),
        rss_bytes: v(cg.memory_rss_bytes),
        page_faults: v(cg.page_faults),
        major_page_faults: v(cg.major_page_faults),
    }
}

pub fn swap_usage(cg: &CgroupStats) -> Option<SwapUsage> {
    let used = cg.swap_usage_bytes?;
    Some(SwapUsage {
        timestamp: cg.timestamp,
        swap_available_bytes: None,
        swap_usage_bytes: v(Some(used)),
    })
}

pub fn filesystem_usage(fs: &FsUsage, mountpoint: &str) -> FilesystemUsage {
    FilesystemUsage {
        timestamp: fs.timestamp,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: mountpoint.to_owned(),
        }),
        used_bytes: v(Some(fs.used_bytes)),
        inodes_used: v(Some(fs.inodes_used)),
    }
}

fn interface_usage(i: &InterfaceStats) -> NetworkInterfaceUsage {
    NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: v(Some(i.rx_bytes)),
        rx_errors: v(Some(i.rx_errors)),
        tx_bytes: v(Some(i.tx_bytes)),
        tx_errors: v(Some(i.tx_errors)),
    }
}

/// The pod's network usage; the default interface is eth0, or the first one if there is none.
pub fn network_usage(net: &NetworkStats) -> NetworkUsage {
    let interfaces: Vec<NetworkInterfaceUsage> =
        net.interfaces.iter().map(interface_usage).collect();
    let default_interface = interfaces
        .iter()
        .find(|i| i.name == DEFAULT_INTERFACE)
        .or_else(|| interfaces.first())
        .cloned();
    NetworkUsage {
        timestamp: net.timestamp,
        default_interface,
        interfaces,
    }
}

/// One container's stats. `cg` is None when its cgroup is gone (exited container), `fs` None
/// when the writable layer could not be measured; `writable_layer_mountpoint` names the
/// filesystem holding the layer (kubelet matches it against its image filesystem).
pub fn container_stats_cri(
    attrs: ContainerAttributes,
    cg: Option<&CgroupStats>,
    nano_cores: Option<u64>,
    fs: Option<&FsUsage>,
    writable_layer_mountpoint: &str,
) -> ContainerStats {
    ContainerStats {
        attributes: Some(attrs),
        cpu: cg.map(|c| cpu_usage(c, nano_cores)),
        memory: cg.map(memory_usage),
        writable_layer: fs.map(|f| filesystem_usage(f, writable_layer_mountpoint)),
        swap: cg.and_then(swap_usage),
    }
}

/// One pod's stats. `cg` should be the stats of the pod's cgroup parent (kubelet's
/// `/kubepods/.../pod<uid>`): the kernel accounts it hierarchically, so it covers the pause
/// process and every container, including ones already removed. A pod without a cgroup parent
/// passes `sum_cgroup_stats` of its containers' cgroups instead. `process_count` is usually
/// `cg.pids`.
pub fn pod_stats_cri(
    attrs: PodSandboxAttributes,
    cg: Option<&CgroupStats>,
    nano_cores: Option<u64>,
    net: Option<&NetworkStats>,
    containers: Vec<ContainerStats>,
    process_count: Option<u64>,
) -> PodSandboxStats {
    let process = process_count.map(|count| ProcessUsage {
        timestamp: cg
            .map(|c| c.timestamp)
            .unwrap_or_else(crate::util::now_nanos),
        process_count: v(Some(count)),
    });
    PodSandboxStats {
        attributes: Some(attrs),
        linux: Some(LinuxPodSandboxStats {
            cpu: cg.map(|c| cpu_usage(c, nano_cores)),
            memory: cg.map(memory_usage),
            network: net.map(network_usage),
            process,
            containers,
        }),
        windows: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cg() -> CgroupStats {
        CgroupStats {
            timestamp: 42,
            cpu_usage_ns: Some(1_000),
            memory_usage_bytes: Some(900),
            memory_working_set_bytes: Some(600),
            memory_rss_bytes: Some(500),
            memory_limit_bytes: Some(1_000),
            page_faults: Some(3),
            major_page_faults: Some(1),
            swap_usage_bytes: Some(0),
            pids: Some(2),
        }
    }

    fn attrs(id: &str) -> ContainerAttributes {
        ContainerAttributes {
            id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn container_stats_fill_every_known_field() {
        let fs = FsUsage {
            timestamp: 43,
            used_bytes: 4096,
            inodes_used: 2,
        };
        let s = container_stats_cri(
            attrs("c1"),
            Some(&cg()),
            Some(250),
            Some(&fs),
            "/var/lib/crius",
        );
        assert_eq!(s.attributes.unwrap().id, "c1");
        let cpu = s.cpu.unwrap();
        assert_eq!(cpu.timestamp, 42);
        assert_eq!(cpu.usage_core_nano_seconds.unwrap().value, 1_000);
        assert_eq!(cpu.usage_nano_cores.unwrap().value, 250);
        let mem = s.memory.unwrap();
        assert_eq!(mem.working_set_bytes.unwrap().value, 600);
        assert_eq!(mem.available_bytes.unwrap().value, 400);
        assert_eq!(mem.usage_bytes.unwrap().value, 900);
        assert_eq!(mem.rss_bytes.unwrap().value, 500);
        assert_eq!(mem.page_faults.unwrap().value, 3);
        assert_eq!(mem.major_page_faults.unwrap().value, 1);
        let wl = s.writable_layer.unwrap();
        assert_eq!(wl.timestamp, 43);
        assert_eq!(wl.fs_id.unwrap().mountpoint, "/var/lib/crius");
        assert_eq!(wl.used_bytes.unwrap().value, 4096);
        assert_eq!(wl.inodes_used.unwrap().value, 2);
        assert_eq!(s.swap.unwrap().swap_usage_bytes.unwrap().value, 0);
    }

    #[test]
    fn exited_container_has_no_cpu_or_memory_and_unknown_rate_is_absent() {
        let s = container_stats_cri(attrs("c1"), None, None, None, "/x");
        assert!(s.cpu.is_none() && s.memory.is_none() && s.writable_layer.is_none());
        assert!(s.swap.is_none());
        let mut no_limit = cg();
        no_limit.memory_limit_bytes = None;
        let s = container_stats_cri(attrs("c1"), Some(&no_limit), None, None, "/x");
        assert!(s.cpu.unwrap().usage_nano_cores.is_none());
        assert!(s.memory.unwrap().available_bytes.is_none());
    }

    #[test]
    fn pod_stats_pick_eth0_as_default_interface() {
        let net = NetworkStats {
            timestamp: 44,
            interfaces: vec![
                InterfaceStats {
                    name: "net1".into(),
                    rx_bytes: 1,
                    ..Default::default()
                },
                InterfaceStats {
                    name: "eth0".into(),
                    rx_bytes: 10,
                    tx_bytes: 20,
                    rx_errors: 1,
                    tx_errors: 2,
                },
            ],
        };
        let c = container_stats_cri(attrs("c1"), Some(&cg()), None, None, "/x");
        let s = pod_stats_cri(
            PodSandboxAttributes {
                id: "p1".into(),
                ..Default::default()
            },
            Some(&cg()),
            Some(7),
            Some(&net),
            vec![c],
            Some(2),
        );
        assert_eq!(s.attributes.unwrap().id, "p1");
        let linux = s.linux.unwrap();
        assert_eq!(linux.cpu.unwrap().usage_nano_cores.unwrap().value, 7);
        let n = linux.network.unwrap();
        assert_eq!(n.timestamp, 44);
        assert_eq!(n.interfaces.len(), 2);
        let d = n.default_interface.unwrap();
        assert_eq!(d.name, "eth0");
        assert_eq!(d.tx_bytes.unwrap().value, 20);
        assert_eq!(d.tx_errors.unwrap().value, 2);
        let p = linux.process.unwrap();
        assert_eq!((p.timestamp, p.process_count.unwrap().value), (42, 2));
        assert_eq!(linux.containers.len(), 1);
        assert!(s.windows.is_none());
    }

    #[test]
    fn pod_without_eth0_defaults_to_first_interface_and_empty_has_none() {
        let mut net = NetworkStats {
            timestamp: 1,
            interfaces: vec![InterfaceStats {
                name: "ens3".into(),
                ..Default::default()
            }],
        };
        assert_eq!(network_usage(&net).default_interface.unwrap().name, "ens3");
        net.interfaces.clear();
        assert!(network_usage(&net).default_interface.is_none());
        let s = pod_stats_cri(Default::default(), None, None, None, vec![], None);
        let linux = s.linux.unwrap();
        assert!(linux.cpu.is_none() && linux.network.is_none() && linux.process.is_none());
    }
}
