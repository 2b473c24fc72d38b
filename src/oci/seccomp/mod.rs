//! Seccomp: which profile a pod or container asked for, and the filter to put in the spec.
//!
//! Sources, in precedence order (as in containerd): the `seccomp` SecurityProfile field, else the
//! deprecated `seccomp_profile_path` string. An empty string means unconfined, which is what
//! kubelet sends when the pod sets nothing (kubelet's own default is Unconfined unless its
//! `SeccompDefault` feature is on, in which case it sends RuntimeDefault explicitly).

mod default_profile;

use std::path::{Component, Path, PathBuf};

use k8s_cri::v1::SecurityProfile;
use k8s_cri::v1::security_profile::ProfileType;
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompOperator};

pub use default_profile::runtime_default_with_caps;

use super::SpecError;

/// The seccomp mode a workload asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompChoice {
    Unconfined,
    RuntimeDefault,
    /// A profile file on the node; absolute, or relative to the configured profile root.
    Localhost(PathBuf),
}

/// Decide the seccomp mode from the CRI fields (`profile` wins over `deprecated_path`).
pub fn choose(
    profile: Option<&SecurityProfile>,
    deprecated_path: &str,
) -> Result<SeccompChoice, SpecError> {
    if let Some(p) = profile {
        return match p.profile_type() {
            ProfileType::RuntimeDefault => Ok(SeccompChoice::RuntimeDefault),
            ProfileType::Unconfined => Ok(SeccompChoice::Unconfined),
            ProfileType::Localhost => localhost(&p.localhost_ref, &p.localhost_ref),
        };
    }
    match deprecated_path {
        "" | "unconfined" => Ok(SeccompChoice::Unconfined),
        "runtime/default" | "docker/default" => Ok(SeccompChoice::RuntimeDefault),
        other => match other.strip_prefix("localhost/") {
            Some(rest) => localhost(rest, other),
            None => Err(SpecError::InvalidSeccompProfile {
                profile: other.to_string(),
                reason: "expected \"\", \"unconfined\", \"runtime/default\", \
                         \"docker/default\" or \"localhost/<path>\"",
            }),
        },
    }
}

fn localhost(reference: &str, shown: &str) -> Result<SeccompChoice, SpecError> {
    let invalid = |reason| {
        Err(SpecError::InvalidSeccompProfile {
            profile: shown.to_string(),
            reason,
        })
    };
    if reference.is_empty() {
        return invalid("Localhost profile without a path");
    }
    let path = PathBuf::from(reference);
    // A relative reference must stay under the profile root.
    if path.is_relative() && path.components().any(|c| c == Component::ParentDir) {
        return invalid("relative Localhost path must not contain \"..\"");
    }
    Ok(SeccompChoice::Localhost(path))
}

/// The filter for the spec. Privileged workloads get none, whatever they asked for (as in
/// containerd: privileged means no confinement). Reads the file for Localhost.
///
/// `caps` is the workload's capability set; the runtime default widens with it the way Docker's
/// profile does (e.g. CAP_SYS_ADMIN unlocks mount).
pub fn resolve(
    choice: &SeccompChoice,
    privileged: bool,
    caps: &oci_spec::runtime::Capabilities,
    profile_root: &Path,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if privileged {
        return Ok(None);
    }
    let mut profile = match choice {
        SeccompChoice::Unconfined => return Ok(None),
        SeccompChoice::RuntimeDefault => runtime_default_with_caps(caps),
        SeccompChoice::Localhost(path) => load_localhost(&profile_root.join(path))?,
    };
    to_libcontainer_arg_order(&mut profile);
    Ok(Some(profile))
}

/// Read and parse an OCI `LinuxSeccomp` JSON file.
pub fn load_localhost(path: &Path) -> Result<LinuxSeccomp, SpecError> {
    let bytes = std::fs::read(path).map_err(|source| SpecError::SeccompProfileRead {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| SpecError::SeccompProfileParse {
        path: path.to_path_buf(),
        source,
    })
}

/// Swap `value`/`valueTwo` of every SCMP_CMP_MASKED_EQ argument.
///
/// The OCI spec (and runc, and Docker's profiles) read MASKED_EQ as `(arg & value) == valueTwo`.
/// libcontainer 0.7 passes `valueTwo` as the mask and `value` as the datum instead, and
/// libseccomp masks the datum too, so an OCI profile's `clone` rule (`value` = CLONE_NEW* mask,
/// `valueTwo` = 0) becomes `(arg & 0) == 0`: it matches every clone and silently allows
/// CLONE_NEWUSER (measured; `live_clone_namespace_flags_refused` guards it). Profiles are written
/// and stored here in OCI order and converted once, at the very end, for the libcontainer we
/// link. Drop this when libcontainer reads them like runc.
fn to_libcontainer_arg_order(profile: &mut LinuxSeccomp) {
    let Some(mut syscalls) = profile.syscalls().clone() else {
        return;
    };
    for sc in &mut syscalls {
        let Some(mut args) = sc.args().clone() else {
            continue;
        };
        for a in &mut args {
            if a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                *a = default_profile::seccomp_arg(
                    a.index(),
                    a.op(),
                    a.value_two().unwrap_or(0),
                    Some(a.value()),
                );
            }
        }
        sc.set_args(Some(args));
    }
    profile.set_syscalls(Some(syscalls));
}

#[cfg(test)]
mod tests;
