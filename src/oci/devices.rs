//! Host devices passed into containers.
//!
//! The spec needs each device's type and major/minor numbers, which only the host's device nodes
//! know. So resolving is split off: [`resolve_devices`] and [`resolve_all_host_devices`] stat the
//! host (call them before building the spec), and the pure [`linux_devices`] /
//! [`device_cgroup_rules`] turn the result into spec entries.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use k8s_cri::v1::Device as CriDevice;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::SpecError;

/// A host device node, resolved, with where it appears in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDevice {
    /// Absolute, under /dev (libcontainer creates device nodes only there).
    pub container_path: PathBuf,
    /// `B` or `C`.
    pub typ: LinuxDeviceType,
    pub major: i64,
    pub minor: i64,
    /// Permission bits of the host node (the container's node gets the same).
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device cgroup access: a non-empty subset of "rwm".
    pub permissions: String,
}

/// Directories under /dev that hold no devices of the host's own (per-mount-namespace pseudo
/// filesystems, container-manager state), skipped when walking, as runc and containerd do.
const SKIPPED_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Resolve CRI devices against the host. A `host_path` that is a directory expands to every
/// device below it, each at the same relative path under `container_path`. Symlinks in
/// `host_path` are followed (kubelet device plugins often pass /dev/disk/by-id/... links).
pub fn resolve_devices(devices: &[CriDevice]) -> Result<Vec<ResolvedDevice>, SpecError> {
    let mut out = Vec::new();
    for d in devices {
        let permissions = validate_permissions(&d.host_path, &d.permissions)?;
        let container_path = container_device_path(&d.container_path)?;
        if !Path::new(&d.host_path).is_absolute() {
            return Err(invalid(&d.host_path, "host_path must be absolute"));
        }
        let host = std::fs::canonicalize(&d.host_path).map_err(|source| SpecError::DeviceRead {
            path: PathBuf::from(&d.host_path),
            source,
        })?;
        let meta = std::fs::metadata(&host).map_err(|source| SpecError::DeviceRead {
            path: host.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(&host, &container_path, &permissions, &mut out)?;
        } else {
            let dev = from_metadata(&meta, container_path, &permissions)
                .ok_or_else(|| invalid(&d.host_path, "not a character or block device"))?;
            out.push(dev);
        }
    }
    Ok(out)
}

/// Every device node under the host's /dev (for privileged containers), with "rwm" access.
pub fn resolve_all_host_devices() -> Result<Vec<ResolvedDevice>, SpecError> {
    let mut out = Vec::new();
    walk(Path::new("/dev"), Path::new("/dev"), "rwm", &mut out)?;
    Ok(out)
}

/// Collect char/block devices under `host_dir`. Symlinks, FIFOs, sockets, /dev/console (the
/// runtime sets up the container's own) and [`SKIPPED_DIRS`] are skipped; entries that vanish
/// while walking are ignored (udev may be renaming things).
fn walk(
    host_dir: &Path,
    container_dir: &Path,
    permissions: &str,
    out: &mut Vec<ResolvedDevice>,
) -> Result<(), SpecError> {
    let read_err = |path: &Path, source| SpecError::DeviceRead {
        path: path.to_path_buf(),
        source,
    };
    let entries = std::fs::read_dir(host_dir).map_err(|e| read_err(host_dir, e))?;
    let mut entries: Vec<_> = entries
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(host_dir, e))?;
    // Deterministic order (readdir order is not).
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let host = entry.path();
        let container = container_dir.join(&name);
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(read_err(&host, e)),
        };
        if meta.is_dir() {
            if name.to_str().is_some_and(|n| SKIPPED_DIRS.contains(&n)) {
                continue;
            }
            walk(&host, &container, permissions, out)?;
        } else if name != "console" {
            out.extend(from_metadata(&meta, container, permissions));
        }
    }
    Ok(())
}

fn from_metadata(
    meta: &std::fs::Metadata,
    container_path: PathBuf,
    permissions: &str,
) -> Option<ResolvedDevice> {
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(ResolvedDevice {
        container_path,
        typ,
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        file_mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        permissions: permissions.to_string(),
    })
}

fn invalid(path: &str, reason: &str) -> SpecError {
    SpecError::InvalidDevice {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// "" means "rwm" (what kubelet means by no permissions); otherwise only r, w, m, each once.
fn validate_permissions(path: &str, perms: &str) -> Result<String, SpecError> {
    if perms.is_empty() {
        return Ok("rwm".to_string());
    }
    let mut seen = String::new();
    for c in perms.chars() {
        if !"rwm".contains(c) || seen.contains(c) {
            return Err(invalid(
                path,
                &format!("permissions {perms:?} must be a subset of \"rwm\""),
            ));
        }
        seen.push(c);
    }
    Ok(perms.to_string())
}

/// Absolute, normalised, no "..", and under /dev.
fn container_device_path(path: &str) -> Result<PathBuf, SpecError> {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(
            path,
            "container_path must be absolute without \"..\"",
        ));
    }
    let clean: PathBuf = p.components().collect();
    if !clean.starts_with("/dev") || clean == Path::new("/dev") {
        return Err(invalid(path, "container_path must be below /dev"));
    }
    Ok(clean)
}

