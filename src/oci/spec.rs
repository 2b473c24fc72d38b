//! The OCI runtime spec of a pod sandbox (the pause container).
//!
//! Every field of the spec is set here on purpose: oci-spec's `Default` impls describe runc's
//! example shell container (hostname "youki", a cgroup namespace, RLIMIT_NOFILE 1024, inheritable
//! and ambient capabilities...) and nothing of that may leak into a pod.

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1::{LinuxSandboxSecurityContext, PodSandboxConfig};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Linux, LinuxCpu, LinuxResources, Mount, Process, Root, Spec, VERSION};

use super::mounts;
use super::namespaces::{self, PodNamespaces};
use super::process::{self as proc_, UserOverride};
use super::{SpecError, annotations, seccomp, security, sysctl};

/// containerd's CPU shares for the sandbox cgroup: the pause process needs almost nothing and
/// must not weigh against the pod's containers.
pub const SANDBOX_CPU_SHARES: u64 = 2;

/// Longest hostname the kernel accepts (HOST_NAME_MAX).
const HOST_NAME_MAX: usize = 64;

/// Everything [`sandbox_spec`] needs; the caller has done all side effects already.
#[derive(Debug, Clone, Copy)]
pub struct SandboxSpecInput<'a> {
    pub id: &'a str,
    pub config: &'a PodSandboxConfig,
    pub image_config: &'a ImageConfiguration,
    /// Absolute path of the mounted (overlay) rootfs.
    pub rootfs: &'a Path,
    /// Mounted first, at "/": the rootfs itself when it is not mounted on the host.
    pub rootfs_mount: Option<&'a Mount>,
    /// The pinned network namespace the sandbox joins (None: host network).
    pub netns_path: Option<&'a Path>,
    /// Already computed by the caller (cgroupfs path).
    pub cgroups_path: &'a str,
    /// Already clamped by the caller (see [`super::oom::clamp`]).
    pub oom_score_adj: i32,
    /// Localhost seccomp profiles with a relative path resolve against this directory.
    pub seccomp_profile_root: &'a Path,
    /// The runtime's capability bounding set (see [`super::HostFeatures::bounding_caps`]).
    pub bounding_caps: u64,
}

/// Build the sandbox container's spec. Pure, except for reading a Localhost seccomp profile.
/// The pause's cgroup resources: containerd's CPU shares and the device rules.
fn sandbox_resources(privileged: bool) -> LinuxResources {
    let mut resources = LinuxResources::default();
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(Some(SANDBOX_CPU_SHARES));
    resources.set_cpu(Some(cpu));
    resources.set_devices(Some(security::device_rules(privileged)));
    resources
}

/// The cgroup part of the sandbox's spec (cgroups path and resources; no mounts), known before
/// the rest: the daemon makes the cgroup from it while it prepares the bundle.
pub fn sandbox_cgroup_spec(config: &PodSandboxConfig, cgroups_path: &str) -> Spec {
    let privileged = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|sc| sc.privileged);
    let mut linux = Linux::default();
    linux.set_resources(Some(sandbox_resources(privileged)));
    // systemd's `slice:crius:<id>` for a scope (libcontainer's systemd manager), else the path.
    linux.set_cgroups_path(Some(crate::cgroup_driver::spec_path(cgroups_path).into()));
    let mut spec = Spec::default();
    spec.set_mounts(None);
    spec.set_linux(Some(linux));
    spec
}

pub fn sandbox_spec(input: &SandboxSpecInput) -> Result<Spec, SpecError> {
    let config = input.config;
    let default_sc = LinuxSandboxSecurityContext::default();
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .unwrap_or(&default_sc);
    let ns_opts = sc.namespace_options.as_ref();
    namespaces::check_user_namespace(ns_opts)?;
    let ns = namespaces::namespaces_for(ns_opts);
    let privileged = sc.privileged;

    let empty = HashMap::new();
    let sysctls = config.linux.as_ref().map_or(&empty, |l| &l.sysctls);
    sysctl::validate(sysctls, &ns)?;

    let hostname = pod_hostname(&config.hostname, &ns)?;
    let caps = security::capability_set(privileged, input.bounding_caps);
    let process = sandbox_process(input, sc, &caps)?;

    let choice = seccomp::choose(sc.seccomp.as_ref(), sandbox_seccomp_path(sc))?;
    let seccomp = seccomp::resolve(&choice, privileged, &caps, input.seccomp_profile_root)?;

    let mut linux = Linux::default();
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_sysctl(if sysctls.is_empty() {
        None
    } else {
        Some(sysctls.clone())
    });
    linux.set_resources(Some(sandbox_resources(privileged)));
    // systemd's `slice:crius:<id>` for a scope (libcontainer's systemd manager), else the path.
    linux.set_cgroups_path(Some(
        crate::cgroup_driver::spec_path(input.cgroups_path).into(),
    ));
    linux.set_namespaces(Some(ns.linux_namespaces(input.netns_path)));
    // None: libcontainer creates its standard device nodes (null, zero, full, tty, random...).
    linux.set_devices(None);
    linux.set_seccomp(seccomp);
    // None: libcontainer's default, rslave, so host unmounts propagate into the container.
    linux.set_rootfs_propagation(None);
    // Nothing to mask: the pause has no /proc or /sys (see `sandbox_mounts`).
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    super::clear_unused_linux_fields(&mut linux);

    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(true));

    // Spec::default() only for the struct itself; every field is overwritten below (its
    // deprecated top-level uid/gid mappings are already None there).
    let mut spec = Spec::default();
    spec.set_version(VERSION.to_string());
    spec.set_root(Some(root));
    spec.set_mounts(Some(sandbox_mounts(input.rootfs_mount)));
    spec.set_process(Some(process));
    spec.set_hostname(hostname);
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(Some(sandbox_annotations(input.id, config)));
    spec.set_linux(Some(linux));
    spec.set_solaris(None);
    spec.set_windows(None);
    spec.set_vm(None);
    spec.set_zos(None);
    Ok(spec)
}

