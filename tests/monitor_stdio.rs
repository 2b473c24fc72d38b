//! Real-container tests of the monitor's stdio: CRI logs (lines, partials, long lines, tty,
//! rotation, survival without a client), OOM detection and exec (root only; busybox).

mod common;

use crius::monitor::{
    ExecRequest, MonitorClient, MonitorConfig, MonitorError, Stdio, exec_sync, spawn_create,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BUSYBOX: &str = "/bin/busybox";
const CGROUP_PARENT: &str = "crius-test-stdio";
const EXE_OVERRIDE: &str = "CRIUS_TEST_MONITOR_EXE";

/// Fails the test unless it can run (a test that cannot run must not pass).
fn require_root_and_busybox() {
    assert!(
        nix::unistd::geteuid().is_root() && Path::new(BUSYBOX).exists(),
        "this test needs root and {BUSYBOX} (run hack/install-deps as root)"
    );
}

/// How the test container is set up.
#[derive(Default)]
struct Opts {
    tty: bool,
    memory_limit: Option<i64>,
}

/// One container's bundle, monitor dir, runtime root and log dir; everything (processes,
/// cgroups, state) is removed on drop, also when the test failed halfway.
struct Fixture {
    id: String,
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let id = format!("s-{name}-{}", std::process::id());
        let tmp = tempfile::Builder::new().prefix("crs").tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("bundle/rootfs")).unwrap();
        std::fs::create_dir_all(tmp.path().join("logs")).unwrap();
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
    fn log_path(&self) -> PathBuf {
        self.tmp.path().join("logs/0.log")
    }
    fn exe() -> PathBuf {
        std::env::var_os(EXE_OVERRIDE)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_crius")))
    }
    fn config(&self, tty: bool) -> MonitorConfig {
        MonitorConfig {
            id: self.id.clone(),
            bundle: self.bundle(),
            dir: self.dir(),
            runtime_root: self.runtime_root(),
            exe: Self::exe(),
            stdio: Stdio {
                log_path: Some(self.log_path()),
                tty,
                stdin: !tty,
                stdin_once: false,
                ..Stdio::default()
            },
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

    fn write_spec(&self, args: &[&str], opts: &Opts) {
        let mut resources = json!({});
        if let Some(limit) = opts.memory_limit {
            resources = json!({"memory": {"limit": limit, "swap": limit}});
        }
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": opts.tty,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/"],
                "cwd": "/",
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "stdio-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=1m"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}
            ],
            "linux": {
                "namespaces": [
                    {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                    {"type": "mount"}, {"type": "network"}
                ],
                "cgroupsPath": format!("/{CGROUP_PARENT}/{}", self.id),
                "resources": resources
            }
        });
        std::fs::write(
            self.bundle().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
    }

    async fn run(&self, args: &[&str], opts: Opts) -> MonitorClient {
        self.write_spec(args, &opts);
        spawn_create(&self.config(opts.tty)).await.expect("create");
        let client = self.client();
        client.start().await.expect("start");
        client
    }

    fn exec_request(&self, args: &[&str], timeout: Option<Duration>) -> ExecRequest {
        let process: oci_spec::runtime::Process = serde_json::from_value(json!({
            "args": args,
            "env": ["PATH=/"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0}
        }))
        .unwrap();
        ExecRequest {
            id: self.id.clone(),
            runtime_root: self.runtime_root(),
            bundle: self.bundle(),
            process,
            tty: false,
            timeout,
            exe: Self::exe(),
        }
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
            let _ = d.parent().map(std::fs::remove_dir);
        }
    }
}

/// One parsed CRI log record.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    time: chrono::DateTime<chrono::FixedOffset>,
    stream: String,
    tag: String,
    content: String,
}

fn parse_log(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|line| {
            let mut f = line.splitn(4, ' ');
            let (time, stream, tag) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let content = f
                .next()
                .unwrap_or_else(|| panic!("no content field: {line:?}"));
            // Fixed nine fractional digits and UTC, as kubelet writes them.
            assert_eq!(time.len(), 30, "{time}");
            assert!(time.ends_with('Z'), "{time}");
            Record {
                time: chrono::DateTime::parse_from_rfc3339(time).unwrap(),
                stream: stream.to_owned(),
                tag: tag.to_owned(),
                content: content.to_owned(),
            }
        })
        .collect()
}

fn of_stream(records: &[Record], stream: &str) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r.stream == stream)
        .map(|r| (r.tag.clone(), r.content.clone()))
        .collect()
}

fn pair(tag: &str, content: &str) -> (String, String) {
    (tag.to_owned(), content.to_owned())
}

