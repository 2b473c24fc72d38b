//! The container's standard streams: what the container's init gets as fds 0, 1 and 2, and the
//! other ends the monitor keeps.
//!
//! - No log path and no tty (pod sandboxes): every stream is /dev/null.
//! - A log path (or `attach`): stdout and stderr are pipes whose read ends the monitor polls
//!   and writes to the CRI log (if any) and to attached clients.
//! - A tty: libcontainer opens a pty inside the container (on its devpts) and sends the master
//!   over a console socket; the monitor listens on that socket before the create helper runs
//!   and receives the master afterwards. The tty's output is logged as "stdout".
//! - stdin: a pipe whose write end the monitor holds, so a process reading stdin blocks
//!   instead of reading EOF, and attached clients' stdin is written to it; /dev/null
//!   otherwise. With a tty, stdin is the tty.

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use std::fs::OpenOptions;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// How the container's standard streams are wired (part of `MonitorConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stdio {
    /// Where the CRI log goes; `None`: output is discarded (/dev/null), as for pod sandboxes.
    pub log_path: Option<PathBuf>,
    /// Give the container a pty (the spec's `process.terminal` must be true as well).
    pub tty: bool,
    /// Keep stdin open (a pipe) instead of /dev/null.
    pub stdin: bool,
    /// Close stdin after the first attached client detaches (not with a tty, as containerd).
    pub stdin_once: bool,
    /// Keep the output readable for attached clients even without a log path (every
    /// container; sandboxes leave it false and their output goes to /dev/null).
    #[serde(default)]
    pub attach: bool,
}

/// The three descriptors that become the init process's fds 0, 1 and 2.
pub struct ContainerStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// What the create helper hands libcontainer.
pub enum ChildStdio {
    Fds(ContainerStdio),
    /// libcontainer connects to this socket and sends the pty master through it.
    Console(PathBuf),
}

/// The monitor's ends of the container's streams.
#[derive(Default)]
pub struct MonitorStdio {
    /// Read ends: stdout and stderr pipes, or the pty master (as `stdout`).
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Held open so the container's stdin never sees EOF.
    pub stdin_writer: Option<OwnedFd>,
}

/// The console socket, bound before the helper runs.
pub struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

/// Name of the console socket in the monitor directory (same length as the control socket's,
/// so it fits `sun_path` whenever that does).
pub const CONSOLE_SOCKET: &str = "console.sock";

fn dev_null(write: bool) -> io::Result<OwnedFd> {
    Ok(OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")?
        .into())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Everything made for one container's streams before the create helper runs.
pub struct Plumbing {
    pub child: ChildStdio,
    pub monitor: MonitorStdio,
    pub console: Option<ConsoleSocket>,
}

impl Plumbing {
    /// Creates the pipes (or binds the console socket in `dir`) for `cfg`.
    pub fn new(cfg: &Stdio, dir: &Path) -> io::Result<Self> {
        if cfg.tty {
            let console = ConsoleSocket::bind(&dir.join(CONSOLE_SOCKET))?;
            return Ok(Self {
                child: ChildStdio::Console(console.path.clone()),
                monitor: MonitorStdio::default(),
                console: Some(console),
            });
        }
        let mut monitor = MonitorStdio::default();
        let stdin = if cfg.stdin {
            let (r, w) = pipe()?;
            monitor.stdin_writer = Some(w);
            r
        } else {
            dev_null(false)?
        };
        // Without a log the output goes nowhere, as it always did for sandboxes.
        let (stdout, stderr) = if cfg.log_path.is_some() || cfg.attach {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            monitor.stdout = Some(out_r);
            monitor.stderr = Some(err_r);
            (out_w, err_w)
        } else {
            (dev_null(true)?, dev_null(true)?)
        };
        Ok(Self {
            child: ChildStdio::Fds(ContainerStdio {
                stdin,
                stdout,
                stderr,
            }),
            monitor,
            console: None,
        })
    }
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(super::paths::ShortPath::new(path)?.path())?;
        Ok(Self {
            path: path.to_owned(),
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives the pty master that the container's setup sent. By the time the create
    /// helper has returned, the connection and the message are queued, so waiting longer
    /// than `timeout` means none will come.
    pub fn receive_master(&self, timeout_ms: u16) -> io::Result<OwnedFd> {
        let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(timeout_ms)).map_err(io::Error::from)?;
        if ready == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no connection on the console socket",
            ));
        }
        let (stream, _) = self.listener.accept()?;
        receive_fd(stream.as_raw_fd())
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one message carrying one descriptor (SCM_RIGHTS) from a connected socket.
fn receive_fd(sock: i32) -> io::Result<OwnedFd> {
    let mut data = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut data)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut received = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received.extend(fds);
        }
    }
    // SAFETY: the kernel just installed these descriptors in this process; nothing else
    // owns them.
    let mut owned: Vec<OwnedFd> = received
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    match owned.len() {
        1 => Ok(owned.remove(0)),
        0 => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "console socket message carried no descriptor",
        )),
        n => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("console socket message carried {n} descriptors"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{ControlMessage, sendmsg};
    use std::io::{IoSlice, Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_descriptor_queued_before_accept_is_received() {
        let dir = tempfile::tempdir().unwrap();
        let console = ConsoleSocket::bind(&dir.path().join(CONSOLE_SOCKET)).unwrap();
        let (r, w) = pipe().unwrap();
        // As libcontainer does: connect, send, close, all before anyone accepts.
        {
            let client = UnixStream::connect(console.path()).unwrap();
            let fds = [w.as_raw_fd()];
            sendmsg::<()>(
                client.as_raw_fd(),
                &[IoSlice::new(b"/dev/ptmx")],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .unwrap();
        }
        drop(w);
        let got = console.receive_master(1000).unwrap();
        std::fs::File::from(got).write_all(b"hi").unwrap();
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        assert_eq!(s, "hi");
        let path = console.path().to_owned();
        drop(console);
        assert!(!path.exists());
    }

    #[test]
    fn plumbing_matches_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let p = Plumbing::new(&Stdio::default(), dir.path()).unwrap();
        assert!(p.monitor.stdout.is_none() && p.monitor.stdin_writer.is_none());
        let cfg = Stdio {
            log_path: Some(dir.path().join("x.log")),
            stdin: true,
            ..Stdio::default()
        };
        let p = Plumbing::new(&cfg, dir.path()).unwrap();
        assert!(p.monitor.stdout.is_some() && p.monitor.stderr.is_some());
        assert!(p.monitor.stdin_writer.is_some() && p.console.is_none());
    }
}
