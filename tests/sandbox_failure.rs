//! Failure injection: a RunPodSandbox that fails part-way must undo every step it took.

mod common;

use common::oci_image::{LayerFile, write_image_archive};
use common::pods::{pod_ip, ready, state};
use common::{DaemonOpts, TestDaemon, TestNetwork, assert_no_leaks, code_of};
use k8s_cri::v1::{ListImagesRequest, RunPodSandboxRequest};
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
