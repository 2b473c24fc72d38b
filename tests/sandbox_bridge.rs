//! A pod on a CNI bridge network: addressing, reachability, in-pod view (lo, hostname,
//! resolv.conf), status fields, ListPodSandbox filters, and release of network resources.

mod common;

use std::collections::HashMap;

use common::pods::{network_mode, not_ready, pod_ip, ready, state};
use common::{DaemonOpts, TestDaemon, TestNetwork, assert_no_leaks, code_of, procs, run_ok};
use k8s_cri::v1::{NamespaceMode, PodSandboxFilter, PodSandboxStateValue, PodSandboxStatusRequest};

fn filter_by_id(id: &str) -> PodSandboxFilter {
    PodSandboxFilter {
        id: id.to_string(),
        ..Default::default()
    }
}

fn filter_by_state(state: i32) -> PodSandboxFilter {
    PodSandboxFilter {
        state: Some(PodSandboxStateValue { state }),
        ..Default::default()
    }
}

fn filter_by_labels(labels: &[(&str, &str)]) -> PodSandboxFilter {
    PodSandboxFilter {
        label_selector: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    }
}

fn ids(pods: &[k8s_cri::v1::PodSandbox]) -> Vec<String> {
    let mut v: Vec<String> = pods.iter().map(|p| p.id.clone()).collect();
    v.sort();
    v
}

fn only(id: &str) -> Vec<String> {
    vec![id.to_string()]
}

