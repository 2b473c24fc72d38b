//! Where the cgroup hierarchies are mounted: v1 controllers (each on its own mount, or joined
//! like "cpu,cpuacct"), the v2 unified hierarchy (alone on a pure v2 host, under
//! /sys/fs/cgroup/unified on a hybrid one), or both. Read from mountinfo rather than assumed,
//! because distributions and nested setups mount them in different places.

use super::error::StatsError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    /// v1 controller (or `name=` option) → its hierarchy's mount point, root-joined.
    v1: HashMap<String, PathBuf>,
    /// The v2 hierarchy's mount point, root-joined.
    unified: Option<PathBuf>,
}

/// Where one controller's numbers for a cgroup live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    V1(PathBuf),
    V2(PathBuf),
}

impl Source {
    pub(crate) fn dir(&self) -> &Path {
        match self {
            Source::V1(d) | Source::V2(d) => d,
        }
    }
}

static HOST: OnceLock<CgroupLayout> = OnceLock::new();

impl CgroupLayout {
    /// The layout of this host, detected once: mounts do not change under a running daemon.
    pub fn host() -> Result<&'static CgroupLayout, StatsError> {
        if let Some(layout) = HOST.get() {
            return Ok(layout);
        }
        let layout = Self::detect(Path::new("/"))?;
        tracing::debug!(?layout, "cgroup layout detected");
        Ok(HOST.get_or_init(|| layout))
    }

    /// Detect the layout from `<root>/proc/self/mountinfo`; mount points are re-rooted under
    /// `root` so tests can describe a fake tree.
    pub fn detect(root: &Path) -> Result<Self, StatsError> {
        let path = root.join("proc/self/mountinfo");
        let text = std::fs::read_to_string(&path).map_err(|e| StatsError::io(&path, e))?;
        let layout = Self::from_mountinfo(root, &text);
        if layout.v1.is_empty() && layout.unified.is_none() {
            return Err(StatsError::NoCgroupMounts { mountinfo: path });
        }
        Ok(layout)
    }

    pub fn from_mountinfo(root: &Path, mountinfo: &str) -> Self {
        let mut layout = CgroupLayout::default();
        for line in mountinfo.lines() {
            let Some(mount) = parse_line(line) else {
                continue;
            };
            let point = root.join(mount.point.trim_start_matches('/'));
            match mount.fstype {
                "cgroup2" => {
                    // A bind mount of a sub-cgroup may appear later; the first is the host's.
                    layout.unified.get_or_insert(point);
                }
                "cgroup" => {
                    for opt in mount.super_opts.split(',') {
                        if opt != "rw" && opt != "ro" {
                            layout
                                .v1
                                .entry(opt.to_owned())
                                .or_insert_with(|| point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        layout
    }

    /// No v1 controller mounted: every controller lives in the unified hierarchy.
    #[cfg(test)]
    pub fn is_unified_only(&self) -> bool {
        !self.v1.keys().any(|k| !k.starts_with("name="))
    }

    #[cfg(test)]
    pub fn v1_mount(&self, controller: &str) -> Option<&Path> {
        self.v1.get(controller).map(PathBuf::as_path)
    }

    pub fn unified_mount(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// The directory holding `controller`'s files for the cgroup at `rel` (relative to the
    /// hierarchy root). A controller is bound to exactly one hierarchy, so a controller mounted
    /// on v1 is read there only; otherwise the unified hierarchy is tried.
    pub fn source(&self, controller: &str, rel: &Path) -> Option<Source> {
        match (self.v1.get(controller), &self.unified) {
            (Some(mount), _) => Some(Source::V1(mount.join(rel))),
            (None, Some(unified)) => Some(Source::V2(unified.join(rel))),
            (None, None) => None,
        }
    }
}

struct Mount<'a> {
    point: String,
    fstype: &'a str,
    super_opts: &'a str,
}

/// One mountinfo line: `id parent maj:min root point opts [optional...] - fstype source super`.
fn parse_line(line: &str) -> Option<Mount<'_>> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 {
        return None;
    }
    Some(Mount {
        point: unescape(fields[4]),
        fstype: fields.get(sep + 1)?,
        super_opts: fields.get(sep + 3)?,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
99 41 0:38 /x /mnt/other\\040dir rw - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_layout_finds_joined_v1_mounts_and_unified() {
        let l = CgroupLayout::from_mountinfo(Path::new("/fake"), HYBRID);
        assert_eq!(
            l.v1_mount("cpuacct"),
            Some(Path::new("/fake/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(l.v1_mount("cpu"), l.v1_mount("cpuacct"));
        assert_eq!(
            l.v1_mount("memory"),
            Some(Path::new("/fake/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            l.unified_mount(),
            Some(Path::new("/fake/sys/fs/cgroup/unified"))
        );
        assert!(!l.is_unified_only());
        assert_eq!(
            l.source("memory", Path::new("crius/a")),
            Some(Source::V1("/fake/sys/fs/cgroup/memory/crius/a".into()))
        );
        // hugetlb is not on v1 here, so the unified hierarchy is where it would be.
        assert_eq!(
            l.source("hugetlb", Path::new("crius/a")),
            Some(Source::V2("/fake/sys/fs/cgroup/unified/crius/a".into()))
        );
    }

    #[test]
    fn pure_v2_layout() {
        let text = "25 1 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = CgroupLayout::from_mountinfo(Path::new("/"), text);
        assert!(l.is_unified_only());
        assert_eq!(
            l.source("memory", Path::new("kubepods/pod1/c")),
            Some(Source::V2("/sys/fs/cgroup/kubepods/pod1/c".into()))
        );
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/trailing\\04"), "/trailing\\04");
    }

    #[test]
    fn host_layout_is_detected() {
        let l = CgroupLayout::host().unwrap();
        assert!(l.v1_mount("memory").is_some() || l.unified_mount().is_some());
    }
}
