//! Pure planning logic here; the real cgroup path is exercised by every sandbox integration
//! test (tests/sandbox_*.rs), which checks the pause's cgroups and that none is left behind.

use super::*;
use oci_spec::runtime::{LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};

const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/rdma rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,rdma
";

fn spec_with(resources: Option<oci_spec::runtime::LinuxResources>, path: &str) -> Spec {
    let mut linux = LinuxBuilder::default().build().unwrap();
    linux.set_cgroups_path(Some(path.into()));
    linux.set_resources(resources);
    let mut spec = Spec::default();
    spec.set_mounts(Some(vec![]));
    spec.set_linux(Some(linux));
    spec
}

fn sandbox_resources() -> oci_spec::runtime::LinuxResources {
    LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().shares(2u64).build().unwrap())
        .devices(crate::oci::security::device_rules(false))
        .build()
        .unwrap()
}

#[test]
fn sandbox_spec_is_planned_over_known_v1_hierarchies() {
    let spec = spec_with(Some(sandbox_resources()), "/kubepods/pod1/crius-abc");
    let plan = plan(&spec, MOUNTINFO, true).expect("eligible");
    assert_eq!(
        plan.dirs,
        [
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/crius-abc"),
            PathBuf::from("/sys/fs/cgroup/memory/kubepods/pod1/crius-abc"),
        ],
        "named and unknown (rdma) hierarchies and cgroup2 are left out"
    );
    assert_eq!(
        plan.decoys,
        [
            PathBuf::from("/sys/fs/cgroup/systemd/kubepods/pod1/crius-abc"),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/crius-abc"),
            PathBuf::from("/sys/fs/cgroup/memory/kubepods/pod1/crius-abc"),
            PathBuf::from("/sys/fs/cgroup/rdma/kubepods/pod1/crius-abc"),
        ],
        "a decoy wherever libcontainer might look"
    );
    assert_eq!(
        plan.cpu_dir.as_deref(),
        Some(Path::new(
            "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/crius-abc"
        ))
    );
    assert_eq!(plan.cpuset, None, "no cpuset hierarchy mounted");
    assert_eq!(plan.devices_dir, None);
    assert_eq!(plan.cpu_shares, Some(2));
    assert_eq!(plan.devices[0].to_string(), "a *:* rwm");
    assert_eq!(plan.devices[1].to_string(), "c 1:3 rwm");
}

#[test]
fn anything_else_goes_through_libcontainer() {
    let base = || spec_with(Some(sandbox_resources()), "/p/c");
    assert!(plan(&base(), MOUNTINFO, false).is_none(), "cgroup v2");

    let memory = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(1 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert!(plan(&spec_with(Some(memory), "/p/c"), MOUNTINFO, true).is_none());

    let quota = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(2u64)
                .quota(1000i64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert!(plan(&spec_with(Some(quota), "/p/c"), MOUNTINFO, true).is_none());

    let mut cgroupfs = base();
    let mount = crate::oci::mounts::base_mounts(false)
        .into_iter()
        .find(|m| m.typ().as_deref() == Some("cgroup"))
        .unwrap();
    cgroupfs.set_mounts(Some(vec![mount]));
    assert!(plan(&cgroupfs, MOUNTINFO, true).is_none(), "cgroupfs mount");

    for path in ["relative/c", "/p/../c", ""] {
        assert!(
            plan(&spec_with(None, path), MOUNTINFO, true).is_none(),
            "{path:?}"
        );
    }
    let mut no_path = base();
    no_path.linux_mut().as_mut().unwrap().set_cgroups_path(None);
    assert!(plan(&no_path, MOUNTINFO, true).is_none());
    assert!(plan(&base(), "", true).is_none(), "no v1 hierarchy mounted");
    let elsewhere = "40 1 0:40 / /cgroup/cpu rw - cgroup cgroup rw,cpu\n";
    assert!(
        plan(&base(), elsewhere, true).is_none(),
        "hierarchy outside /sys/fs/cgroup"
    );
}

#[test]
fn no_resources_still_joins() {
    let plan = plan(&spec_with(None, "/p/c"), MOUNTINFO, true).unwrap();
    assert_eq!(plan.cpu_shares, None);
    assert!(plan.devices.is_empty());
    assert_eq!(plan.dirs.len(), 2);
}

#[test]
fn libcontainer_gets_the_spec_without_resources() {
    let spec = without_resources(spec_with(Some(sandbox_resources()), "/p/c"));
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.resources().is_none());
    assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/p/c")));
}
