//! Pod networking: pinned network namespaces and the runtime side of the CNI specification
//! (1.0.0, and the 0.3.x/0.4.0 result formats).
//!
//! Plugins are run as child processes with an explicit environment (never by changing this
//! process's own environment, which is unsound in the multi-threaded daemon), and every setns(2)
//! happens on a dedicated short-lived thread, never on a tokio worker that is reused later.

pub mod cache;
pub mod conf;
mod error;
pub mod invoke;
pub mod netns;
pub mod result;
mod runtime;

#[cfg(test)]
mod tests;

pub use error::{NetworkError, PluginFailure};
pub use runtime::{Cni, CniOptions, DEFAULT_IFNAME, PodNetwork, PodNetworkStatus};
