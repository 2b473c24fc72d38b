//! Build steps that are not Rust: the monitor control protocol (protobuf) and the static pause
//! binary that the built-in sandbox image carries.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=proto/monitor.proto");
    println!("cargo:rerun-if-changed=hack/pause/pause.c");

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