async fn wait_exit(client: &MonitorClient) -> crius::monitor::ExitInfo {
    client
        .wait_exited(common::scaled(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("exited in time")
}

#[tokio::test]
async fn stdout_and_stderr_are_logged_in_cri_format() {
    require_root_and_busybox();
    let f = Fixture::new("lines");
    let client = f
        .run(
            &[
                "/busybox",
                "sh",
                "-c",
                "echo out; echo err >&2; echo; echo 'a b  c'; printf partial",
            ],
            Opts::default(),
        )
        .await;
    let exit = wait_exit(&client).await;
    assert_eq!(exit.exit_code, 0);
    assert!(!exit.oom_killed);
    let records = parse_log(&f.log_path());
    assert_eq!(
        of_stream(&records, "stdout"),
        vec![
            pair("F", "out"),
            pair("F", ""),
            pair("F", "a b  c"),
            pair("P", "partial")
        ]
    );
    assert_eq!(of_stream(&records, "stderr"), vec![pair("F", "err")]);
    // Each stream's records are in time order.
    for stream in ["stdout", "stderr"] {
        let times: Vec<_> = records
            .iter()
            .filter(|r| r.stream == stream)
            .map(|r| r.time)
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    }
    // Written before the container's start and no later than its exit record.
    let finished = chrono::DateTime::from_timestamp_nanos(exit.finished_at);
    assert!(
        records
            .iter()
            .all(|r| r.time <= finished + chrono::Duration::seconds(1))
    );
}

#[tokio::test]
async fn a_long_line_is_split_into_partials() {
    require_root_and_busybox();
    let f = Fixture::new("long");
    // 40 KiB of 'x' and a newline, then a short line.
    let client = f
        .run(
            &[
                "/busybox",
                "sh",
                "-c",
                "/busybox head -c 40960 /dev/zero | /busybox tr '\\0' x; echo; echo short",
            ],
            Opts::default(),
        )
        .await;
    assert_eq!(wait_exit(&client).await.exit_code, 0);
    let out = of_stream(&parse_log(&f.log_path()), "stdout");
    let tags: Vec<&str> = out.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        tags,
        ["P", "P", "F", "F"],
        "{:?}",
        out.iter().map(|(t, c)| (t, c.len())).collect::<Vec<_>>()
    );
    assert_eq!(out[0].1.len(), crius::monitor::MAX_LOG_LINE);
    let joined: String = out[..3].iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(joined, "x".repeat(40960));
    assert_eq!(out[3], pair("F", "short"));
}

#[tokio::test]
async fn log_is_complete_before_the_exit_record() {
    require_root_and_busybox();
    let f = Fixture::new("order");
    // A burst larger than a pipe buffer right before exiting.
    let client = f
        .run(
            &["/busybox", "sh", "-c", "/busybox seq 1 20000; echo last"],
            Opts::default(),
        )
        .await;
    // Poll for the exit record; the moment it appears the log must be complete.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client.read_exit().is_none() {
        assert!(std::time::Instant::now() < deadline, "no exit record");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let out = of_stream(&parse_log(&f.log_path()), "stdout");
    assert_eq!(out.len(), 20001);
    assert_eq!(out[19999], pair("F", "20000"));
    assert_eq!(out[20000], pair("F", "last"));
}

#[tokio::test]
async fn reopen_after_rotation_and_logging_without_any_client() {
    require_root_and_busybox();
    let f = Fixture::new("rotate");
    // Prints a numbered line every 50 ms until told to stop (a file in its rootfs).
    let client = f
        .run(
            &[
                "/busybox",
                "sh",
                "-c",
                "i=0; while [ ! -e /stop ]; do i=$((i+1)); echo line $i; /busybox usleep 50000; done; echo bye",
            ],
            Opts::default(),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated = f.tmp.path().join("logs/0.log.20260101-000000");
    std::fs::rename(f.log_path(), &rotated).unwrap();
    client.reopen_log().await.expect("reopen");
    // No client at all for a while: the monitor logs on its own (the daemon may be dead).
    let monitor = client.monitor_pid().unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = common::procs::rss_kib(monitor);
    eprintln!(
        "monitor VmRSS while logging: {rss} KiB ({})",
        Fixture::exe().display()
    );
    if std::env::var_os(EXE_OVERRIDE).is_some() {
        assert!(rss < 2048, "monitor RSS {rss} KiB");
    }
    std::fs::write(f.bundle().join("rootfs/stop"), b"").unwrap();
    let client = f.client();
    assert_eq!(wait_exit(&client).await.exit_code, 0);

    let old = of_stream(&parse_log(&rotated), "stdout");
    let new = of_stream(&parse_log(&f.log_path()), "stdout");
    assert!(!old.is_empty() && new.len() >= 5, "old {old:?} new {new:?}");
    assert_eq!(new.last().unwrap(), &pair("F", "bye"));
    // Nothing lost or repeated across the rotation: the numbers continue.
    let numbers: Vec<u32> = old
        .iter()
        .chain(&new)
        .filter_map(|(_, c)| c.strip_prefix("line ")?.parse().ok())
        .collect();
    assert_eq!(numbers, (1..=numbers.len() as u32).collect::<Vec<_>>());

    // After the exit, reopening is refused with a distinct error.
    assert!(matches!(
        client.reopen_log().await,
        Err(MonitorError::Exited { .. })
    ));
}

#[tokio::test]
async fn tty_output_is_logged_as_stdout() {
    require_root_and_busybox();
    let f = Fixture::new("tty");
    let client = f
        .run(
            &[
                "/busybox",
                "sh",
                "-c",
                "echo hello tty; echo to stderr >&2; [ -t 1 ] && echo is a tty",
            ],
            Opts {
                tty: true,
                ..Opts::default()
            },
        )
        .await;
    assert_eq!(wait_exit(&client).await.exit_code, 0);
    let records = parse_log(&f.log_path());
    assert!(records.iter().all(|r| r.stream == "stdout"), "{records:?}");
    assert_eq!(
        of_stream(&records, "stdout"),
        vec![
            pair("F", "hello tty"),
            pair("F", "to stderr"),
            pair("F", "is a tty")
        ]
    );
    assert!(!f.dir().join("console.sock").exists());
}

#[tokio::test]
async fn stdin_stays_open_when_requested() {
    require_root_and_busybox();
    let f = Fixture::new("stdin");
    // With stdin on /dev/null `cat` would exit at once.
    let client = f.run(&["/busybox", "cat"], Opts::default()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!client.state().await.unwrap().is_exited());
    client.kill(9, false).await.unwrap();
    assert_eq!(wait_exit(&client).await.exit_code, 137);
}

#[tokio::test]
async fn oom_kill_is_detected() {
    require_root_and_busybox();
    let f = Fixture::new("oom");
    // The shell keeps 64 MiB in a variable under a 16 MiB limit.
    let client = f
        .run(
            &[
                "/busybox",
                "sh",
                "-c",
                "x=$(/busybox head -c 67108864 /dev/zero | /busybox tr '\\0' a); echo survived",
            ],
            Opts {
                memory_limit: Some(16 << 20),
                ..Opts::default()
            },
        )
        .await;
    let exit = wait_exit(&client).await;
    assert_eq!(exit.exit_code, 137, "{exit:?}");
    assert!(exit.oom_killed, "{exit:?}");
    let state = client.state().await.unwrap();
    assert!(state.oom_killed);
}

#[tokio::test]
async fn exec_sync_output_exit_code_and_timeout() {
    require_root_and_busybox();
    let f = Fixture::new("exec");
    let client = f.run(&["/busybox", "sleep", "1000"], Opts::default()).await;

    let out = exec_sync(&f.exec_request(
        &["/busybox", "sh", "-c", "echo hi; echo bye >&2; exit 7"],
        Some(Duration::from_secs(10)),
    ))
    .await
    .expect("exec");
    assert_eq!(
        (
            out.stdout.as_slice(),
            out.stderr.as_slice(),
            out.exit_code,
            out.timed_out
        ),
        (&b"hi\n"[..], &b"bye\n"[..], 7, false)
    );

    // The exec'd process sees only its stdio: no descriptor of ours or the monitor's.
    let out = exec_sync(&f.exec_request(&["/busybox", "ls", "/proc/self/fd"], None))
        .await
        .unwrap();
    let fds = String::from_utf8(out.stdout).unwrap();
    let fds: Vec<&str> = fds.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "3 is ls's own directory handle");

    // Timeout: the process and its children are killed.
    let marker = "sleep 31337";
    let started = std::time::Instant::now();
    let out = exec_sync(&f.exec_request(
        &[
            "/busybox",
            "sh",
            "-c",
            &format!("/busybox {marker} & /busybox {marker}"),
        ],
        Some(Duration::from_secs(1)),
    ))
    .await
    .expect("exec with timeout");
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, 137);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        processes_with_cmdline(marker).is_empty(),
        "sleep left running"
    );

    // With a tty, everything arrives on stdout.
    let mut req = f.exec_request(&["/busybox", "sh", "-c", "[ -t 1 ] && echo tty >&2"], None);
    req.tty = true;
    let out = exec_sync(&req).await.expect("tty exec");
    assert_eq!((out.stdout.as_slice(), out.exit_code), (&b"tty\r\n"[..], 0));

    // Into an exited container: a clear error.
    client.kill(9, false).await.unwrap();
    wait_exit(&client).await;
    let err = exec_sync(&f.exec_request(&["/busybox", "true"], None))
        .await
        .unwrap_err();
    assert!(matches!(err, MonitorError::NotRunning { .. }), "{err:?}");
}

fn processes_with_cmdline(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}
