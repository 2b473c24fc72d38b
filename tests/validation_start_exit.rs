//! A container that exits while StartContainer records its start: the record ends Exited with
//! the real exit code, never goes back to Running, and its events come once each, in order.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::containers::container_config;
use common::{DaemonOpts, TestDaemon, assert_no_leaks};
use k8s_cri::v1::{
    ContainerEventType, ContainerState, ContainerStatusRequest, GetEventsRequest,
    StartContainerRequest,
};

const CONTAINERS: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn start_racing_an_immediate_exit_keeps_state_and_events_in_order() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("race");
    let pod = d.run_pod(pod_config.clone()).await;
    let mut stream = d
        .runtime()
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();

    let mut ids = Vec::new();
    for i in 0..CONTAINERS {
        ids.push(
            d.create_container(
                &pod,
                &pod_config,
                container_config(&format!("quick{i}"), &["sh", "-c", "exit 7"]),
            )
            .await,
        );
    }
    // All start at once on a loaded node while status calls refresh each record from its
    // exit file as fast as they can: the window where a late "Running" lands on "Exited".
    let mut tasks = Vec::new();
    for id in &ids {
        let poller = {
            let mut rt = d.runtime();
            let id = id.clone();
            tokio::spawn(async move {
                let mut states = Vec::new();
                for _ in 0..400 {
                    let s = rt
                        .container_status(ContainerStatusRequest {
                            container_id: id.clone(),
                            verbose: false,
                        })
                        .await
                        .expect("ContainerStatus")
                        .into_inner()
                        .status
                        .expect("status");
                    states.push(s.state);
                    if states
                        .iter()
                        .filter(|s| **s == ContainerState::ContainerExited as i32)
                        .count()
                        > 20
                    {
                        break;
                    }
                }
                states
            })
        };
        let starter = {
            let mut rt = d.runtime();
            let id = id.clone();
            tokio::spawn(async move {
                rt.start_container(StartContainerRequest { container_id: id })
                    .await
                    .expect("StartContainer");
            })
        };
        tasks.push((id.clone(), poller, starter));
    }
    for (id, poller, starter) in tasks {
        starter.await.expect("starter");
        let status = d.wait_exited(&id, Duration::from_secs(20)).await;
        assert_eq!(status.exit_code, 7, "{status:?}");
        assert_eq!(status.reason, "Error", "{status:?}");
        // Once Exited, a container never shows Running again.
        let states = poller.await.expect("poller");
        if let Some(first_exit) = states
            .iter()
            .position(|s| *s == ContainerState::ContainerExited as i32)
        {
            assert!(
                states[first_exit..]
                    .iter()
                    .all(|s| *s == ContainerState::ContainerExited as i32),
                "{id}: state after exit: {states:?}"
            );
        }
        let (s, _) = d.container_status(&id).await;
        assert_eq!(s.state, ContainerState::ContainerExited as i32);
    }

    // Events: each container is created once, stopped once, and never started after it
    // stopped.
    let mut events: HashMap<String, Vec<i32>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events
        .values()
        .filter(|e| e.contains(&(ContainerEventType::ContainerStoppedEvent as i32)))
        .count()
        < CONTAINERS
    {
        let ev = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("every container's events in time")
            .expect("stream ok")
            .expect("stream open");
        events
            .entry(ev.container_id)
            .or_default()
            .push(ev.container_event_type);
    }
    // Anything late (a duplicate) arrives within a moment.
    while let Ok(Ok(Some(ev))) =
        tokio::time::timeout(Duration::from_millis(1500), stream.message()).await
    {
        events
            .entry(ev.container_id)
            .or_default()
            .push(ev.container_event_type);
    }
    let created = ContainerEventType::ContainerCreatedEvent as i32;
    let started = ContainerEventType::ContainerStartedEvent as i32;
    let stopped = ContainerEventType::ContainerStoppedEvent as i32;
    for id in &ids {
        let seen = events.get(id).cloned().unwrap_or_default();
        let count = |t| seen.iter().filter(|e| **e == t).count();
        assert_eq!(count(created), 1, "{id}: {seen:?}");
        assert_eq!(count(stopped), 1, "{id}: {seen:?}");
        assert!(count(started) <= 1, "{id}: {seen:?}");
        assert_eq!(seen.last(), Some(&stopped), "{id}: {seen:?}");
    }

    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}
