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
