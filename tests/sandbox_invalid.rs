//! Bad requests get the right gRPC code and leave nothing behind.

mod common;

use common::pods::set_sysctl;
use common::{DaemonOpts, TestDaemon, TestNetwork, assert_no_leaks, code_of};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use tonic::Code;

const UNKNOWN_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread")]
async fn run_without_config_or_metadata_is_invalid_argument() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    let (code, msg) = code_of(
        d.runtime()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: None,
                runtime_handler: String::new(),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument, "no config: {msg}");

    let mut config = d.pod_config("nometa");
    config.metadata = None;
    let (code, msg) = code_of(
        d.runtime()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument, "no metadata: {msg}");
    assert!(
        msg.to_lowercase().contains("metadata"),
        "the message should name what is missing: {msg}"
    );
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_sandbox_ids() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    let (code, msg) = code_of(
        d.runtime()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: UNKNOWN_ID.to_string(),
                verbose: true,
            })
            .await,
    );
    assert_eq!(code, Code::NotFound, "status of an unknown id: {msg}");

    // kubelet treats NotFound from Stop as done, so both answers are acceptable.
    if let Err(s) = d
        .runtime()
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: UNKNOWN_ID.to_string(),
        })
        .await
    {
        assert_eq!(s.code(), Code::NotFound, "stop of an unknown id: {s}");
    }
    // CRI: removing a sandbox that does not exist must succeed.
    d.runtime()
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: UNKNOWN_ID.to_string(),
        })
        .await
        .expect("RemovePodSandbox of an unknown id must succeed");
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sysctls_are_invalid_argument_and_leave_nothing() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    // A host-wide (not namespaced) sysctl, and something that is no sysctl name at all. The
    // values are harmless even if a broken runtime applied them to the host: kernel.panic
    // gets the value it already has.
    let panic_now = std::fs::read_to_string("/proc/sys/kernel/panic").expect("read kernel.panic");
    for (key, value) in [
        ("kernel.panic", panic_now.trim()),
        ("crius test/no such sysctl", "1"),
    ] {
        let mut config = d.pod_config("sysctl");
        config.linux.as_mut().expect("linux").cgroup_parent = d.cgroup_parent();
        set_sysctl(&mut config, key, value);
        let (code, msg) = code_of(
            d.runtime()
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                })
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "sysctl {key}: {msg}");
        assert!(msg.contains(key), "the message should name {key}: {msg}");
        assert_no_leaks(&d).await;
    }
    // The name is free again: a good pod with the same metadata runs.
    let mut config = d.pod_config("sysctl");
    set_sysctl(&mut config, "net.ipv4.ip_unprivileged_port_start", "0");
    let id = d.run_pod(config).await;
    d.stop_and_remove(&id).await;
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn container_rpcs_on_unknown_pods_and_containers_are_not_found() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    let (code, msg) = code_of(
        d.runtime()
            .create_container(CreateContainerRequest {
                pod_sandbox_id: UNKNOWN_ID.to_string(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "c".to_string(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: "localhost/crius/pause:builtin".to_string(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                sandbox_config: Some(d.pod_config("c")),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound, "CreateContainer: {msg}");
    let (code, msg) = code_of(
        d.runtime()
            .start_container(StartContainerRequest {
                container_id: UNKNOWN_ID.to_string(),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound, "StartContainer: {msg}");
}
