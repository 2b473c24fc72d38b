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
    // Whatever the stops free (a monitor's files, runtime state) is taken at once, so they
    // really run on a full disk.
    let hog = Hog::start(&disk.join("hog"));

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
    // Stop keeps the writable layer: only what the dead processes' monitors and runtime
    // state held (a few KiB) is free again.
    assert!(
        free_bytes(&disk) < 1 << 20,
        "Stop freed the writable layer: {} bytes free",
        free_bytes(&disk)
    );

    // What was recorded on the full disk survives a restart.
    d.kill9();
    d.restart().await;
    let (st, _) = d.container_status(&filler).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
    assert_eq!(st.exit_code, 137, "after restart: {st:?}");
    assert_eq!(state(&d.status(&pod).await), not_ready());

    let log = std::fs::read_to_string(d.log_file()).unwrap_or_default();
    assert!(
        log.contains("disk full: rewriting the record in place"),
        "the stops never met the full disk"
    );
    hog.stop();
    d.remove_container(&filler).await;
    d.remove_pod(&pod).await;
    assert!(
        free_bytes(&disk) > 16 << 20,
        "Remove freed the writable layer: {} bytes free",
        free_bytes(&disk)
    );
    std::fs::remove_dir_all(disk.join("hog")).expect("remove the hog's files");
    assert_no_leaks(&d).await;
}

/// A thread that keeps taking every free page of a filesystem (4 KiB files) until stopped.
struct Hog {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hog {
    fn start(dir: &std::path::Path) -> Hog {
        use std::sync::atomic::Ordering;
        std::fs::create_dir_all(dir).ok();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let dir = dir.to_path_buf();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                while std::fs::write(dir.join(n.to_string()), [0u8; 4096]).is_ok() {
                    n += 1;
                }
                let _ = std::fs::remove_file(dir.join(n.to_string()));
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Hog {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.halt();
    }
}
