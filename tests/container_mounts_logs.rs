//! Mounts, log rotation, tty and shared pid namespaces of application containers.

mod common;

use std::time::Duration;

use common::containers::{container_config, parse_log, security};
use common::{DaemonOpts, TestDaemon, assert_no_leaks, procs};
use k8s_cri::v1::{
    Mount, MountPropagation, NamespaceMode, NamespaceOption, ReopenContainerLogRequest,
};

#[tokio::test(flavor = "multi_thread")]
async fn bind_mounts_readonly_and_writable() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("mounts");
    let pod = d.run_pod(pod_config.clone()).await;
    let data = d.dir().join("data");
    let config_dir = d.dir().join("config");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("setting"), "from the host\n").unwrap();
    let termination = d.dir().join("termination-log");
    std::fs::write(&termination, "").unwrap();

    let mut c = container_config(
        "mounter",
        &[
            "sh",
            "-c",
            "echo written > /data/out; echo bye > /dev/termination-log; sleep 3600",
        ],
    );
    c.mounts = vec![
        Mount {
            container_path: "/data".into(),
            host_path: data.to_string_lossy().into_owned(),
            readonly: false,
            propagation: MountPropagation::PropagationPrivate as i32,
            ..Default::default()
        },
        Mount {
            container_path: "/etc/app".into(),
            host_path: config_dir.to_string_lossy().into_owned(),
            readonly: true,
            propagation: MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        },
        Mount {
            container_path: "/dev/termination-log".into(),
            host_path: termination.to_string_lossy().into_owned(),
            ..Default::default()
        },
    ];
    let id = d.run_container(&pod, &pod_config, c).await;
    assert_eq!(
        d.exec_ok(&id, &["cat", "/etc/app/setting"]).await,
        "from the host\n"
    );
    let r = d.exec(&id, &["touch", "/etc/app/new"], 10).await.unwrap();
    assert_ne!(r.exit_code, 0, "read-only bind mount refuses writes");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        std::fs::read_to_string(data.join("out")).unwrap(),
        "written\n"
    );
    assert_eq!(std::fs::read_to_string(&termination).unwrap(), "bye\n");
    let (status, _) = d.container_status(&id).await;
    assert_eq!(status.mounts.len(), 3, "mounts reported in status");

    d.stop_and_remove(&pod).await;
    assert!(
        data.join("out").exists(),
        "host data survives the container"
    );
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_log_after_rotation_and_tty() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("rotate");
    let pod = d.run_pod(pod_config.clone()).await;
    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config(
                "ticker",
                &[
                    "sh",
                    "-c",
                    "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.05; done",
                ],
            ),
        )
        .await;
    let log = d.container_log(&pod_config, "ticker");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    d.runtime()
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .expect("ReopenContainerLog");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = parse_log(&std::fs::read_to_string(&rotated).unwrap());
    let new = parse_log(&std::fs::read_to_string(&log).expect("a new log file at the same path"));
    assert!(!old.is_empty() && !new.is_empty());
    let num = |l: &common::containers::LogLine| -> u64 {
        l.content.trim_start_matches("tick ").parse().unwrap()
    };
    assert_eq!(
        num(new.first().unwrap()),
        num(old.last().unwrap()) + 1,
        "rotation loses no line"
    );

    // A tty container: its output is logged as stdout.
    let mut tty = container_config(
        "tty",
        &["sh", "-c", "echo on a terminal; [ -t 1 ] && echo is a tty"],
    );
    tty.tty = true;
    let tty_id = d.run_container(&pod, &pod_config, tty).await;
    d.wait_exited(&tty_id, Duration::from_secs(10)).await;
    let lines = parse_log(&std::fs::read_to_string(d.container_log(&pod_config, "tty")).unwrap());
    let text: Vec<&str> = lines
        .iter()
        .map(|l| l.content.trim_end_matches('\r'))
        .collect();
    assert!(lines.iter().all(|l| l.stream == "stdout"), "{lines:?}");
    assert!(
        text.contains(&"on a terminal") && text.contains(&"is a tty"),
        "{text:?}"
    );

    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pid_namespace_modes() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let mut pod_config = d.host_network_pod_config("pids");
    // A pod-wide pid namespace (shareProcessNamespace: true).
    pod_config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .unwrap()
        .pid = NamespaceMode::Pod as i32;
    let pod = d.run_pod(pod_config.clone()).await;
    let mut shared = container_config("shared", &["sleep", "3600"]);
    security(&mut shared).namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        ..Default::default()
    });
    let shared = d.run_container(&pod, &pod_config, shared).await;
    let pause = d.pause_pid(&pod).await;
    let spid = d.container_pid(&shared).await;
    assert_eq!(
        procs::ns_link(spid, "pid"),
        procs::ns_link(pause, "pid"),
        "POD mode"
    );

    let mut target = container_config("debugger", &["sleep", "3600"]);
    security(&mut target).namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Target as i32,
        target_id: shared.clone(),
        ..Default::default()
    });
    let target = d.run_container(&pod, &pod_config, target).await;
    let tpid = d.container_pid(&target).await;
    assert_eq!(
        procs::ns_link(tpid, "pid"),
        procs::ns_link(spid, "pid"),
        "TARGET mode"
    );
    let ps = d.exec_ok(&target, &["ps", "-o", "args"]).await;
    assert!(
        ps.matches("sleep 3600").count() >= 2,
        "sees the target's processes: {ps}"
    );

    let mut host = container_config("hostpid", &["sleep", "3600"]);
    security(&mut host).namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Node as i32,
        ..Default::default()
    });
    let host = d.run_container(&pod, &pod_config, host).await;
    let hpid = d.container_pid(&host).await;
    assert_eq!(
        procs::ns_link(hpid, "pid"),
        Some(procs::self_ns("pid")),
        "NODE mode"
    );

    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}
