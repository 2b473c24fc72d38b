//! Requests that would reach outside crius's own directories are refused with InvalidArgument
//! naming the field, before anything is created: nothing appears on the host paths they aim
//! at, in the cgroup trees or in the daemon's root.

mod common;

use std::path::{Path, PathBuf};

use common::containers::container_config;
use common::{DaemonOpts, TestDaemon, assert_no_leaks, cgroups, code_of};
use k8s_cri::v1::{
    ContainerConfig, CreateContainerRequest, PodSandboxConfig, PortMapping, RunPodSandboxRequest,
};
use tonic::Code;

/// RunPodSandbox must fail with InvalidArgument and a message naming `field`.
async fn pod_refused(d: &TestDaemon, config: PodSandboxConfig, field: &str) {
    let (code, msg) = code_of(
        d.runtime()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument, "{field}: {msg}");
    assert!(
        msg.contains(field),
        "the message should name {field}: {msg}"
    );
}

async fn container_refused(
    d: &TestDaemon,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
    field: &str,
) {
    let (code, msg) = code_of(
        d.runtime()
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument, "{field}: {msg}");
    assert!(
        msg.contains(field),
        "the message should name {field}: {msg}"
    );
}

fn assert_absent(path: &Path) {
    assert!(
        std::fs::symlink_metadata(path).is_err(),
        "{} was created on the host",
        path.display()
    );
}

/// Entries of `dir` whose name starts with `prefix`.
fn entries_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Every cgroup hierarchy root (one on v2, one per mounted controller on v1).
fn cgroup_roots() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_requests_that_escape_are_refused_and_create_nothing() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    let token = d.token();
    let tmp_target = PathBuf::from(format!("/tmp/crius-escape-{token}"));
    let roots_before = entries_with_prefix(Path::new("/"), "crius");

    // cgroup parents that climb out of the hierarchy: to the host root, into /tmp, and
    // through a sibling of the hierarchy roots.
    for parent in [
        "../../../..".to_string(),
        format!("../../../../tmp/crius-escape-{token}/deep"),
        format!("/kubepods/../../crius-escape-{token}"),
    ] {
        let mut c = d.pod_config("cgparent");
        c.linux.as_mut().expect("linux").cgroup_parent = parent;
        pod_refused(&d, c, "linux.cgroup_parent").await;
    }
    assert_eq!(entries_with_prefix(Path::new("/"), "crius"), roots_before);
    assert_absent(&tmp_target);
    assert_absent(&Path::new("/sys/fs/cgroup").join(format!("crius-escape-{token}")));
    for root in cgroup_roots() {
        assert_absent(&root.join(format!("crius-escape-{token}")));
    }

    // Names, namespaces and uids that are paths, or carry NUL, or are huge.
    let escape = format!("../../../../../../tmp/crius-escape-{token}");
    for name in ["a/b", escape.as_str(), "a\0b", &"n".repeat(10 * 1024)] {
        let mut c = d.pod_config("x");
        c.metadata.as_mut().expect("metadata").name = name.to_string();
        pod_refused(&d, c, "metadata.name").await;
    }
    for ns in [escape.as_str(), "../x"] {
        let mut c = d.pod_config("ns");
        c.metadata.as_mut().expect("metadata").namespace = ns.to_string();
        pod_refused(&d, c, "metadata.namespace").await;
    }
    for uid in [escape.as_str(), "..", "a\0b"] {
        let mut c = d.pod_config("uid");
        c.metadata.as_mut().expect("metadata").uid = uid.to_string();
        pod_refused(&d, c, "metadata.uid").await;
    }
    assert_absent(&tmp_target);

    // A relative log directory would resolve against the daemon's working directory.
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", d.pid())).expect("daemon cwd");
    let relative = format!("crius-escape-logs-{token}");
    for dir in [relative.as_str(), "../../etc", "/var/log/pods/../../../etc"] {
        let mut c = d.pod_config("logdir");
        c.log_directory = dir.to_string();
        pod_refused(&d, c, "log_directory").await;
    }
    assert_absent(&cwd.join(&relative));

    // Ports beyond 16 bits (70000 used to reach iptables and come back UNKNOWN).
    for (host, container, field) in [
        (-1, 80, "host_port"),
        (70000, 80, "host_port"),
        (8080, 0, "container_port"),
        (8080, 70000, "container_port"),
    ] {
        let mut c = d.pod_config("ports");
        c.port_mappings = vec![PortMapping {
            host_port: host,
            container_port: container,
            ..Default::default()
        }];
        pod_refused(&d, c, field).await;
    }

    // A hostname on a pod in the node's UTS namespace, and DNS values that add lines.
    let mut c = d.host_network_pod_config("hostnet");
    c.hostname = format!("not-the-node-{token}");
    pod_refused(&d, c, "hostname").await;
    let mut c = d.pod_config("dns");
    c.dns_config
        .as_mut()
        .expect("dns")
        .options
        .push("ndots:1\nnameserver 192.0.2.1".into());
    pod_refused(&d, c, "dns_config.options").await;

    assert_no_leaks(&d).await;
    assert_absent(&tmp_target);
}

