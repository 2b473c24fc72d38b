//! Pods outlive the daemon: SIGKILL or SIGTERM it, start it again, and it finds them intact.

mod common;

use std::time::Duration;

use common::pods::{pod_ip, ready, state};
use common::{DaemonOpts, TestDaemon, TestNetwork, assert_no_leaks, procs, run_ok};

/// (pid, start time) of a pod's pause process: equal before and after means the same process.
async fn pause_identity(d: &TestDaemon, id: &str) -> (i32, u64) {
    let pid = d.pause_pid(id).await;
    let (_, start) = procs::stat(pid).unwrap_or_else(|| panic!("pause {pid} of {id} vanished"));
    (pid, start)
}

fn assert_alive(pause: (i32, u64), what: &str) {
    assert!(procs::is_alive(pause.0), "{what}: pause {} died", pause.0);
    assert_eq!(
        procs::stat(pause.0).map(|(_, s)| s),
        Some(pause.1),
        "{what}: pid {} now belongs to another process",
        pause.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_and_restart_keeps_pods() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    let bridged = d.run_pod(d.pod_config("bridged")).await;
    let hostnet = d.run_pod(d.host_network_pod_config("hostnet")).await;
    let ip = pod_ip(&d.status(&bridged).await);
    assert!(net.contains(&ip), "bridged pod IP {ip:?}");
    let bridged_pause = pause_identity(&d, &bridged).await;
    let hostnet_pause = pause_identity(&d, &hostnet).await;

    d.kill9();
    assert_alive(bridged_pause, "after SIGKILL of the daemon");
    assert_alive(hostnet_pause, "after SIGKILL of the daemon");
    run_ok("ping", &["-c", "1", "-W", "2", &ip]);

    d.restart().await;
    let mut listed: Vec<(String, i32)> = d
        .list_pods(None)
        .await
        .into_iter()
        .map(|p| (p.id, p.state))
        .collect();
    listed.sort();
    let mut expected = vec![(bridged.clone(), ready()), (hostnet.clone(), ready())];
    expected.sort();
    assert_eq!(listed, expected, "pods after restart (id, state)");
    assert_eq!(pod_ip(&d.status(&bridged).await), ip, "IP changed");
    assert_eq!(pod_ip(&d.status(&hostnet).await), "");
    assert_eq!(pause_identity(&d, &bridged).await, bridged_pause);
    assert_eq!(pause_identity(&d, &hostnet).await, hostnet_pause);

    // The recovered pods are fully manageable.
    for id in [&bridged, &hostnet] {
        d.stop_and_remove(id).await;
    }
    for pause in [bridged_pause, hostnet_pause] {
        assert!(
            procs::wait_gone(pause.0, Duration::from_secs(10)),
            "pause {} outlived its pod",
            pause.0
        );
    }
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_leaves_pods_running() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    let id = d.run_pod(d.pod_config("survivor")).await;
    let ip = pod_ip(&d.status(&id).await);
    let pause = pause_identity(&d, &id).await;

    let status = d.terminate().await;
    assert!(status.success(), "daemon exit on SIGTERM: {status}");
    assert!(
        !d.socket().exists(),
        "the daemon should remove its socket on a clean exit"
    );
    assert_alive(pause, "after SIGTERM of the daemon");
    run_ok("ping", &["-c", "1", "-W", "2", &ip]);

    d.restart().await;
    let st = d.status(&id).await;
    assert_eq!(state(&st), ready());
    assert_eq!(pod_ip(&st), ip);
    assert_eq!(pause_identity(&d, &id).await, pause);
    d.stop_and_remove(&id).await;
    assert_no_leaks(&d).await;
}

/// kill -9 while RunPodSandbox is inside CNI ADD (an IP already allocated): after restart the
/// pod is listed NotReady, and Stop/Remove release everything it had created.
#[tokio::test(flavor = "multi_thread")]
async fn run_interrupted_by_kill9_is_left_not_ready_and_cleaned_by_stop_remove() {
    let net = TestNetwork::with_failpoint();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    net.arm_hang();
    let config = d.pod_config("interrupted");
    let mut runtime = d.runtime();
    let pending = tokio::spawn(async move {
        runtime
            .run_pod_sandbox(k8s_cri::v1::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
    });
    // Wait until the request is inside the hanging plugin, i.e. bridge has allocated an IP.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !net.failpoint_calls().iter().any(|c| c.starts_with("ADD ")) {
        assert!(
            std::time::Instant::now() < deadline,
            "RunPodSandbox never reached CNI ADD"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        net.allocated_ips().len(),
        1,
        "bridge allocated an IP before the hang"
    );
    d.kill9();
    assert!(
        pending.await.unwrap().is_err(),
        "the interrupted call cannot succeed"
    );
    net.release_hang();

    d.restart().await;
    let pods = d.list_pods(None).await;
    assert_eq!(pods.len(), 1, "the interrupted pod is listed: {pods:?}");
    let id = pods[0].id.clone();
    assert_eq!(
        pods[0].state,
        common::pods::not_ready(),
        "interrupted pod state"
    );
    // Status shows what the interrupted create made: the live pause, its netns and the IP
    // that bridge configured (issue 13 item 10).
    let st = d.status(&id).await;
    let ip = pod_ip(&st);
    assert!(
        net.contains(&ip),
        "IP of the interrupted pod: {ip:?} ({st:?})"
    );
    assert_eq!(
        net.allocated_ips(),
        vec![ip.clone()],
        "the IP host-local holds"
    );
    let pid = common::pods::pid_from_info(&st.info).unwrap_or_else(|| {
        panic!(
            "no pid in the status of a pod whose pause runs: {:?}",
            st.info
        )
    });
    assert!(
        procs::is_alive(pid),
        "pause pid {pid} in the status is not alive"
    );
    let info: serde_json::Value =
        serde_json::from_str(st.info.get("info").expect("verbose info")).expect("info JSON");
    let netns = info["netNamespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !netns.is_empty() && std::path::Path::new(&netns).exists(),
        "netns of the interrupted pod: {info}"
    );
    d.stop_pod(&id).await;
    assert!(
        procs::wait_gone(pid, Duration::from_secs(10)),
        "pause {pid} outlived Stop"
    );
    d.remove_pod(&id).await;
    assert!(net.allocated_ips().is_empty(), "IP released by Stop");
    assert_no_leaks(&d).await;
}
