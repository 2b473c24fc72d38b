//! Names of the files a monitor keeps in its directory, shared by the monitor and the daemon.

use nix::fcntl::OFlag;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The control socket (see proto/monitor.proto).
pub const SOCKET: &str = "monitor.sock";
/// The monitor's pid, written once it is serving; removed when it exits.
pub const PID_FILE: &str = "monitor.pid";
/// The container's exit record, written atomically after the container is reaped and deleted.
pub const EXIT_FILE: &str = "exit.json";
/// Space for the exit record, taken when the monitor starts: the record is written into it and
/// renamed to [`EXIT_FILE`], so the exit is recorded even once the disk is full.
pub const EXIT_RESERVE: &str = "exit.json.reserve";
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

/// A name for the unix socket `path` that fits `sun_path` however long its directory is: `path`
/// itself when it fits, otherwise `/proc/self/fd/<N>/<file name>` through a descriptor of the
/// directory, which this value holds open while the name is used (bind or connect). The kernel
/// resolves that name like any path, so the socket lands in (or is found in) the real directory.
/// This keeps socket paths from limiting the length of the state dir or of container ids.
pub struct ShortPath {
    path: PathBuf,
    _dir: Option<OwnedFd>,
}

impl ShortPath {
    pub fn new(path: &Path) -> io::Result<ShortPath> {
        if path.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(ShortPath {
                path: path.to_owned(),
                _dir: None,
            });
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket path {} has no directory", path.display()),
            ));
        };
        let dir = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(io::Error::from)?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        let dir = unsafe { OwnedFd::from_raw_fd(dir) };
        let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        if short.as_os_str().len() > SUN_PATH_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket name {} is too long", Path::new(name).display()),
            ));
        }
        Ok(ShortPath {
            path: short,
            _dir: Some(dir),
        })
    }

    /// The name to bind or connect to while `self` lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