/// The hostname goes into the spec only when the pod has its own UTS namespace: with the node's
/// UTS namespace, setting it would rename the node.
fn pod_hostname(hostname: &str, ns: &PodNamespaces) -> Result<Option<String>, SpecError> {
    if !ns.uts || hostname.is_empty() {
        return Ok(None);
    }
    let invalid = |reason| {
        Err(SpecError::InvalidHostname {
            hostname: hostname.to_string(),
            reason,
        })
    };
    if hostname.len() > HOST_NAME_MAX {
        return invalid("longer than 64 bytes");
    }
    if hostname.contains(['\0', '/', '\n']) || hostname.contains(char::is_whitespace) {
        return invalid("contains NUL, '/', or whitespace");
    }
    Ok(Some(hostname.to_string()))
}

/// The deprecated string field (kept for old kubelets); ignored when `seccomp` is set.
#[allow(deprecated)]
fn sandbox_seccomp_path(sc: &LinuxSandboxSecurityContext) -> &str {
    &sc.seccomp_profile_path
}

fn sandbox_process(
    input: &SandboxSpecInput,
    sc: &LinuxSandboxSecurityContext,
    caps: &oci_spec::runtime::Capabilities,
) -> Result<Process, SpecError> {
    let image = input.image_config.config().as_ref();
    let over = UserOverride {
        run_as_user: sc.run_as_user.as_ref().map(|v| v.value),
        run_as_group: sc.run_as_group.as_ref().map(|v| v.value),
    };
    let image_user = image.and_then(|c| c.user().as_deref());
    // The pod's supplemental groups (fsGroup, supplementalGroups) are checked but not given to
    // the pause: it opens no files, and kubelet repeats them in every container's own security
    // context. Setting them needs /proc/self/setgroups, and the pause has no /proc (libcontainer's
    // procfs resolver panics without one).
    proc_::resolve_user(over, image_user, &sc.supplemental_groups)?;
    let user = proc_::resolve_user(over, image_user, &[])?;

    let mut p = Process::default();
    p.set_terminal(Some(false));
    p.set_console_size(None);
    p.set_user(user);
    p.set_args(Some(proc_::image_args(image)?));
    p.set_command_line(None);
    p.set_env(Some(proc_::image_env(image)?));
    p.set_cwd(proc_::image_cwd(image)?.into());
    p.set_capabilities(Some(security::linux_capabilities(caps)));
    // No rlimits, like containerd's CRI plugin (containerd#515): the container inherits the
    // runtime's limits, which the node's service manager sets. Raising a hard limit here would
    // also need CAP_SYS_RESOURCE, which the runtime may not have.
    p.set_rlimits(None);
    p.set_no_new_privileges(Some(true));
    p.set_apparmor_profile(None);
    p.set_oom_score_adj(Some(input.oom_score_adj));
    p.set_selinux_label(None);
    p.set_io_priority(None);
    p.set_scheduler(None);
    p.set_exec_cpu_affinity(None);
    Ok(p)
}

/// The pause gets its rootfs (when given as a mount: an overlay mounted at "/" by the
/// container's own setup, so it exists only in the pause's mount namespace and vanishes with
/// it; the host's mount table does not grow with every pod, which every later container
/// create would pay for in mountinfo reads and namespace copies), a /dev (libcontainer needs
/// /dev/null and creates its standard nodes there) and nothing else. It never reads /proc, /sys, /etc or shared memory, and its mount
/// namespace is its own: app containers get theirs with the full set of mounts, and share the
/// pod's /dev/shm from the host-side tmpfs, not through the pause. Leaving /proc out also
/// means a container sharing the pod's PID namespace finds no unmasked procfs behind
/// /proc/1/root. Each mount the pause skips is a mount, its path checks and a read-only
/// remount less on every RunPodSandbox (and the rootfs can stay read-only: the mount points
/// come from `snapshot::skeleton`).
fn sandbox_mounts(rootfs: Option<&Mount>) -> Vec<Mount> {
    rootfs
        .cloned()
        .into_iter()
        .chain([mounts::dev_tmpfs()])
        .collect()
}

/// The pod's own annotations, then containerd's CRI keys (which win over pod annotations of the
/// same name, so nobody can spoof the sandbox id).
fn sandbox_annotations(id: &str, config: &PodSandboxConfig) -> HashMap<String, String> {
    let mut out = config.annotations.clone();
    let meta = config.metadata.clone().unwrap_or_default();
    let ours = [
        (
            annotations::CONTAINER_TYPE,
            annotations::CONTAINER_TYPE_SANDBOX,
        ),
        (annotations::SANDBOX_ID, id),
        (annotations::SANDBOX_NAME, &meta.name),
        (annotations::SANDBOX_NAMESPACE, &meta.namespace),
        (annotations::SANDBOX_UID, &meta.uid),
        (annotations::SANDBOX_LOG_DIRECTORY, &config.log_directory),
    ];
    for (k, v) in ours {
        out.insert(k.to_string(), v.to_string());
    }
    out
}

#[cfg(test)]
mod tests;
