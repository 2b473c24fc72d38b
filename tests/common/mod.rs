//! Harness for crius's integration tests: a daemon per test on a private temp root, a private
//! CNI bridge network, kubelet-like pod configs and leak checks. Included by every
//! tests/sandbox_*.rs as `mod common;`; each of those uses only part of it.
//!
//! Tests need root, the CNI plugins in /usr/lib/cni and the tools hack/install-deps installs;
//! they fail (never skip) without them.
#![allow(dead_code, unused_imports)]

pub mod cgroups;
pub mod containers;
pub mod daemon;
pub mod images;
pub mod leaks;
pub mod mounts;
pub mod network;
pub mod oci_image;
pub mod pods;
pub mod procs;
pub mod tools;

pub use daemon::{DaemonOpts, TestDaemon};
pub use leaks::assert_no_leaks;
pub use network::TestNetwork;

/// Every temp dir the harness creates holds this file, so hack/ci-cleanup removes only ours.
pub const MARKER: &str = ".crius-test";

/// `d` stretched by `CRIUS_TEST_TIME_SCALE` (a number, default 1): the harness's start-up and
/// RPC deadlines, for machines many times slower than the one they were chosen on (hack/vm/run
/// sets it for a guest under TCG emulation).
pub fn scaled(d: std::time::Duration) -> std::time::Duration {
    let scale = std::env::var("CRIUS_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f >= 1.0)
        .unwrap_or(1.0);
    d.mul_f64(scale)
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    hex::encode(bytes)
}

/// Run a command to completion; panic with its output unless it succeeds. Returns stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The gRPC code of a failed call, with its message for assertion output.
pub fn code_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (tonic::Code, String) {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => (s.code(), s.message().to_string()),
    }
}
