//! Many RunPodSandbox calls at once: distinct pods and addresses, and one pod per name.

mod common;

use std::collections::HashSet;

use common::pods::{pod_ip, ready, state};
use common::{DaemonOpts, TestDaemon, TestNetwork, assert_no_leaks};
use k8s_cri::v1::{PodSandboxConfig, RunPodSandboxRequest};
use tokio::task::JoinSet;
use tonic::Code;

const PODS: usize = 20;
const DUPLICATES: usize = 5;

/// Start RunPodSandbox for every config at once; results in config order.
async fn run_all(
    d: &TestDaemon,
    configs: Vec<PodSandboxConfig>,
) -> Vec<Result<String, tonic::Status>> {
    let mut set = JoinSet::new();
    for (i, config) in configs.into_iter().enumerate() {
        let mut rt = d.runtime();
        set.spawn(async move {
            let r = rt
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                })
                .await
                .map(|r| r.into_inner().pod_sandbox_id);
            (i, r)
        });
    }
    let mut results: Vec<(usize, Result<String, tonic::Status>)> = Vec::new();
    while let Some(joined) = set.join_next().await {
        results.push(joined.expect("RunPodSandbox task panicked"));
    }
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<_> = results.into_iter().map(|(_, r)| r).collect();
    for id in results.iter().flatten() {
        d.track(id);
    }
    results
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_pods_in_parallel() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    let configs: Vec<PodSandboxConfig> = (0..PODS)
        .map(|i| d.pod_config(&format!("par-{i}")))
        .collect();
    let results = run_all(&d, configs.clone()).await;
    let ids: Vec<String> = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("RunPodSandbox par-{i}: {e}")))
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        PODS,
        "ids not distinct: {ids:?}"
    );

    let mut ips = HashSet::new();
    for id in &ids {
        let st = d.status(id).await;
        assert_eq!(state(&st), ready(), "pod {id} not Ready");
        let ip = pod_ip(&st);
        assert!(net.contains(&ip), "pod {id} has IP {ip:?}");
        assert!(ips.insert(ip.clone()), "IP {ip} given to two pods");
    }
    assert_eq!(d.list_pods(None).await.len(), PODS);
    assert_eq!(net.bridge_ports().len(), PODS);

    // The same metadata again: the existing pod, or AlreadyExists; never a second pod.
    match d
        .runtime()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(configs[0].clone()),
            runtime_handler: String::new(),
        })
        .await
    {
        Ok(r) => {
            let again = r.into_inner().pod_sandbox_id;
            d.track(&again);
            assert_eq!(
                again, ids[0],
                "a second pod was created for the same metadata"
            );
        }
        Err(s) => assert_eq!(
            s.code(),
            Code::AlreadyExists,
            "duplicate RunPodSandbox: {s}"
        ),
    }
    assert_eq!(d.list_pods(None).await.len(), PODS);

    let mut set = JoinSet::new();
    for id in ids {
        let mut rt = d.runtime();
        set.spawn(async move {
            rt.stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}"));
            rt.remove_pod_sandbox(k8s_cri::v1::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}"));
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.expect("stop/remove task panicked");
    }
    assert_no_leaks(&d).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_duplicates_create_one_pod() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    let config = d.pod_config("dup");
    let results = run_all(&d, vec![config; DUPLICATES]).await;
    let ok: HashSet<&String> = results.iter().flatten().collect();
    assert_eq!(
        ok.len(),
        1,
        "{DUPLICATES} identical RunPodSandbox calls must yield exactly one pod id: {results:?}"
    );
    let pods = d.list_pods(None).await;
    assert_eq!(pods.len(), 1, "pods listed: {pods:?}");
    let id = ok.into_iter().next().expect("one id").clone();
    assert_eq!(pods[0].id, id);
    assert_eq!(net.allocated_ips().len(), 1, "more than one IP allocated");
    d.stop_and_remove(&id).await;
    assert_no_leaks(&d).await;
}