/// Run `args` inside the pod's namespaces of `kinds` ("-n", "-u") from the host's tools.
fn nsenter(pid: i32, kinds: &[&str], args: &[&str]) -> String {
    let target = pid.to_string();
    let mut all = vec!["-t", target.as_str()];
    all.extend_from_slice(kinds);
    all.push("--");
    all.extend_from_slice(args);
    run_ok("nsenter", &all)
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_pod_lifecycle() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    let config = d.pod_config("web");
    let id = d.run_pod(config.clone()).await;

    // --- status ---
    let st = d.status(&id).await;
    let s = st.status.as_ref().expect("status");
    assert_eq!(state(&st), ready(), "pod not Ready: {s:?}");
    assert_eq!(s.metadata, config.metadata);
    assert_eq!(network_mode(&st), NamespaceMode::Pod as i32);
    assert_eq!(s.labels, config.labels, "labels must come back unchanged");
    assert_eq!(
        s.annotations, config.annotations,
        "annotations must come back unchanged"
    );
    let ip = pod_ip(&st);
    assert!(
        net.contains(&ip),
        "pod IP {ip:?} is not in the test subnet {}",
        net.subnet()
    );
    assert!(!st.info.is_empty(), "verbose status returned no info");
    for (k, v) in &st.info {
        serde_json::from_str::<serde_json::Value>(v)
            .unwrap_or_else(|e| panic!("verbose info {k:?} is not JSON ({e}): {v}"));
    }
    assert!(
        net.allocated_ips().contains(&ip),
        "host-local has no allocation for {ip}"
    );
    assert_eq!(
        net.bridge_ports().len(),
        1,
        "expected one veth on the bridge"
    );

    // --- the pod as seen from inside ---
    let pid = d.pause_pid(&id).await;
    for private in ["net", "uts", "ipc", "mnt"] {
        assert_ne!(
            procs::ns_link(pid, private).as_deref(),
            Some(procs::self_ns(private).as_str()),
            "pause must have its own {private} namespace"
        );
    }
    run_ok("ping", &["-c", "1", "-W", "2", &ip]);
    let lo = nsenter(pid, &["-n"], &["ip", "-o", "link", "show", "lo"]);
    let flags = lo
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map(|(f, _)| f)
        .unwrap_or_default();
    assert!(
        flags.split(',').any(|f| f == "UP"),
        "lo is not up in the pod: {lo}"
    );
    let addrs = nsenter(pid, &["-n"], &["ip", "-o", "-4", "addr", "show"]);
    assert!(
        addrs.contains(&format!("{ip}/")),
        "pod IP {ip} not on an interface in the pod:\n{addrs}"
    );
    let hostname = nsenter(pid, &["-u"], &["uname", "-n"]);
    assert_eq!(hostname.trim(), config.hostname);
    // The pause mounts nothing but /dev: no procfs a container of the pod could reach through
    // /proc/1/root, and the pod files live on the host for the app containers to bind.
    assert!(
        procs::read_in_root(pid, "/proc/self/status").is_err(),
        "the pause must have no /proc"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{pid}/root/pause")).is_file(),
        "the pause's root is its image"
    );
    let rootfs = d.root().join("sandboxes").join(&id).join("rootfs");
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(&format!(" {} ", rootfs.display())),
        "the pause's rootfs is mounted in its own mount namespace only"
    );
    let resolv_path = d.root().join("sandboxes").join(&id).join("resolv.conf");
    let resolv = std::fs::read_to_string(&resolv_path).expect("read pod resolv.conf");
    let dns = config.dns_config.as_ref().expect("dns config");
    for server in &dns.servers {
        assert!(
            resolv
                .lines()
                .any(|l| l.trim() == format!("nameserver {server}")),
            "resolv.conf lacks nameserver {server}:\n{resolv}"
        );
    }
    let search = resolv
        .lines()
        .find_map(|l| l.strip_prefix("search "))
        .unwrap_or_else(|| panic!("resolv.conf has no search line:\n{resolv}"));
    assert_eq!(
        search.split_whitespace().collect::<Vec<_>>(),
        dns.searches,
        "search domains (order matters)"
    );
    assert!(
        resolv.contains("ndots:5"),
        "resolv.conf lacks options ndots:5:\n{resolv}"
    );

    // --- ListPodSandbox filters, with a second pod to tell them apart ---
    let other = d.run_pod(d.pod_config("other")).await;
    let mut both = vec![id.clone(), other.clone()];
    both.sort();
    assert_eq!(ids(&d.list_pods(None).await), both);
    assert_eq!(ids(&d.list_pods(Some(filter_by_id(&id))).await), only(&id));
    assert_eq!(
        ids(&d.list_pods(Some(filter_by_state(ready()))).await),
        both
    );
    assert!(
        d.list_pods(Some(filter_by_state(not_ready())))
            .await
            .is_empty()
    );
    assert_eq!(
        ids(&d.list_pods(Some(filter_by_labels(&[("app", "web")]))).await),
        only(&id)
    );
    assert_eq!(
        ids(&d
            .list_pods(Some(filter_by_labels(&[
                ("app", "web"),
                ("io.kubernetes.pod.namespace", "crius-test"),
            ])))
            .await),
        only(&id)
    );
    assert!(
        d.list_pods(Some(filter_by_labels(&[("app", "nope")])))
            .await
            .is_empty()
    );
    let listed = d.list_pods(Some(filter_by_id(&id))).await;
    assert_eq!(listed[0].metadata, config.metadata);
    assert_eq!(listed[0].labels, config.labels);
    assert_eq!(listed[0].annotations, config.annotations);
    assert!(listed[0].created_at > 0);

    // --- stop releases the network ---
    d.stop_pod(&id).await;
    let st = d.status(&id).await;
    assert_eq!(state(&st), not_ready());
    assert!(
        !net.allocated_ips().contains(&ip),
        "IP {ip} still allocated after StopPodSandbox"
    );
    assert_eq!(
        net.bridge_ports().len(),
        1,
        "the stopped pod's veth is still on the bridge"
    );
    assert!(
        procs::wait_gone(pid, std::time::Duration::from_secs(10)),
        "pause {pid} still running after StopPodSandbox"
    );
    assert_eq!(
        ids(&d.list_pods(Some(filter_by_state(not_ready()))).await),
        only(&id)
    );
    assert_eq!(
        ids(&d.list_pods(Some(filter_by_state(ready()))).await),
        only(&other)
    );
    // Filters combine: this id is not Ready.
    let combined = PodSandboxFilter {
        id: id.clone(),
        state: Some(PodSandboxStateValue { state: ready() }),
        ..Default::default()
    };
    assert!(d.list_pods(Some(combined)).await.is_empty());

    d.remove_pod(&id).await;
    let (code, msg) = code_of(
        d.runtime()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound, "{msg}");
    d.stop_and_remove(&other).await;
    assert!(net.bridge_ports().is_empty());
    assert_no_leaks(&d).await;
}
