//! A hostNetwork pod through its whole life: run, inspect, stop (twice), remove (twice).

mod common;

use std::time::Duration;

use common::pods::{network_mode, not_ready, pod_ip, ready, state};
use common::{DaemonOpts, TestDaemon, assert_no_leaks, code_of, procs};
use k8s_cri::v1::{NamespaceMode, PodSandboxStatusRequest};

#[tokio::test(flavor = "multi_thread")]
async fn host_network_pod_lifecycle() {
    // No CNI config at all: host-network pods must not need the pod network.
    let d = TestDaemon::start(DaemonOpts::default()).await;
    let config = d.host_network_pod_config("hostnet");
    let id = d.run_pod(config.clone()).await;

    let st = d.status(&id).await;
    let s = st.status.as_ref().expect("status");
    assert_eq!(s.id, id);
    assert_eq!(s.metadata, config.metadata);
    assert_eq!(state(&st), ready(), "pod not Ready: {s:?}");
    assert!(s.created_at > 0, "created_at not set");
    assert_eq!(network_mode(&st), NamespaceMode::Node as i32);
    assert_eq!(pod_ip(&st), "", "a host-network pod has no pod IP");
    assert_eq!(s.labels, config.labels);
    assert_eq!(s.annotations, config.annotations);

    let pid = d.pause_pid(&id).await;
    assert_eq!(
        procs::ns_link(pid, "net").as_deref(),
        Some(procs::self_ns("net").as_str()),
        "pause of a host-network pod must share the host's network namespace"
    );
    assert_eq!(
        procs::ns_link(pid, "uts").as_deref(),
        Some(procs::self_ns("uts").as_str()),
        "pause of a host-network pod must share the host's UTS namespace"
    );
    for private in ["mnt", "ipc"] {
        assert_ne!(
            procs::ns_link(pid, private).as_deref(),
            Some(procs::self_ns(private).as_str()),
            "pause must have its own {private} namespace"
        );
    }

    d.stop_pod(&id).await;
    let st = d.status(&id).await;
    assert_eq!(state(&st), not_ready());
    assert!(
        procs::wait_gone(pid, Duration::from_secs(10)),
        "pause process {pid} still running after StopPodSandbox"
    );
    // Stop is idempotent: kubelet retries it.
    d.stop_pod(&id).await;

    d.remove_pod(&id).await;
    let (code, msg) = code_of(
        d.runtime()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound, "status after remove: {msg}");
    // Remove is idempotent too.
    d.remove_pod(&id).await;
    assert!(d.list_pods(None).await.is_empty());
    assert_no_leaks(&d).await;
}
