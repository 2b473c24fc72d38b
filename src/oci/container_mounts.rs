//! An application container's mounts: the standard ones, the pod files shared from the sandbox,
//! and the CRI mounts kubelet asks for (volumes, termination log, service-account token...).
//!
//! Rules (containerd's):
//! - CRI mounts are recursive binds: `rbind`, the propagation, then `ro`/`rw`.
//! - The pod's /etc/hostname, /etc/hosts, /etc/resolv.conf and /dev/shm are added unless a CRI
//!   mount targets the same path (kubelet mounts its own /etc/hosts for pods on the pod network).
//!   The /etc files are writable unless the rootfs is read-only, like containerd.
//! - A CRI or pod-file mount replaces a standard mount at the same destination, and a mount of
//!   /dev replaces every standard mount under /dev.
//! - Pod files and CRI mounts are sorted by depth (number of path components, stable), so a
//!   parent is mounted before anything inside it.

use std::path::{Component, Path, PathBuf};

use k8s_cri::v1::{Mount as CriMount, MountPropagation};
use oci_spec::runtime::Mount;

use super::SpecError;
use super::mounts::{self, ShmSource};

/// The node's shared-memory directory, for host-IPC pods.
const HOST_DEV_SHM: &str = "/dev/shm";

/// Host files the sandbox owns and shares with its containers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SandboxFiles<'a> {
    pub resolv_conf: Option<&'a Path>,
    pub hostname: Option<&'a Path>,
    pub hosts: Option<&'a Path>,
    /// The pod's shared /dev/shm: a tmpfs the runtime mounted on the host for the sandbox (the
    /// same source the sandbox spec binds). `None` gives the container a private tmpfs.
    ///
    /// There is deliberately no fallback to `/proc/<sandbox pid>/root/dev/shm`: that path lives
    /// in the sandbox's mount namespace, and the kernel refuses to bind-mount from another
    /// mount namespace (EINVAL), so such a spec could never start.
    pub dev_shm: Option<&'a Path>,
}

/// What the mount rules produced.
#[derive(Debug, Clone, PartialEq)]
pub struct MountPlan {
    /// In mount order.
    pub mounts: Vec<Mount>,
    /// `linux.rootfsPropagation`: "shared" when a mount is bidirectional (its submounts must
    /// propagate back to the host), else `None`, libcontainer's default of a recursive slave
    /// root, which already lets host mounts propagate into HOST_TO_CONTAINER mounts. (libcontainer
    /// only understands "shared", "private", "slave" and "unbindable", not runc's "rshared".)
    pub rootfs_propagation: Option<String>,
}

/// Inputs of [`container_mounts`].
#[derive(Debug, Clone, Copy)]
pub struct MountInputs<'a> {
    pub cri: &'a [CriMount],
    pub files: SandboxFiles<'a>,
    /// The pod shares the node's IPC namespace (then /dev/shm is the node's).
    pub host_ipc: bool,
    pub readonly_rootfs: bool,
    pub privileged: bool,
}

/// Build the container's mount list.
pub fn container_mounts(input: &MountInputs) -> Result<MountPlan, SpecError> {
    let mut user: Vec<(PathBuf, Mount)> = Vec::new();
    let mut shared = false;
    for m in input.cri {
        let (dest, mount, propagation) = cri_mount(m)?;
        shared |= propagation == MountPropagation::PropagationBidirectional;
        user.push((dest, mount));
    }

    let claimed = |dest: &str, user: &[(PathBuf, Mount)]| user.iter().any(|(d, _)| d == dest);
    let pod_files = [
        ("/etc/hostname", input.files.hostname),
        ("/etc/hosts", input.files.hosts),
        ("/etc/resolv.conf", input.files.resolv_conf),
    ];
    for (dest, source) in pod_files {
        if let Some(source) = source
            && !claimed(dest, &user)
        {
            user.push((
                dest.into(),
                mounts::bind(source, dest, input.readonly_rootfs),
            ));
        }
    }
    if !claimed("/dev/shm", &user) {
        let source = if input.host_ipc {
            ShmSource::Bind(Path::new(HOST_DEV_SHM))
        } else {
            input
                .files
                .dev_shm
                .map_or(ShmSource::Tmpfs, ShmSource::Bind)
        };
        user.push(("/dev/shm".into(), mounts::dev_shm(source, false)));
    }

    // Stable: equal depths keep the CRI order.
    user.sort_by_key(|(dest, _)| dest.components().count());

    let dev_replaced = user.iter().any(|(d, _)| d == Path::new("/dev"));
    let mut out: Vec<Mount> = mounts::base_mounts(input.privileged)
        .into_iter()
        .filter(|m| {
            let dest = m.destination();
            let replaced = user.iter().any(|(d, _)| d == dest);
            let under_replaced_dev = dev_replaced && dest.starts_with("/dev");
            !replaced && !under_replaced_dev
        })
        .collect();
    out.extend(user.into_iter().map(|(_, m)| m));

    Ok(MountPlan {
        mounts: out,
        rootfs_propagation: shared.then(|| "shared".to_string()),
    })
}

