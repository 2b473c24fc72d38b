//! The OCI runtime spec of an application container in a pod, following what kubelet and the
//! cri-tools validation suite expect from containerd.
//!
//! As for the sandbox, every field is set on purpose (oci-spec's defaults describe runc's example
//! container). The container joins the sandbox's namespaces by `/proc/<sandbox pid>/ns/*`, shares
//! its /etc files and /dev/shm, and never sets a hostname (it shares the sandbox's UTS).

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1::{
    ContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, NamespaceMode,
    PodSandboxConfig, SupplementalGroupsPolicy,
};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Linux, LinuxResources, Process, Root, Spec, VERSION};

use super::container_mounts::{self, MountInputs, SandboxFiles};
use super::devices::{self, ResolvedDevice};
use super::host::HostFeatures;
use super::user::{self, UserRequest};
use super::{
    SpecError, annotations, apparmor, capabilities, command, namespaces, oom, resources, seccomp,
    security,
};

/// Everything [`container_spec`] needs; the caller has done all side effects already.
#[derive(Debug, Clone, Copy)]
pub struct ContainerSpecInput<'a> {
    pub sandbox_id: &'a str,
    pub config: &'a ContainerConfig,
    pub sandbox_config: &'a PodSandboxConfig,
    pub image_config: &'a ImageConfiguration,
    /// The image reference as the container's status reports it (annotation only).
    pub image_name: &'a str,
    /// Absolute path of the mounted, writable overlay rootfs.
    pub rootfs: &'a Path,
    /// The sandbox's pause process, whose namespaces the container joins.
    pub sandbox_pid: i32,
    /// For pid namespace mode TARGET: the pid of the target container's init process.
    pub target_pid: Option<i32>,
    pub sandbox_files: SandboxFiles<'a>,
    /// Already computed by the caller (cgroupfs path).
    pub cgroups_path: &'a str,
    /// The image's /etc/passwd and /etc/group contents (read by the caller from the rootfs;
    /// `None` when absent), for user names and supplementary groups.
    pub passwd: Option<&'a str>,
    pub group: Option<&'a str>,
    /// The CRI devices, from [`devices::resolve_devices`] (pass the CRI mounts through
    /// [`container_mounts::prepare_mount_sources`] likewise).
    pub devices: &'a [ResolvedDevice],
    /// Every host device ([`devices::resolve_all_host_devices`]); used only for privileged
    /// containers, so callers may pass `&[]` otherwise.
    pub host_devices: &'a [ResolvedDevice],
    /// Localhost seccomp profiles with a relative path resolve against this directory.
    pub seccomp_profile_root: &'a Path,
    /// See [`oom::clamp`].
    pub node_can_lower_oom: bool,
    pub own_oom_score: i32,
    /// The node's hostname: the `HOSTNAME` env of containers whose pod config has none.
    pub node_hostname: &'a str,
    pub host: HostFeatures,
}

