//! Failed creates leave no operation lock behind: after a thousand of them (and failed
//! RunPodSandbox calls), an idle daemon holds no lock entry at all.

mod common;

use common::containers::container_config;
use common::pods::set_sysctl;
use common::{DaemonOpts, TestDaemon, assert_no_leaks};
use k8s_cri::v1::{CreateContainerRequest, Device, RunPodSandboxRequest, StatusRequest};

async fn op_locks(d: &TestDaemon) -> usize {
    let info = d
        .runtime()
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner()
        .info;
    info.get("opLocks")
        .unwrap_or_else(|| panic!("no opLocks in {info:?}"))
        .parse()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_failed_creates_leave_no_lock_entry() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("locks");
    let pod = d.run_pod(pod_config.clone()).await;
    assert_eq!(op_locks(&d).await, 0, "idle daemon");

    // Each fails after its id was locked and its record saved: the device does not exist.
    let mut config = container_config("nodev", &["true"]);
    config.devices = vec![Device {
        host_path: "/dev/crius-test-no-such-device".into(),
        container_path: "/dev/x".into(),
        permissions: "rwm".into(),
    }];
    let mut failures = 0;
    for round in 0..50 {
        let mut calls = Vec::new();
        for _ in 0..20 {
            let mut rt = d.runtime();
            let request = CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(config.clone()),
                sandbox_config: Some(pod_config.clone()),
            };
            calls.push(tokio::spawn(
                async move { rt.create_container(request).await },
            ));
        }
        for call in calls {
            let result = call.await.expect("task");
            assert!(result.is_err(), "round {round}: create succeeded");
            failures += 1;
        }
    }
    assert_eq!(failures, 1000);

    // And failed RunPodSandbox calls (a host-wide sysctl is refused in the spec, after the
    // sandbox id was locked).
    for _ in 0..50 {
        let mut c = d.host_network_pod_config("badsysctl");
        set_sysctl(&mut c, "kernel.panic", "0");
        let r = d
            .runtime()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(c),
                runtime_handler: String::new(),
            })
            .await;
        assert!(r.is_err(), "RunPodSandbox with a host sysctl succeeded");
    }
    assert_eq!(
        op_locks(&d).await,
        0,
        "lock entries left after the failures"
    );

    // The pod still takes containers.
    let id = d
        .run_container(&pod, &pod_config, container_config("ok", &["true"]))
        .await;
    d.wait_exited(&id, std::time::Duration::from_secs(20)).await;
    d.stop_and_remove(&pod).await;
    assert_eq!(op_locks(&d).await, 0, "after removal");
    assert_no_leaks(&d).await;
}
