//! Unit tests for the monitor's pure parts (the real-process tests are in
//! tests/monitor_lifecycle.rs, which runs the built `crius` binary).

use super::exit::{self, ExitInfo};
use super::proto;
use super::{paths, validate_id, wire};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::path::Path;

#[test]
fn exit_codes_follow_shell_convention() {
    let pid = Pid::from_raw(7);
    assert_eq!(exit::exit_code(WaitStatus::Exited(pid, 3)), Some((3, None)));
    assert_eq!(
        exit::exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
        Some((137, Some(9)))
    );
    assert_eq!(
        exit::exit_code(WaitStatus::Signaled(pid, Signal::SIGTERM, true)),
        Some((143, Some(15)))
    );
    assert_eq!(exit::exit_code(WaitStatus::StillAlive), None);
}

#[test]
fn exit_record_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(paths::EXIT_FILE);
    assert_eq!(exit::read(&path), None);
    let info = ExitInfo {
        version: exit::EXIT_RECORD_VERSION,
        pid: 42,
        exit_code: 137,
        signal: Some(9),
        created_at: 1,
        started_at: 2,
        finished_at: 3,
        oom_killed: true,
        cleanup_error: None,
    };
    let reserve = dir.path().join(paths::EXIT_RESERVE);
    // Without a reserve the record is written through a temp file.
    exit::write(&path, &reserve, &info).unwrap();
    assert_eq!(exit::read(&path), Some(info.clone()));
    // With one, the reserve becomes the record (blank-padded, still valid JSON).
    std::fs::remove_file(&path).unwrap();
    exit::reserve(&reserve).unwrap();
    exit::write(&path, &reserve, &info).unwrap();
    assert!(!reserve.exists(), "the reserve is renamed to the record");
    assert_eq!(exit::read(&path), Some(info));
    // Records written before the field existed read as "not OOM killed".
    let old = r#"{"version":1,"pid":1,"exit_code":0,"signal":null,"created_at":1,"started_at":2,"finished_at":3}"#;
    std::fs::write(&path, old).unwrap();
    assert!(!exit::read(&path).unwrap().oom_killed);
    std::fs::write(&path, b"{torn").unwrap();
    assert_eq!(exit::read(&path), None);
}

#[test]
fn frames_round_trip_and_limits_hold() {
    let req = proto::Request {
        op: Some(proto::request::Op::Kill(proto::KillRequest {
            signal: 9,
            all: true,
        })),
    };
    let buf = wire::frame(&req).unwrap();
    assert_eq!(
        u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize,
        buf.len() - 4
    );
    let back: proto::Request = wire::read_msg(&mut &buf[..]).unwrap();
    assert_eq!(back, req);

    let huge = (wire::MAX_MESSAGE as u32 + 1).to_be_bytes();
    let err = wire::read_msg::<proto::Request>(&mut &huge[..]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let truncated = &buf[..buf.len() - 1];
    assert!(wire::read_msg::<proto::Request>(&mut &truncated[..]).is_err());
}

#[test]
fn long_socket_paths_are_bound_and_reached_through_their_directory() {
    use std::os::unix::net::{UnixListener, UnixStream};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d".repeat(60)).join("e".repeat(60));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = paths::socket_path(&dir);
    assert!(socket.as_os_str().len() > 108);
    let short = paths::ShortPath::new(&socket).unwrap();
    assert!(
        short.path().as_os_str().len() <= 107,
        "{}",
        short.path().display()
    );
    let listener = UnixListener::bind(short.path()).unwrap();
    drop(short);
    assert!(socket.exists(), "the socket is in the real directory");
    let reach = paths::ShortPath::new(&socket).unwrap();
    let _client = UnixStream::connect(reach.path()).unwrap();
    let (_server, _) = listener.accept().unwrap();
    // A short path is used as it is.
    let plain = paths::ShortPath::new(Path::new("/run/crius/m/abc/monitor.sock")).unwrap();
    assert_eq!(plain.path(), Path::new("/run/crius/m/abc/monitor.sock"));
}

#[test]
fn ids_are_plain_names() {
    for ok in ["abc", "A-b_c+d.e", "0123456789abcdef"] {
        assert!(validate_id(ok).is_ok(), "{ok}");
    }
    for bad in ["", ".", "..", "a/b", "../x", "a b", "é"] {
        assert!(validate_id(bad).is_err(), "{bad:?}");
    }
}
