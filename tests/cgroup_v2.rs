//! cgroup v2 behaviour, on a node that boots systemd with the unified hierarchy (Debian 12 and
//! nearly every current node OS): private cgroup namespaces, limits in the v2 files, no cgroup
//! left after Stop/Remove.
//!
//! They need such a node. The development machine is cgroup v1, so they are `#[ignore]`d there;
//! `hack/vm/run` runs them in a Debian 12 guest with `--include-ignored`. Run anywhere else they
//! fail on a v1 host (never pass without checking anything).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::containers::{container_config, resources, security};
use common::{DaemonOpts, TestDaemon, assert_no_leaks};
use k8s_cri::v1::{
    HugepageLimit, LinuxContainerResources, PodSandboxConfig, UpdateContainerResourcesRequest,
};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn require_v2() {
    assert!(
        Path::new(CGROUP_ROOT).join("cgroup.controllers").exists(),
        "these tests need a cgroup v2 (unified) host: run them through hack/vm/run"
    );
}

/// The container's cgroup directory on the node, from the cgroupsPath of its verbose status.
async fn cgroup_dir(d: &TestDaemon, id: &str) -> PathBuf {
    let (_, info) = d.container_status(id).await;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).expect("info JSON");
    let path = info["cgroupsPath"]
        .as_str()
        .expect("cgroupsPath in the verbose info");
    Path::new(CGROUP_ROOT).join(path.trim_start_matches('/'))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

