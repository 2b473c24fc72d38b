//! Errors of the stats readers, each naming the file or cgroup that could not be read.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The cgroup, process or directory is gone (the container exited, the pod was torn down):
    /// callers report absent numbers rather than failing the whole List*Stats call.
    #[error("{what} not found: {}", path.display())]
    NotFound { what: &'static str, path: PathBuf },

    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidCgroupsPath { path: String, reason: &'static str },

    #[error("no cgroup hierarchy found in {}", mountinfo.display())]
    NoCgroupMounts { mountinfo: PathBuf },

    #[error("read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
}

impl StatsError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StatsError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the error only means "nothing to measure any more".
    pub fn is_not_found(&self) -> bool {
        matches!(self, StatsError::NotFound { .. })
    }
}

/// Errors reading a file in a cgroup that is being removed concurrently: ENOENT once the
/// directory is gone, ENODEV for a v1 control file whose cgroup is mid-removal.
pub(crate) fn is_vanished(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}
