//! Streaming Attach over SPDY/3.1 against a real daemon and real busybox containers, with the
//! test's own SPDY client (tests/streaming_support): live output (still logged), stdin echoed
//! by `cat`, stdin_once, two clients at once, a tty and its window size, attach after a
//! daemon restart, the CRI codes of bad requests, and an abrupt disconnect that leaves the
//! monitor's descriptors at their baseline.

mod common;
mod streaming_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::containers::container_config;
use common::{DaemonOpts, TestDaemon, TestNetwork, code_of};
use k8s_cri::v1::AttachRequest;
use streaming_support::{Client, ClientStream, connect};

fn attach_req(id: &str, stdin: bool, tty: bool) -> AttachRequest {
    AttachRequest {
        container_id: id.to_string(),
        stdin,
        tty,
        stdout: true,
        stderr: !tty,
    }
}

async fn attach_url(d: &TestDaemon, req: AttachRequest) -> String {
    d.runtime()
        .attach(req)
        .await
        .unwrap_or_else(|e| panic!("Attach: {e}\n{}", d.log_tail()))
        .into_inner()
        .url
}

/// One attached client, its streams opened as client-go's v4 attach does.
struct Attached {
    client: Client,
    error: ClientStream,
    stdin: Option<ClientStream>,
    stdout: ClientStream,
    stderr: Option<ClientStream>,
    resize: Option<ClientStream>,
    out: Vec<u8>,
}

async fn attach(d: &TestDaemon, id: &str, stdin: bool, tty: bool) -> Attached {
    let url = attach_url(d, attach_req(id, stdin, tty)).await;
    assert!(url.contains("/attach/"), "{url}");
    let (up, client) = connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"]).await;
    assert_eq!(up.status, 101, "upgrade refused: {}", up.body);
    let mut client = client.unwrap();
    let error = client.open(&[("streamtype", "error")]).await;
    let stdin = match stdin {
        true => Some(client.open(&[("streamtype", "stdin")]).await),
        false => None,
    };
    let stdout = client.open(&[("streamtype", "stdout")]).await;
    let stderr = match tty {
        false => Some(client.open(&[("streamtype", "stderr")]).await),
        true => None,
    };
    let resize = match tty {
        true => Some(client.open(&[("streamtype", "resize")]).await),
        false => None,
    };
    Attached {
        client,
        error,
        stdin,
        stdout,
        stderr,
        resize,
        out: Vec::new(),
    }
}

impl Attached {
    /// Reads stdout until `needle` shows up (panics after `secs`); returns all read so far.
    async fn wait_for(&mut self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = String::from_utf8_lossy(&self.out).into_owned();
            if text.contains(needle) {
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stdout.next()).await {
                Ok(Some(chunk)) => self.out.extend_from_slice(&chunk),
                Ok(None) => panic!("stdout ended before {needle:?}: {text:?}"),
                Err(_) => panic!("no {needle:?} on stdout within {secs} s: {text:?}"),
            }
        }
    }

    async fn send(&self, data: &[u8]) {
        self.stdin.as_ref().expect("stdin stream").write(data).await;
    }

    /// The v4 status on the error stream, once the server ends the attach.
    async fn status(&mut self, secs: u64) -> serde_json::Value {
        let body = tokio::time::timeout(Duration::from_secs(secs), self.error.read_to_end())
            .await
            .expect("the attach ended");
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(&body)))
    }
}

