//! The cgroup driver: where a pod's and its containers' cgroups go and who makes them.
//!
//! - `cgroupfs`: crius (and libcontainer's cgroupfs managers) make directories under the pod's
//!   cgroup parent, a path such as `/kubepods/besteffort/pod<uid>`.
//! - `systemd`: the pod's cgroup parent is a slice name such as
//!   `kubepods-besteffort-pod<uid>.slice` (kubelet's layout with `cgroupDriver: systemd`), and
//!   every container, the pause included, runs in a transient `crius-<id>.scope` below it that
//!   libcontainer's systemd manager asks systemd for over D-Bus. systemd then owns the cgroup:
//!   resources are unit properties, and the scope goes when it is stopped.
//!
//! Records keep the cgroup's path relative to the cgroup root in both cases
//! (`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/crius-<id>.scope`
//! for systemd), so stats, the leftover checks of Remove and the cgroup namespace work on
//! files alike. Only the OCI spec gets systemd's `slice:prefix:name` form ([`spec_path`]),
//! which is what makes libcontainer pick its systemd manager, as runc does.

use crate::config::CgroupDriver;
use std::path::Path;

/// The unit prefix of crius's scopes: `crius-<id>.scope`.
pub const SCOPE_PREFIX: &str = "crius";
/// systemd's slice for the scopes of pods with no cgroup parent (runc and containerd use it too).
pub const DEFAULT_SLICE: &str = "system.slice";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{0:?} is not a systemd slice name (like kubepods-besteffort-pod<uid>.slice)")]
    BadSlice(String),
    #[error(
        "the systemd cgroup driver needs systemd as PID 1 (/run/systemd/system is missing); \
         use cgroup_driver = \"cgroupfs\" on this node"
    )]
    NoSystemd,
    #[error(
        "the systemd cgroup driver needs the unified cgroup v2 hierarchy at {CGROUP_ROOT}; \
         use cgroup_driver = \"cgroupfs\" on this node"
    )]
    NotUnified,
    #[error("the systemd cgroup driver cannot reach systemd over D-Bus: {0}")]
    Dbus(String),
    #[error("systemd scope {unit}: {reason}")]
    Scope { unit: String, reason: String },
    #[error("making the cgroup parent {path}: {reason}")]
    Parent {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// The filesystem form of a slice: `a-b.slice` is `/a.slice/a-b.slice` (systemd nests a
/// slice in the slice named by its name up to the last dash). `-.slice` is the root.
pub fn expand_slice(slice: &str) -> Result<String, DriverError> {
    let bad = || DriverError::BadSlice(slice.to_owned());
    let name = slice.strip_suffix(".slice").ok_or_else(bad)?;
    if name == "-" {
        return Ok(String::new());
    }
    if name.is_empty() || slice.contains('/') || name.split('-').any(str::is_empty) {
        return Err(bad());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
        prefix.push('-');
    }
    Ok(path)
}

/// A pod's cgroup parent in either form kubelet's systemd driver may send: the slice name
/// (`kubepods-besteffort-pod<uid>.slice`) or its filesystem form
/// (`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice`, what
/// kubelet v1.32 sends). The path form must be exactly the expansion of its last slice, as
/// containerd takes the last element too.
fn expand_parent_slice(parent: &str) -> Result<String, DriverError> {
    let Some((_, last)) = parent.rsplit_once('/') else {
        return expand_slice(parent);
    };
    let expanded = expand_slice(last).map_err(|_| DriverError::BadSlice(parent.to_owned()))?;
    if expanded != parent {
        return Err(DriverError::BadSlice(parent.to_owned()));
    }
    Ok(expanded)
}

/// The cgroup (relative to the cgroup root) of the pod sandbox `id`, whose pod asked for
/// `cgroup_parent` ("" for none).
pub fn sandbox_cgroup(
    driver: CgroupDriver,
    cgroup_parent: &str,
    id: &str,
) -> Result<String, DriverError> {
    let parent = cgroup_parent.trim_end_matches('/');
    match driver {
        CgroupDriver::Cgroupfs if parent.is_empty() => Ok(format!("/crius/{id}")),
        CgroupDriver::Cgroupfs if parent.starts_with('/') => Ok(format!("{parent}/crius-{id}")),
        CgroupDriver::Cgroupfs => Ok(format!("/{parent}/crius-{id}")),
        CgroupDriver::Systemd => {
            let slice = if parent.is_empty() {
                DEFAULT_SLICE
            } else {
                parent
            };
            Ok(format!(
                "{}/{SCOPE_PREFIX}-{id}.scope",
                expand_parent_slice(slice)?
            ))
        }
    }
}

/// Whether a record's cgroup is a systemd scope of ours (made with the systemd driver).
pub fn is_scope(cgroup: &str) -> bool {
    scope_parts(cgroup).is_some()
}

/// (slice, id) of `/…/<slice>/crius-<id>.scope`; the slice is `-.slice` at the root.
fn scope_parts(cgroup: &str) -> Option<(&str, &str)> {
    let (dir, leaf) = cgroup.rsplit_once('/')?;
    let id = leaf
        .strip_suffix(".scope")?
        .strip_prefix(SCOPE_PREFIX)?
        .strip_prefix('-')?;
    if id.is_empty() {
        return None;
    }
    let slice = match dir.rsplit_once('/') {
        None if dir.is_empty() => "-.slice",
        Some((_, s)) if s.ends_with(".slice") => s,
        _ => return None,
    };
    Some((slice, id))
}

/// The systemd unit of a scope cgroup: `crius-<id>.scope`.
pub fn scope_unit(cgroup: &str) -> Option<String> {
    scope_parts(cgroup).map(|(_, id)| format!("{SCOPE_PREFIX}-{id}.scope"))
}

/// The OCI `linux.cgroupsPath` for a record's cgroup: `slice:crius:<id>` for a systemd scope
/// (libcontainer then asks systemd for the scope), the path itself otherwise.
pub fn spec_path(cgroup: &str) -> String {
    match scope_parts(cgroup) {
        Some((slice, id)) => format!("{slice}:{SCOPE_PREFIX}:{id}"),
        None => cgroup.to_owned(),
    }
}

/// The cgroup of a container of the sandbox whose cgroup is `sandbox`: beside it, under the
/// pod's cgroup parent, in the same driver's form.
pub fn container_cgroup(sandbox: &str, id: &str) -> String {
    if is_scope(sandbox) {
        let dir = sandbox.rsplit_once('/').map(|(d, _)| d).unwrap_or_default();
        return format!("{dir}/{SCOPE_PREFIX}-{id}.scope");
    }
    match sandbox.rsplit_once('/') {
        Some((parent, _)) if !parent.is_empty() => {
            // Without a cgroup parent everything sits in /crius/<id>; under one, the
            // prefix keeps our directories apart from kubelet's.
            let leaf = if parent == "/crius" {
                id.to_string()
            } else {
                format!("crius-{id}")
            };
            format!("{parent}/{leaf}")
        }
        _ => format!("/crius/{id}"),
    }
}

/// Refuses the systemd driver where it cannot work: systemd not PID 1, a v1 or hybrid cgroup
/// layout (libcontainer's systemd manager drives the unified hierarchy only), or a system bus
/// that does not answer. Blocking (D-Bus round trips); called once at daemon start.
pub fn check_systemd() -> Result<(), DriverError> {
    if !libcgroups::systemd::booted() {
        return Err(DriverError::NoSystemd);
    }
    if !unified_hierarchy() {
        return Err(DriverError::NotUnified);
    }
    // Building libcgroups' systemd manager connects to the system bus and asks systemd for
    // its control group root; it makes no unit until a process is added.
    manager(&format!("{DEFAULT_SLICE}:{SCOPE_PREFIX}:probe"), "probe")
        .map(drop)
        .map_err(DriverError::Dbus)
}

fn manager(spec_path: &str, name: &str) -> Result<libcgroups::common::AnyCgroupManager, String> {
    libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: spec_path.into(),
        systemd_cgroup: true,
        container_name: name.to_owned(),
    })
    .map_err(|e| e.to_string())
}

