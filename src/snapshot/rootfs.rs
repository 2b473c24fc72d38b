//! A container's rootfs: the image's snapshots stacked by overlayfs at `base/rootfs`, writable
//! through `base/upper` + `base/work`, or read-only with no upper at all (the pod sandbox,
//! whose pause process never writes: no upper means no inodes to allocate, no copy-ups and
//! nothing to delete at removal).

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

/// Whether the rootfs gets an upper layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsMode {
    Writable,
    ReadOnly,
}

/// Create `base/rootfs` (and `base/{upper,work}` when writable) and mount the overlay of
/// `lowers` (top-most first) there. On failure everything this call created is removed again.
pub fn prepare_rootfs(
    lowers: &[PathBuf],
    base: &Path,
    mode: RootfsMode,
) -> Result<RootfsDirs, SnapshotError> {
    let dirs = RootfsDirs::new(base);
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| {
        if !base.exists() {
            std::fs::create_dir_all(base).map_err(SnapshotError::io(base))?;
            created.push(base.to_path_buf());
        }
        let needed: &[&PathBuf] = match mode {
            RootfsMode::Writable => &[&dirs.upper, &dirs.work, &dirs.merged],
            RootfsMode::ReadOnly => &[&dirs.merged],
        };
        for d in needed {
            match std::fs::create_dir(d) {
                Ok(()) => created.push(d.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(SnapshotError::io(*d)(e)),
            }
        }
        let upper = (mode == RootfsMode::Writable).then_some((&*dirs.upper, &*dirs.work));
        mount_overlay(lowers, upper, &dirs.merged)
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

/// Unmount `base/rootfs` if mounted and remove upper, work and rootfs (those that exist).
/// Idempotent. `base`
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
