//! Pure CRI → OCI runtime-spec generation.
//!
//! The builders have no side effects except reading a Localhost seccomp profile. What needs the
//! host is done by the caller *before* building a spec, with the helpers named for it: the
//! `/proc/self` readers in [`oom`], [`HostFeatures::detect`], [`resolve_devices`] /
//! [`resolve_all_host_devices`] and [`container_mounts::prepare_mount_sources`]. The sandbox
//! builder lives in [`spec`], the application-container builder in [`container_spec`]; the
//! pieces both use (namespaces, mounts, security settings, process, seccomp) are separate
//! modules so both builders share one definition of every default.

pub mod annotations;
pub mod apparmor;
pub mod capabilities;
pub mod command;
pub mod container_mounts;
pub mod container_spec;
pub mod devices;
pub mod dns;
mod error;
pub mod host;
pub mod mounts;
pub mod namespaces;
pub mod oom;
pub mod process;
pub mod resources;
pub mod seccomp;
pub mod security;
pub mod spec;
pub mod stop_signal;
pub mod sysctl;
pub mod user;

pub use container_mounts::SandboxFiles;
pub use container_spec::{ContainerSpecInput, container_spec};
pub use devices::{ResolvedDevice, resolve_all_host_devices, resolve_devices};
pub use error::SpecError;
pub use host::HostFeatures;
pub use namespaces::{PodNamespaces, namespaces_for};
pub use resources::linux_resources;
pub use stop_signal::stop_signal;

/// Fields of `linux` that crius never sets (SELinux labels, RDT, personality, net devices,
/// memory policy, time namespaces offsets): cleared explicitly so nothing leaks in from
/// oci-spec's defaults.
pub(crate) fn clear_unused_linux_fields(linux: &mut oci_spec::runtime::Linux) {
    linux.set_mount_label(None);
    linux.set_intel_rdt(None);
    linux.set_personality(None);
    linux.set_net_devices(None);
    linux.set_memory_policy(None);
    linux.set_time_offsets(None);
}

/// The spec's mount destinations in order (for tests that check what a spec mounts).
#[cfg(test)]
pub(crate) fn mount_destinations(spec: &oci_spec::runtime::Spec) -> Vec<std::path::PathBuf> {
    spec.mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().clone())
        .collect()
}