fn monitor_pid(d: &TestDaemon, id: &str) -> i32 {
    let path: PathBuf = d.state().join("m").join(id).join("monitor.pid");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Waits until the monitor's descriptor count is `want` again.
async fn wait_fds(pid: i32, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fd_count(pid) != want {
        assert!(
            Instant::now() < deadline,
            "monitor {pid} holds {} descriptors, want {want}",
            fd_count(pid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_attach() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    d.import_busybox();
    let pod_config = d.pod_config("attach");
    let pod = d.run_pod(pod_config.clone()).await;

    // A container that prints on its own: attached clients see it live, the log gets it too.
    let ticker = d
        .run_container(
            &pod,
            &pod_config,
            container_config(
                "ticker",
                &["sh", "-c", "i=0; while true; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.2; done"],
            ),
        )
        .await;
    let monitor = monitor_pid(&d, &ticker);
    let baseline = fd_count(monitor);

    // Two clients at once, each with every line (stdout and stderr apart).
    let mut a = attach(&d, &ticker, false, false).await;
    let mut b = attach(&d, &ticker, false, false).await;
    let text = a.wait_for("tick", 10).await;
    let first: u32 = text
        .split("tick ")
        .nth(1)
        .and_then(|s| s.split('\n').next())
        .unwrap()
        .parse()
        .unwrap();
    let next = format!("tick {}\n", first + 3);
    a.wait_for(&next, 10).await;
    b.wait_for(&next, 10).await;
    let err = tokio::time::timeout(Duration::from_secs(10), a.stderr.as_mut().unwrap().next())
        .await
        .expect("stderr output")
        .expect("stderr open");
    assert!(String::from_utf8_lossy(&err).contains("tock"), "{err:?}");
    // The CRI log keeps being written while clients are attached.
    let log = std::fs::read_to_string(d.container_log(&pod_config, "ticker")).unwrap();
    assert!(log.contains(next.trim_end()), "log lacks {next:?}");
    // One socket per attached client (waited for: a state call may hold one briefly).
    wait_fds(monitor, baseline + 2).await;

    // An abrupt disconnect (no stream closed, no GOAWAY) detaches: the monitor's descriptors
    // go back to the baseline, and the other client keeps its output.
    a.client.close().await;
    let later = format!("tick {}\n", first + 8);
    b.wait_for(&later, 10).await;
    b.client.close().await;
    wait_fds(monitor, baseline).await;

    // stdin reaches the container; its end (without stdin_once) ends only the attach.
    let mut cfg = container_config("cat", &["cat"]);
    cfg.stdin = true;
    let cat = d.run_container(&pod, &pod_config, cfg).await;
    let mut c = attach(&d, &cat, true, false).await;
    c.send(b"hello attach\n").await;
    c.wait_for("hello attach\n", 10).await;
    c.stdin.as_ref().unwrap().close().await;
    let status = c.status(10).await;
    assert_eq!(status["status"], "Success", "{status}");
    c.client.close().await;
    let mut c = attach(&d, &cat, true, false).await;
    c.send(b"still open\n").await;
    c.wait_for("still open\n", 10).await;
    c.client.close().await;

    // stdin_once: the first client's detach closes the container's stdin, so cat exits.
    let mut cfg = container_config("once", &["cat"]);
    cfg.stdin = true;
    cfg.stdin_once = true;
    let once = d.run_container(&pod, &pod_config, cfg).await;
    let mut c = attach(&d, &once, true, false).await;
    c.send(b"only once\n").await;
    c.wait_for("only once\n", 10).await;
    c.stdin.as_ref().unwrap().close().await;
    let status = c.status(20).await;
    assert_eq!(status["status"], "Success", "{status}");
    let st = d.wait_exited(&once, Duration::from_secs(20)).await;
    assert_eq!(st.exit_code, 0, "cat saw EOF: {st:?}");
    c.client.close().await;

    // A tty: the window size the client sends is the container's.
    let mut cfg = container_config("tty", &["sh"]);
    cfg.stdin = true;
    cfg.tty = true;
    let tty = d.run_container(&pod, &pod_config, cfg).await;
    let mut t = attach(&d, &tty, true, true).await;
    t.resize
        .as_ref()
        .unwrap()
        .write(br#"{"Width":100,"Height":40}"#)
        .await;
    // The resize and the command race; ask until the new size is seen.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        t.send(b"echo size=$(stty size)\n").await;
        // The inner deadline is longer, so only the outer one fires (cancel-safe reads).
        let seen =
            tokio::time::timeout(Duration::from_millis(500), t.wait_for("size=40 100", 5)).await;
        if seen.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            String::from_utf8_lossy(&t.out)
        );
    }
    t.client.close().await;

    // The monitors outlive the daemon: a restarted daemon attaches the same way.
    d.restart().await;
    let mut r = attach(&d, &ticker, false, false).await;
    r.wait_for("tick", 10).await;
    r.client.close().await;
    let mut c = attach(&d, &cat, true, false).await;
    c.send(b"after restart\n").await;
    c.wait_for("after restart\n", 10).await;
    c.client.close().await;

    // Bad requests fail at the CRI call, not at the URL.
    let (code, msg) = code_of(d.runtime().attach(attach_req("nope", false, false)).await);
    assert_eq!(code, tonic::Code::NotFound, "{msg}");
    let mut both = attach_req(&ticker, false, true);
    both.stderr = true;
    assert_eq!(
        code_of(d.runtime().attach(both).await).0,
        tonic::Code::InvalidArgument
    );
    let mut none = attach_req(&ticker, false, false);
    none.stdout = false;
    none.stderr = false;
    assert_eq!(
        code_of(d.runtime().attach(none).await).0,
        tonic::Code::InvalidArgument
    );
    let (code, msg) = code_of(d.runtime().attach(attach_req(&once, false, false)).await);
    assert_eq!(code, tonic::Code::FailedPrecondition, "{msg}");
    // stdin of a container without one is accepted and goes nowhere, as in containerd.
    let mut s = attach(&d, &ticker, true, false).await;
    s.send(b"ignored\n").await;
    s.wait_for("tick", 10).await;
    s.client.close().await;
    wait_fds(monitor_pid(&d, &ticker), baseline).await;

    for id in [&ticker, &cat, &once, &tty] {
        d.stop_container(id, 0).await;
        d.remove_container(id).await;
    }
    d.stop_and_remove(&pod).await;
    common::assert_no_leaks(&d).await;
}
