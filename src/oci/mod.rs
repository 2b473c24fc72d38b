//! Pure CRI → OCI runtime-spec generation.
//!
//! Nothing here has side effects except reading a Localhost seccomp profile (and the two small
//! `/proc/self` readers in [`oom`], which callers use *before* building a spec). The sandbox
//! builder lives in [`spec`]; the pieces an application-container builder will reuse (namespaces,
//! mounts, security settings, process, seccomp, sysctls) are separate modules so both builders
//! share one definition of every default.

pub mod annotations;
pub mod dns;
mod error;
pub mod mounts;
pub mod namespaces;
pub mod oom;
pub mod process;
pub mod seccomp;
pub mod security;
pub mod spec;
pub mod sysctl;

pub use error::SpecError;
pub use namespaces::{PodNamespaces, namespaces_for};
pub use spec::{SandboxSpecInput, sandbox_spec};