#[tokio::test(flavor = "multi_thread")]
async fn container_requests_that_escape_are_refused_and_create_nothing() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let token = d.token();
    let pod_config = d.host_network_pod_config("ctrescape");
    let pod = d.run_pod(pod_config.clone()).await;

    let tmp_log = PathBuf::from(format!("/tmp/crius-escape-{token}.log"));
    for path in [
        format!("../../../../../../../../tmp/crius-escape-{token}.log"),
        tmp_log.to_string_lossy().into_owned(),
        format!("a/../../crius-escape-{token}.log"),
    ] {
        let mut c = container_config("logger", &["true"]);
        c.log_path = path;
        container_refused(&d, &pod, &pod_config, c, "log_path").await;
    }
    assert_absent(&tmp_log);
    let log_parent = Path::new(&pod_config.log_directory)
        .parent()
        .expect("log dir parent")
        .join(format!("crius-escape-{token}.log"));
    assert_absent(&log_parent);

    for name in ["../../x", "a/b", "a\0b"] {
        let mut c = container_config("x", &["true"]);
        c.metadata.as_mut().expect("metadata").name = name.to_string();
        container_refused(&d, &pod, &pod_config, c, "metadata.name").await;
    }
    let mut c = container_config("mnt", &["true"]);
    c.mounts.push(k8s_cri::v1::Mount {
        host_path: format!("relative-{token}"),
        container_path: "/data".into(),
        ..Default::default()
    });
    container_refused(&d, &pod, &pod_config, c, "mounts[0].host_path").await;

    // Nothing of the refused containers is in the root, and the pod still works.
    assert!(
        entries_with_prefix(&d.root().join("containers"), "").is_empty(),
        "container dirs left behind"
    );
    let id = d
        .run_container(&pod, &pod_config, container_config("ok", &["true"]))
        .await;
    d.wait_exited(&id, std::time::Duration::from_secs(20)).await;
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}

/// Make a pod's cgroup parent the way kubelet does before RunPodSandbox: every level in every
/// hierarchy, and on cgroup v1 with the cpuset of its parent (an empty cpuset refuses tasks).
fn make_parent_like_kubelet(rel: &str) {
    for root in cgroup_roots() {
        let mut dir = root.clone();
        for part in rel.trim_start_matches('/').split('/') {
            let parent = dir.clone();
            dir = dir.join(part);
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(value) = std::fs::read_to_string(parent.join(file))
                    && std::fs::read_to_string(dir.join(file)).is_ok_and(|v| v.trim().is_empty())
                {
                    std::fs::write(dir.join(file), value.trim())
                        .unwrap_or_else(|e| panic!("write {}/{file}: {e}", dir.display()));
                }
            }
        }
    }
}

/// What kubelet sends with either cgroup driver stays accepted.
#[tokio::test(flavor = "multi_thread")]
async fn kubelet_cgroup_parents_are_accepted() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    let uid = common::random_hex(8);
    // cgroupfs style, under this daemon's own parent.
    let parent = format!("{}/besteffort/pod{uid}", d.cgroup_parent());
    make_parent_like_kubelet(&parent);
    let mut c = d.host_network_pod_config("cgfs");
    c.linux.as_mut().expect("linux").cgroup_parent = parent;
    let id = d.run_pod(c).await;
    d.stop_and_remove(&id).await;
    // kubelet removes the levels it made; so does the test (the leak check wants the
    // daemon's parent without children).
    for dir in cgroups::dirs_at(&format!("{}/besteffort", d.cgroup_parent())) {
        let left = cgroups::remove_tree(&dir);
        assert!(left.is_empty(), "cannot remove {left:?}");
    }

    // A systemd slice name (one path component).
    let slice = format!(
        "{}-besteffort-pod{uid}.slice",
        d.cgroup_parent().trim_start_matches('/')
    );
    let mut c = d.host_network_pod_config("slice");
    c.linux.as_mut().expect("linux").cgroup_parent = slice.clone();
    let id = d.run_pod(c).await;
    d.stop_and_remove(&id).await;
    assert_no_leaks(&d).await;
    for dir in cgroups::dirs_at(&slice) {
        cgroups::remove_tree(&dir);
    }

    // A hostNetwork pod may name the node's own hostname (or none).
    let c = d.host_network_pod_config("hostnet");
    let id = d.run_pod(c.clone()).await;
    d.stop_and_remove(&id).await;
    let mut c = d.host_network_pod_config("hostnet2");
    c.hostname.clear();
    let id = d.run_pod(c).await;
    d.stop_and_remove(&id).await;
    assert_no_leaks(&d).await;
}