/// Build an application container's spec. Pure, except for reading a Localhost seccomp profile.
pub fn container_spec(input: &ContainerSpecInput) -> Result<Spec, SpecError> {
    let config = input.config;
    let default_sc = LinuxContainerSecurityContext::default();
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .unwrap_or(&default_sc);
    let resources = config.linux.as_ref().and_then(|l| l.resources.as_ref());
    let privileged = sc.privileged;

    if privileged && !sandbox_privileged(input.sandbox_config) {
        return Err(SpecError::PrivilegedInUnprivilegedSandbox {
            container: container_name(config).to_string(),
        });
    }
    if !config.cdi_devices.is_empty() {
        return Err(SpecError::Unsupported {
            feature: "CDI devices".to_string(),
        });
    }

    // The container's own namespace options; kubelet sends the pod's, but fall back to the
    // sandbox's if a client omits them.
    let ns_opts = sc.namespace_options.as_ref().or_else(|| {
        input
            .sandbox_config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
    });
    let mut linux_namespaces =
        namespaces::container_namespaces(ns_opts, input.sandbox_pid, input.target_pid)?;
    linux_namespaces.extend(namespaces::container_cgroup_namespace(
        input.host.cgroup_v2,
        privileged,
    ));
    let host_ipc = ns_opts.is_some_and(|o| o.ipc() == NamespaceMode::Node);

    let caps = capabilities::container_capabilities(
        sc.capabilities.as_ref(),
        privileged,
        input.host.bounding_caps,
    )?;
    let seccomp_choice = seccomp::choose(sc.seccomp.as_ref(), container_seccomp_path(sc))?;
    let seccomp = seccomp::resolve(
        &seccomp_choice,
        privileged,
        &caps,
        input.seccomp_profile_root,
    )?;
    let apparmor_choice = apparmor::choose(sc.apparmor.as_ref(), container_apparmor_path(sc))?;
    let apparmor_profile = apparmor::resolve(&apparmor_choice, input.host.apparmor)?;

    let mut process = container_process(input, sc, resources)?;
    process.set_capabilities(Some(security::linux_capabilities(&caps)));
    process.set_apparmor_profile(apparmor_profile);

    let plan = container_mounts::container_mounts(&MountInputs {
        cri: &config.mounts,
        files: input.sandbox_files,
        host_ipc,
        readonly_rootfs: sc.readonly_rootfs,
        privileged,
    })?;

    let mut linux_resources = resources.map_or_else(LinuxResources::default, |r| {
        resources::linux_resources(r, &input.host)
    });
    let spec_devices = if privileged {
        // All host devices, then the CRI ones (which win on the same path).
        let all: Vec<ResolvedDevice> = input
            .host_devices
            .iter()
            .chain(input.devices)
            .cloned()
            .collect();
        devices::linux_devices(&all)
    } else {
        devices::linux_devices(input.devices)
    };
    let mut rules = security::device_rules(privileged);
    if !privileged {
        rules.extend(devices::device_cgroup_rules(input.devices));
    }
    linux_resources.set_devices(Some(rules));

    let mut linux = Linux::default();
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    // Pod sysctls are applied once by the sandbox: they are all scoped to the network or IPC
    // namespace, which the container joins.
    linux.set_sysctl(None);
    linux.set_resources(Some(linux_resources));
    // systemd's `slice:crius:<id>` for a scope (libcontainer's systemd manager), else the path.
    linux.set_cgroups_path(Some(
        crate::cgroup_driver::spec_path(input.cgroups_path).into(),
    ));
    linux.set_namespaces(Some(linux_namespaces));
    // None: libcontainer creates only its standard nodes (null, zero, full, tty, random...).
    linux.set_devices((!spec_devices.is_empty()).then_some(spec_devices));
    linux.set_seccomp(seccomp);
    linux.set_rootfs_propagation(plan.rootfs_propagation);
    linux.set_masked_paths(Some(security::container_masked_paths(
        &sc.masked_paths,
        privileged,
    )));
    let mut readonly_paths = security::container_readonly_paths(&sc.readonly_paths, privileged);
    if input.host.cgroup_v2 {
        // The v1 entries re-bind the controller mounts read-only. On v2, /sys/fs/cgroup is one
        // cgroup2 mount, already read-only from its own options; a bind over it would only
        // stack a second cgroup2 mount on the same path.
        readonly_paths.retain(|p| !p.starts_with("/sys/fs/cgroup"));
    }
    linux.set_readonly_paths(Some(readonly_paths));
    super::clear_unused_linux_fields(&mut linux);

    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(sc.readonly_rootfs));

    let mut spec = Spec::default();
    spec.set_version(VERSION.to_string());
    spec.set_root(Some(root));
    spec.set_mounts(Some(plan.mounts));
    spec.set_process(Some(process));
    spec.set_hostname(None);
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(Some(container_annotations(input)));
    spec.set_linux(Some(linux));
    spec.set_solaris(None);
    spec.set_windows(None);
    spec.set_vm(None);
    spec.set_zos(None);
    Ok(spec)
}

fn sandbox_privileged(config: &PodSandboxConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged)
}

fn container_name(config: &ContainerConfig) -> &str {
    config.metadata.as_ref().map_or("", |m| m.name.as_str())
}

