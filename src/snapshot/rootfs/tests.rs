//! Real overlay mounts (the test VM runs as root). Every test unmounts in a guard so a failed
//! assertion never leaves a mount behind.

use super::*;
use crate::snapshot::{is_mountpoint, mount_overlay, unmount};

struct Unmount(Vec<PathBuf>);
impl Drop for Unmount {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = unmount(p);
        }
    }
}

fn layers(root: &Path) -> Vec<PathBuf> {
    let bottom = root.join("l1");
    let top = root.join("l2");
    std::fs::create_dir_all(bottom.join("etc")).unwrap();
    std::fs::create_dir_all(&top).unwrap();
    std::fs::write(bottom.join("etc/a"), b"bottom").unwrap();
    std::fs::write(bottom.join("shadowed"), b"bottom").unwrap();
    std::fs::write(top.join("shadowed"), b"top").unwrap();
    vec![top, bottom]
}

#[test]
fn prepare_and_remove_rootfs_with_real_overlay() {
    let tmp = tempfile::tempdir().unwrap();
    let lowers = layers(tmp.path());
    let base = tmp.path().join("ctr");
    let _g = Unmount(vec![base.join("rootfs")]);
    let dirs = prepare_rootfs(&lowers, &base).unwrap();
    assert!(is_mountpoint(&dirs.merged));
    assert_eq!(
        std::fs::read_to_string(dirs.merged.join("shadowed")).unwrap(),
        "top"
    );
    assert_eq!(
        std::fs::read_to_string(dirs.merged.join("etc/a")).unwrap(),
        "bottom"
    );
    std::fs::write(dirs.merged.join("new"), b"w").unwrap();
    assert!(dirs.upper.join("new").exists(), "writes land in upper");
    assert!(!lowers[0].join("new").exists());
    remove_rootfs(&base).unwrap();
    assert!(!is_mountpoint(&dirs.merged));
    assert!(!dirs.upper.exists() && !dirs.work.exists() && !dirs.merged.exists());
    remove_rootfs(&base).unwrap();
}

#[test]
fn single_lower_without_upper_is_a_readonly_bind() {
    let tmp = tempfile::tempdir().unwrap();
    let lowers = layers(tmp.path());
    let target = tmp.path().join("ro");
    std::fs::create_dir(&target).unwrap();
    let _g = Unmount(vec![target.clone()]);
    mount_overlay(&lowers[1..], None, &target).unwrap();
    assert!(is_mountpoint(&target));
    assert_eq!(
        std::fs::read_to_string(target.join("shadowed")).unwrap(),
        "bottom"
    );
    let e = std::fs::write(target.join("x"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    unmount(&target).unwrap();
    assert!(!is_mountpoint(&target));
    unmount(&target).unwrap();

    // Two lowers, no upper: a read-only overlay.
    let _g2 = Unmount(vec![target.clone()]);
    mount_overlay(&lowers, None, &target).unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("shadowed")).unwrap(),
        "top"
    );
    assert!(std::fs::write(target.join("x"), b"x").is_err());
    unmount(&target).unwrap();
}

#[test]
fn failed_prepare_removes_what_it_created() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("ctr");
    let _g = Unmount(vec![base.join("rootfs")]);
    let e = prepare_rootfs(&[tmp.path().join("missing-lower")], &base).unwrap_err();
    assert!(matches!(e, SnapshotError::Mount { .. }), "{e}");
    assert!(!base.exists(), "base and its subdirs removed");
}

#[test]
fn busy_mount_is_detached() {
    let tmp = tempfile::tempdir().unwrap();
    let lowers = layers(tmp.path());
    let base = tmp.path().join("ctr");
    let _g = Unmount(vec![base.join("rootfs")]);
    let dirs = prepare_rootfs(&lowers, &base).unwrap();
    // An open directory handle inside keeps the mount busy.
    let handle = std::fs::File::open(dirs.merged.join("etc")).unwrap();
    remove_rootfs(&base).unwrap();
    assert!(!is_mountpoint(&dirs.merged));
    drop(handle);
}
