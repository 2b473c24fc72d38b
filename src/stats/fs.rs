//! Disk usage of a container's writable layer (its overlay upper directory), like `du -x`:
//! allocated blocks, each hard-linked inode once, symlinks not followed, other mounts not
//! entered.

use super::error::StatsError;
use std::collections::HashSet;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    /// When the walk finished, in Unix nanoseconds (callers may cache a walk).
    pub timestamp: i64,
    /// Allocated bytes (st_blocks * 512), so sparse files count what they use on disk.
    pub used_bytes: u64,
    /// Distinct inodes, the directory itself included.
    pub inodes_used: u64,
}

/// Walk `path` and add up its disk usage. `NotFound` when `path` itself does not exist;
/// entries removed while walking (the container is running) are skipped.
pub fn dir_usage(path: &Path) -> Result<FsUsage, StatsError> {
    let root = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(StatsError::NotFound {
                what: "directory",
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(StatsError::io(path, e)),
    };
    let dev = root.dev();
    let mut usage = FsUsage::default();
    // Only inodes with several links can be met twice; remembering just those keeps the set
    // small on big layers.
    let mut linked: HashSet<u64> = HashSet::new();
    let mut count = |m: &std::fs::Metadata, usage: &mut FsUsage| {
        if m.nlink() > 1 && !m.is_dir() && !linked.insert(m.ino()) {
            return;
        }
        usage.used_bytes = usage
            .used_bytes
            .saturating_add(m.blocks().saturating_mul(512));
        usage.inodes_used += 1;
    };
    count(&root, &mut usage);

    let mut pending: Vec<PathBuf> = Vec::new();
    if root.is_dir() {
        pending.push(path.to_owned());
    }
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(StatsError::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StatsError::io(&dir, e))?;
            // DirEntry::metadata does not follow symlinks.
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(StatsError::io(entry.path(), e)),
            };
            if meta.dev() != dev {
                continue;
            }
            count(&meta, &mut usage);
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    usage.timestamp = crate::util::now_nanos();
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn blocks(p: &Path) -> u64 {
        fs::symlink_metadata(p).unwrap().blocks() * 512
    }

    #[test]
    fn counts_hardlinks_once_and_does_not_follow_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let big = outside.path().join("big");
        fs::write(&big, vec![7u8; 1 << 20]).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("a/b")).unwrap();
        fs::write(d.join("a/file"), vec![1u8; 64 * 1024]).unwrap();
        fs::hard_link(d.join("a/file"), d.join("a/b/link")).unwrap();
        std::os::unix::fs::symlink(&big, d.join("sym")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("symdir")).unwrap();

        let u = dir_usage(d).unwrap();
        // root, a, a/b, file (linked twice, once), sym, symdir.
        assert_eq!(u.inodes_used, 6);
        let expected: u64 = [
            d.to_path_buf(),
            d.join("a"),
            d.join("a/b"),
            d.join("a/file"),
            d.join("sym"),
            d.join("symdir"),
        ]
        .iter()
        .map(|p| blocks(p))
        .sum();
        assert_eq!(u.used_bytes, expected);
        assert!(u.used_bytes >= 64 * 1024, "the file's blocks are counted");
        assert!(u.used_bytes < 1 << 20, "the symlinked 1 MiB file is not");
        assert!(u.timestamp > 0);
    }

    #[test]
    fn sparse_file_counts_allocated_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let f = fs::File::create(dir.path().join("sparse")).unwrap();
        f.set_len(1 << 30).unwrap();
        let u = dir_usage(dir.path()).unwrap();
        assert!(u.used_bytes < 1 << 20, "{u:?}");
        assert_eq!(u.inodes_used, 2);
    }

    #[test]
    fn missing_dir_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            dir_usage(&dir.path().join("nope"))
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn does_not_cross_mount_points() {
        // Needs root for the tmpfs mount; skip quietly otherwise.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &mnt,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _guard = Unmount(&mnt);
        fs::write(mnt.join("inside"), vec![1u8; 256 * 1024]).unwrap();
        let u = dir_usage(dir.path()).unwrap();
        assert_eq!(
            u.inodes_used, 1,
            "only the root; the mount point is on another fs"
        );
    }
}
