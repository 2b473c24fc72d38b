//! Pods and containers shaped the way a stock kubelet (cgroupfs driver, `cgroupsPerQOS: true`)
//! sends them: QoS cgroup parents, pod-level supplemental groups (fsGroup), privileged pods
//! and `capabilities.add: [ALL]`. Each of these failed under a real kubelet once.

mod common;

use common::containers::{container_config, security};
use common::pods::{ready, state};
use common::{DaemonOpts, TestDaemon, assert_no_leaks, cgroups};
use k8s_cri::v1::{Int64Value, PodSandboxConfig};

/// kubelet's cgroup parent of a pod of `qos` ("besteffort", "burstable", or "" for Guaranteed),
/// under this daemon's own parent so that the test finds and removes what it made.
fn kubepods_parent(d: &TestDaemon, qos: &str, uid: &str) -> String {
    let pod = format!("pod{uid}");
    let levels: Vec<&str> = ["kubepods", qos, &pod]
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    format!("{}/{}", d.cgroup_parent(), levels.join("/"))
}

fn kubelet_pod(d: &TestDaemon, name: &str, qos: &str) -> PodSandboxConfig {
    let mut config = d.host_network_pod_config(name);
    let uid = config.metadata.as_ref().expect("metadata").uid.clone();
    config.linux.as_mut().expect("linux").cgroup_parent = kubepods_parent(d, qos, &uid);
    config
}

/// `/proc/PID/cgroup`: one line per hierarchy.
fn cgroup_line(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read /proc/PID/cgroup")
}

#[tokio::test(flavor = "multi_thread")]
async fn qos_cgroup_parents_of_all_three_classes_run() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    for qos in ["besteffort", "burstable", ""] {
        let name = format!("qos-{}", if qos.is_empty() { "guaranteed" } else { qos });
        let config = kubelet_pod(&d, &name, qos);
        let parent = config.linux.as_ref().unwrap().cgroup_parent.clone();
        let id = d.run_pod(config.clone()).await;
        assert_eq!(state(&d.status(&id).await), ready(), "{name}");
        let pause = d.pause_pid(&id).await;
        let lines = cgroup_line(pause);
        assert!(
            lines.lines().any(|l| l.contains(&parent)),
            "{name}: the pause must sit under {parent}: {lines}"
        );
        let ctr = d
            .run_container(&id, &config, container_config("app", &["sleep", "3600"]))
            .await;
        let pid = d.container_pid(&ctr).await;
        let lines = cgroup_line(pid);
        assert!(
            lines.lines().any(|l| l.contains(&parent)),
            "{name}: the container must sit under {parent}: {lines}"
        );
        d.stop_container(&ctr, 0).await;
        d.remove_container(&ctr).await;
        d.stop_and_remove(&id).await;
        for dir in cgroups::dirs_at(&parent) {
            assert!(
                cgroups::children(&dir).is_empty(),
                "{name}: cgroups left under {}",
                dir.display()
            );
        }
    }
    remove_kubepods(&d);
    assert_no_leaks(&d).await;
}

/// The QoS and pod levels are kubelet's: it creates and removes them, the runtime only creates
/// what is missing (as runc does). The test stands in for kubelet here.
fn remove_kubepods(d: &TestDaemon) {
    for dir in cgroups::dirs_at(&format!("{}/kubepods", d.cgroup_parent())) {
        let left = cgroups::remove_tree(&dir);
        assert!(left.is_empty(), "cannot remove {left:?}");
    }
}

fn status_groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .expect("Groups line");
    line.split_whitespace()
        .map(|g| g.parse().expect("gid"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_level_fs_group_and_supplemental_groups() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let mut config = kubelet_pod(&d, "fsgroup", "burstable");
    // kubelet puts fsGroup and supplementalGroups into the sandbox's supplemental groups.
    let sc = config
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap();
    sc.supplemental_groups = vec![2000, 3000];
    sc.run_as_user = Some(Int64Value { value: 1000 });
    let id = d.run_pod(config.clone()).await;
    assert_eq!(state(&d.status(&id).await), ready());
    // The pause gets none (it has no /proc for setgroups, and opens no files); kubelet sends
    // the same groups in every container's own security context.
    let pause = d.pause_pid(&id).await;
    assert_eq!(status_groups(pause), Vec::<u32>::new(), "pause groups");

    let mut c = container_config("app", &["sleep", "3600"]);
    let s = security(&mut c);
    s.supplemental_groups = vec![2000, 3000];
    s.run_as_user = Some(Int64Value { value: 1000 });
    let ctr = d.run_container(&id, &config, c).await;
    let out = d.exec_ok(&ctr, &["id", "-G"]).await;
    let mut groups: Vec<&str> = out.split_whitespace().collect();
    groups.sort();
    assert!(
        groups.contains(&"2000") && groups.contains(&"3000"),
        "container groups: {out}"
    );
    d.stop_container(&ctr, 0).await;
    d.remove_container(&ctr).await;
    d.stop_and_remove(&id).await;
    remove_kubepods(&d);
    assert_no_leaks(&d).await;
}

/// CapBnd of a process as a bit mask.
fn cap_mask(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    u64::from_str_radix(hex.trim(), 16).expect("hex mask")
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_and_all_capabilities_get_the_runtimes_bounding_set() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let ours = cap_mask(std::process::id() as i32, "CapBnd:");
    let mut config = kubelet_pod(&d, "privileged", "besteffort");
    config
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .privileged = true;
    let id = d.run_pod(config.clone()).await;
    let pause = d.pause_pid(&id).await;
    assert_eq!(cap_mask(pause, "CapEff:"), ours, "privileged pause");

    let mut privileged = container_config("priv", &["sleep", "3600"]);
    security(&mut privileged).privileged = true;
    let ctr = d.run_container(&id, &config, privileged).await;
    let pid = d.container_pid(&ctr).await;
    assert_eq!(cap_mask(pid, "CapEff:"), ours, "privileged container");
    assert_eq!(cap_mask(pid, "CapBnd:"), ours, "privileged container");

    let mut all = container_config("all", &["sleep", "3600"]);
    security(&mut all).capabilities = Some(k8s_cri::v1::Capability {
        add_capabilities: vec!["ALL".into()],
        drop_capabilities: vec!["NET_RAW".into()],
        add_ambient_capabilities: vec![],
    });
    let all = d.run_container(&id, &config, all).await;
    let pid = d.container_pid(&all).await;
    const NET_RAW: u64 = 1 << 13;
    assert_eq!(
        cap_mask(pid, "CapEff:"),
        ours & !NET_RAW,
        "ALL minus NET_RAW"
    );

    for c in [&ctr, &all] {
        d.stop_container(c, 0).await;
        d.remove_container(c).await;
    }
    d.stop_and_remove(&id).await;
    remove_kubepods(&d);
    assert_no_leaks(&d).await;
}
