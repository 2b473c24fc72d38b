//! Finding and removing cgroup directories (v1 hierarchies or the v2 unified tree).

use std::fs;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Pod cgroups sit a few levels down (controller / parent / pod [/ container]); deeper trees
/// are not ours and walking them all would be slow on a busy node.
const MAX_DEPTH: usize = 8;

fn walk(dir: &Path, depth: usize, visit: &mut dyn FnMut(&Path)) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        // file_type() does not follow symlinks: v1's cpu,cpuacct aliases are skipped.
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let p = e.path();
            visit(&p);
            walk(&p, depth + 1, visit);
        }
    }
}

/// Every cgroup directory whose own name contains `needle`.
pub fn dirs_named(needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(Path::new(CGROUP_ROOT), 0, &mut |p| {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains(needle))
        {
            found.push(p.to_path_buf());
        }
    });
    found
}

/// `rel` (a cgroupfs-style path such as "/crius-test-x") in every hierarchy where it exists.
pub fn dirs_at(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    let root = Path::new(CGROUP_ROOT);
    let mut found = Vec::new();
    if root.join("cgroup.controllers").exists() {
        // cgroup v2: one unified tree.
        let p = root.join(rel);
        if p.is_dir() {
            found.push(p);
        }
        return found;
    }
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let p = e.path().join(rel);
                if p.is_dir() {
                    found.push(p);
                }
            }
        }
    }
    found
}

/// Sub-directories of `dir` (child cgroups), recursively, deepest first.
pub fn children(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(dir, 0, &mut |p| found.push(p.to_path_buf()));
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Pids listed in a cgroup directory.
pub fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Remove `dir` and its child cgroups (rmdir only: a cgroup with live processes stays).
/// Returns the directories that could not be removed.
pub fn remove_tree(dir: &Path) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for d in children(dir)
        .into_iter()
        .chain(std::iter::once(dir.to_path_buf()))
    {
        if let Err(e) = fs::remove_dir(&d)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            left.push(d);
        }
    }
    left
}