/// The deprecated string fields (kept for old kubelets); ignored when the profile fields are set.
#[allow(deprecated)]
fn container_seccomp_path(sc: &LinuxContainerSecurityContext) -> &str {
    &sc.seccomp_profile_path
}

#[allow(deprecated)]
fn container_apparmor_path(sc: &LinuxContainerSecurityContext) -> &str {
    &sc.apparmor_profile
}

/// Process fields except capabilities and AppArmor (set by the caller, which decides them
/// together with seccomp).
fn container_process(
    input: &ContainerSpecInput,
    sc: &LinuxContainerSecurityContext,
    resources: Option<&LinuxContainerResources>,
) -> Result<Process, SpecError> {
    let config = input.config;
    let image = input.image_config.config().as_ref();

    let groups_policy =
        SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy).map_err(|_| {
            SpecError::Unsupported {
                feature: format!(
                    "supplemental_groups_policy {}",
                    sc.supplemental_groups_policy
                ),
            }
        })?;
    let user = user::resolve_container_user(
        &UserRequest {
            run_as_user: sc.run_as_user.as_ref().map(|v| v.value),
            run_as_group: sc.run_as_group.as_ref().map(|v| v.value),
            run_as_username: &sc.run_as_username,
            image_user: image.and_then(|c| c.user().as_deref()).unwrap_or(""),
            supplemental_groups: &sc.supplemental_groups,
            groups_policy,
        },
        input.passwd,
        input.group,
    )?;

    let hostname = match input.sandbox_config.hostname.as_str() {
        "" => input.node_hostname,
        h => h,
    };

    let mut p = Process::default();
    p.set_terminal(Some(config.tty));
    p.set_console_size(None);
    p.set_user(user);
    p.set_args(Some(command::container_args(
        &config.command,
        &config.args,
        image,
    )?));
    p.set_command_line(None);
    p.set_env(Some(command::container_env(image, &config.envs, hostname)?));
    p.set_cwd(command::container_cwd(&config.working_dir, image)?.into());
    // No rlimits, as for the sandbox (containerd#515): inherit the runtime's.
    p.set_rlimits(None);
    // kubelet sets no_new_privs from allowPrivilegeEscalation=false; otherwise setuid binaries
    // must keep working.
    // `false` is written as absent on purpose: libcontainer 0.7 decides when to load seccomp
    // by whether the field is present, not by its value, and with `Some(false)` it loads the
    // filter after dropping CAP_SYS_ADMIN without no_new_privs, which the kernel refuses.
    p.set_no_new_privileges(sc.no_new_privs.then_some(true));
    // Without resources the container inherits the runtime's score, as in containerd.
    p.set_oom_score_adj(resources.map(|r| {
        // Pre-clamp to the kernel's range so the i64 → i32 conversion cannot wrap.
        let requested = r.oom_score_adj.clamp(-1000, 1000) as i32;
        oom::clamp(requested, input.own_oom_score, input.node_can_lower_oom)
    }));
    // SELinux options are accepted and ignored: this runtime does not label processes.
    p.set_selinux_label(None);
    p.set_io_priority(None);
    p.set_scheduler(None);
    p.set_exec_cpu_affinity(None);
    Ok(p)
}

/// The container's own annotations, then containerd's CRI keys (which win, so a container cannot
/// spoof its sandbox id).
fn container_annotations(input: &ContainerSpecInput) -> HashMap<String, String> {
    let mut out = input.config.annotations.clone();
    let meta = input.sandbox_config.metadata.clone().unwrap_or_default();
    let ours = [
        (
            annotations::CONTAINER_TYPE,
            annotations::CONTAINER_TYPE_CONTAINER,
        ),
        (annotations::CONTAINER_NAME, container_name(input.config)),
        (annotations::SANDBOX_ID, input.sandbox_id),
        (annotations::SANDBOX_NAME, &meta.name),
        (annotations::SANDBOX_NAMESPACE, &meta.namespace),
        (annotations::SANDBOX_UID, &meta.uid),
        (annotations::IMAGE_NAME, input.image_name),
    ];
    for (k, v) in ours {
        out.insert(k.to_string(), v.to_string());
    }
    out
}

#[cfg(test)]
mod tests;
