//! Streaming Exec and PortForward over WebSocket against a real daemon and real containers,
//! with the test's own WebSocket client (tests/streaming_support/ws.rs): v5 exec with a tty
//! and its window size, exit codes (0, 1, 126, 127, 137, and 127 from ExecSync too),
//! stdout/stderr apart, 100 MiB through stdin with a checksum (daemon RSS growth printed),
//! fragmented messages and pings, an unmasked or oversized frame closing only its own
//! connection, and port-forward to a bridge-CNI pod with two connections at once and a
//! refused port on its error channel.

mod common;
mod streaming_support;

use std::time::{Duration, Instant};

use common::containers::container_config;
use common::containers::{exec_req, exec_url};
use common::{DaemonOpts, TestDaemon, TestNetwork};
use k8s_cri::v1::{ExecSyncRequest, PortForwardRequest};
use sha2::{Digest, Sha256};
use streaming_support::ws::{Msg, Ws, collect, ws_connect, ws_exec};

#[tokio::test(flavor = "multi_thread")]
async fn websocket_exec() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    d.import_busybox();
    let pod_config = d.pod_config("wsexec");
    let pod = d.run_pod(pod_config.clone()).await;
    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config("sleeper", &["sleep", "3600"]),
        )
        .await;

    // Exit codes, including a command that is missing (127) or not executable (126).
    for (cmd, code) in [
        (vec!["true"], 0),
        (vec!["sh", "-c", "exit 1"], 1),
        (vec!["no-such-command"], 127),
        (vec!["/etc/passwd"], 126),
        (vec!["sh", "-c", "kill -9 $$"], 137),
    ] {
        let url = exec_url(&d, exec_req(&id, &cmd, false, false)).await;
        let r = ws_exec(&url, None, &[]).await;
        assert_eq!(
            r.exit_code(),
            code,
            "{cmd:?}: {}",
            String::from_utf8_lossy(&r.status)
        );
        assert_eq!(r.close, Some(1000), "a normal close after the status");
    }
    // ExecSync says the same for a missing command.
    let sync = d
        .runtime()
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["no-such-command".into()],
            timeout: 10,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync: {e}\n{}", d.log_tail()))
        .into_inner();
    assert_eq!(
        sync.exit_code,
        127,
        "{:?}",
        String::from_utf8_lossy(&sync.stderr)
    );
    assert!(
        String::from_utf8_lossy(&sync.stderr).contains("no-such-command"),
        "{:?}",
        String::from_utf8_lossy(&sync.stderr)
    );

    // stdout and stderr stay apart without a tty.
    let cmd = ["sh", "-c", "echo out; echo err >&2; echo more"];
    let url = exec_url(&d, exec_req(&id, &cmd, false, false)).await;
    let r = ws_exec(&url, None, &[]).await;
    assert_eq!(r.stdout_text(), "out\nmore\n");
    assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n");
    assert_eq!(r.exit_code(), 0);

    // A tty: the window size sent on channel 4 is what the process sees.
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do s=$(busybox stty size); \
                  [ \"$s\" = \"40 100\" ] && break; sleep 0.2; done; echo size=$s; \
                  [ -t 0 ] && echo tty-in";
    let url = exec_url(&d, exec_req(&id, &["sh", "-c", script], true, true)).await;
    let r = ws_exec(&url, Some(b""), &[(100, 40)]).await;
    let out = r.stdout_text();
    assert!(out.contains("size=40 100"), "{out:?}");
    assert!(out.contains("tty-in\r\n"), "{out:?}");
    assert_eq!(r.exit_code(), 0);

    // Interactive shell on a tty; the v5 close signal ends its stdin.
    let url = exec_url(&d, exec_req(&id, &["sh"], true, true)).await;
    let r = ws_exec(&url, Some(b"echo $((6*7))\nexit 3\n"), &[(80, 24)]).await;
    assert!(r.stdout_text().contains("42"), "{:?}", r.stdout_text());
    assert_eq!(r.exit_code(), 3);

    // 100 MiB through cat: checksum equal, daemon RSS growth bounded.
    let pid = d.pid();
    let before = common::procs::rss_kib(pid);
    let data: Vec<u8> = (0..100u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let want = Sha256::digest(&data);
    let url = exec_url(&d, exec_req(&id, &["cat"], true, false)).await;
    let started = Instant::now();
    let r = ws_exec(&url, Some(&data), &[]).await;
    let took = started.elapsed();
    let after = common::procs::rss_kib(pid);
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.stdout.len(), data.len());
    assert!(Sha256::digest(&r.stdout) == want, "checksum differs");
    println!(
        "100 MiB via WebSocket exec stdin->stdout in {took:?}; daemon RSS {before} KiB -> \
         {after} KiB (growth {} KiB)",
        after.saturating_sub(before)
    );
    assert!(
        after.saturating_sub(before) < 64 << 10,
        "daemon RSS grew by {} KiB",
        after - before
    );

    // Fragmented messages are joined, pings answered.
    let url = exec_url(&d, exec_req(&id, &["cat"], true, false)).await;
    let (up, ws) = ws_connect(&url, "", &["v5.channel.k8s.io"]).await;
    assert_eq!(up.status, 101);
    let Ws { mut rd, mut wr } = ws.unwrap();
    assert_eq!(rd.next().await, Msg::Binary(vec![1]), "the ready message");
    wr.ping(b"hi").await;
    assert_eq!(rd.next().await, Msg::Pong(b"hi".to_vec()));
    wr.send_fragmented(0, b"fragmented message\n", 3).await;
    wr.raw_frame(true, 0x2, &[255, 0], true).await;
    let r = collect(&mut rd).await;
    assert_eq!(r.stdout_text(), "fragmented message\n");
    wr.close().await;

    // An unmasked frame closes that connection (1002); an exec beside it is unaffected.
    let url = exec_url(
        &d,
        exec_req(&id, &["sh", "-c", "sleep 2; echo fine"], false, false),
    )
    .await;
    let fine = tokio::spawn(async move { ws_exec(&url, None, &[]).await });
    let url = exec_url(&d, exec_req(&id, &["cat"], true, false)).await;
    let (_, ws) = ws_connect(&url, "", &["v5.channel.k8s.io"]).await;
    let Ws { mut rd, mut wr } = ws.unwrap();
    let _ready = rd.next().await;
    wr.raw_frame(true, 0x2, b"\x00unmasked", false).await;
    assert_eq!(collect(&mut rd).await.close, Some(1002));
    // A frame over the message limit: 1009, before its payload is read.
    let url = exec_url(&d, exec_req(&id, &["cat"], true, false)).await;
    let (_, ws) = ws_connect(&url, "", &["v5.channel.k8s.io"]).await;
    let Ws { mut rd, mut wr } = ws.unwrap();
    let _ready = rd.next().await;
    let mut huge = vec![0x82u8, 0xff];
    huge.extend_from_slice(&(64u64 << 20).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    wr.raw_bytes(&huge).await;
    assert_eq!(collect(&mut rd).await.close, Some(1009));
    let r = fine.await.unwrap();
    assert_eq!(r.stdout_text(), "fine\n");
    assert!(
        d.log_tail().contains("bad WebSocket frame"),
        "the log names the closed connection"
    );

    // An unsupported subprotocol is refused; the token is then spent.
    let url = exec_url(&d, exec_req(&id, &["true"], false, false)).await;
    let (up, _) = ws_connect(&url, "", &["v9.nonsense"]).await;
    assert_eq!(up.status, 403, "{}", up.body);

    d.stop_container(&id, 0).await;
    d.remove_container(&id).await;
    d.stop_and_remove(&pod).await;
    common::assert_no_leaks(&d).await;
}

fn web(name: &str, listen: &str, body: &str) -> k8s_cri::v1::ContainerConfig {
    let script = format!(
        "mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && \
         exec busybox httpd -f -p {listen} -h /tmp/www"
    );
    container_config(name, &["sh", "-c", &script])
}

const GET: &[u8] = b"GET /index.html HTTP/1.0\r\n\r\n";

/// One WebSocket port-forward of `port`: sends `request`, returns (data, error text).
async fn ws_forward(d: &TestDaemon, pod: &str, port: u16, request: &[u8]) -> (Vec<u8>, String) {
    let url = d
        .runtime()
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.to_string(),
            port: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let (up, ws) = ws_connect(&url, &format!("port={port}"), &["v4.portforward.k8s.io"]).await;
    assert_eq!(up.status, 101, "{} {}", up.head, up.body);
    let Ws { mut rd, mut wr } = ws.unwrap();
    let (mut data, mut error) = (Vec::new(), Vec::new());
    let (mut data_port, mut error_port) = (None, None);
    wr.send(0, request).await;
    let read = async {
        loop {
            match rd.next().await {
                Msg::Binary(p) => {
                    let (ch, body) = p.split_first().unwrap();
                    match (ch, &mut data_port, &mut error_port) {
                        (0, None, _) => data_port = Some(u16::from_le_bytes([body[0], body[1]])),
                        (1, _, None) => error_port = Some(u16::from_le_bytes([body[0], body[1]])),
                        (0, Some(_), _) => data.extend_from_slice(body),
                        (1, _, Some(_)) => error.extend_from_slice(body),
                        other => panic!("unexpected channel {}", other.0),
                    }
                }
                Msg::Close(_) | Msg::Eof => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("forward finished");
    wr.close().await;
    assert_eq!(data_port, Some(port), "the data channel's first message");
    assert_eq!(error_port, Some(port), "the error channel's first message");
    (data, String::from_utf8_lossy(&error).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_port_forward() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    d.import_busybox();
    let pod_config = d.pod_config("wspf");
    let pod = d.run_pod(pod_config.clone()).await;
    let ctr = d
        .run_container(&pod, &pod_config, web("web", "8080", "hello-ws"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (reply, err) = ws_forward(&d, &pod, 8080, GET).await;
        if String::from_utf8_lossy(&reply).contains("hello-ws") {
            break;
        }
        assert!(Instant::now() < deadline, "never served: {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Two connections at once.
    let (a, b) = tokio::join!(
        ws_forward(&d, &pod, 8080, GET),
        ws_forward(&d, &pod, 8080, GET)
    );
    for (reply, err) in [&a, &b] {
        let text = String::from_utf8_lossy(reply);
        assert!(
            text.starts_with("HTTP/1.") && text.contains("hello-ws"),
            "{text} {err}"
        );
    }

    // A refused port: reported on its error channel.
    let (reply, err) = ws_forward(&d, &pod, 9, GET).await;
    assert!(reply.is_empty());
    assert!(err.contains("error forwarding port 9"), "{err}");

    // No port at all: 400 before any upgrade.
    let url = d
        .runtime()
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let (up, _) = ws_connect(&url, "", &["v4.portforward.k8s.io"]).await;
    assert_eq!(up.status, 400, "{}", up.body);

    d.stop_container(&ctr, 0).await;
    d.remove_container(&ctr).await;
    d.stop_and_remove(&pod).await;
    common::assert_no_leaks(&d).await;
}
