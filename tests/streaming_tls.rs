//! TLS streaming (`enable_tls_streaming` with `[x509_key_pair_streaming]`) against a real
//! daemon, with a certificate and key this test makes (rcgen): Exec URLs are https; the
//! `kubernetes` Python package's WebSocket client (wss://) and the stock crictl (SPDY and
//! WebSocket over TLS; it does not verify the certificate) get stdout and the exit code
//! through them; a plain-HTTP request to the TLS port is refused
//! without an HTTP answer and the server goes on serving.

mod common;
mod streaming_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::containers::{exec_req, exec_url};
use common::{DaemonOpts, TestDaemon, TestNetwork};
use streaming_support::python::python_exec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files in `dir`.
fn write_cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
            .expect("make a certificate");
    let (cert_file, key_file) = (dir.join("stream.crt"), dir.join("stream.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, signing_key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

/// `http://` in place of `https://`: the same server, spoken to without TLS. Returns what the
/// server sent before it closed (nothing, or a TLS alert), or None if it kept the connection
/// open past `limit`.
async fn plain_http(url: &str, limit: Duration) -> Option<Vec<u8>> {
    let rest = url.strip_prefix("https://").expect("https URL");
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    );
    // The server may close before all of it is written; that is the answer, not a failure.
    let _ = sock.write_all(req.as_bytes()).await;
    let mut got = Vec::new();
    match tokio::time::timeout(limit, sock.read_to_end(&mut got)).await {
        Ok(_) => Some(got),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_streaming_exec() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(certs.path());
    let net = TestNetwork::new();
    let config = format!(
        "enable_tls_streaming = true\n[x509_key_pair_streaming]\ntls_cert_file = {:?}\n\
         tls_key_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let d = TestDaemon::start(DaemonOpts {
        config: Some(config),
        ..DaemonOpts::default().network(&net)
    })
    .await;
    let (pod, id) = d.run_sleeper("tls").await;

    let cmd = ["sh", "-c", "echo over-tls; exit 3"];
    let url = exec_url(&d, exec_req(&id, &cmd, false, false)).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // WebSocket over TLS, with a client of its own TLS stack (Python's ssl).
    let r = python_exec(&url, None);
    assert_eq!(
        (r.stdout.as_str(), r.returncode),
        ("over-tls\n", 3),
        "{r:?}"
    );

    // Plain HTTP to the TLS port: no HTTP answer, the connection closed.
    let url = exec_url(&d, exec_req(&id, &cmd, false, false)).await;
    let got = plain_http(&url, Duration::from_secs(10))
        .await
        .expect("the server closes a plain-HTTP connection to its TLS port");
    assert!(
        !got.starts_with(b"HTTP/"),
        "an HTTP answer over plain text: {:?}",
        String::from_utf8_lossy(&got)
    );
    // Whatever came is a TLS record (an alert), not a byte of the session.
    assert!(got.is_empty() || got[0] == 0x15, "{got:?}");

    // The server still serves, and the stock crictl's SPDY client works over TLS too.
    let r = python_exec(
        &exec_url(&d, exec_req(&id, &["true"], false, false)).await,
        None,
    );
    assert_eq!(r.returncode, 0, "{r:?}");
    let ep = format!("unix://{}", d.socket().display());
    for transport in ["spdy", "websocket"] {
        let out = Command::new(common::tools::crictl())
            .args(["--runtime-endpoint", &ep, "--timeout", "30s", "exec"])
            .args([
                "--transport",
                transport,
                &id,
                "sh",
                "-c",
                "echo crictl-tls; exit 4",
            ])
            .output()
            .expect("run crictl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "crictl-tls\n",
            "{transport}: {out:?}\n{}",
            d.log_tail()
        );
        // crictl itself exits 1 and names the command's exit code.
        assert_eq!(out.status.code(), Some(1), "{transport}: {out:?}");
        assert!(
            stderr.contains("command terminated with exit code 4"),
            "{transport}: {stderr}"
        );
    }

    d.remove_sleeper(&pod, &id).await;
}
