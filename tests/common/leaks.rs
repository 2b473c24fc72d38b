//! "The node is as it was": after a test stops and removes its pods (or a RunPodSandbox failed),
//! nothing of them may remain.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::daemon::TestDaemon;
use super::{cgroups, mounts, network, procs};

/// Teardown may finish a moment after the RPC returns (a process being reaped); give it this
/// long before calling anything a leak.
const SETTLE: Duration = Duration::from_secs(10);

/// Panic with every leak found, after waiting up to SETTLE for them to go away.
pub async fn assert_no_leaks(d: &TestDaemon) {
    let deadline = Instant::now() + super::scaled(SETTLE);
    loop {
        let leaks = find_leaks(d).await;
        if leaks.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("leaks after teardown:\n  - {}", leaks.join("\n  - "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Everything left of removed pods, one line per problem.
pub async fn find_leaks(d: &TestDaemon) -> Vec<String> {
    let mut leaks = Vec::new();

    // The daemon must not list anything either (only when it is running).
    if d.is_running() {
        for p in d.list_pods(None).await {
            leaks.push(format!("sandbox still listed: {} {:?}", p.id, p.metadata));
        }
    }

    for m in mounts::mounts_under(d.dir()) {
        // The test's own small disk (DaemonOpts::small_disk) is the harness's, not a leak.
        if Some(&m) != d.disk().as_ref() {
            leaks.push(format!("mount: {}", m.display()));
        }
    }

    for dir in [
        d.state().join("netns"),
        d.root().join("sandboxes"),
        d.root().join("containers"),
        d.state().join("monitors"),
        // The daemon keeps monitor dirs under a short name (unix socket paths are limited).
        d.state().join("m"),
        d.state().join("runtime"),
    ] {
        for entry in dir_entries(&dir) {
            leaks.push(format!("left in {}: {entry}", dir.display()));
        }
    }

    if let Some(net) = d.network_info() {
        for ip in network::allocated_ips(&net.ipam_dir) {
            leaks.push(format!("IP still allocated by host-local: {ip}"));
        }
        if Path::new("/sys/class/net").join(&net.bridge).exists() {
            let out = std::process::Command::new("ip")
                .args(["-o", "link", "show", "master", &net.bridge])
                .output()
                .expect("run ip link");
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                leaks.push(format!("interface on bridge {}: {l}", net.bridge));
            }
        }
    }

    let daemon_pid = d.is_running().then(|| d.pid());
    for pid in procs::processes_of_root(&d.token()) {
        if Some(pid) != daemon_pid && procs::is_alive(pid) {
            leaks.push(format!("process {pid}: {}", procs::cmdline(pid)));
        }
    }

    for id in d.tracked_pods() {
        let short = &id[..id.len().min(12)];
        for pid in procs::processes_in_cgroup_named(short) {
            if procs::is_alive(pid) {
                leaks.push(format!(
                    "process {pid} in a cgroup of pod {id}: {}",
                    procs::cmdline(pid)
                ));
            }
        }
        for dir in cgroups::dirs_named(short) {
            leaks.push(format!("cgroup of pod {id}: {}", dir.display()));
        }
    }
    // Pods given this daemon's cgroup parent: the parent itself may stay (kubelet owns it),
    // pod cgroups under it may not.
    for parent in cgroups::dirs_at(&d.cgroup_parent()) {
        for child in cgroups::children(&parent) {
            leaks.push(format!("pod cgroup: {}", child.display()));
        }
        for pid in cgroups::procs(&parent) {
            leaks.push(format!("process {pid} in {}", parent.display()));
        }
    }

    leaks
}

/// Names in `dir` ("" list when it does not exist).
fn dir_entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
