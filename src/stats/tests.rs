//! Real-machine tests (root): a real cgroup with a CPU-burning process in it, and this
//! process's own network namespace.

use super::*;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A cgroup created in every hierarchy we read from, with a busy child in it; killed and
/// removed on drop, even when an assertion fails.
struct BusyCgroup {
    name: String,
    dirs: Vec<PathBuf>,
    child: Option<Child>,
}

impl BusyCgroup {
    fn create() -> Self {
        let layout = CgroupLayout::host().unwrap();
        let name = format!("crius-stats-test-{:08x}", rand::random::<u32>());
        let mut mounts: Vec<PathBuf> = ["cpuacct", "memory", "pids"]
            .iter()
            .filter_map(|c| layout.v1_mount(c).map(PathBuf::from))
            .collect();
        if layout.is_unified_only() {
            mounts.extend(layout.unified_mount().map(PathBuf::from));
        }
        mounts.sort();
        mounts.dedup();
        let mut cg = BusyCgroup {
            name,
            dirs: Vec::new(),
            child: None,
        };
        for m in mounts {
            let dir = m.join(&cg.name);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            cg.dirs.push(dir);
        }
        // The child waits for a line on stdin before it execs the busy loop: v1 charges memory
        // to the cgroup a page was faulted in, so the pages must be faulted after the move.
        let child = Command::new("sh")
            .args(["-c", "read go; exec sh -c 'while :; do :; done'"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        cg.child = Some(child);
        for dir in &cg.dirs {
            let procs = dir.join("cgroup.procs");
            std::fs::write(&procs, &pid)
                .unwrap_or_else(|e| panic!("write {}: {e}", procs.display()));
        }
        let stdin = cg.child.as_mut().and_then(|c| c.stdin.as_mut()).unwrap();
        stdin.write_all(b"go\n").unwrap();
        cg
    }

    fn path(&self) -> String {
        format!("/{}", self.name)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BusyCgroup {
    fn drop(&mut self) {
        self.stop();
        for dir in &self.dirs {
            // The reaped child may take a moment to leave the cgroup.
            for _ in 0..50 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => break,
                }
            }
        }
    }
}

#[test]
fn real_cgroup_reports_busy_cpu_and_memory() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut cg = BusyCgroup::create();
    let sampler = CpuSampler::new();

    let first = cgroup_stats(&cg.path()).unwrap();
    assert_eq!(
        sampler.usage_nano_cores("c", first.timestamp, first.cpu_usage_ns.unwrap()),
        None
    );
    std::thread::sleep(Duration::from_millis(500));
    let second = cgroup_stats(&cg.path()).unwrap();
    let rate = sampler
        .usage_nano_cores("c", second.timestamp, second.cpu_usage_ns.unwrap())
        .unwrap();
    assert!(rate > 100_000_000, "busy loop used only {rate} nanocores");
    assert!(second.memory_usage_bytes.unwrap() > 0, "{second:?}");
    assert!(second.memory_working_set_bytes.is_some(), "{second:?}");
    assert!(second.pids.unwrap() >= 1, "{second:?}");

    let cri = container_stats_cri(
        k8s_cri::v1::ContainerAttributes {
            id: "c".into(),
            ..Default::default()
        },
        Some(&second),
        Some(rate),
        None,
        "/",
    );
    assert_eq!(cri.cpu.unwrap().usage_nano_cores.unwrap().value, rate);

    // Once the process is gone and the cgroup removed, the cgroup reads as NotFound.
    cg.stop();
    let dirs = std::mem::take(&mut cg.dirs);
    for dir in &dirs {
        for _ in 0..50 {
            if std::fs::remove_dir(dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    cg.dirs = dirs;
    let err = cgroup_stats(&cg.path()).unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn root_cgroup_has_cpu_usage() {
    let s = cgroup_stats("/").unwrap();
    assert!(s.cpu_usage_ns.unwrap() > 0, "{s:?}");
}

#[test]
fn own_network_namespace_shows_host_interfaces() {
    let stats = pod_network_stats(std::process::id() as i32).unwrap();
    let mut expected: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    expected.sort();
    let mut got: Vec<String> = stats.interfaces.iter().map(|i| i.name.clone()).collect();
    got.sort();
    assert_eq!(got, expected);
    assert!(!got.is_empty());
    assert!(stats.interfaces.iter().any(|i| i.rx_bytes > 0), "{stats:?}");
}

#[test]
fn exited_process_network_is_not_found() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    assert!(pod_network_stats(pid).unwrap_err().is_not_found());
}
