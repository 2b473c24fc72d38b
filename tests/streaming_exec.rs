//! Streaming Exec over SPDY/3.1 against a real daemon and real containers, with the test's own
//! SPDY client (tests/streaming_support): exit codes, stdout/stderr kept apart, stdin, a tty
//! and its window size, single-use and expiring tokens, and a client that vanishes.

mod common;
mod streaming_support;

use std::time::{Duration, Instant};

use common::containers::{container_config, exec_req, exec_url};
use common::{DaemonOpts, TestDaemon, TestNetwork, code_of};
use streaming_support::{connect, run_exec};

/// Pids whose command line contains `needle`.
fn pids_running(needle: &str) -> Vec<i32> {
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

#[tokio::test(flavor = "multi_thread")]
async fn streaming_exec() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    d.import_busybox();
    let pod_config = d.pod_config("stream");
    let pod = d.run_pod(pod_config.clone()).await;
    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config("sleeper", &["sleep", "3600"]),
        )
        .await;

    // Issued now, used last: by then it is more than a minute old.
    let started = Instant::now();
    let stale = exec_url(&d, exec_req(&id, &["true"], false, false)).await;
    assert!(stale.starts_with("http://127.0.0.1:"), "{stale}");

    // Exit codes as client-go reads them from the v4 status.
    for (cmd, code) in [
        (vec!["true"], 0),
        (vec!["sh", "-c", "exit 1"], 1),
        (vec!["sh", "-c", "no-such-command"], 127),
        (vec!["sh", "-c", "kill -9 $$"], 137),
    ] {
        let url = exec_url(&d, exec_req(&id, &cmd, false, false)).await;
        let r = run_exec(&url, None, false, &[]).await;
        assert_eq!(r.exit_code(), code, "{cmd:?}: {}", r.status);
    }

    // stdout and stderr stay apart without a tty.
    let url = exec_url(
        &d,
        exec_req(
            &id,
            &["sh", "-c", "echo out; echo err >&2; echo more"],
            false,
            false,
        ),
    )
    .await;
    let r = run_exec(&url, None, false, &[]).await;
    assert_eq!(r.stdout_text(), "out\nmore\n");
    assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n");
    assert_eq!(r.exit_code(), 0);

    // stdin reaches the process and its end is EOF: 4 MiB through cat, byte for byte.
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let url = exec_url(&d, exec_req(&id, &["cat"], true, false)).await;
    let r = run_exec(&url, Some(&data), false, &[]).await;
    assert_eq!(r.exit_code(), 0, "{}", r.status);
    assert!(
        r.stdout == data,
        "cat returned {} of {} bytes",
        r.stdout.len(),
        data.len()
    );

    // A tty: the window size the client sent is what the process sees.
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do s=$(busybox stty size); \
                  [ \"$s\" = \"40 100\" ] && break; sleep 0.2; done; echo size=$s; \
                  [ -t 0 ] && echo tty-in";
    let url = exec_url(&d, exec_req(&id, &["sh", "-c", script], true, true)).await;
    let r = run_exec(&url, Some(b""), true, &[(100, 40)]).await;
    let out = r.stdout_text();
    assert!(out.contains("size=40 100"), "{out:?}");
    assert!(
        out.contains("tty-in\r\n"),
        "the pty's line discipline: {out:?}"
    );
    assert_eq!(r.exit_code(), 0);

    // Interactive: a shell on a tty reads what we type.
    let url = exec_url(&d, exec_req(&id, &["sh"], true, true)).await;
    let r = run_exec(&url, Some(b"echo $((6*7))\nexit 3\n"), true, &[(80, 24)]).await;
    assert!(r.stdout_text().contains("42"), "{:?}", r.stdout_text());
    assert_eq!(r.exit_code(), 3);

    // A token works once.
    let url = exec_url(&d, exec_req(&id, &["true"], false, false)).await;
    assert_eq!(run_exec(&url, None, false, &[]).await.exit_code(), 0);
    let (again, _) = connect(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(again.status, 404);
    let (bogus, _) = connect(&url.replace("/exec/", "/exec/x"), &["v4.channel.k8s.io"]).await;
    assert_eq!(bogus.status, 404);

    // Bad requests fail at the CRI call, not at the URL.
    let (code, msg) = code_of(
        d.runtime()
            .exec(exec_req("nope", &["true"], false, false))
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound, "{msg}");
    let mut both = exec_req(&id, &["true"], false, true);
    both.stderr = true;
    assert_eq!(
        code_of(d.runtime().exec(both).await).0,
        tonic::Code::InvalidArgument
    );
    let mut none = exec_req(&id, &["true"], false, false);
    none.stdout = false;
    none.stderr = false;
    assert_eq!(
        code_of(d.runtime().exec(none).await).0,
        tonic::Code::InvalidArgument
    );

    // A client that vanishes mid-exec takes the process with it.
    let marker = format!("sleep 4{}", std::process::id() % 1000 + 1000);
    let cmd = ["sh", "-c", &marker];
    let url = exec_url(&d, exec_req(&id, &cmd, true, false)).await;
    let (up, client) = connect(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 101);
    let mut c = client.unwrap();
    let _e = c.open(&[("streamtype", "error")]).await;
    let _i = c.open(&[("streamtype", "stdin")]).await;
    let _o = c.open(&[("streamtype", "stdout")]).await;
    let _s = c.open(&[("streamtype", "stderr")]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids_running(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the exec never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids_running(&marker).is_empty() || !pids_running("monitor --exec").is_empty() {
        assert!(
            Instant::now() < deadline,
            "exec process or helper left behind: {:?} {:?}",
            pids_running(&marker),
            pids_running("monitor --exec")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Container not running: FailedPrecondition.
    d.stop_container(&id, 0).await;
    let (code, msg) = code_of(
        d.runtime()
            .exec(exec_req(&id, &["true"], false, false))
            .await,
    );
    assert_eq!(code, tonic::Code::FailedPrecondition, "{msg}");

    // The token issued at the start has expired.
    let wait = Duration::from_secs(62).saturating_sub(started.elapsed());
    tokio::time::sleep(wait).await;
    let (old, _) = connect(&stale, &["v4.channel.k8s.io"]).await;
    assert_eq!(old.status, 404, "a token older than a minute");

    d.remove_container(&id).await;
    d.stop_and_remove(&pod).await;
    common::assert_no_leaks(&d).await;
}
