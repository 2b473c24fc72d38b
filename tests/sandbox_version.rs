//! Version and Status: identity of the runtime and readiness conditions.

mod common;

use std::time::{Duration, Instant};

use common::{DaemonOpts, TestDaemon, TestNetwork};
use k8s_cri::v1::{StatusRequest, VersionRequest};

#[tokio::test(flavor = "multi_thread")]
async fn version_names_crius_and_cri_v1() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    let v = d
        .runtime()
        .version(VersionRequest {
            version: "v1".to_string(),
        })
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(v.runtime_name, "crius");
    assert_eq!(v.runtime_api_version, "v1");
    assert!(
        !v.runtime_version.is_empty(),
        "runtime_version is empty: {v:?}"
    );
    assert!(!v.version.is_empty(), "version is empty: {v:?}");
}

/// (RuntimeReady, NetworkReady) conditions as (status, reason) pairs.
async fn conditions(d: &TestDaemon) -> ((bool, String), (bool, String)) {
    let s = d
        .runtime()
        .status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let conds = s.status.expect("status.status").conditions;
    let find = |t: &str| {
        let c = conds
            .iter()
            .find(|c| c.r#type == t)
            .unwrap_or_else(|| panic!("no {t} condition in {conds:?}"));
        (c.status, format!("{}: {}", c.reason, c.message))
    };
    (find("RuntimeReady"), find("NetworkReady"))
}

#[tokio::test(flavor = "multi_thread")]
async fn network_becomes_ready_when_a_conflist_appears() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    let ((runtime_ready, why), (network_ready, reason)) = conditions(&d).await;
    assert!(runtime_ready, "RuntimeReady is false: {why}");
    assert!(
        !network_ready,
        "NetworkReady is true with an empty conf dir"
    );
    assert!(
        reason.trim_matches([':', ' ']).len() > 1,
        "NetworkReady=false must say why, got {reason:?}"
    );

    // No restart: the daemon must notice the new config by itself.
    let net = TestNetwork::new();
    d.install_network(&net);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ((runtime_ready, _), (network_ready, reason)) = conditions(&d).await;
        assert!(runtime_ready);
        if network_ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "NetworkReady still false 15 s after writing a conflist: {reason}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    common::assert_no_leaks(&d).await;
}
