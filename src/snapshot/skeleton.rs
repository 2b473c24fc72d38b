//! The top layer of every sandbox rootfs: the mount points of the pause spec, so a pause image
//! that lacks them (a scratch image with only `/pause`) still works as a read-only overlay.
//! Created once per root; never written afterwards.

use super::SnapshotError;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Directories the sandbox spec mounts onto (see `oci::spec`); a test there keeps the two in step.
pub const MOUNT_POINTS: &[&str] = &["dev"];

/// Create the skeleton under `dir` (idempotent).
pub fn ensure(dir: &Path) -> Result<(), SnapshotError> {
    for d in MOUNT_POINTS {
        let path = dir.join(d);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&path)
            .map_err(SnapshotError::io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("skel");
        ensure(&dir).unwrap();
        ensure(&dir).unwrap();
        for d in MOUNT_POINTS {
            assert!(dir.join(d).is_dir());
        }
    }
}
