//! Streaming Exec through a client nobody in this project wrote: the `kubernetes` Python
//! package's WebSocket stream client (Debian's python3-kubernetes, installed by
//! hack/install-deps), pointed at the URL a CRI Exec returned. Stdout and stderr apart, stdin,
//! exit codes from the error channel. No python3-kubernetes: the test fails, it does not skip.

mod common;
mod streaming_support;

use common::containers::{exec_req, exec_url};
use common::{DaemonOpts, TestDaemon, TestNetwork};
use streaming_support::python::{PyExec, python_exec};

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_python_client_exec() {
    let net = TestNetwork::new();
    let d = TestDaemon::start(DaemonOpts::default().network(&net)).await;
    let (pod, id) = d.run_sleeper("pyexec").await;

    // stdout and stderr on their own channels, success on the error channel.
    let cmd = ["sh", "-c", "echo out; echo err >&2; echo more"];
    let url = exec_url(&d, exec_req(&id, &cmd, false, false)).await;
    let r: PyExec = python_exec(&url, None);
    assert_eq!(r.stdout, "out\nmore\n", "{r:?}");
    assert_eq!(r.stderr, "err\n", "{r:?}");
    assert_eq!(r.returncode, 0, "{r:?}");
    assert!(r.status.contains("Success"), "{r:?}");

    // stdin reaches the process; a non-zero exit code comes back as the client reads it.
    let cmd = [
        "sh",
        "-c",
        "read line; echo \"got $line\"; echo \"warn $line\" >&2; exit 3",
    ];
    let url = exec_url(&d, exec_req(&id, &cmd, true, false)).await;
    let r = python_exec(&url, Some("hello-python"));
    assert_eq!(r.stdout, "got hello-python\n", "{r:?}");
    assert_eq!(r.stderr, "warn hello-python\n", "{r:?}");
    assert_eq!(r.returncode, 3, "{r:?}");
    assert!(r.status.contains("NonZeroExitCode"), "{r:?}");

    // A missing command: 127, as a shell would say.
    let url = exec_url(&d, exec_req(&id, &["no-such-command"], false, false)).await;
    assert_eq!(python_exec(&url, None).returncode, 127);

    d.remove_sleeper(&pod, &id).await;
}
