//! Names of the files a monitor keeps in its directory, shared by the monitor and the daemon.

use std::path::{Path, PathBuf};

/// The control socket (see proto/monitor.proto).
pub const SOCKET: &str = "monitor.sock";
/// The monitor's pid, written once it is serving; removed when it exits.
pub const PID_FILE: &str = "monitor.pid";
/// The container's exit record, written atomically after the container is reaped and deleted.
pub const EXIT_FILE: &str = "exit.json";
/// The bundle libcontainer reads when the daemon set up the container's cgroup itself: the
/// spec without `resources` (see `own_cgroup`).
pub const BUNDLE_DIR: &str = "bundle";
/// The monitor's own log (its stdout and stderr; never the container's output).
pub const LOG_FILE: &str = "monitor.log";

/// `sun_path` in `struct sockaddr_un` holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 107;

/// The control socket path of the monitor directory `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// Checks that the control socket of `dir` fits in `sun_path`, so that an over-long directory is
/// reported as such instead of as an obscure bind(2) or connect(2) failure.
pub fn check_socket_path(dir: &Path) -> Result<PathBuf, String> {
    let path = socket_path(dir);
    let len = path.as_os_str().len();
    if len > SUN_PATH_MAX {
        return Err(format!(
            "control socket path {} is {len} bytes; unix sockets allow at most {SUN_PATH_MAX}: use a shorter monitor directory",
            path.display()
        ));
    }
    Ok(path)
}
