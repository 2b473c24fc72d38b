//! ContainerStats / ListContainerStats answer the writable layer's usage from a cache that is
//! refreshed in the background: a file the container writes shows up within the cache period
//! (polled here), the cache does not outlive the daemon (a restart answers the real usage
//! at once), and a removed container is NotFound, not a cached answer.

mod common;

use std::time::{Duration, Instant};

use common::containers::container_config;
use common::{DaemonOpts, TestDaemon, assert_no_leaks, code_of};
use k8s_cri::v1::{
    ContainerStats, ContainerStatsFilter, ContainerStatsRequest, ListContainerStatsRequest,
};

/// 8 MiB written by the container, in the writable layer.
const FILE_BYTES: u64 = 8 << 20;

async fn stats(d: &TestDaemon, id: &str) -> ContainerStats {
    d.runtime()
        .container_stats(ContainerStatsRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("ContainerStats {id}: {e}"))
        .into_inner()
        .stats
        .expect("stats")
}

async fn listed(d: &TestDaemon, id: &str) -> Vec<ContainerStats> {
    d.runtime()
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                id: id.to_string(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats
}

fn layer_bytes(s: &ContainerStats) -> u64 {
    s.writable_layer
        .as_ref()
        .and_then(|l| l.used_bytes.as_ref())
        .map(|b| b.value)
        .unwrap_or(0)
}

/// Poll both calls until each reports at least `bytes` for the layer.
async fn wait_for_usage(d: &TestDaemon, id: &str, bytes: u64) {
    // The cache period is 10 s; the bound only keeps a broken daemon from hanging the test.
    let limit = common::scaled(Duration::from_secs(120));
    let t0 = Instant::now();
    let (mut single, mut list) = (0, 0);
    while single < bytes || list < bytes {
        assert!(
            t0.elapsed() < limit,
            "usage never reached {bytes}: ContainerStats {single}, ListContainerStats {list}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        single = layer_bytes(&stats(d, id).await);
        let all = listed(d, id).await;
        assert_eq!(all.len(), 1, "{all:?}");
        list = layer_bytes(&all[0]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writable_layer_usage_is_cached_refreshed_and_forgotten() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();
    let pod_config = d.host_network_pod_config("layerstats");
    let pod = d.run_pod(pod_config.clone()).await;
    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config("writer", &["sleep", "600"]),
        )
        .await;

    // The first answer walks the layer: nothing written yet.
    let before = stats(&d, &id).await;
    let layer = before.writable_layer.as_ref().expect("writable layer");
    assert!(layer.inodes_used.as_ref().unwrap().value >= 1, "{layer:?}");
    assert!(layer_bytes(&before) < FILE_BYTES, "{layer:?}");

    let count = (FILE_BYTES >> 20).to_string();
    d.exec_ok(
        &id,
        &[
            "dd",
            "if=/dev/zero",
            "of=/written",
            "bs=1048576",
            &format!("count={count}"),
            "conv=fsync",
        ],
    )
    .await;
    wait_for_usage(&d, &id, FILE_BYTES).await;

    // The cache is memory only: after a restart the first call walks again and sees the file.
    d.restart().await;
    assert!(layer_bytes(&stats(&d, &id).await) >= FILE_BYTES);
    assert!(layer_bytes(&listed(&d, &id).await[0]) >= FILE_BYTES);

    d.stop_container(&id, 0).await;
    d.remove_container(&id).await;
    let (code, msg) = code_of(
        d.runtime()
            .container_stats(ContainerStatsRequest {
                container_id: id.clone(),
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound, "{msg}");
    assert!(listed(&d, &id).await.is_empty());

    d.stop_and_remove(&pod).await;
    assert_no_leaks(&d).await;
}