/// Validate and convert one CRI mount; returns the clean destination too.
pub fn cri_mount(m: &CriMount) -> Result<(PathBuf, Mount, MountPropagation), SpecError> {
    let invalid = |field, path: &str, reason| SpecError::InvalidMount {
        field,
        path: path.to_string(),
        reason,
    };
    let dest = clean_absolute(&m.container_path).ok_or_else(|| {
        invalid(
            "container_path",
            &m.container_path,
            "must be absolute without \"..\"",
        )
    })?;
    if m.host_path.is_empty() || !Path::new(&m.host_path).is_absolute() {
        return Err(invalid(
            "host_path",
            &m.host_path,
            "must be an absolute path",
        ));
    }
    if m.host_path.contains('\0') {
        return Err(invalid("host_path", &m.host_path, "contains NUL"));
    }
    let unsupported = |feature: &str| {
        Err(SpecError::Unsupported {
            feature: format!("{feature} (mount at {:?})", m.container_path),
        })
    };
    if m.recursive_read_only {
        return unsupported("recursive read-only mounts");
    }
    if m.image.is_some() {
        return unsupported("image volume mounts");
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return unsupported("id-mapped mounts");
    }
    // selinux_relabel is accepted and ignored: this runtime does not run with SELinux labels.

    // An unknown enum value is treated as private, the safe default (containerd warns likewise).
    let propagation =
        MountPropagation::try_from(m.propagation).unwrap_or(MountPropagation::PropagationPrivate);
    let propagation_opt = match propagation {
        MountPropagation::PropagationPrivate => "rprivate",
        MountPropagation::PropagationHostToContainer => "rslave",
        MountPropagation::PropagationBidirectional => "rshared",
    };
    let mode = if m.readonly { "ro" } else { "rw" };

    let mut mount = Mount::default();
    mount.set_destination(dest.clone());
    mount.set_typ(Some("bind".to_string()));
    mount.set_source(Some(PathBuf::from(&m.host_path)));
    mount.set_options(Some(vec![
        "rbind".to_string(),
        propagation_opt.to_string(),
        mode.to_string(),
    ]));
    Ok((dest, mount, propagation))
}

/// Absolute path with "." and duplicate/trailing slashes removed; `None` if relative or if it has
/// "..".
fn clean_absolute(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if !p.is_absolute() || path.contains('\0') || p.components().any(|c| c == Component::ParentDir)
    {
        return None;
    }
    Some(p.components().collect())
}

