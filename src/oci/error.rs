//! Errors from spec generation.

use std::path::PathBuf;

/// Why a spec could not be built.
///
/// Almost every variant is the caller's fault (a bad CRI request or a bad image config), so
/// [`SpecError::grpc_code`] maps them to `InvalidArgument`; the exceptions are named there.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("image config has no command (both Entrypoint and Cmd are empty)")]
    NoCommand,

    #[error("image config has an invalid environment entry {entry:?}: expected KEY=VALUE")]
    InvalidEnv { entry: String },

    #[error("working directory {dir:?} is not an absolute path")]
    RelativeWorkingDir { dir: String },

    #[error(
        "image user {user:?} is not numeric \"uid[:gid]\" and no run_as_user is set \
         (names cannot be resolved without reading the image's /etc/passwd)"
    )]
    NonNumericImageUser { user: String },

    #[error("{field} = {value} is out of range for a Linux id (0..=4294967295)")]
    InvalidId { field: &'static str, value: i64 },

    #[error(
        "capability {name:?} is not in the runtime's bounding set, so no container can get it \
         on this node"
    )]
    CapabilityNotGrantable { name: String },

    #[error("run_as_group is set without run_as_user")]
    GroupWithoutUser,

    #[error("hostname {hostname:?} is invalid: {reason}")]
    InvalidHostname {
        hostname: String,
        reason: &'static str,
    },

    #[error("sysctl {key:?} is not namespaced and cannot be set per pod")]
    SysctlNotNamespaced { key: String },

    #[error(
        "sysctl {key:?} needs the pod's own {namespace} namespace, but the pod shares the node's"
    )]
    SysctlNeedsNamespace {
        key: String,
        namespace: &'static str,
    },

    #[error("sysctl {key:?} is not allowed: {reason}")]
    SysctlNotAllowed { key: String, reason: &'static str },

    #[error("invalid seccomp profile {profile:?}: {reason}")]
    InvalidSeccompProfile {
        profile: String,
        reason: &'static str,
    },

    #[error("cannot read Localhost seccomp profile {path:?}: {source}")]
    SeccompProfileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot parse Localhost seccomp profile {path:?} as OCI LinuxSeccomp JSON: {source}")]
    SeccompProfileParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("user namespace mode {mode} is not supported (only NODE)")]
    UnsupportedUserNamespace { mode: String },

    #[error(
        "container has no command: CRI command and args are empty and the image has no \
         Entrypoint or Cmd"
    )]
    NoContainerCommand,

    #[error("invalid environment variable {key:?}: {reason}")]
    InvalidEnvKey { key: String, reason: &'static str },

    #[error("invalid user {user:?}: expected \"user\" or \"user:group\" (names or numeric ids)")]
    InvalidUser { user: String },

    #[error("user {user:?} not found in the image's /etc/passwd")]
    UnknownUser { user: String },

    #[error("group {group:?} not found in the image's /etc/group")]
    UnknownGroup { group: String },

    #[error("unknown capability {name:?}")]
    UnknownCapability { name: String },

    #[error("privileged container {container:?} is not allowed in a non-privileged pod sandbox")]
    PrivilegedInUnprivilegedSandbox { container: String },

    #[error("pid namespace mode TARGET needs the target container's pid (target_id {target:?})")]
    MissingTargetPid { target: String },

    #[error("mount {field} {path:?} is invalid: {reason}")]
    InvalidMount {
        field: &'static str,
        path: String,
        reason: &'static str,
    },

    #[error("cannot prepare mount source {path:?}: {source}")]
    MountSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("device {path:?} is invalid: {reason}")]
    InvalidDevice { path: String, reason: String },

    #[error("cannot read host device {path:?}: {source}")]
    DeviceRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("AppArmor profile {profile:?} requested, but AppArmor is not available on this node")]
    AppArmorUnavailable { profile: String },

    #[error("invalid AppArmor profile {profile:?}: {reason}")]
    InvalidAppArmorProfile {
        profile: String,
        reason: &'static str,
    },

    #[error("{feature} is not supported by this runtime")]
    Unsupported { feature: String },
}

impl SpecError {
    /// The gRPC status code a CRI handler should answer with.
    ///
    /// Mostly `InvalidArgument` (the request or image is wrong and retrying will not help).
    /// Valid requests this runtime does not implement (a pod user namespace, CDI devices...) are
    /// `Unimplemented`; what this node lacks (AppArmor, a host device) is `FailedPrecondition`.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            SpecError::UnsupportedUserNamespace { .. } | SpecError::Unsupported { .. } => {
                tonic::Code::Unimplemented
            }
            // The node cannot run what was asked, though the request itself is well formed.
            SpecError::AppArmorUnavailable { .. } | SpecError::CapabilityNotGrantable { .. } => {
                tonic::Code::FailedPrecondition
            }
            SpecError::DeviceRead { .. } | SpecError::MountSource { .. } => {
                tonic::Code::FailedPrecondition
            }
            _ => tonic::Code::InvalidArgument,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            SpecError::NoCommand.grpc_code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            SpecError::UnsupportedUserNamespace { mode: "POD".into() }.grpc_code(),
            tonic::Code::Unimplemented
        );
    }
}
