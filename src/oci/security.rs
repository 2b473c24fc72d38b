//! Capabilities, masked and read-only paths, and the device cgroup allowlist.

use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxDeviceCgroup, LinuxDeviceType,
};

/// The default capability set of containerd/Docker/CRI-O containers.
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability oci-spec knows (0..=40, CAP_CHECKPOINT_RESTORE, i.e. Linux >= 5.9), in
/// the kernel's numbering: entry N is capability N. Privileged containers and "ALL" get the
/// ones of these in the runtime's bounding set ([`within`]).
pub const ALL_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// The kernel's number of `cap`.
pub fn capability_number(cap: Capability) -> u32 {
    ALL_CAPABILITIES
        .iter()
        .position(|c| *c == cap)
        .expect("every oci-spec capability is listed") as u32
}

/// Whether `cap` is in `bounding` (bit N = capability N).
pub fn in_bounding_set(cap: Capability, bounding: u64) -> bool {
    bounding & (1u64 << capability_number(cap)) != 0
}

/// Every capability in `bounding`: what "all capabilities" means for a runtime that holds
/// only these (capset of one outside it fails with EPERM).
pub fn within(bounding: u64) -> Capabilities {
    ALL_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| in_bounding_set(*c, bounding))
        .collect()
}

/// The set a process starts with: `privileged` gets everything the runtime may grant, others
/// the default set (as far as the runtime may grant it).
pub fn capability_set(privileged: bool, bounding: u64) -> Capabilities {
    let list = if privileged {
        ALL_CAPABILITIES
    } else {
        DEFAULT_CAPABILITIES
    };
    list.iter()
        .copied()
        .filter(|c| in_bounding_set(*c, bounding))
        .collect()
}

/// Put `caps` in the bounding, effective and permitted sets. Inheritable and ambient stay empty,
/// as in containerd: a non-root exec'd program must not silently gain capabilities.
pub fn linux_capabilities(caps: &Capabilities) -> LinuxCapabilities {
    let mut lc = LinuxCapabilities::default();
    lc.set_bounding(Some(caps.clone()));
    lc.set_effective(Some(caps.clone()));
    lc.set_permitted(Some(caps.clone()));
    lc.set_inheritable(Some(Capabilities::new()));
    lc.set_ambient(Some(Capabilities::new()));
    lc
}

/// Paths hidden from unprivileged containers (runc/containerd defaults).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only in unprivileged containers: runc/containerd's /proc list, then the
/// cgroup v1 tree.
///
/// Why the cgroup entries: libcontainer 0.7 mounts /sys/fs/cgroup on v1 as a tmpfs plus one
/// read-write bind per controller and ignores the `ro` the spec asks for (measured). A
/// container root with CAP_DAC_OVERRIDE could then raise its own limits. Read-only paths are
/// applied after all mounts with a bind + read-only remount of each listed path; missing paths
/// are skipped, so listing every v1 controller name is safe on any host. The tmpfs comes first,
/// then each controller mount (the remount is not recursive).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/sys/fs/cgroup",
    "/sys/fs/cgroup/blkio",
    "/sys/fs/cgroup/cpu",
    "/sys/fs/cgroup/cpuacct",
    "/sys/fs/cgroup/cpu,cpuacct",
    "/sys/fs/cgroup/cpuset",
    "/sys/fs/cgroup/devices",
    "/sys/fs/cgroup/freezer",
    "/sys/fs/cgroup/hugetlb",
    "/sys/fs/cgroup/memory",
    "/sys/fs/cgroup/misc",
    "/sys/fs/cgroup/net_cls",
    "/sys/fs/cgroup/net_prio",
    "/sys/fs/cgroup/net_cls,net_prio",
    "/sys/fs/cgroup/perf_event",
    "/sys/fs/cgroup/pids",
    "/sys/fs/cgroup/rdma",
    "/sys/fs/cgroup/systemd",
    "/sys/fs/cgroup/unified",
];

/// Masked paths for the spec: none when privileged.
pub fn masked_paths(privileged: bool) -> Vec<String> {
    if privileged {
        Vec::new()
    } else {
        MASKED_PATHS.iter().map(|s| s.to_string()).collect()
    }
}

/// Read-only paths for the spec: none when privileged.
pub fn readonly_paths(privileged: bool) -> Vec<String> {
    if privileged {
        Vec::new()
    } else {
        READONLY_PATHS.iter().map(|s| s.to_string()).collect()
    }
}

/// Masked paths of an application container: none when privileged, else the CRI list when kubelet
/// sent one (it does for the Default procMount), else the defaults.
pub fn container_masked_paths(cri: &[String], privileged: bool) -> Vec<String> {
    if privileged {
        Vec::new()
    } else if cri.is_empty() {
        masked_paths(false)
    } else {
        cri.to_vec()
    }
}

