//! Streaming PortForward over SPDY/3.1 with the test's own client: a TCP server in a bridge-CNI
//! pod and in a host-network pod, two connections at once, a refused port reported on its
//! error stream while the connection keeps serving, and a used token refused.

mod common;
mod streaming_support;

use std::time::{Duration, Instant};

use common::containers::container_config;
use common::{DaemonOpts, TestDaemon, TestNetwork, code_of};
use k8s_cri::v1::PortForwardRequest;
use streaming_support::{Client, connect};

async fn pf_url(d: &TestDaemon, pod: &str) -> String {
    d.runtime()
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.to_string(),
            port: vec![],
        })
        .await
        .unwrap_or_else(|e| panic!("PortForward: {e}\n{}", d.log_tail()))
        .into_inner()
        .url
}

/// One forwarded connection as client-go makes it: the error stream (our side closed at
/// once), then the data stream; sends `request`, returns (reply, error text).
async fn forward(c: &mut Client, request_id: u32, port: u16, request: &[u8]) -> (Vec<u8>, String) {
    let (rid, p) = (request_id.to_string(), port.to_string());
    let mut error = c
        .open(&[("streamtype", "error"), ("port", &p), ("requestid", &rid)])
        .await;
    error.close().await;
    let mut data = c
        .open(&[("streamtype", "data"), ("port", &p), ("requestid", &rid)])
        .await;
    data.write(request).await;
    let (reply, err) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(data.read_to_end(), error.read_to_end())
    })
    .await
    .expect("forward finished");
    (reply, String::from_utf8_lossy(&err).into_owned())
}

const GET: &[u8] = b"GET /index.html HTTP/1.0\r\n\r\n";

/// Forwards until the server in the pod answers (it may still be starting).
async fn until_served(c: &mut Client, port: u16, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 100;
    loop {
        let (reply, err) = forward(c, id, port, GET).await;
        if String::from_utf8_lossy(&reply).contains(want) {
            return;
        }
        assert!(Instant::now() < deadline, "never served: {err}");
        id += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn web(name: &str, listen: &str, body: &str) -> k8s_cri::v1::ContainerConfig {
    let script = format!(
        "mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && \
         exec busybox httpd -f -p {listen} -h /tmp/www"
    );
    container_config(name, &["sh", "-c", &script])
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_port_forward() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    d.import_busybox();

    // A pod on the bridge: the server listens inside its network namespace only.
    let pod_config = d.pod_config("pf");
    let pod = d.run_pod(pod_config.clone()).await;
    let ctr = d
        .run_container(&pod, &pod_config, web("web", "8080", "hello-pod"))
        .await;
    let url = pf_url(&d, &pod).await;
    let (up, client) = connect(&url, &["portforward.k8s.io"]).await;
    assert_eq!(up.status, 101, "{}", up.body);
    assert_eq!(
        up.header("X-Stream-Protocol-Version"),
        Some("portforward.k8s.io")
    );
    let mut c = client.unwrap();
    until_served(&mut c, 8080, "hello-pod").await;

    // Two connections at once on one SPDY connection.
    let (a, b) = {
        let rid = |n: u32| n.to_string();
        let mut ea = c
            .open(&[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", &rid(1)),
            ])
            .await;
        let mut eb = c
            .open(&[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", &rid(2)),
            ])
            .await;
        let mut da = c
            .open(&[
                ("streamtype", "data"),
                ("port", "8080"),
                ("requestid", &rid(1)),
            ])
            .await;
        let mut db = c
            .open(&[
                ("streamtype", "data"),
                ("port", "8080"),
                ("requestid", &rid(2)),
            ])
            .await;
        db.write(GET).await;
        da.write(GET).await;
        let (a, b, _, _) = tokio::join!(
            da.read_to_end(),
            db.read_to_end(),
            ea.read_to_end(),
            eb.read_to_end()
        );
        (a, b)
    };
    for r in [&a, &b] {
        let text = String::from_utf8_lossy(r);
        assert!(
            text.starts_with("HTTP/1.") && text.contains("hello-pod"),
            "{text}"
        );
    }

    // A refused port is reported on its own error stream; the connection carries on.
    let (reply, err) = forward(&mut c, 3, 9, GET).await;
    assert!(reply.is_empty());
    assert!(err.contains("error forwarding port 9"), "{err}");
    let (reply, _) = forward(&mut c, 4, 8080, GET).await;
    assert!(String::from_utf8_lossy(&reply).contains("hello-pod"));
    c.close().await;

    // Used token: 404.
    let (again, _) = connect(&url, &["portforward.k8s.io"]).await;
    assert_eq!(again.status, 404);
    let (code, msg) = code_of(
        d.runtime()
            .port_forward(PortForwardRequest {
                pod_sandbox_id: "nope".into(),
                port: vec![],
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound, "{msg}");

    // A host-network pod: the server is on the host's loopback.
    let port = 20000 + (std::process::id() % 10000) as u16;
    let hn_config = d.host_network_pod_config("pfhost");
    let hn = d.run_pod(hn_config.clone()).await;
    let hctr = d
        .run_container(
            &hn,
            &hn_config,
            web("hweb", &format!("127.0.0.1:{port}"), "hello-host"),
        )
        .await;
    let (up, client) = connect(&pf_url(&d, &hn).await, &["portforward.k8s.io"]).await;
    assert_eq!(up.status, 101);
    let mut c = client.unwrap();
    until_served(&mut c, port, "hello-host").await;
    c.close().await;

    // A pod that is stopped gets no URL.
    d.stop_pod(&hn).await;
    let (code, _) = code_of(
        d.runtime()
            .port_forward(PortForwardRequest {
                pod_sandbox_id: hn.clone(),
                port: vec![],
            })
            .await,
    );
    assert_eq!(code, tonic::Code::FailedPrecondition);

    for id in [&ctr, &hctr] {
        d.stop_container(id, 0).await;
        d.remove_container(id).await;
    }
    d.stop_and_remove(&pod).await;
    d.remove_pod(&hn).await;
    common::assert_no_leaks(&d).await;
}
