//! Runs tests/streaming_support/k8s_python_exec.py: one Exec URL through the `kubernetes`
//! Python package's WebSocket client, its result as JSON.

use std::path::PathBuf;
use std::process::Command;

/// Debian's interpreter, where hack/install-deps puts python3-kubernetes (a python3 earlier on
/// PATH, such as a pyenv shim, would not see Debian's packages).
const PYTHON: &str = "/usr/bin/python3";

#[derive(Debug, serde::Deserialize)]
pub struct PyExec {
    pub stdout: String,
    pub stderr: String,
    /// The error channel's text (metav1.Status as JSON).
    pub status: String,
    pub returncode: i32,
}

/// Runs the exec behind `url` (http:// or https://), writing `stdin` and a newline first.
pub fn python_exec(url: &str, stdin: Option<&str>) -> PyExec {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/streaming_support/k8s_python_exec.py");
    let mut cmd = Command::new(PYTHON);
    cmd.arg(&script).arg(url);
    if let Some(line) = stdin {
        cmd.arg(line);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{PYTHON} {}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the kubernetes Python client failed ({}; hack/install-deps installs \
         python3-kubernetes): {stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output {:?}: {e}; stderr {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