fn privileged_pod(d: &TestDaemon, name: &str) -> PodSandboxConfig {
    let mut c = d.host_network_pod_config(name);
    c.linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .expect("security context")
        .privileged = true;
    c
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a cgroup v2 host: hack/vm/run runs it in a Debian 12 guest"]
async fn containers_get_a_private_read_only_cgroup_namespace() {
    require_v2();
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("cgns");
    let pod = d.run_pod(pod_config.clone()).await;
    let mut c = container_config("own", &["sleep", "3600"]);
    resources(&mut c).memory_limit_in_bytes = 64 << 20;
    let own = d.run_container(&pod, &pod_config, c).await;

    // A second pod whose cgroup the first must not see.
    let other_config = d.host_network_pod_config("other");
    let other_pod = d.run_pod(other_config.clone()).await;
    let other = d
        .run_container(
            &other_pod,
            &other_config,
            container_config("other", &["sleep", "3600"]),
        )
        .await;
    let other_dir = cgroup_dir(&d, &other).await;
    let other_leaf = other_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    assert_eq!(
        d.exec_ok(&own, &["cat", "/proc/self/cgroup"]).await,
        "0::/\n"
    );
    assert_eq!(
        d.exec_ok(&own, &["cat", "/sys/fs/cgroup/memory.max"])
            .await
            .trim(),
        (64u64 << 20).to_string(),
        "the container's own cgroup is the root of its /sys/fs/cgroup"
    );
    let listing = d.exec_ok(&own, &["ls", "-R", "/sys/fs/cgroup"]).await;
    assert!(
        !listing.contains(&other_leaf) && !listing.contains(&other_pod[..12]),
        "another pod's cgroup is visible:\n{listing}"
    );
    let mountinfo = d.exec_ok(&own, &["cat", "/proc/self/mountinfo"]).await;
    let cgroup_mounts: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(" - cgroup2 "))
        .collect();
    assert_eq!(cgroup_mounts.len(), 1, "{mountinfo}");
    let opts = cgroup_mounts[0].split_whitespace().nth(5).unwrap_or("");
    assert!(
        opts.split(',').any(|o| o == "ro"),
        "/sys/fs/cgroup must be read-only: {}",
        cgroup_mounts[0]
    );
    let r = d
        .exec(&own, &["mkdir", "/sys/fs/cgroup/escape"], 10)
        .await
        .expect("ExecSync");
    assert_ne!(r.exit_code, 0, "mkdir in a read-only /sys/fs/cgroup worked");
    let r = d
        .exec(
            &own,
            &["sh", "-c", "echo max > /sys/fs/cgroup/memory.max"],
            10,
        )
        .await
        .expect("ExecSync");
    assert_ne!(r.exit_code, 0, "the container raised its own memory limit");
    assert_eq!(
        read(&cgroup_dir(&d, &own).await.join("memory.max")),
        (64u64 << 20).to_string()
    );

    // Privileged: the node's cgroup namespace (its /proc/self/cgroup names the real path).
    let priv_config = privileged_pod(&d, "privileged");
    let priv_pod = d.run_pod(priv_config.clone()).await;
    let mut c = container_config("privileged", &["sleep", "3600"]);
    security(&mut c).privileged = true;
    let privileged = d.run_container(&priv_pod, &priv_config, c).await;
    let seen = d.exec_ok(&privileged, &["cat", "/proc/self/cgroup"]).await;
    let dir = cgroup_dir(&d, &privileged).await;
    let rel = dir.strip_prefix(CGROUP_ROOT).unwrap();
    assert_eq!(seen.trim(), format!("0::/{}", rel.display()));

    for p in [&pod, &other_pod, &priv_pod] {
        d.stop_and_remove(p).await;
    }
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a cgroup v2 host: hack/vm/run runs it in a Debian 12 guest"]
async fn limits_land_in_the_v2_files_and_follow_updates() {
    require_v2();
    let controllers = read(&Path::new(CGROUP_ROOT).join("cgroup.controllers"));
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("limits");
    let pod = d.run_pod(pod_config.clone()).await;

    let mut c = container_config("limited", &["sleep", "3600"]);
    let r = resources(&mut c);
    r.memory_limit_in_bytes = 64 << 20;
    r.cpu_quota = 20_000;
    r.cpu_period = 100_000;
    r.cpu_shares = 512;
    r.hugepage_limits = vec![HugepageLimit {
        page_size: "2MB".into(),
        limit: 8 << 20,
    }];
    r.unified
        .insert("memory.high".into(), (48u64 << 20).to_string());
    let id = d.run_container(&pod, &pod_config, c).await;
    let dir = cgroup_dir(&d, &id).await;

    assert_eq!(read(&dir.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(read(&dir.join("memory.high")), (48u64 << 20).to_string());
    // No swap limit asked and none on the node: memory+swap = memory, i.e. no swap (runc's 0).
    assert!(
        dir.join("memory.swap.max").exists(),
        "the guest kernel accounts swap"
    );
    assert_eq!(read(&dir.join("memory.swap.max")), "0");
    assert_eq!(read(&dir.join("cpu.max")), "20000 100000");
    // Shares → weight as libcontainer, crun and runc ≥ 1.3 convert them (quadratic in
    // log2(shares), so that 1024 shares, the default, map to 100, the v2 default): 512 → 59.
    assert_eq!(read(&dir.join("cpu.weight")), "59");
    assert!(
        controllers.split_whitespace().any(|c| c == "hugetlb"),
        "{controllers}"
    );
    assert_eq!(read(&dir.join("hugetlb.2MB.max")), (8u64 << 20).to_string());

    d.runtime()
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                cpu_shares: 1024,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateContainerResources");
    assert_eq!(read(&dir.join("memory.max")), (128u64 << 20).to_string());
    assert_eq!(read(&dir.join("memory.swap.max")), "0");
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&dir.join("cpu.weight")), "100");

    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a cgroup v2 host: hack/vm/run runs it in a Debian 12 guest"]
async fn throttled_busy_containers_leave_no_cgroup_after_remove() {
    require_v2();
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("throttled");
    let pod = d.run_pod(pod_config.clone()).await;
    // The case that left cgroups behind: a CPU-starved init with busy children, which take long
    // to die once killed.
    for round in 0..3 {
        let mut c = container_config(
            &format!("busy{round}"),
            &[
                "sh",
                "-c",
                "for i in 1 2 3 4 5 6; do (while :; do :; done) & done; wait",
            ],
        );
        resources(&mut c).cpu_quota = 10_000;
        resources(&mut c).cpu_period = 100_000;
        let id = d.run_container(&pod, &pod_config, c).await;
        let dir = cgroup_dir(&d, &id).await;
        assert!(dir.is_dir(), "{}", dir.display());
        tokio::time::sleep(Duration::from_millis(500)).await;
        d.stop_container(&id, 1).await;
        d.remove_container(&id).await;
        // Remove returned success: nothing of the container may remain, at once.
        assert!(
            !dir.exists(),
            "round {round}: cgroup {} left after RemoveContainer (procs: {:?})\n{}",
            dir.display(),
            std::fs::read_to_string(dir.join("cgroup.procs")),
            d.log_tail()
        );
        let runtime_dir = d.state().join("runtime").join(&id);
        assert!(
            !runtime_dir.exists(),
            "round {round}: {} left after RemoveContainer",
            runtime_dir.display()
        );
    }
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}