/// Sets `resources` on the scope of `cgroup` as unit properties (systemd writes the cgroup
/// files and keeps them across its own reloads, which a direct write would not survive).
pub fn update_scope(
    cgroup: &str,
    resources: &oci_spec::runtime::LinuxResources,
) -> Result<(), DriverError> {
    use libcgroups::common::{CgroupManager, ControllerOpt};
    let unit = scope_unit(cgroup).unwrap_or_default();
    let err = |reason: String| DriverError::Scope {
        unit: unit.clone(),
        reason,
    };
    let m = manager(&spec_path(cgroup), &unit).map_err(err)?;
    m.apply(&ControllerOpt {
        resources,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    })
    .map_err(|e| err(e.to_string()))
}

/// /sys/fs/cgroup is the unified (v2) hierarchy itself (not a hybrid host's `unified/`).
pub(crate) fn unified_hierarchy() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

/// With the cgroupfs driver on the unified hierarchy, makes the directories above `cgroup`
/// (such as `/crius` or kubelet's pod cgroup) before libcontainer does. libcgroups' v2 manager
/// checks that each level exists and then creates it, so two pods created at once race on a
/// shared parent and one fails with EEXIST; `create_dir_all` does not. It still enables the
/// controllers on every level it finds. Nothing to do for systemd scopes (systemd makes the
/// slices) or on v1 (its managers tolerate existing directories).
pub fn make_cgroupfs_parents(cgroup: &str) -> Result<(), DriverError> {
    if is_scope(cgroup) || !unified_hierarchy() {
        return Ok(());
    }
    let Some(parent) = Path::new(cgroup.trim_start_matches('/')).parent() else {
        return Ok(());
    };
    if parent.as_os_str().is_empty() {
        return Ok(());
    }
    let dir = Path::new(CGROUP_ROOT).join(parent);
    std::fs::create_dir_all(&dir).map_err(|e| DriverError::Parent {
        path: dir.clone(),
        reason: e.to_string(),
    })
}

