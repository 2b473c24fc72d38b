//! Streaming through the stock crictl v1.32 (from ../shared/tools, as hack/conformance uses
//! it) against a real daemon: `crictl exec` over SPDY and `--transport websocket`, exit codes
//! (3, 127 as crictl reports them), `exec -it` on a pty made by script(1), and `crictl port-forward --transport
//! websocket` to a server in a bridge-CNI pod. No crictl: the test fails, it does not skip.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::containers::container_config;
use common::{DaemonOpts, TestDaemon, TestNetwork};

fn crictl(bin: &PathBuf, d: &TestDaemon, args: &[&str]) -> Output {
    let ep = format!("unix://{}", d.socket().display());
    Command::new(bin)
        .args([
            "--runtime-endpoint",
            &ep,
            "--image-endpoint",
            &ep,
            "--timeout",
            "30s",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn crictl_streaming() {
    let bin = common::tools::crictl();
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    d.import_busybox();
    let pod_config = d.pod_config("crictl");
    let pod = d.run_pod(pod_config.clone()).await;
    let script = "mkdir -p /tmp/www && echo hello-crictl > /tmp/www/index.html && \
                  exec busybox httpd -f -p 8080 -h /tmp/www";
    let id = d
        .run_container(
            &pod,
            &pod_config,
            container_config("web", &["sh", "-c", script]),
        )
        .await;

    for transport in ["spdy", "websocket"] {
        let out = crictl(
            &bin,
            &d,
            &[
                "exec",
                "--transport",
                transport,
                &id,
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        );
        // crictl itself exits 1 and names the command's exit code.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{transport}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n", "{transport}");
        assert!(stderr.contains("\nerr\n"), "{transport}: {stderr}");
        assert!(
            stderr.contains("command terminated with exit code 3"),
            "{transport}: {stderr}"
        );
        let out = crictl(
            &bin,
            &d,
            &["exec", "--transport", transport, &id, "no-such-command"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("exit code 127"), "{transport}: {stderr}");

        // -it on a pty (script(1) makes one): a shell reads what is typed.
        let ep = format!("unix://{}", d.socket().display());
        let line = format!(
            "{} --runtime-endpoint {ep} exec -it --transport {transport} {id} sh",
            bin.display()
        );
        let mut child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("script(1) (bsdutils) is needed for the tty exec");
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"[ -t 0 ] && echo is-a-tty; echo $((6*7)); exit 4\n")
            .unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = child.wait().unwrap();
        drop(stdin);
        assert!(
            out.contains("is-a-tty") && out.contains("42"),
            "{transport}: {out:?}"
        );
        assert!(!status.success(), "{transport}: {out:?}");
        assert!(out.contains("exit code 4"), "{transport}: {out:?}");
    }

    // port-forward over WebSocket; two requests through the forwarded port.
    let local = 21000 + (std::process::id() % 5000) as u16;
    let ep = format!("unix://{}", d.socket().display());
    let mut pf = Command::new(&bin)
        .args([
            "--runtime-endpoint",
            &ep,
            "port-forward",
            "--transport",
            "websocket",
        ])
        .arg(&pod)
        .arg(format!("{local}:8080"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut served = 0;
    while served < 2 {
        assert!(Instant::now() < deadline, "port-forward never served");
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", local)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            if reply.contains("hello-crictl") {
                served += 1;
                continue;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = pf.kill();
    let _ = pf.wait();

    d.stop_container(&id, 0).await;
    d.remove_container(&id).await;
    d.stop_and_remove(&pod).await;
    common::assert_no_leaks(&d).await;
}
