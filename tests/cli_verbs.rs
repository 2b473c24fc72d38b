//! The built-in client against a real daemon: every everyday verb, driven through the `crius`
//! binary exactly as a user on a node without crictl would, with crictl-style JSON configs.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::images::BUSYBOX_IMAGE;
use common::{DaemonOpts, TestDaemon, assert_no_leaks};

/// Run `crius --socket <daemon> ARGS...`.
fn crius(d: &TestDaemon, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crius"))
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .env_remove("CRIUS_SOCKET")
        .output()
        .unwrap_or_else(|e| panic!("run crius {args:?}: {e}"))
}

/// Run a verb that must succeed; returns its stdout.
fn ok(d: &TestDaemon, args: &[&str]) -> String {
    let out = crius(d, args);
    assert!(
        out.status.success(),
        "crius {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log_tail()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The table row that mentions `needle`, split into its columns (3+ spaces apart).
fn row_with<'a>(table: &'a str, needle: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle:?} in:\n{table}"));
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

fn write_json(path: &Path, value: serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A host-network pod in crictl's camelCase form, enums as numbers and names.
fn pod_json(d: &TestDaemon, name: &str) -> serde_json::Value {
    let uid = common::random_hex(8);
    serde_json::json!({
        "metadata": {"name": name, "namespace": "cli-test", "uid": uid, "attempt": 0},
        "hostname": common::pods::host_hostname(),
        "logDirectory": d.dir().join("logs").join(format!("cli-test_{name}_{uid}")),
        "labels": {"app": name, "cliTest": "yes"},
        "linux": {
            "cgroupParent": d.cgroup_parent(),
            "securityContext": {
                "namespaceOptions": {"network": 2, "pid": "CONTAINER", "ipc": 0}
            }
        }
    })
}

fn container_json(name: &str, command: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"name": name},
        "image": {"image": BUSYBOX_IMAGE},
        "command": command,
        "logPath": format!("{name}/0.log"),
        "envs": [{"key": "FROM_CLI", "value": "yes"}],
        "linux": {"resources": {"memoryLimitInBytes": "134217728"}}
    })
}