/// Enables the hugetlb controller for `cgroup` (a scope's cgroup path) in the
/// cgroup.subtree_control of the root and of every slice above it. systemd has no hugetlb
/// controller, so it neither enables it for its units nor ever disables it again; without this
/// a scope has no hugetlb.<size>.max files to hold a pod's hugepage limits (runc enables the
/// controllers along the path the same way).
pub fn enable_hugetlb(cgroup: &str) -> Result<(), DriverError> {
    const HUGETLB: &str = "hugetlb";
    let err = |reason: String| DriverError::Scope {
        unit: scope_unit(cgroup).unwrap_or_default(),
        reason,
    };
    let enable = |dir: &Path| {
        let control = dir.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&control)
            .map_err(|e| err(format!("reading {}: {e}", control.display())))?;
        if enabled.split_whitespace().any(|c| c == HUGETLB) {
            return Ok(());
        }
        std::fs::write(&control, format!("+{HUGETLB}"))
            .map_err(|e| err(format!("enabling {HUGETLB} in {}: {e}", control.display())))
    };
    let mut dir = std::path::PathBuf::from(CGROUP_ROOT);
    enable(&dir)?;
    let slices = Path::new(cgroup.trim_start_matches('/')).parent();
    for slice in slices.into_iter().flat_map(Path::components) {
        dir.push(slice);
        enable(&dir)?;
    }
    Ok(())
}

/// Stops the scope of `cgroup` if systemd still has it, and clears a failed state (a scope
/// whose processes were killed by the OOM killer stays listed as failed otherwise). The
/// caller waits for the cgroup directory to go.
pub fn stop_scope(cgroup: &str) -> Result<(), DriverError> {
    use libcgroups::common::CgroupManager;
    let Some(unit) = scope_unit(cgroup) else {
        return Ok(());
    };
    let err = |reason: String| DriverError::Scope {
        unit: unit.clone(),
        reason,
    };
    let m = manager(&spec_path(cgroup), &unit).map_err(err)?;
    m.remove().map_err(|e| err(e.to_string()))?;
    // libcgroups has no ResetFailedUnit call; systemctl is on every systemd node. A unit
    // that is not loaded (the usual case) makes it fail, which is fine.
    let _ = std::process::Command::new("systemctl")
        .args(["reset-failed", "--quiet", &unit])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    Ok(())
}