/// Side effect, before building the spec: create missing host directories for CRI mounts and
/// resolve symlinks in their host paths, as containerd does (a bind of a dangling path fails,
/// and a symlink must not be re-resolved inside the container's root). Returns the mounts with
/// canonical host paths.
pub fn prepare_mount_sources(cri: &[CriMount]) -> Result<Vec<CriMount>, SpecError> {
    cri.iter()
        .map(|m| {
            let path = Path::new(&m.host_path);
            if !path.is_absolute() {
                // Left for cri_mount to reject with the precise message.
                return Ok(m.clone());
            }
            let err = |source| SpecError::MountSource {
                path: path.to_path_buf(),
                source,
            };
            if std::fs::symlink_metadata(path).is_err() {
                std::fs::create_dir_all(path).map_err(err)?;
            }
            let canonical = std::fs::canonicalize(path).map_err(err)?;
            let mut out = m.clone();
            out.host_path = canonical.to_string_lossy().into_owned();
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cri(container: &str, host: &str, ro: bool, prop: MountPropagation) -> CriMount {
        CriMount {
            container_path: container.into(),
            host_path: host.into(),
            readonly: ro,
            propagation: prop as i32,
            ..Default::default()
        }
    }

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    fn dests(plan: &MountPlan) -> Vec<String> {
        plan.mounts
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect()
    }

    fn files() -> SandboxFiles<'static> {
        SandboxFiles {
            resolv_conf: Some(Path::new("/sb/resolv.conf")),
            hostname: Some(Path::new("/sb/hostname")),
            hosts: Some(Path::new("/sb/hosts")),
            dev_shm: Some(Path::new("/sb/shm")),
        }
    }

    fn inputs<'a>(cri: &'a [CriMount]) -> MountInputs<'a> {
        MountInputs {
            cri,
            files: files(),
            host_ipc: false,
            readonly_rootfs: false,
            privileged: false,
        }
    }

    #[test]
    fn propagation_and_mode() {
        use MountPropagation::*;
        let (_, m, _) = cri_mount(&cri("/a", "/h", true, PropagationPrivate)).unwrap();
        assert_eq!(opts(&m), ["rbind", "rprivate", "ro"]);
        assert_eq!(m.typ().as_deref(), Some("bind"));
        let (_, m, _) = cri_mount(&cri("/a", "/h", false, PropagationHostToContainer)).unwrap();
        assert_eq!(opts(&m), ["rbind", "rslave", "rw"]);
        let (_, m, p) = cri_mount(&cri("/a/", "/h", false, PropagationBidirectional)).unwrap();
        assert_eq!(opts(&m), ["rbind", "rshared", "rw"]);
        assert_eq!(p, PropagationBidirectional);
        assert_eq!(m.destination(), Path::new("/a"), "trailing slash cleaned");

        let plan =
            container_mounts(&inputs(&[cri("/a", "/h", false, PropagationBidirectional)])).unwrap();
        assert_eq!(plan.rootfs_propagation.as_deref(), Some("shared"));
        let plan = container_mounts(&inputs(&[cri(
            "/a",
            "/h",
            false,
            PropagationHostToContainer,
        )]))
        .unwrap();
        assert_eq!(plan.rootfs_propagation, None);
    }

    #[test]
    fn invalid_mounts() {
        use MountPropagation::PropagationPrivate as P;
        for m in [
            cri("rel", "/h", false, P),
            cri("/a/../b", "/h", false, P),
            cri("/a", "rel/h", false, P),
            cri("/a", "", false, P),
        ] {
            assert!(
                matches!(cri_mount(&m), Err(SpecError::InvalidMount { .. })),
                "{m:?}"
            );
        }
        let mut rro = cri("/a", "/h", true, P);
        rro.recursive_read_only = true;
        let err = cri_mount(&rro).unwrap_err();
        assert_eq!(err.grpc_code(), tonic::Code::Unimplemented);
        // SELinux relabel is accepted.
        let mut relabel = cri("/a", "/h", true, P);
        relabel.selinux_relabel = true;
        assert!(cri_mount(&relabel).is_ok());
        // Unknown propagation value → private.
        let mut odd = cri("/a", "/h", true, P);
        odd.propagation = 42;
        assert_eq!(opts(&cri_mount(&odd).unwrap().1)[1], "rprivate");
    }

    #[test]
    fn ordering_parents_first() {
        use MountPropagation::PropagationPrivate as P;
        let list = [
            cri("/data/a/b", "/h1", false, P),
            cri("/data", "/h2", false, P),
            cri("/data/a", "/h3", false, P),
            cri("/z", "/h4", false, P),
        ];
        let plan = container_mounts(&inputs(&list)).unwrap();
        let d = dests(&plan);
        let pos = |x: &str| d.iter().position(|y| y == x).unwrap();
        assert!(pos("/data") < pos("/data/a"));
        assert!(pos("/data/a") < pos("/data/a/b"));
        assert!(pos("/data") < pos("/z"), "stable for equal depth");
        // Standard mounts come first.
        assert_eq!(
            &d[..6],
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup"
            ]
        );
    }

    #[test]
    fn pod_files_and_overrides() {
        use MountPropagation::PropagationPrivate as P;
        let plan = container_mounts(&inputs(&[])).unwrap();
        let find = |plan: &MountPlan, d: &str| {
            plan.mounts
                .iter()
                .find(|m| m.destination() == Path::new(d))
                .cloned()
        };
        let hosts = find(&plan, "/etc/hosts").unwrap();
        assert_eq!(hosts.source().as_deref(), Some(Path::new("/sb/hosts")));
        assert!(opts(&hosts).contains(&"rw".to_string()));
        let shm = find(&plan, "/dev/shm").unwrap();
        assert_eq!(shm.source().as_deref(), Some(Path::new("/sb/shm")));
        assert!(opts(&shm).contains(&"rw".to_string()));

        // kubelet's own /etc/hosts wins; a read-only rootfs makes the pod files read-only.
        let kubelet_hosts = [cri(
            "/etc/hosts",
            "/var/lib/kubelet/pods/x/etc-hosts",
            false,
            P,
        )];
        let mut inp = inputs(&kubelet_hosts);
        inp.readonly_rootfs = true;
        let plan = container_mounts(&inp).unwrap();
        let all: Vec<_> = plan
            .mounts
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(all.len(), 1);
        assert!(
            all[0]
                .source()
                .as_ref()
                .unwrap()
                .starts_with("/var/lib/kubelet")
        );
        assert!(opts(&find(&plan, "/etc/resolv.conf").unwrap()).contains(&"ro".to_string()));

        // Missing pod files are skipped; no shm source → private tmpfs; host IPC → node's.
        let mut inp = inputs(&[]);
        inp.files = SandboxFiles::default();
        let plan = container_mounts(&inp).unwrap();
        assert!(find(&plan, "/etc/hosts").is_none());
        assert_eq!(
            find(&plan, "/dev/shm").unwrap().typ().as_deref(),
            Some("tmpfs")
        );
        inp.host_ipc = true;
        let plan = container_mounts(&inp).unwrap();
        assert_eq!(
            find(&plan, "/dev/shm").unwrap().source().as_deref(),
            Some(Path::new("/dev/shm"))
        );
    }

    #[test]
    fn cri_mount_replaces_standard_ones() {
        use MountPropagation::PropagationPrivate as P;
        let list = [
            cri("/dev", "/hostdev", false, P),
            cri("/proc/x", "/h", true, P),
        ];
        let plan = container_mounts(&inputs(&list)).unwrap();
        let d = dests(&plan);
        assert!(!d.iter().any(|x| x == "/dev/pts" || x == "/dev/mqueue"));
        assert_eq!(d.iter().filter(|x| *x == "/dev").count(), 1);
        assert!(d.contains(&"/proc".to_string()));
        // The pod's /dev/shm is still mounted, after the CRI /dev.
        assert!(
            d.iter().position(|x| x == "/dev").unwrap()
                < d.iter().position(|x| x == "/dev/shm").unwrap()
        );
    }

    #[test]
    fn privileged_sysfs_rw() {
        let mut inp = inputs(&[]);
        inp.privileged = true;
        let plan = container_mounts(&inp).unwrap();
        let sys = plan
            .mounts
            .iter()
            .find(|m| m.destination() == Path::new("/sys"))
            .unwrap();
        assert!(opts(sys).contains(&"rw".to_string()));
    }

    #[test]
    fn prepare_sources() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        let missing = dir.path().join("new/dir");
        let list = [
            cri(
                "/a",
                dir.path().join("link").to_str().unwrap(),
                false,
                MountPropagation::PropagationPrivate,
            ),
            cri(
                "/b",
                missing.to_str().unwrap(),
                false,
                MountPropagation::PropagationPrivate,
            ),
        ];
        let out = prepare_mount_sources(&list).unwrap();
        assert_eq!(Path::new(&out[0].host_path), target.canonicalize().unwrap());
        assert!(missing.is_dir());
        assert_eq!(out[1].container_path, "/b");
    }
}
