//! Failures the caller can act on carry a code that says so, with the node's message kept: a
//! program that is not in the image is NotFound, a full disk is ResourceExhausted.

mod common;

use common::containers::container_config;
use common::{DaemonOpts, TestDaemon, assert_no_leaks, code_of, run_ok};
use k8s_cri::v1::CreateContainerRequest;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_program_missing_from_the_image_is_not_found_or_exits_127() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("noprog");
    let pod = d.run_pod(pod_config.clone()).await;

    // CreateContainer of a command that is not in the image.
    let (code, msg) = code_of(
        d.runtime()
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config("missing", &["/no/such/program"])),
                sandbox_config: Some(pod_config.clone()),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound, "{msg}");
    assert!(msg.contains("/no/such/program"), "message kept: {msg}");
    assert!(msg.contains("not found"), "message kept: {msg}");

    // ExecSync of a program that is not in the image, in a running container.
    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config("sleeper", &["sleep", "60"]),
        )
        .await;
    // It exits 127 as a shell's command-not-found does (what `kubectl exec` and exec probes
    // report), with the reason on its stderr (issue 11).
    let r = d
        .exec(&id, &["no-such-program", "arg"], 10)
        .await
        .expect("ExecSync answers with the exit code");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.exit_code, 127, "stderr: {stderr}");
    assert!(stderr.contains("no-such-program"), "message kept: {stderr}");
    // The container is unharmed.
    assert_eq!(d.exec_ok(&id, &["echo", "still"]).await.trim(), "still");

    d.stop_container(&id, 0).await;
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_resource_exhausted() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    // A log directory on a filesystem without a free inode: the container's log directory
    // cannot be made (ENOSPC).
    let full = d.dir().join("full");
    std::fs::create_dir_all(&full).expect("mkdir");
    let full_str = full.to_string_lossy().into_owned();
    run_ok(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=64k,nr_inodes=1",
            "tmpfs",
            &full_str,
        ],
    );
    let mut pod_config = d.host_network_pod_config("fulldisk");
    pod_config.log_directory = full_str.clone();
    let pod = d.run_pod(pod_config.clone()).await;

    let (code, msg) = code_of(
        d.runtime()
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config("logger", &["true"])),
                sandbox_config: Some(pod_config.clone()),
            })
            .await,
    );
    assert_eq!(code, Code::ResourceExhausted, "{msg}");
    assert!(
        msg.contains("No space left on device"),
        "message kept: {msg}"
    );

    d.stop_and_remove(&pod).await;
    run_ok("umount", &[&full_str]);
    assert_no_leaks(&d).await;
}
