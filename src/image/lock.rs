//! The store lock: an exclusive flock on `<root>/lock`, held for every mutation so the daemon
//! and a concurrent `crius image import` never interleave. flock locks belong to the open file
//! description, so two threads of one process that each open the file also exclude each other.

use super::ImageError;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Held until dropped (closing the file releases the lock).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    pub fn exclusive(path: &Path) -> Result<StoreLock, ImageError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(ImageError::io(path))?;
        loop {
            // SAFETY: flock on a file descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(ImageError::Io {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        }
        Ok(StoreLock { _file: file })
    }
}

/// Try to take an exclusive flock on `file` without waiting; true if taken.
pub(crate) fn try_flock(file: &File) -> bool {
    // SAFETY: flock on a file descriptor we own.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}