/// Poll `check` on a verb's output until it holds (or fail after `timeout`).
fn wait_for(d: &TestDaemon, args: &[&str], timeout: Duration, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = ok(d, args);
        if check(&out) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "crius {args:?} never showed what we wait for; last output:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn everyday_verbs_against_a_real_daemon() {
    let d = TestDaemon::start(DaemonOpts::default()).await;
    d.import_busybox();

    let version = ok(&d, &["version"]);
    assert!(version.contains("RuntimeApiVersion:  v1"), "{version}");
    let info = json(&ok(&d, &["info"]));
    assert!(info["status"]["conditions"].is_array(), "{info}");

    // Images.
    let images = ok(&d, &["images"]);
    let row = row_with(&images, "localhost/test/busybox");
    assert_eq!(row[..2], ["localhost/test/busybox", "1"], "{images}");
    assert_eq!(row[2].len(), 13, "{images}");
    assert!(row[3].ends_with("B"), "{images}");
    let image_ids = ok(&d, &["images", "-q"]);
    assert!(image_ids.lines().any(|l| l.contains(row[2])), "{image_ids}");
    let inspecti = json(&ok(&d, &["inspecti", BUSYBOX_IMAGE]));
    assert!(
        inspecti["status"]["repo_tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == BUSYBOX_IMAGE),
        "{inspecti}"
    );
    json(&ok(&d, &["imagefsinfo"]));

    // A pod from a crictl-style JSON file.
    let pod_file = d.dir().join("pod.json");
    write_json(&pod_file, pod_json(&d, "cli-pod"));
    let pod = ok(&d, &["runp", pod_file.to_str().unwrap()])
        .trim()
        .to_string();
    d.track(&pod);
    assert!(pod.len() >= 13, "{pod:?}");
    let pods = ok(&d, &["pods"]);
    let row = row_with(&pods, &pod[..13]);
    assert_eq!(row[0], &pod[..13]);
    assert!(row[1].ends_with("ago"), "{pods}");
    assert_eq!(row[2..6], ["Ready", "cli-pod", "cli-test", "0"], "{pods}");
    assert_eq!(ok(&d, &["pods", "-q"]).trim(), pod);
    assert_eq!(ok(&d, &["pods", "-q", "--name", "cli-p"]).trim(), pod);
    assert_eq!(
        ok(&d, &["pods", "-q", "--label", "cliTest=yes"]).trim(),
        pod
    );
    assert_eq!(ok(&d, &["pods", "-q", "--state", "ready"]).trim(), pod);
    assert_eq!(ok(&d, &["pods", "-q", "--namespace", "elsewhere"]), "");
    let listed = json(&ok(&d, &["pods", "-o", "json"]));
    assert_eq!(listed["items"][0]["id"], pod.as_str());
    let inspectp = json(&ok(&d, &["inspectp", &pod]));
    assert_eq!(inspectp["status"]["metadata"]["name"], "cli-pod");
    assert_eq!(
        inspectp["status"]["linux"]["namespaces"]["options"]["network"],
        2
    );

    // A long-running container.
    let ctr_file = d.dir().join("ctr.json");
    write_json(
        &ctr_file,
        container_json(
            "talker",
            &["sh", "-c", "echo hello from $FROM_CLI; exec sleep 1000"],
        ),
    );
    let ctr = ok(
        &d,
        &[
            "create",
            &pod,
            ctr_file.to_str().unwrap(),
            pod_file.to_str().unwrap(),
        ],
    )
    .trim()
    .to_string();
    let created = ok(&d, &["ps", "-a"]);
    assert_eq!(row_with(&created, &ctr[..13])[3], "Created", "{created}");
    assert_eq!(
        ok(&d, &["ps", "-q"]),
        "",
        "ps without -a lists running ones only"
    );
    ok(&d, &["start", &ctr]);
    let ps = ok(&d, &["ps", "-a"]);
    let row = row_with(&ps, &ctr[..13]);
    assert_eq!(
        row,
        [
            &ctr[..13],
            BUSYBOX_IMAGE,
            row[2],
            "Running",
            "talker",
            "0",
            &pod[..13]
        ],
        "{ps}"
    );
    assert!(row[2].ends_with("ago"), "{ps}");
    assert_eq!(ok(&d, &["ps", "-q", "-p", &pod]).trim(), ctr);
    assert_eq!(ok(&d, &["ps", "-q", "--name", "nobody"]), "");
    let inspect = json(&ok(&d, &["inspect", &ctr]));
    assert_eq!(inspect["status"]["metadata"]["name"], "talker");

    // Logs (the line may take a moment to reach the file).
    wait_for(&d, &["logs", &ctr], Duration::from_secs(20), |out| {
        out == "hello from yes\n"
    });
    let stamped = ok(&d, &["logs", "--timestamps", &ctr]);
    let (stamp, rest) = stamped.trim_end().split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{stamped}"
    );
    assert_eq!(rest, "hello from yes");

    // Exec: output relayed to our streams, exit code passed on.
    let out = crius(
        &d,
        &[
            "exec",
            &ctr,
            "--",
            "sh",
            "-c",
            "echo out $FROM_CLI; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out yes\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(
        ok(&d, &["exec", "--timeout", "10", &ctr, "echo", "-n", "hi"]),
        "hi"
    );

    // Stats answer for the running container.
    let stats = ok(&d, &["stats"]);
    assert_eq!(row_with(&stats, &ctr[..13])[1], "talker", "{stats}");
    let statsp = ok(&d, &["statsp"]);
    assert_eq!(row_with(&statsp, &pod[..13])[0], "cli-pod", "{statsp}");

    // A container that writes a long line (split into partial records) and exits:
    // `logs -f` prints it whole and returns once the container has stopped.
    let long = "y".repeat(40 * 1024);
    let script = format!("echo first; echo {long}; echo last");
    let once_file = d.dir().join("once.json");
    write_json(&once_file, container_json("once", &["sh", "-c", &script]));
    let once = ok(
        &d,
        &[
            "create",
            &pod,
            once_file.to_str().unwrap(),
            pod_file.to_str().unwrap(),
        ],
    )
    .trim()
    .to_string();
    ok(&d, &["start", &once]);
    let followed = ok(&d, &["logs", "-f", &once]);
    assert_eq!(followed, format!("first\n{long}\nlast\n"));
    assert_eq!(ok(&d, &["logs", "--tail", "1", &once]), "last\n");
    wait_for(&d, &["ps", "-a"], Duration::from_secs(20), |out| {
        out.lines()
            .any(|l| l.contains(&once[..13]) && l.contains("Exited"))
    });

    // Errors: the gRPC code and message, exit status 1.
    let missing = crius(&d, &["inspect", "0000000000000000deadbeef"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("ContainerStatus") && err.contains("code = NotFound"),
        "{err}"
    );
    let bad = d.dir().join("bad.json");
    std::fs::write(&bad, r#"{"metadata": {"name": "x"}, "logDir": "/tmp"}"#).unwrap();
    let rejected = crius(&d, &["runp", bad.to_str().unwrap()]);
    assert_eq!(rejected.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&rejected.stderr).contains("unknown field `logDir`"),
        "{rejected:?}"
    );

    // Clean up through the client.
    ok(&d, &["stop", "-t", "2", &ctr]);
    let stopped = ok(&d, &["ps", "-a"]);
    assert_eq!(row_with(&stopped, &ctr[..13])[3], "Exited", "{stopped}");
    ok(&d, &["rm", &ctr]);
    ok(&d, &["rm", "-f", &once]);
    assert_eq!(ok(&d, &["ps", "-a", "-q"]), "");
    ok(&d, &["stopp", &pod]);
    let pods = ok(&d, &["pods"]);
    assert_eq!(row_with(&pods, &pod[..13])[2], "NotReady", "{pods}");
    ok(&d, &["rmp", &pod]);
    assert_eq!(ok(&d, &["pods", "-q"]), "");

    // rmp -f stops first.
    write_json(&pod_file, pod_json(&d, "cli-pod-2"));
    let pod2 = ok(&d, &["runp", pod_file.to_str().unwrap()])
        .trim()
        .to_string();
    d.track(&pod2);
    ok(&d, &["rmp", "-f", &pod2]);
    assert_eq!(ok(&d, &["pods", "-q"]), "");

    assert_no_leaks(&d).await;
}

#[test]
fn no_daemon_is_an_error_naming_the_socket() {
    let out = Command::new(env!("CARGO_BIN_EXE_crius"))
        .args([
            "--socket",
            "/nonexistent/crius.sock",
            "--timeout",
            "5",
            "pods",
        ])
        .output()
        .expect("run crius");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/crius.sock") && err.contains("No such file"),
        "{err}"
    );
}