/// [`stop_scope`], then waits up to `timeout` for systemd to remove the scope's cgroup.
pub fn stop_scope_and_wait(cgroup: &str, timeout: std::time::Duration) -> Result<(), DriverError> {
    stop_scope(cgroup)?;
    let dir = Path::new(CGROUP_ROOT).join(cgroup.trim_start_matches('/'));
    let deadline = std::time::Instant::now() + timeout;
    while dir.exists() {
        if std::time::Instant::now() >= deadline {
            return Err(DriverError::Scope {
                unit: scope_unit(cgroup).unwrap_or_default(),
                reason: format!("cgroup {} still there after {timeout:?}", dir.display()),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_expand_as_systemd_nests_them() {
        assert_eq!(
            expand_slice("kubepods-besteffort-pod1234.slice").unwrap(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice"
        );
        assert_eq!(expand_slice("system.slice").unwrap(), "/system.slice");
        assert_eq!(expand_slice("-.slice").unwrap(), "");
        for bad in [
            "",
            ".slice",
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "a/b.slice",
            "a",
        ] {
            assert!(expand_slice(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sandbox_and_container_cgroups_follow_the_driver() {
        let sd = CgroupDriver::Systemd;
        let fs = CgroupDriver::Cgroupfs;
        let pod = sandbox_cgroup(sd, "kubepods-burstable-podab.slice", "s1").unwrap();
        assert_eq!(
            pod,
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podab.slice/crius-s1.scope"
        );
        assert_eq!(spec_path(&pod), "kubepods-burstable-podab.slice:crius:s1");
        let c = container_cgroup(&pod, "c1");
        assert_eq!(
            c,
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podab.slice/crius-c1.scope"
        );
        assert_eq!(scope_unit(&c).unwrap(), "crius-c1.scope");
        let none = sandbox_cgroup(sd, "", "s2").unwrap();
        assert_eq!(none, "/system.slice/crius-s2.scope");
        assert_eq!(spec_path(&none), "system.slice:crius:s2");
        let root = sandbox_cgroup(sd, "-.slice", "s3").unwrap();
        assert_eq!(root, "/crius-s3.scope");
        assert_eq!(spec_path(&root), "-.slice:crius:s3");
        assert!(sandbox_cgroup(sd, "/kubepods/besteffort/pod1", "x").is_err());
        // kubelet v1.32's systemd driver sends the slice's filesystem form.
        assert_eq!(
            sandbox_cgroup(
                sd,
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podab.slice",
                "s1"
            )
            .unwrap(),
            pod
        );
        for bad in [
            "/kubepods-burstable-podab.slice",
            "/x.slice/kubepods.slice",
            "kubepods.slice/kubepods-a.slice",
        ] {
            assert!(sandbox_cgroup(sd, bad, "x").is_err(), "{bad:?}");
        }

        assert_eq!(sandbox_cgroup(fs, "", "s").unwrap(), "/crius/s");
        assert_eq!(container_cgroup("/crius/s", "c"), "/crius/c");
        let p = sandbox_cgroup(fs, "/kubepods/pod1/", "s").unwrap();
        assert_eq!(p, "/kubepods/pod1/crius-s");
        assert_eq!(container_cgroup(&p, "c"), "/kubepods/pod1/crius-c");
        assert_eq!(spec_path(&p), p);
        assert!(!is_scope(&p));
        // A slice name given to the cgroupfs driver is a directory name like any other.
        let s = sandbox_cgroup(fs, "kubepods.slice", "s").unwrap();
        assert_eq!(s, "/kubepods.slice/crius-s");
        assert_eq!(spec_path(&s), s);
    }
}
