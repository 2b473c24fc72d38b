//! A container's monitor killed with SIGKILL: the container is reported Exited, with the
//! reason, within a second; nothing of it keeps running; Stop and Remove succeed only for a
//! container that is really gone. Ordinary exits are seen at once, without polling.

mod common;

use std::time::{Duration, Instant};

use common::containers::container_config;
use common::{DaemonOpts, TestDaemon, assert_no_leaks, procs};
use k8s_cri::v1::ContainerState;

fn monitor_pid(d: &TestDaemon, id: &str) -> i32 {
    let file = d.state().join("m").join(id).join("monitor.pid");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .parse()
        .expect("pid")
}

/// Poll ContainerStatus (the test's view, as kubelet's) until Exited; how long it took.
async fn time_to_exited(d: &TestDaemon, id: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let (s, _) = d.container_status(id).await;
        if s.state == ContainerState::ContainerExited as i32 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{id} not Exited after {limit:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_dead(pid: i32) {
    let t0 = Instant::now();
    while procs::is_alive(pid) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "process {pid} still alive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_monitor_is_noticed_within_a_second() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("monkill");
    let pod = d.run_pod(pod_config.clone()).await;

    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config("sleeper", &["sleep", "600"]),
        )
        .await;
    let init = d.container_pid(&id).await;
    let monitor = monitor_pid(&d, &id);
    procs::sigkill(monitor);
    let took = time_to_exited(&d, &id, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(1), "noticed after {took:?}");
    let (status, _) = d.container_status(&id).await;
    assert_eq!(status.reason, "MonitorDied", "{status:?}");
    assert_eq!(status.exit_code, 255, "{status:?}");
    assert!(status.message.contains("monitor"), "{status:?}");
    assert!(status.finished_at > 0, "{status:?}");
    wait_dead(init).await;
    d.stop_container(&id, 10).await;
    d.remove_container(&id).await;

    // Stop racing the watcher right after the kill: it succeeds only because the container
    // is really stopped.
    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config("sleeper2", &["sleep", "600"]),
        )
        .await;
    let init = d.container_pid(&id).await;
    procs::sigkill(monitor_pid(&d, &id));
    d.stop_container(&id, 30).await;
    let (status, _) = d.container_status(&id).await;
    assert_eq!(
        status.state,
        ContainerState::ContainerExited as i32,
        "{status:?}"
    );
    wait_dead(init).await;
    d.remove_container(&id).await;

    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}

/// An exit reaches the daemon by push: the watcher's pidfd wakes it, it records the exit and
/// sends the stopped event, with no call from us and no poll. Proved from the daemon's log
/// (the pidfd wake-up of this container comes before its exit is recorded, and its watch never
/// fell back to polling), not from how long it took, which a loaded machine stretches.
#[tokio::test(flavor = "multi_thread")]
async fn exits_are_pushed_not_polled() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("quickexit");
    let pod = d.run_pod(pod_config.clone()).await;
    let mut stream = d
        .runtime()
        .get_container_events(k8s_cri::v1::GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config("short", &["sh", "-c", "sleep 0.3; exit 3"]),
        )
        .await;
    // The stopped event is pushed by the watcher itself, without any call from us. The
    // bound only keeps a broken daemon from hanging the test.
    let limit = common::scaled(Duration::from_secs(30));
    loop {
        let ev = tokio::time::timeout(limit, stream.message())
            .await
            .expect("a stopped event")
            .expect("stream ok")
            .expect("stream open");
        if ev.container_id == id
            && ev.container_event_type
                == k8s_cri::v1::ContainerEventType::ContainerStoppedEvent as i32
        {
            break;
        }
    }
    let log = std::fs::read_to_string(d.log_file()).unwrap();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains(&id)).collect();
    let at = |needle: &str| ours.iter().position(|l| l.contains(needle));
    let pushed = at("monitor exit pushed by its pidfd")
        .unwrap_or_else(|| panic!("no pidfd wake-up for {id}:\n{}", ours.join("\n")));
    let recorded = at("container exited")
        .unwrap_or_else(|| panic!("exit of {id} not recorded:\n{}", ours.join("\n")));
    assert!(
        pushed < recorded,
        "the exit was recorded before the pidfd woke the watcher:\n{}",
        ours.join("\n")
    );
    assert_eq!(at("polling"), None, "{}", ours.join("\n"));
    let (status, _) = d.container_status(&id).await;
    assert_eq!(status.exit_code, 3);
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}

/// The pause's monitor killed with SIGKILL: the pod turns NotReady (kubelet then recreates
/// it) and what was left of the pause is killed, without waiting for a daemon restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_pause_monitor_makes_the_pod_not_ready() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    let pod = d.run_pod(d.host_network_pod_config("pausekill")).await;
    let pause = d.pause_pid(&pod).await;
    procs::sigkill(monitor_pid(&d, &pod));
    let t0 = Instant::now();
    while common::pods::state(&d.status(&pod).await) != common::pods::not_ready() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "pod still Ready {:?} after its pause monitor was killed",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "noticed after {:?}",
        t0.elapsed()
    );
    wait_dead(pause).await;
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}

/// A monitor killed while the daemon is down: the restart reports the container as the live
/// watch would (Exited, MonitorDied, 255), not as unknown, and has killed what was left.
#[tokio::test(flavor = "multi_thread")]
async fn a_monitor_killed_while_the_daemon_is_down_is_reported_monitor_died() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("downkill");
    let pod = d.run_pod(pod_config.clone()).await;
    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config("sleeper", &["sleep", "600"]),
        )
        .await;
    let init = d.container_pid(&id).await;
    let monitor = monitor_pid(&d, &id);
    d.kill9();
    procs::sigkill(monitor);
    wait_dead(monitor).await;
    d.restart().await;
    let (status, _) = d.container_status(&id).await;
    assert_eq!(
        status.state,
        ContainerState::ContainerExited as i32,
        "{status:?}"
    );
    assert_eq!(status.reason, "MonitorDied", "{status:?}");
    assert_eq!(status.exit_code, 255, "{status:?}");
    wait_dead(init).await;
    d.remove_container(&id).await;
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}
