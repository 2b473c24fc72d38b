//! Mount points of our own mount namespace, read from /proc/self/mountinfo.

use std::path::{Path, PathBuf};

/// mountinfo escapes space, tab, newline and backslash as `\ooo` (three octal digits).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount point at or under `root`, deepest (longest path) first, so unmounting in this
/// order never hits a busy parent. A path mounted several times appears several times.
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|f| PathBuf::from(unescape(f)))
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found
}

/// Lazily unmount everything under `root`; returns what could not be unmounted.
pub fn unmount_all_under(root: &Path) -> Vec<PathBuf> {
    // Stacked mounts need one pass each; a handful of passes covers any real case.
    for _ in 0..8 {
        let mounts = mounts_under(root);
        if mounts.is_empty() {
            return Vec::new();
        }
        for m in &mounts {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    mounts_under(root)
}
