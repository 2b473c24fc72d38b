//! The stock upstream clients (crictl v1.32) from the shared tools, as hack/conformance uses them.

use std::path::PathBuf;
use std::process::Command;

/// crictl from the shared tools (CRIUS_SHARED_TOOLS, else ../shared/tools beside the repo).
pub fn crictl() -> PathBuf {
    let tools = std::env::var_os("CRIUS_SHARED_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/tools"));
    let out = Command::new(tools.join("get"))
        .output()
        .unwrap_or_else(|e| panic!("{}/get (the stock clients): {e}", tools.display()));
    assert!(
        out.status.success(),
        "{}/get failed: {out:?}",
        tools.display()
    );
    let dir = String::from_utf8(out.stdout).unwrap();
    let bin = PathBuf::from(dir.trim()).join("crictl");
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}
