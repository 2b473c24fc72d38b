//! Build steps that are not Rust: the monitor control protocol (protobuf) and the static pause
//! binary that the built-in sandbox image carries.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=proto/monitor.proto");
    println!("cargo:rerun-if-changed=hack/pause/pause.c");
    // The crius binary is a fixed-address executable, not PIE: every `crius monitor` (one per
    // container) would otherwise apply ~37,000 relative relocations at exec (about a
    // millisecond) and keep ~640 KiB of relocated read-only data private to itself, over half
    // of a monitor's memory; without relocations those pages stay shared with the binary's
    // page cache. Shared libraries keep their address randomisation. (runc and containerd's
    // shims, built by Go's default, are not PIE either.)
    println!("cargo:rustc-link-arg-bins=-no-pie");

    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_protos(&["proto/monitor.proto"], &["proto/"])
        .expect(
            "compile proto/monitor.proto (is protoc installed? apt-get install protobuf-compiler)",
        );

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let pause = out.join("crius-pause");
    let compiler = cc::Build::new().opt_level_str("s").get_compiler();
    let status = Command::new(compiler.path())
        .args(["-static", "-Os", "-s", "-Wall", "-Werror", "-o"])
        .arg(&pause)
        .arg("hack/pause/pause.c")
        .status()
        .expect("run the C compiler for hack/pause/pause.c");
    assert!(
        status.success(),
        "building the static pause binary failed (needs libc6-dev for libc.a)"
    );
}
