//! Failure injection: a RunPodSandbox that fails part-way must undo every step it took.

mod common;

use std::time::{Duration, Instant};

use common::oci_image::{LayerFile, write_image_archive};
use common::pods::{not_ready, pod_ip, ready, state};
use common::{DaemonOpts, TestDaemon, TestNetwork, assert_no_leaks, code_of, mounts, procs};
use k8s_cri::v1::{ListImagesRequest, RunPodSandboxRequest, StopPodSandboxRequest};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn cni_failure_after_ip_allocation_rolls_back() {
    let net = TestNetwork::with_failpoint();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    let mut config = d.pod_config("fails");
    // A cgroup parent of our own, so leak checks find the pod's cgroup without its id.
    config.linux.as_mut().expect("linux").cgroup_parent = d.cgroup_parent();

    net.arm_failpoint();
    let (code, msg) = code_of(
        d.runtime()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await,
    );
    assert!(
        matches!(code, Code::Unknown | Code::Internal),
        "RunPodSandbox with a failing CNI plugin: {code:?} {msg}"
    );
    assert!(
        msg.contains("failpoint"),
        "the error should carry the plugin's message: {msg}"
    );
    // The failpoint ran after bridge had allocated an address; the runtime must have called
    // DEL for the same attachment to release it.
    let calls = net.failpoint_calls();
    let add = calls
        .iter()
        .position(|c| c.starts_with("ADD "))
        .unwrap_or_else(|| panic!("failpoint never called: {calls:?}"));
    let container_id = calls[add].trim_start_matches("ADD ");
    assert!(
        calls[add..].contains(&format!("DEL {container_id}")),
        "no CNI DEL after the failed ADD: {calls:?}"
    );
    assert!(d.list_pods(None).await.is_empty(), "failed pod is listed");
    assert_no_leaks(&d).await;

    // kubelet retries with the same metadata: the name must be free and the network usable.
    net.disarm_failpoint();
    let id = d.run_pod(config).await;
    let st = d.status(&id).await;
    assert_eq!(state(&st), ready());
    assert!(net.contains(&pod_ip(&st)), "pod IP {:?}", pod_ip(&st));
    d.stop_and_remove(&id).await;
    assert_no_leaks(&d).await;
}

const NO_ENTRYPOINT_IMAGE: &str = "localhost/crius-test/no-entrypoint:v1";

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_image_without_entrypoint_is_refused() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let archive = scratch.path().join("no-entrypoint.tar");
    write_image_archive(
        &archive,
        NO_ENTRYPOINT_IMAGE,
        serde_json::json!({ "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] }),
        &[LayerFile {
            path: "etc/motd",
            data: b"an image with nothing to run\n",
            mode: 0o644,
        }],
    );
    let net = TestNetwork::new();
    let d = TestDaemon::start(
        DaemonOpts::default()
            .network(&net)
            .sandbox_image(NO_ENTRYPOINT_IMAGE)
            .import(&archive),
    )
    .await;

    let images = d
        .image()
        .list_images(ListImagesRequest { filter: None })
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert!(
        images
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == NO_ENTRYPOINT_IMAGE)),
        "imported image not listed: {images:?}"
    );

    let mut config = d.pod_config("noentry");
    config.linux.as_mut().expect("linux").cgroup_parent = d.cgroup_parent();
    let (code, msg) = code_of(
        d.runtime()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await,
    );
    assert!(
        matches!(code, Code::InvalidArgument | Code::FailedPrecondition),
        "RunPodSandbox with an image that has nothing to run: {code:?} {msg}"
    );
    let lower = msg.to_lowercase();
    assert!(
        lower.contains("entrypoint") || lower.contains("cmd") || msg.contains(NO_ENTRYPOINT_IMAGE),
        "the message should say what is wrong with which image: {msg}"
    );
    assert_no_leaks(&d).await;
}

/// SIGCONT for a monitor this test stopped, also when the test fails half way.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

/// Issue 13 item 9: the pause's monitor is frozen (SIGSTOP) when CNI ADD fails, so the
/// rollback cannot kill the pause. The rollback must stop there: the pod stays listed
/// NotReady with its rootfs, netns and pause intact (undoing those under a live process
/// would leak it), Stop must not report success while it cannot kill, and once the monitor
/// answers again Stop/Remove release everything.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_stops_when_the_kill_fails_and_stop_remove_finish_it() {
    let net = TestNetwork::with_failpoint();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    let mut config = d.pod_config("unkillable");
    config.linux.as_mut().expect("linux").cgroup_parent = d.cgroup_parent();

    net.arm_hang();
    let mut runtime = d.runtime();
    let run_config = config.clone();
    let pending = tokio::spawn(async move {
        runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(run_config),
                runtime_handler: String::new(),
            })
            .await
    });
    // Inside the hanging CNI ADD: the sandbox id is the plugin's container id.
    let deadline = Instant::now() + common::scaled(Duration::from_secs(30));
    let id = loop {
        if let Some(add) = net.failpoint_calls().iter().find(|c| c.starts_with("ADD ")) {
            break add.trim_start_matches("ADD ").to_string();
        }
        assert!(
            Instant::now() < deadline,
            "RunPodSandbox never reached CNI ADD"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    d.track(&id);
    // The pause runs (the container is created and started alongside CNI).
    let short = &id[..12];
    let pause = loop {
        let running = procs::processes_in_cgroup_named(short)
            .into_iter()
            .find(|&p| procs::cmdline(p).contains("pause"));
        if let Some(pid) = running {
            break pid;
        }
        assert!(Instant::now() < deadline, "the pause of {id} never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The monitor reports the start right after the exec; let that reply land first, so
    // only the rollback's kill meets the frozen monitor.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid_file = d.state().join("m").join(&id).join("monitor.pid");
    let monitor: i32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .parse()
        .expect("monitor pid");
    kill(Pid::from_raw(monitor), Signal::SIGSTOP).expect("SIGSTOP the monitor");
    let resume = Resume(monitor);

    net.arm_failpoint();
    net.release_hang();
    let (code, msg) = code_of(pending.await.expect("RunPodSandbox task"));
    assert!(
        msg.contains("failpoint"),
        "RunPodSandbox should fail with the plugin's error: {code:?} {msg}"
    );

    // Rollback stopped at the kill: nothing the pause still uses was taken away.
    let pods = d.list_pods(None).await;
    assert_eq!(
        pods.len(),
        1,
        "the pod whose rollback failed is listed: {pods:?}"
    );
    assert_eq!(pods[0].id, id);
    assert_eq!(pods[0].state, not_ready());
    assert!(
        procs::is_alive(pause),
        "the pause {pause} was killed after all"
    );
    let sandbox_dir = d.root().join("sandboxes").join(&id);
    assert!(
        !mounts::mounts_under(&sandbox_dir).is_empty(),
        "the rollback unmounted the rootfs of a live pause"
    );
    assert!(
        d.state().join("netns").join(&id).exists(),
        "the rollback removed the netns pin of a live pause"
    );

    // Stop cannot kill it either, and must say so.
    let stopped = d
        .runtime()
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await;
    assert!(
        stopped.is_err(),
        "StopPodSandbox reported success for a pod it could not stop"
    );

    drop(resume);
    d.stop_pod(&id).await;
    assert!(
        procs::wait_gone(pause, Duration::from_secs(10)),
        "pause {pause} outlived Stop"
    );
    d.remove_pod(&id).await;
    assert_no_leaks(&d).await;
}
