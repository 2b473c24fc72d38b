//! Real-process tests of `crius monitor` and its daemon-side client (root only: they create
//! namespaces and cgroups). Containers run a static busybox copied into a temp rootfs.

use crius::monitor::{
    ContainerStatus, MonitorClient, MonitorConfig, MonitorError, Standby, cleanup_orphan,
    spawn_create,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BUSYBOX: &str = "/bin/busybox";
const CGROUP_PARENT: &str = "crius-test";
const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;
const EXE_OVERRIDE: &str = "CRIUS_TEST_MONITOR_EXE";
/// The monitor's resident-set budget (checked for release builds: debug code is several times
/// larger and spread out).
const RSS_BUDGET_KIB: u64 = 2048;

/// Fails the test unless it can run (a test that cannot run must not pass).
fn require_root_and_busybox() {
    assert!(
        nix::unistd::geteuid().is_root() && Path::new(BUSYBOX).exists(),
        "this test needs root and {BUSYBOX} (run hack/install-deps as root)"
    );
}

/// One container's bundle, monitor dir and runtime root, removed (with anything still
/// running) when dropped, even if the test failed halfway.
struct Fixture {
    id: String,
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let id = format!("t-{name}-{}", std::process::id());
        let tmp = tempfile::Builder::new().prefix("crm").tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("bundle/rootfs")).unwrap();
        std::fs::copy(BUSYBOX, tmp.path().join("bundle/rootfs/busybox")).unwrap();
        Self { id, tmp }
    }

    fn bundle(&self) -> PathBuf {
        self.tmp.path().join("bundle")
    }
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("m")
    }
    fn runtime_root(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    /// The crius binary under test; CRIUS_TEST_MONITOR_EXE may name a release build, which
    /// also turns the monitor's memory budget into an assertion.
    fn exe() -> PathBuf {
        std::env::var_os(EXE_OVERRIDE)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_crius")))
    }
    fn config(&self) -> MonitorConfig {
        MonitorConfig {
            id: self.id.clone(),
            bundle: self.bundle(),
            dir: self.dir(),
            runtime_root: self.runtime_root(),
            exe: Self::exe(),
            stdio: Default::default(),
            start: false,
            own_cgroup: None,
        }
    }
    fn client(&self) -> MonitorClient {
        MonitorClient::new(&self.dir())
    }
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        ["freezer", "pids", "memory", "cpu"]
            .iter()
            .map(|c| {
                Path::new("/sys/fs/cgroup")
                    .join(c)
                    .join(CGROUP_PARENT)
                    .join(&self.id)
            })
            .collect()
    }
    fn assert_cleaned(&self) {
        assert!(
            !self.runtime_root().join(&self.id).exists(),
            "libcontainer state dir left behind"
        );
        for d in self.cgroup_dirs() {
            assert!(!d.exists(), "cgroup {} left behind", d.display());
        }
    }

    /// Writes config.json: `args` as the process, with or without a pid namespace.
    fn write_spec(&self, args: &[&str], pid_ns: bool) {
        let mut namespaces = vec![
            json!({"type": "ipc"}),
            json!({"type": "uts"}),
            json!({"type": "mount"}),
            json!({"type": "network"}),
        ];
        if pid_ns {
            namespaces.push(json!({"type": "pid"}));
        }
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/"],
                "cwd": "/",
                "noNewPrivileges": true,
                // libcontainer writes this into its caller: the helper, never the monitor.
                "oomScoreAdj": 500
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "monitor-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=1m"]}
            ],
            "linux": {
                "namespaces": namespaces,
                "cgroupsPath": format!("/{CGROUP_PARENT}/{}", self.id)
            }
        });
        std::fs::write(
            self.bundle().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(pid) = self.client().monitor_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::process::Command::new(Self::exe())
            .args([
                "monitor",
                "--delete-only",
                "--id",
                &self.id,
                "--runtime-root",
            ])
            .arg(self.runtime_root())
            .status();
        for d in self.cgroup_dirs() {
            let _ = std::fs::remove_dir(&d);
            // The shared parent goes with the last test (rmdir fails while others use it).
            let _ = d.parent().map(std::fs::remove_dir);
        }
    }
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_owned())
}

fn rss_kib(pid: i32) -> u64 {
    let v = status_field(pid, "VmRSS:").unwrap();
    v.split_whitespace().next().unwrap().parse().unwrap()
}

