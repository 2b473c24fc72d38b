//! The container's standard streams. For now every stream is /dev/null (pod sandboxes run
//! pause); CRI logs will replace this with pipes (or a tty) whose other ends the monitor keeps,
//! without touching how the helper hands them to libcontainer.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;

/// The three descriptors that become the init process's fds 0, 1 and 2.
pub struct ContainerStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl ContainerStdio {
    /// All three streams on /dev/null.
    pub fn null() -> std::io::Result<Self> {
        let open = |write: bool| -> std::io::Result<OwnedFd> {
            Ok(OpenOptions::new()
                .read(!write)
                .write(write)
                .open("/dev/null")?
                .into())
        };
        Ok(Self {
            stdin: open(false)?,
            stdout: open(true)?,
            stderr: open(true)?,
        })
    }
}