/// Read-only paths of an application container: none when privileged, else the CRI list (or the
/// defaults when it is empty) plus the cgroup v1 entries of [`READONLY_PATHS`]. kubelet's list
/// only names /proc paths; the cgroup entries are what keeps the cgroup tree read-only under
/// libcontainer, so they are never dropped.
pub fn container_readonly_paths(cri: &[String], privileged: bool) -> Vec<String> {
    if privileged {
        return Vec::new();
    }
    if cri.is_empty() {
        return readonly_paths(false);
    }
    let mut out = cri.to_vec();
    for p in READONLY_PATHS
        .iter()
        .filter(|p| p.starts_with("/sys/fs/cgroup"))
    {
        if !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    }
    out
}

fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
) -> LinuxDeviceCgroup {
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(allow);
    d.set_typ(Some(typ));
    d.set_major(major);
    d.set_minor(minor);
    d.set_access(Some("rwm".to_string()));
    d
}

/// Device cgroup rules, in order. Unprivileged: deny everything, then allow the standard
/// character devices (null, zero, full, random, urandom, tty, ptmx, and every /dev/pts/N).
/// Privileged: allow everything.
///
/// (libcgroups appends its own defaults after these, e.g. `c *:* m` and tun/tap, as runc does.)
pub fn device_rules(privileged: bool) -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{A, C};
    if privileged {
        return vec![device_rule(true, A, None, None)];
    }
    vec![
        device_rule(false, A, None, None),
        device_rule(true, C, Some(1), Some(3)), // /dev/null
        device_rule(true, C, Some(1), Some(5)), // /dev/zero
        device_rule(true, C, Some(1), Some(7)), // /dev/full
        device_rule(true, C, Some(1), Some(8)), // /dev/random
        device_rule(true, C, Some(1), Some(9)), // /dev/urandom
        device_rule(true, C, Some(5), Some(0)), // /dev/tty
        device_rule(true, C, Some(5), Some(2)), // /dev/ptmx
        device_rule(true, C, Some(136), None),  // /dev/pts/*
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_are_fourteen_and_not_inheritable() {
        let caps = capability_set(false, u64::MAX);
        assert_eq!(caps.len(), 14);
        assert!(!caps.contains(&Capability::SysAdmin));
        let lc = linux_capabilities(&caps);
        assert_eq!(lc.bounding().as_ref(), Some(&caps));
        assert_eq!(lc.effective().as_ref(), Some(&caps));
        assert_eq!(lc.permitted().as_ref(), Some(&caps));
        assert!(lc.inheritable().as_ref().unwrap().is_empty());
        assert!(lc.ambient().as_ref().unwrap().is_empty());
    }

    #[test]
    fn privileged_gets_all_41() {
        let caps = capability_set(true, u64::MAX);
        assert_eq!(caps.len(), 41);
        assert!(caps.contains(&Capability::SysAdmin));
        assert!(caps.contains(&Capability::CheckpointRestore));
    }

    #[test]
    fn paths_empty_when_privileged() {
        assert!(masked_paths(true).is_empty());
        assert!(readonly_paths(true).is_empty());
        assert!(masked_paths(false).contains(&"/proc/kcore".to_string()));
        assert!(readonly_paths(false).contains(&"/sys/fs/cgroup/memory".to_string()));
    }

    #[test]
    fn container_paths() {
        assert!(container_masked_paths(&["/x".into()], true).is_empty());
        assert!(container_readonly_paths(&["/x".into()], true).is_empty());
        assert_eq!(container_masked_paths(&[], false), masked_paths(false));
        assert_eq!(container_masked_paths(&["/x".into()], false), ["/x"]);
        assert_eq!(container_readonly_paths(&[], false), readonly_paths(false));
        let ro = container_readonly_paths(&["/proc/sys".into(), "/sys/fs/cgroup".into()], false);
        assert_eq!(ro[0], "/proc/sys");
        assert_eq!(ro.iter().filter(|p| *p == "/sys/fs/cgroup").count(), 1);
        assert!(ro.contains(&"/sys/fs/cgroup/memory".to_string()));
        assert!(!ro.contains(&"/proc/bus".to_string()));
    }

    #[test]
    fn devices() {
        let d = device_rules(false);
        assert!(!d[0].allow());
        assert_eq!(d[0].typ(), Some(LinuxDeviceType::A));
        assert_eq!(d.len(), 9);
        assert!(
            d[1..]
                .iter()
                .all(|r| r.allow() && r.typ() == Some(LinuxDeviceType::C))
        );
        let p = device_rules(true);
        assert_eq!(p.len(), 1);
        assert!(p[0].allow());
        assert_eq!(p[0].to_string(), "a *:* rwm");
    }
}