/// `linux.devices` entries, one per container path (a later device for the same path replaces an
/// earlier one: two nodes at one path cannot both be created).
pub fn linux_devices(devices: &[ResolvedDevice]) -> Vec<LinuxDevice> {
    let mut out: Vec<LinuxDevice> = Vec::with_capacity(devices.len());
    for d in devices {
        let mut dev = LinuxDevice::default();
        dev.set_path(d.container_path.clone());
        dev.set_typ(d.typ);
        dev.set_major(d.major);
        dev.set_minor(d.minor);
        dev.set_file_mode(Some(d.file_mode));
        dev.set_uid(Some(d.uid));
        dev.set_gid(Some(d.gid));
        match out.iter_mut().find(|o| o.path() == dev.path()) {
            Some(slot) => *slot = dev,
            None => out.push(dev),
        }
    }
    out
}

/// One device-cgroup allow rule per device, with its permissions.
pub fn device_cgroup_rules(devices: &[ResolvedDevice]) -> Vec<LinuxDeviceCgroup> {
    devices
        .iter()
        .map(|d| {
            let mut r = LinuxDeviceCgroup::default();
            r.set_allow(true);
            r.set_typ(Some(d.typ));
            r.set_major(Some(d.major));
            r.set_minor(Some(d.minor));
            r.set_access(Some(d.permissions.clone()));
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};

    fn cri(container: &str, host: &str, perms: &str) -> CriDevice {
        CriDevice {
            container_path: container.into(),
            host_path: host.into(),
            permissions: perms.into(),
        }
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn host_dev_null() {
        let devs = resolve_devices(&[cri("/dev/mynull", "/dev/null", "rw")]).unwrap();
        assert_eq!(devs.len(), 1);
        let d = &devs[0];
        assert_eq!(d.container_path, Path::new("/dev/mynull"));
        assert_eq!((d.typ, d.major, d.minor), (LinuxDeviceType::C, 1, 3));
        assert_eq!(d.permissions, "rw");
        let rules = device_cgroup_rules(&devs);
        assert_eq!(rules[0].to_string(), "c 1:3 rw");
        let ld = linux_devices(&devs);
        assert_eq!(ld[0].path(), Path::new("/dev/mynull"));
        assert_eq!(ld[0].file_mode(), Some(d.file_mode));
    }

    #[test]
    fn invalid_requests() {
        let cases = [
            cri("/dev/x", "/etc/hostname", "rwm"), // not a device
            cri("dev/x", "/dev/null", "rwm"),
            cri("/tmp/x", "/dev/null", "rwm"),
            cri("/dev/../x", "/dev/null", "rwm"),
            cri("/dev/x", "/dev/null", "rwx"),
            cri("/dev/x", "/dev/null", "rr"),
            cri("/dev/x", "null", "r"),
        ];
        for c in cases {
            assert!(
                matches!(
                    resolve_devices(std::slice::from_ref(&c)),
                    Err(SpecError::InvalidDevice { .. })
                ),
                "{c:?}"
            );
        }
        let err = resolve_devices(&[cri("/dev/x", "/dev/does-not-exist", "")]).unwrap_err();
        assert!(matches!(err, SpecError::DeviceRead { .. }));
        // Empty permissions mean rwm.
        let d = resolve_devices(&[cri("/dev/x", "/dev/zero", "")]).unwrap();
        assert_eq!(d[0].permissions, "rwm");
    }

    #[test]
    fn directory_expands_and_skips_non_devices() {
        if !is_root() {
            eprintln!("skipped: needs root for mknod");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("gpu");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("pts")).unwrap();
        let chr = |p: &Path, maj, min| {
            mknod(p, SFlag::S_IFCHR, Mode::empty(), makedev(maj, min)).unwrap();
            // Explicitly, not through mknod's mode (the umask would trim it).
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o660)).unwrap();
        };
        chr(&root.join("card0"), 1, 3);
        chr(&root.join("sub/card1"), 1, 5);
        chr(&root.join("pts/ignored"), 1, 7);
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink(root.join("card0"), root.join("link")).unwrap();
        std::fs::write(root.join("file"), b"x").unwrap();

        let devs = resolve_devices(&[cri("/dev/gpu", root.to_str().unwrap(), "rw")]).unwrap();
        let paths: Vec<_> = devs.iter().map(|d| d.container_path.clone()).collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("/dev/gpu/card0"),
                PathBuf::from("/dev/gpu/sub/card1")
            ]
        );
        assert_eq!(devs[1].minor, 5);
        assert_eq!(devs[0].file_mode, 0o660);
    }

    #[test]
    fn all_host_devices() {
        let devs = resolve_all_host_devices().unwrap();
        assert!(
            devs.iter()
                .any(|d| d.container_path == Path::new("/dev/null"))
        );
        assert!(
            !devs
                .iter()
                .any(|d| d.container_path.starts_with("/dev/pts"))
        );
        assert!(
            !devs
                .iter()
                .any(|d| d.container_path == Path::new("/dev/console"))
        );
        assert!(devs.iter().all(|d| d.permissions == "rwm"));
    }

    #[test]
    fn later_device_wins_same_path() {
        let mk = |minor| ResolvedDevice {
            container_path: "/dev/x".into(),
            typ: LinuxDeviceType::C,
            major: 1,
            minor,
            file_mode: 0o666,
            uid: 0,
            gid: 0,
            permissions: "rwm".into(),
        };
        let ld = linux_devices(&[mk(3), mk(5)]);
        assert_eq!(ld.len(), 1);
        assert_eq!(ld[0].minor(), 5);
    }
}
