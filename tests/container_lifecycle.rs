//! Application containers through CRI: logs, exit codes, stop timeouts, exec, namespaces shared
//! with the pod, events, and the pod taking its containers with it.

mod common;

use std::time::{Duration, Instant};

use common::containers::{container_config, parse_log};
use common::{DaemonOpts, TestDaemon, TestNetwork, assert_no_leaks, code_of, procs};
use k8s_cri::v1::{
    ContainerEventType, ContainerFilter, ContainerState, ContainerStateValue, GetEventsRequest,
    ListContainersRequest,
};

#[tokio::test(flavor = "multi_thread")]
async fn logs_env_exit_code_and_remove() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    d.import_busybox();
    let pod_config = d.pod_config("logs");
    let pod = d.run_pod(pod_config.clone()).await;

    let long = "x".repeat(40 * 1024);
    let script = format!(
        "echo out; echo err >&2; echo $FROM_IMAGE $FROM_CONFIG; echo {long}; printf tail; exit 3"
    );
    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config("logger", &["sh", "-c", &script]),
        )
        .await;
    let status = d.wait_exited(&id, Duration::from_secs(20)).await;
    assert_eq!(status.exit_code, 3);
    assert_eq!(status.reason, "Error");
    assert!(
        status.started_at > 0 && status.finished_at >= status.started_at,
        "{status:?}"
    );
    assert_eq!(
        status.log_path,
        d.container_log(&pod_config, "logger").to_string_lossy()
    );

    let text = std::fs::read_to_string(d.container_log(&pod_config, "logger")).expect("log file");
    let lines = parse_log(&text);
    let full: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l.tag == "F")
        .map(|l| (l.stream.clone(), l.content.clone()))
        .collect();
    let first_stdout = full
        .iter()
        .find(|(s, _)| s == "stdout")
        .map(|(_, c)| c.as_str());
    assert_eq!(first_stdout, Some("out"), "{text}");
    assert!(
        full.contains(&("stderr".to_string(), "err".to_string())),
        "{text}"
    );
    assert!(
        full.contains(&("stdout".to_string(), "yes yes".to_string())),
        "env: {text}"
    );
    // The 40 KiB line arrives as partial chunks ending in a full one, and reassembles.
    let mut rebuilt = String::new();
    for l in lines.iter().filter(|l| l.stream == "stdout") {
        if l.content.starts_with('x') || (!rebuilt.is_empty() && rebuilt.len() < long.len()) {
            rebuilt.push_str(&l.content);
            if l.tag == "F" {
                break;
            }
        }
    }
    assert_eq!(rebuilt.len(), long.len(), "long line reassembled");
    assert!(
        lines.iter().filter(|l| l.tag == "P").count() >= 2,
        "partial chunks: {text}"
    );
    assert_eq!(
        lines.last().unwrap().content,
        "tail",
        "unterminated last output is kept"
    );
    let times: Vec<_> = lines
        .iter()
        .map(|l| chrono::DateTime::parse_from_rfc3339(&l.time).unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "timestamps in order"
    );

    d.remove_container(&id).await;
    d.remove_container(&id).await;
    let (code, _) = code_of(
        d.runtime()
            .container_status(k8s_cri::v1::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_honours_signal_and_timeout() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("stopper");
    let pod = d.run_pod(pod_config.clone()).await;

    // PID 1 of its own pid namespace without a handler: SIGTERM does nothing, SIGKILL after
    // the grace period does.
    let stubborn = d
        .run_container(
            &pod,
            &pod_config,
            container_config("stubborn", &["sleep", "3600"]),
        )
        .await;
    // A handler that exits cleanly on SIGTERM.
    let polite = d
        .run_container(
            &pod,
            &pod_config,
            container_config(
                "polite",
                &[
                    "sh",
                    "-c",
                    "trap 'exit 0' TERM; while :; do sleep 0.1; done",
                ],
            ),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // ListContainers filters: state, pod, label, id prefix.
    let list = |filter: ContainerFilter| {
        let mut rt = d.runtime();
        async move {
            let mut ids: Vec<String> = rt
                .list_containers(ListContainersRequest {
                    filter: Some(filter),
                })
                .await
                .expect("ListContainers")
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let mut both = vec![stubborn.clone(), polite.clone()];
    both.sort();
    let running = ContainerStateValue {
        state: ContainerState::ContainerRunning as i32,
    };
    assert_eq!(
        list(ContainerFilter {
            state: Some(running),
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        })
        .await,
        both
    );
    assert_eq!(
        list(ContainerFilter {
            label_selector: [("app".to_string(), "polite".to_string())].into(),
            ..Default::default()
        })
        .await,
        vec![polite.clone()]
    );
    assert_eq!(
        list(ContainerFilter {
            id: stubborn[..12].to_string(),
            ..Default::default()
        })
        .await,
        vec![stubborn.clone()]
    );
    assert!(
        list(ContainerFilter {
            pod_sandbox_id: "0000000000000".into(),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    let t = Instant::now();
    d.stop_container(&stubborn, 2).await;
    let took = t.elapsed();
    let exited = ContainerStateValue {
        state: ContainerState::ContainerExited as i32,
    };
    assert_eq!(
        list(ContainerFilter {
            state: Some(exited),
            ..Default::default()
        })
        .await,
        vec![stubborn.clone()]
    );
    let (s, _) = d.container_status(&stubborn).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 137, "killed after the grace period: {s:?}");
    assert!(
        took >= Duration::from_secs(2),
        "waited the grace period: {took:?}"
    );

    let t = Instant::now();
    d.stop_container(&polite, 30).await;
    let (s, _) = d.container_status(&polite).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "did not wait the full grace period"
    );

    // Stop is idempotent.
    d.stop_container(&polite, 30).await;
    d.stop_and_remove(&pod).await;
    let left = d
        .runtime()
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(
        left.is_empty(),
        "RemovePodSandbox removes its containers: {left:?}"
    );
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_output_exit_code_and_timeout() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    d.import_busybox();
    let pod_config = d.pod_config("execpod");
    let pod = d.run_pod(pod_config.clone()).await;
    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config("sleeper", &["sleep", "3600"]),
        )
        .await;

    let r = d
        .exec(&id, &["sh", "-c", "echo hi; echo bye >&2; exit 7"], 10)
        .await
        .expect("exec");
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"hi\n"[..], &b"bye\n"[..], 7)
    );

    // The container shares the pod's hostname, DNS and network namespace.
    assert_eq!(d.exec_ok(&id, &["hostname"]).await.trim(), "execpod");
    assert!(
        d.exec_ok(&id, &["cat", "/etc/resolv.conf"])
            .await
            .contains("nameserver")
    );
    let cpid = d.container_pid(&id).await;
    let ppid = d.pause_pid(&pod).await;
    assert_eq!(procs::ns_link(cpid, "net"), procs::ns_link(ppid, "net"));
    assert_eq!(procs::ns_link(cpid, "uts"), procs::ns_link(ppid, "uts"));
    assert_eq!(procs::ns_link(cpid, "ipc"), procs::ns_link(ppid, "ipc"));
    assert_ne!(
        procs::ns_link(cpid, "pid"),
        procs::ns_link(ppid, "pid"),
        "CONTAINER pid mode"
    );

    let t = Instant::now();
    let (code, msg) = code_of(d.exec(&id, &["sleep", "30"], 1).await);
    assert_eq!(code, tonic::Code::DeadlineExceeded, "{msg}");
    assert!(t.elapsed() < Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leftover = d.exec_ok(&id, &["ps", "-o", "args"]).await;
    assert!(
        !leftover.contains("sleep 30"),
        "timed-out exec killed: {leftover}"
    );

    let (code, _) = code_of(d.exec(&id, &[], 1).await);
    assert_eq!(code, tonic::Code::InvalidArgument);
    d.stop_container(&id, 0).await;
    let (code, _) = code_of(d.exec(&id, &["true"], 1).await);
    assert_eq!(code, tonic::Code::FailedPrecondition);
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_follow_the_lifecycle() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("events");
    let pod = d.run_pod(pod_config.clone()).await;
    let mut stream = d
        .runtime()
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config("brief", &["sh", "-c", "sleep 0.5"]),
        )
        .await;
    d.wait_exited(&id, Duration::from_secs(10)).await;
    d.remove_container(&id).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("event in time")
            .expect("stream ok")
            .expect("stream open");
        if ev.container_id == id {
            seen.push(ev.container_event_type);
        }
    }
    assert_eq!(
        seen,
        vec![
            ContainerEventType::ContainerCreatedEvent as i32,
            ContainerEventType::ContainerStartedEvent as i32,
            ContainerEventType::ContainerStoppedEvent as i32,
            ContainerEventType::ContainerDeletedEvent as i32,
        ]
    );
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_codes() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("bad");
    let pod = d.run_pod(pod_config.clone()).await;
    let mut rt = d.runtime();
    let create = |pod: &str, config| k8s_cri::v1::CreateContainerRequest {
        pod_sandbox_id: pod.to_string(),
        config: Some(config),
        sandbox_config: Some(pod_config.clone()),
    };
    let mut no_image = container_config("noimage", &["true"]);
    no_image.image = None;
    let (code, _) = code_of(rt.create_container(create(&pod, no_image)).await);
    assert_eq!(code, tonic::Code::InvalidArgument);
    let mut missing = container_config("missing", &["true"]);
    missing.image.as_mut().unwrap().image = "localhost/nope:1".into();
    let (code, _) = code_of(rt.create_container(create(&pod, missing)).await);
    assert_eq!(code, tonic::Code::NotFound);
    let (code, _) = code_of(
        rt.create_container(create("0123456789ab", container_config("x", &["true"])))
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    let (code, _) = code_of(
        rt.start_container(k8s_cri::v1::StartContainerRequest {
            container_id: "0123456789ab".into(),
        })
        .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    // Same name twice in one pod: the second is refused, nothing leaks from it.
    let first = d
        .create_container(
            &pod,
            &pod_config,
            container_config("twin", &["sleep", "60"]),
        )
        .await;
    let (code, msg) = code_of(
        rt.create_container(create(&pod, container_config("twin", &["sleep", "60"])))
            .await,
    );
    assert_eq!(code, tonic::Code::AlreadyExists, "{msg}");
    assert!(msg.contains(&first), "{msg}");
    // A created container cannot be started twice.
    d.start_container(&first).await;
    let (code, _) = code_of(
        rt.start_container(k8s_cri::v1::StartContainerRequest {
            container_id: first.clone(),
        })
        .await,
    );
    assert_eq!(code, tonic::Code::FailedPrecondition);
    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}
