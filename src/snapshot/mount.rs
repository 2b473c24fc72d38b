//! overlayfs and read-only bind mounts.

use super::SnapshotError;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// Mount an overlay of `lowers` (top-most first, overlay's own order) at `target`, writable
/// when `upper_work` is given. A single lower without an upper cannot be an overlay (overlayfs
/// wants two lowers for a read-only mount), so it becomes a read-only bind mount instead.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), SnapshotError> {
    if lowers.is_empty() {
        return Err(SnapshotError::NoLowers {
            target: target.to_path_buf(),
        });
    }
    if lowers.len() == 1 && upper_work.is_none() {
        return bind_readonly(&lowers[0], target);
    }
    let options = overlay_options(lowers, upper_work, target)?;
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|source| SnapshotError::Mount {
        what: format!("overlay ({options})"),
        target: target.to_path_buf(),
        source,
    })
}

/// Build the option string, refusing paths overlayfs would misparse and strings over a page.
pub(crate) fn overlay_options(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<String, SnapshotError> {
    let check = |p: &Path| -> Result<String, SnapshotError> {
        let s = p.to_str().ok_or_else(|| SnapshotError::BadPath {
            path: p.to_path_buf(),
            reason: "not UTF-8".into(),
        })?;
        // ':' separates lowers and ',' options; overlay's escaping is not worth the risk.
        if let Some(c) = s.chars().find(|c| matches!(c, ':' | ',' | '\\' | '\n')) {
            return Err(SnapshotError::BadPath {
                path: p.to_path_buf(),
                reason: format!("contains {c:?}"),
            });
        }
        if !p.is_absolute() {
            return Err(SnapshotError::BadPath {
                path: p.to_path_buf(),
                reason: "not absolute".into(),
            });
        }
        Ok(s.to_string())
    };
    let lower = lowers
        .iter()
        .map(|p| check(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut options = format!("lowerdir={}", lower.join(":"));
    if let Some((upper, work)) = upper_work {
        options.push_str(&format!(
            ",upperdir={},workdir={}",
            check(upper)?,
            check(work)?
        ));
    }
    // mount(2) copies at most one page of data, NUL included.
    let max = page_size() - 1;
    if options.len() > max {
        return Err(SnapshotError::OptionsTooLong {
            target: target.to_path_buf(),
            len: options.len(),
            max,
        });
    }
    Ok(options)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

fn bind_readonly(src: &Path, target: &Path) -> Result<(), SnapshotError> {
    let err = |what: &str, source| SnapshotError::Mount {
        what: format!("{what} of {}", src.display()),
        target: target.to_path_buf(),
        source,
    };
    nix::mount::mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| err("bind mount", e))?;
    // MS_RDONLY is ignored on the initial bind; it takes a remount.
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
        let _ = unmount(target);
        return Err(err("read-only remount", e));
    }
    Ok(())
}

/// Unmount `target`. Not mounted (or absent) is success; a busy mount is detached lazily.
/// Loops so a target with stacked mounts ends up bare.
pub fn unmount(target: &Path) -> Result<(), SnapshotError> {
    for _ in 0..16 {
        if !is_mountpoint(target) {
            return Ok(());
        }
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => {}
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) => {
                tracing::warn!(target = %target.display(), "mount busy; detaching lazily");
                nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(|source| {
                    SnapshotError::Unmount {
                        target: target.to_path_buf(),
                        source,
                    }
                })?;
            }
            Err(source) => {
                return Err(SnapshotError::Unmount {
                    target: target.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Whether `path` is a mount point, by /proc/self/mountinfo (st_dev comparison misses bind
/// mounts within one filesystem).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(path) else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(&unescape_mountinfo(mp)) == canon)
}

/// mountinfo escapes space, tab, newline and backslash as \ooo octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_limits() {
        let t = Path::new("/t");
        let o = overlay_options(&[PathBuf::from("/a"), PathBuf::from("/b")], None, t).unwrap();
        assert_eq!(o, "lowerdir=/a:/b");
        let o = overlay_options(
            &[PathBuf::from("/a")],
            Some((Path::new("/u"), Path::new("/w"))),
            t,
        )
        .unwrap();
        assert_eq!(o, "lowerdir=/a,upperdir=/u,workdir=/w");
        let e = overlay_options(&[PathBuf::from("/a:b")], None, t).unwrap_err();
        assert!(e.to_string().contains("':'"), "{e}");
        let many: Vec<PathBuf> = (0..200)
            .map(|i| PathBuf::from(format!("/var/lib/crius/snapshots/{i}/fs")))
            .collect();
        let e = overlay_options(&many, None, t).unwrap_err();
        assert!(matches!(e, SnapshotError::OptionsTooLong { .. }), "{e}");
        assert!(e.to_string().contains("page"), "{e}");
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/a\\134"), "/a\\");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn root_is_a_mountpoint_and_tmp_subdir_is_not() {
        assert!(is_mountpoint(Path::new("/")));
        let d = tempfile::tempdir().unwrap();
        assert!(!is_mountpoint(d.path()));
        assert!(!is_mountpoint(&d.path().join("missing")));
        unmount(&d.path().join("missing")).unwrap();
        unmount(d.path()).unwrap();
    }
}
