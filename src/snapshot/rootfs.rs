//! A container's writable rootfs: `base/upper` + `base/work` over the image's snapshots,
//! mounted at `base/rootfs`.

use super::SnapshotError;
use super::mount::{mount_overlay, unmount};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The mounted rootfs (`base/rootfs`).
    pub merged: PathBuf,
}

impl RootfsDirs {
    pub fn new(base: &Path) -> RootfsDirs {
        RootfsDirs {
            upper: base.join("upper"),
            work: base.join("work"),
            merged: base.join("rootfs"),
        }
    }
}

/// Create `base/{upper,work,rootfs}` and mount the overlay of `lowers` (top-most first) at
/// `base/rootfs`. On failure everything this call created is removed again.
pub fn prepare_rootfs(lowers: &[PathBuf], base: &Path) -> Result<RootfsDirs, SnapshotError> {
    let dirs = RootfsDirs::new(base);
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| {
        if !base.exists() {
            std::fs::create_dir_all(base).map_err(SnapshotError::io(base))?;
            created.push(base.to_path_buf());
        }
        for d in [&dirs.upper, &dirs.work, &dirs.merged] {
            match std::fs::create_dir(d) {
                Ok(()) => created.push(d.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(SnapshotError::io(d)(e)),
            }
        }
        mount_overlay(lowers, Some((&dirs.upper, &dirs.work)), &dirs.merged)
    })();
    if let Err(e) = result {
        for d in created.iter().rev() {
            if let Err(re) = crate::util::remove_dir_all_if_exists(d) {
                tracing::warn!(dir = %d.display(), error = %re, "cleaning up after failed rootfs");
            }
        }
        return Err(e);
    }
    Ok(dirs)
}

/// Unmount `base/rootfs` if mounted and remove upper, work and rootfs. Idempotent. `base`
/// itself belongs to the caller and is left in place.
pub fn remove_rootfs(base: &Path) -> Result<(), SnapshotError> {
    let dirs = RootfsDirs::new(base);
    unmount(&dirs.merged)?;
    for d in [&dirs.merged, &dirs.upper, &dirs.work] {
        crate::util::remove_dir_all_if_exists(d).map_err(SnapshotError::io(d))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
