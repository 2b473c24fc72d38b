//! Containers outlive the daemon: they keep running and logging through a kill -9, and one that
//! exits while the daemon is down reports its real exit code afterwards.

mod common;

use std::time::Duration;

use common::containers::{container_config, parse_log};
use common::{DaemonOpts, TestDaemon, assert_no_leaks};
use k8s_cri::v1::ContainerState;

#[tokio::test(flavor = "multi_thread")]
async fn containers_survive_kill9_with_logs_and_exit_codes() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("survivor");
    let pod = d.run_pod(pod_config.clone()).await;
    let writer = d
        .run_container(
            &pod,
            &pod_config,
            container_config(
                "writer",
                &[
                    "sh",
                    "-c",
                    "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done",
                ],
            ),
        )
        .await;
    let quitter = d
        .run_container(
            &pod,
            &pod_config,
            container_config("quitter", &["sh", "-c", "sleep 2; exit 5"]),
        )
        .await;
    let writer_pid = d.container_pid(&writer).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    d.kill9();
    let log = d.container_log(&pod_config, "writer");
    let before = std::fs::metadata(&log).unwrap().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = std::fs::metadata(&log).unwrap().len();
    assert!(
        after > before,
        "the monitor keeps logging while the daemon is down"
    );

    d.restart().await;
    let (s, _) = d.container_status(&writer).await;
    assert_eq!(s.state, ContainerState::ContainerRunning as i32);
    assert_eq!(d.container_pid(&writer).await, writer_pid, "same process");
    let s = d.wait_exited(&quitter, Duration::from_secs(10)).await;
    assert_eq!(
        s.exit_code, 5,
        "exit code recorded while the daemon was down: {s:?}"
    );

    d.stop_container(&writer, 0).await;
    let lines = parse_log(&std::fs::read_to_string(&log).unwrap());
    let numbers: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.content.strip_prefix("line ").and_then(|n| n.parse().ok()))
        .collect();
    assert!(numbers.len() > 20, "{} lines", numbers.len());
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "no line lost or repeated across the restart"
    );
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}

/// Issue 13 item 10: the daemon is killed after the monitor created a container's process but
/// before CreateContainer recorded it. After the restart the container is CONTAINER_UNKNOWN
/// (the create never finished) but its status shows the live process, and RemoveContainer
/// ends that process and releases everything.
#[tokio::test(flavor = "multi_thread")]
async fn create_interrupted_by_kill9_shows_its_process_and_remove_releases_it() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let mut pod_config = d.host_network_pod_config("cut");
    pod_config.linux.as_mut().expect("linux").cgroup_parent = d.cgroup_parent();
    let pod = d.run_pod(pod_config.clone()).await;

    d.set_failpoint(Some("create-container:created"));
    d.restart().await;
    let mut runtime = d.runtime();
    let request = k8s_cri::v1::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container_config("cut", &["sleep", "3600"])),
        sandbox_config: Some(pod_config.clone()),
    };
    let pending = tokio::spawn(async move { runtime.create_container(request).await });
    d.wait_failpoint("create-container:created").await;
    d.kill9();
    assert!(
        pending.await.unwrap().is_err(),
        "the interrupted create cannot succeed"
    );
    d.set_failpoint(None);
    d.restart().await;

    let listed = d
        .runtime()
        .list_containers(k8s_cri::v1::ListContainersRequest { filter: None })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    assert_eq!(
        listed.len(),
        1,
        "the interrupted container is listed: {listed:?}"
    );
    let id = listed[0].id.clone();
    let (status, info) = d.container_status(&id).await;
    assert_eq!(
        status.state,
        ContainerState::ContainerUnknown as i32,
        "{status:?}"
    );
    let pid = common::pods::pid_from_info(&info).unwrap_or_else(|| {
        panic!("no pid in the status of a container whose process lives: {info:?}")
    });
    assert!(
        common::procs::is_alive(pid),
        "pid {pid} in the status is not alive"
    );

    d.remove_container(&id).await;
    assert!(
        common::procs::wait_gone(pid, Duration::from_secs(10)),
        "process {pid} outlived RemoveContainer"
    );
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}

/// SIGCONT for a monitor this test stopped, also when the test fails half way.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

/// Issue 13 item 9 for containers: CreateContainer fails after its process exists (an
/// injected failure) while the container's monitor is frozen, so the rollback cannot kill it.
/// The rollback must stop there: the container stays listed CONTAINER_UNKNOWN with its
/// writable layer mounted, and RemoveContainer finishes the cleanup once the monitor answers.
#[tokio::test(flavor = "multi_thread")]
async fn create_rollback_stops_when_the_kill_fails_and_remove_finishes_it() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let mut pod_config = d.host_network_pod_config("unkillable");
    pod_config.linux.as_mut().expect("linux").cgroup_parent = d.cgroup_parent();
    let pod = d.run_pod(pod_config.clone()).await;

    d.set_failpoint(Some("create-container:created!fail"));
    d.restart().await;
    let mut runtime = d.runtime();
    let request = k8s_cri::v1::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container_config("frozen", &["sleep", "3600"])),
        sandbox_config: Some(pod_config.clone()),
    };
    let pending = tokio::spawn(async move { runtime.create_container(request).await });
    d.wait_failpoint("create-container:created").await;
    // The container's monitor dir is the one that is not the pod's.
    let id = std::fs::read_dir(d.state().join("m"))
        .expect("monitor dirs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| *n != pod && n.len() == 64)
        .expect("the container's monitor dir");
    let pid_file = d.state().join("m").join(&id).join("monitor.pid");
    let monitor: i32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .parse()
        .expect("monitor pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP the monitor");
    let resume = Resume(monitor);
    let failed = pending.await.unwrap();
    assert!(failed.is_err(), "CreateContainer with an injected failure");

    let (status, _) = d.container_status(&id).await;
    assert_eq!(
        status.state,
        ContainerState::ContainerUnknown as i32,
        "{status:?}"
    );
    assert!(
        status.message.contains("cleanup stopped"),
        "the status should say why it is kept: {status:?}"
    );
    assert!(
        !common::mounts::mounts_under(&d.root().join("containers").join(&id)).is_empty(),
        "the rollback unmounted the writable layer of a container it could not kill"
    );

    drop(resume);
    d.remove_container(&id).await;
    d.set_failpoint(None);
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}
