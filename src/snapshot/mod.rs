//! Overlay snapshots: one directory per unpacked layer (`<root>/snapshots/<n>/fs`, keyed by
//! chain id in `index.json`), and the overlay mounts that stack them into a container rootfs.

pub(crate) mod index;
pub(crate) mod mount;
pub(crate) mod rootfs;
pub(crate) mod skeleton;

use std::path::PathBuf;

pub(crate) use index::Snapshots;
// Only the rootfs tests ask from outside `mount` (CreateContainer no longer reads mountinfo).
#[cfg(test)]
pub(crate) use mount::is_mountpoint;
pub use mount::{mount_overlay, unmount};
pub(crate) use rootfs::{RootfsDirs, prepare_rootfs, remove_rootfs};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot index {path}: {reason}")]
    Index { path: PathBuf, reason: String },
    #[error("no lower directories given for the overlay at {target}")]
    NoLowers { target: PathBuf },
    #[error("overlay path {path} cannot be used in mount options: {reason}")]
    BadPath { path: PathBuf, reason: String },
    #[error(
        "overlay mount options for {target} are {len} bytes, over the {max}-byte page limit \
         (too many layers or too long paths)"
    )]
    OptionsTooLong {
        target: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("mounting {what} at {target}: {source}")]
    Mount {
        what: String,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unmounting {target}: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
}

impl SnapshotError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SnapshotError {
        let path = path.into();
        move |source| SnapshotError::Io { path, source }
    }
}