fn oom_score_adj(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn create_start_sigterm_records_143() {
    require_root_and_busybox();
    let f = Fixture::new("term");
    // Without a pid namespace: a namespace's init ignores SIGTERM unless it handles it.
    f.write_spec(&["/busybox", "sleep", "1000"], false);
    let created = spawn_create(&f.config()).await.expect("create");
    let client = f.client();

    let state = client.state().await.unwrap();
    assert_eq!(state.status, ContainerStatus::Created);
    assert_eq!(state.pid, created.init_pid);
    assert!(Path::new(&format!("/proc/{}", created.init_pid)).exists());
    // init is handed from the helper to the monitor, which reaps it. The monitor reports the
    // container created as soon as the helper replied, so the helper may still be exiting.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while status_field(created.init_pid, "PPid:").unwrap() != created.monitor_pid.to_string() {
        assert!(
            std::time::Instant::now() < deadline,
            "init never became the monitor's child"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The launcher that spawned the monitor is gone: the monitor was reparented away from us.
    let ppid = status_field(created.monitor_pid, "PPid:").unwrap();
    assert_ne!(ppid, std::process::id().to_string());
    assert_eq!(client.monitor_pid(), Some(created.monitor_pid));

    // The spec's oom_score_adj went to the helper, not to the long-lived monitor.
    assert_eq!(
        oom_score_adj(created.monitor_pid),
        oom_score_adj(std::process::id() as i32)
    );
    let created_rss = rss_kib(created.monitor_pid);

    client.start().await.expect("start");
    client.start().await.expect("start is idempotent");
    let state = client.state().await.unwrap();
    assert_eq!(state.status, ContainerStatus::Running);
    assert!(state.started_at >= state.created_at && state.created_at > 0);
    let serving_rss = rss_kib(created.monitor_pid);
    eprintln!(
        "monitor VmRSS: {created_rss} KiB after create, {serving_rss} KiB after start+state ({})",
        Fixture::exe().display()
    );
    if std::env::var_os(EXE_OVERRIDE).is_some() {
        assert!(
            serving_rss < RSS_BUDGET_KIB,
            "monitor RSS {serving_rss} KiB"
        );
    }

    // Stopping the daemon's side must not stop the monitor or the container.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(created.monitor_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        client.state().await.unwrap().status,
        ContainerStatus::Running
    );

    client.kill(SIGTERM, false).await.expect("kill");
    let exit = client
        .wait_exited(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("exited");
    assert_eq!(exit.exit_code, 143);
    assert_eq!(exit.signal, Some(SIGTERM));
    assert_eq!(exit.cleanup_error, None);
    let state = client.state().await.unwrap();
    assert_eq!(state.status, ContainerStatus::Exited);
    assert_eq!(state.exit_code, Some(143));
    // A kill after the exit is a no-op, a start an error.
    client.kill(SIGKILL, true).await.unwrap();
    assert!(matches!(
        client.start().await,
        Err(MonitorError::Exited { .. })
    ));
    f.assert_cleaned();
    assert!(!f.dir().join(crius::monitor::SOCKET).exists());
}

#[tokio::test]
async fn sigkill_in_pid_namespace_records_137() {
    require_root_and_busybox();
    let f = Fixture::new("kill");
    f.write_spec(&["/busybox", "sleep", "1000"], true);
    spawn_create(&f.config()).await.expect("create");
    let client = f.client();
    client.start().await.unwrap();
    client.kill(SIGKILL, false).await.unwrap();
    let exit = client
        .wait_exited(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((exit.exit_code, exit.signal), (137, Some(SIGKILL)));
    f.assert_cleaned();
}

#[tokio::test]
async fn own_exit_code_is_recorded() {
    require_root_and_busybox();
    let f = Fixture::new("exit3");
    f.write_spec(&["/busybox", "sh", "-c", "exit 3"], true);
    spawn_create(&f.config()).await.expect("create");
    let client = f.client();
    client.start().await.unwrap();
    let exit = client
        .wait_exited(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((exit.exit_code, exit.signal), (3, None));
    assert!(exit.finished_at >= exit.started_at && exit.started_at > 0);
    f.assert_cleaned();
}

#[tokio::test]
async fn start_with_create_runs_the_process_at_once() {
    require_root_and_busybox();
    let f = Fixture::new("cstart");
    f.write_spec(&["/busybox", "sh", "-c", "exit 5"], true);
    let mut cfg = f.config();
    cfg.start = true;
    spawn_create(&cfg).await.expect("create and start");
    let client = f.client();
    // Nobody called start: the process ran on its own.
    let exit = client
        .wait_exited(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((exit.exit_code, exit.signal), (5, None));
    assert!(exit.started_at > 0 && exit.finished_at >= exit.started_at);
    f.assert_cleaned();
}

/// Alive and not a zombie.
fn running(pid: u32) -> bool {
    status_field(pid as i32, "State:").is_some_and(|s| !s.starts_with('Z'))
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Creates and starts (through `standby`) a container that exits with `code`, and checks that
/// exit and the cleanup.
async fn run_to_exit(standby: &std::sync::Arc<Standby>, name: &str, code: i32) {
    let f = Fixture::new(name);
    f.write_spec(&["/busybox", "sh", "-c", &format!("exit {code}")], true);
    let mut cfg = f.config();
    cfg.start = true;
    standby
        .prepare_create(&cfg)
        .expect("prepare")
        .go()
        .await
        .expect("create and start");
    let exit = f.client().wait_exited(Duration::from_secs(10)).await;
    assert_eq!(exit.unwrap().unwrap().exit_code, code);
    f.assert_cleaned();
}

#[tokio::test]
async fn the_standby_monitor_creates_and_is_replaced() {
    require_root_and_busybox();
    let standby = Standby::new(Fixture::exe());
    standby.refill();
    wait_for("a standby monitor", || standby.spare_pid().is_some()).await;
    let first = standby.spare_pid().unwrap();

    run_to_exit(&standby, "standby1", 4).await;
    // The standby was the launcher of that create: it reported and exited.
    wait_for("the used standby to exit", || !running(first)).await;

    // A new one was started once the create was over; a dead one is not used.
    wait_for("the next standby", || {
        standby.spare_pid().is_some_and(|p| p != first)
    })
    .await;
    let second = standby.spare_pid().unwrap();
    assert!(running(second));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the killed standby to die", || !running(second)).await;
    run_to_exit(&standby, "standby2", 6).await;

    // An unused standby dies with its owner and makes nothing.
    wait_for("a third standby", || {
        standby.spare_pid().is_some_and(|p| p != second)
    })
    .await;
    let third = standby.spare_pid().unwrap();
    drop(standby);
    wait_for("the dropped standby to die", || !running(third)).await;
}

#[tokio::test]
async fn kill_all_reaches_every_process_and_leftovers_are_removed() {
    require_root_and_busybox();
    let f = Fixture::new("all");
    // No pid namespace: the background sleep would outlive init if nobody killed it.
    f.write_spec(
        &[
            "/busybox",
            "sh",
            "-c",
            "/busybox sleep 1000 & exec /busybox sleep 1000",
        ],
        false,
    );
    spawn_create(&f.config()).await.expect("create");
    let client = f.client();
    client.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let procs = std::fs::read_to_string(f.cgroup_dirs()[0].join("cgroup.procs")).unwrap();
    assert_eq!(procs.lines().count(), 2, "{procs}");
    client.kill(SIGKILL, true).await.unwrap();
    let exit = client
        .wait_exited(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.exit_code, 137);
    f.assert_cleaned();
}

#[tokio::test]
async fn killing_a_created_container_cleans_up() {
    require_root_and_busybox();
    let f = Fixture::new("created");
    f.write_spec(&["/busybox", "sleep", "1000"], true);
    spawn_create(&f.config()).await.expect("create");
    let client = f.client();
    client.kill(SIGKILL, true).await.unwrap();
    let exit = client
        .wait_exited(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.exit_code, 137);
    assert_eq!(exit.started_at, 0);
    f.assert_cleaned();
}

#[tokio::test]
async fn failures_report_the_cause_and_leave_nothing() {
    require_root_and_busybox();
    // No config.json at all.
    let f = Fixture::new("nospec");
    let err = spawn_create(&f.config()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MonitorError::CreateFailed { .. }), "{err:?}");
    assert!(text.contains("config.json"), "{text}");
    assert!(!f.dir().exists(), "monitor dir left behind");
    f.assert_cleaned();

    // A process that does not exist in the rootfs.
    let f = Fixture::new("noexec");
    f.write_spec(&["/no-such-binary"], true);
    let err = spawn_create(&f.config()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no-such-binary"), "{text}");
    assert!(!f.dir().exists(), "monitor dir left behind");
    f.assert_cleaned();

    // An invalid id never reaches libcontainer.
    let f = Fixture::new("badid");
    let mut cfg = f.config();
    cfg.id = "../escape".into();
    assert!(matches!(
        spawn_create(&cfg).await,
        Err(MonitorError::InvalidConfig(_))
    ));
}

#[tokio::test]
async fn orphaned_container_is_deleted_without_its_monitor() {
    require_root_and_busybox();
    let f = Fixture::new("orphan");
    f.write_spec(&["/busybox", "sleep", "1000"], true);
    let created = spawn_create(&f.config()).await.expect("create");
    let client = f.client();
    client.start().await.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(created.monitor_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(
        client.state().await,
        Err(MonitorError::Gone { .. })
    ));
    cleanup_orphan(&Fixture::exe(), &f.runtime_root(), &f.id)
        .await
        .expect("cleanup");
    f.assert_cleaned();
    // Idempotent.
    cleanup_orphan(&Fixture::exe(), &f.runtime_root(), &f.id)
        .await
        .expect("second cleanup");
}

#[tokio::test]
async fn a_wedged_monitor_times_out_instead_of_hanging() {
    require_root_and_busybox();
    let f = Fixture::new("wedged");
    f.write_spec(&["/busybox", "sleep", "1000"], true);
    let created = spawn_create(&f.config()).await.expect("create");
    let monitor = nix::unistd::Pid::from_raw(created.monitor_pid);
    let client = f.client().with_call_timeout(Duration::from_millis(300));
    nix::sys::signal::kill(monitor, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let result = client.state().await;
    nix::sys::signal::kill(monitor, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(
        matches!(result, Err(MonitorError::Timeout { .. })),
        "{result:?}"
    );
    // It serves again once it runs, and the stuck connection did not poison it.
    assert_eq!(
        client.state().await.unwrap().status,
        ContainerStatus::Created
    );
    client.kill(SIGKILL, false).await.unwrap();
    let exit = client
        .wait_exited(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.exit_code, 137);
    f.assert_cleaned();
}
