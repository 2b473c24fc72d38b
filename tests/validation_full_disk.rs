//! Issue 13 item 11: a container fills the disk crius keeps its state on (--root and --state on
//! one small tmpfs); Stop and Remove of the container and its pod must still work and the
//! state must stay truthful (the exit is recorded with its real code, also across a restart).

mod common;

use std::time::{Duration, Instant};

use common::containers::container_config;
use common::pods::{not_ready, state};
use common::{DaemonOpts, TestDaemon, TestNetwork, assert_no_leaks, scaled};
use k8s_cri::v1::ContainerState;

/// Free bytes of the filesystem at `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).expect("statvfs");
    st.blocks_available() as u64 * st.fragment_size() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_and_remove_work_on_a_full_disk_and_the_exit_is_recorded() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net).small_disk("48m")).await;
    d.import_busybox();
    let disk = d.disk().expect("small disk");

    let mut pod_config = d.pod_config("fill");
    pod_config.linux.as_mut().expect("linux").cgroup_parent = d.cgroup_parent();
    let pod = d.run_pod(pod_config.clone()).await;
    // dd stops at ENOSPC; the shell then waits for Stop.
    let filler = d
        .run_container(
            &pod,
            &pod_config,
            container_config(
                "filler",
                &[
                    "sh",
                    "-c",
                    "dd if=/dev/zero of=/fill bs=64k; exec sleep 3600",
                ],
            ),
        )
        .await;

    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    while free_bytes(&disk) > 0 {
        assert!(
            Instant::now() < deadline,
            "the container did not fill the disk: {} bytes free",
            free_bytes(&disk)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        std::fs::write(disk.join("probe"), [0u8; 4096]).is_err(),
        "the disk should be full"
    );
    let (st, _) = d.container_status(&filler).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");

    // Stop: SIGTERM is ignored by the shell (pid 1), SIGKILL after the grace period.
    d.stop_container(&filler, 1).await;
    let (st, _) = d.container_status(&filler).await;
    assert_eq!(
        st.state,
        ContainerState::ContainerExited as i32,
        "after StopContainer on a full disk: {st:?}"
    );
    assert_eq!(st.exit_code, 137, "the real exit code (SIGKILL): {st:?}");
    assert_ne!(st.reason, "MonitorDied", "the exit was lost: {st:?}");

    d.stop_pod(&pod).await;
    assert_eq!(state(&d.status(&pod).await), not_ready());
    assert_eq!(
        free_bytes(&disk),
        0,
        "the disk is still full after the stops"
    );

    // What was recorded on the full disk survives a restart.
    d.kill9();
    d.restart().await;
    let (st, _) = d.container_status(&filler).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
    assert_eq!(st.exit_code, 137, "after restart: {st:?}");
    assert_eq!(state(&d.status(&pod).await), not_ready());

    d.remove_container(&filler).await;
    d.remove_pod(&pod).await;
    assert!(
        free_bytes(&disk) > 16 << 20,
        "Remove freed the writable layer: {} bytes free",
        free_bytes(&disk)
    );
    assert_no_leaks(&d).await;
}
