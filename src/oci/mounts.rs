//! The mounts every container gets, and the bind mounts of pod files.
//!
//! Options follow runc/containerd's defaults so that workloads see the usual /dev, /proc and /sys.
//! There is no /run tmpfs (containerd's CRI plugin drops it too: images own /run).

use std::path::Path;

use oci_spec::runtime::Mount;

/// 64 MiB, containerd's and Docker's default size for a pod's /dev/shm.
pub const DEFAULT_SHM_SIZE: &str = "65536k";

/// Where the pod's /dev/shm comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShmSource<'a> {
    /// A fresh tmpfs inside the container (pod has its own IPC namespace and nobody else needs
    /// to share the memory from outside the sandbox's mount namespace).
    Tmpfs,
    /// Bind-mount this host directory (the node's /dev/shm for host-IPC pods, or a tmpfs the
    /// runtime mounted for the pod so its app containers can share it).
    Bind(&'a Path),
}

fn options(opts: &[&str]) -> Option<Vec<String>> {
    Some(opts.iter().map(|s| s.to_string()).collect())
}

fn mount(destination: &str, typ: &str, source: &Path, opts: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(destination.into());
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(options(opts));
    m
}

/// /proc, /dev, /dev/pts, /dev/mqueue, /sys and /sys/fs/cgroup, in mount order.
///
/// /sys and the cgroup hierarchy are read-only unless `privileged`. (libcontainer 0.7 ignores
/// `ro` on the v1 cgroup controllers it bind-mounts; [`super::security::readonly_paths`] covers
/// them.)
pub fn base_mounts(privileged: bool) -> Vec<Mount> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    vec![
        mount(
            "/proc",
            "proc",
            Path::new("proc"),
            &["nosuid", "noexec", "nodev"],
        ),
        dev_tmpfs(),
        mount(
            "/dev/pts",
            "devpts",
            Path::new("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            Path::new("mqueue"),
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            Path::new("sysfs"),
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            Path::new("cgroup"),
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
    ]
}

/// The container's /dev: a small tmpfs where libcontainer creates the standard device nodes.
pub fn dev_tmpfs() -> Mount {
    mount(
        "/dev",
        "tmpfs",
        Path::new("tmpfs"),
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    )
}

/// The pod's /dev/shm. A bind is read-only for the sandbox (the pause process never writes
/// shared memory; app containers get their own writable bind of the same source).
pub fn dev_shm(source: ShmSource<'_>, read_only: bool) -> Mount {
    match source {
        ShmSource::Tmpfs => mount(
            "/dev/shm",
            "tmpfs",
            Path::new("shm"),
            &[
                "nosuid",
                "noexec",
                "nodev",
                "mode=1777",
                &format!("size={DEFAULT_SHM_SIZE}"),
            ],
        ),
        ShmSource::Bind(path) => bind(path, "/dev/shm", read_only),
    }
}

/// A recursive bind of a host file or directory; `nosuid,nodev,noexec` always.
pub fn bind(source: &Path, destination: &str, read_only: bool) -> Mount {
    let mode = if read_only { "ro" } else { "rw" };
    mount(
        destination,
        "bind",
        source,
        &["rbind", mode, "nosuid", "nodev", "noexec"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    #[test]
    fn base_unprivileged_is_ro() {
        let ms = base_mounts(false);
        let dests: Vec<_> = ms.iter().map(|m| m.destination().clone()).collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup"
            ]
            .map(std::path::PathBuf::from)
        );
        assert!(opts(&ms[4]).contains(&"ro".to_string()));
        assert!(opts(&ms[5]).contains(&"ro".to_string()));
        assert!(!ms.iter().any(|m| m.destination() == Path::new("/run")));
    }

    #[test]
    fn base_privileged_is_rw() {
        let ms = base_mounts(true);
        assert!(opts(&ms[4]).contains(&"rw".to_string()));
        assert!(!opts(&ms[5]).contains(&"ro".to_string()));
    }

    #[test]
    fn shm_variants() {
        let t = dev_shm(ShmSource::Tmpfs, true);
        assert_eq!(t.typ().as_deref(), Some("tmpfs"));
        assert!(opts(&t).contains(&"size=65536k".to_string()));
        assert!(opts(&t).contains(&"mode=1777".to_string()));
        let b = dev_shm(ShmSource::Bind(Path::new("/dev/shm")), true);
        assert_eq!(b.typ().as_deref(), Some("bind"));
        assert_eq!(b.source().as_deref(), Some(Path::new("/dev/shm")));
        assert_eq!(opts(&b), ["rbind", "ro", "nosuid", "nodev", "noexec"]);
    }
}
