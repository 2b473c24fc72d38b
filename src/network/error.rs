//! Errors of the network module, each carrying the context an operator needs: paths, plugin
//! and network names, and what the plugin itself said.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("no network config found in {}", dir.display())]
    NoConfig { dir: PathBuf },

    #[error("no valid network config found in {}: {}", dir.display(), reasons.join("; "))]
    NoValidConfig { dir: PathBuf, reasons: Vec<String> },

    #[error("network config {}: {reason}", path.display())]
    InvalidConfig { path: PathBuf, reason: String },

    #[error("CNI plugin {plugin} (network {network}) {command} failed{}: {msg}{}{}",
        code.map(|c| format!(" with code {c}")).unwrap_or_default(),
        if details.is_empty() { String::new() } else { format!(" ({details})") },
        if stderr.is_empty() { String::new() } else { format!("; stderr: {stderr}") })]
    PluginFailed {
        plugin: String,
        network: String,
        command: &'static str,
        code: Option<u64>,
        msg: String,
        details: String,
        stderr: String,
    },

    #[error("CNI plugin {plugin} (network {network}) {command} timed out after {timeout:?}")]
    PluginTimeout {
        plugin: String,
        network: String,
        command: &'static str,
        timeout: Duration,
    },

    #[error("CNI plugin {plugin} (network {network}): run {}: {source}", binary.display())]
    PluginExec {
        plugin: String,
        network: String,
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("CNI plugin {plugin} (network {network}) returned an invalid result: {reason}")]
    InvalidResult {
        plugin: String,
        network: String,
        reason: String,
    },

    #[error("network {network}: {reason}")]
    Unsupported { network: String, reason: String },

    #[error("CNI cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("CNI cache {}: corrupt entry: {source}", path.display())]
    CacheCorrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid sandbox id {0:?} for the CNI cache")]
    InvalidId(String),

    #[error("netns {}: {op}: {source}", path.display())]
    Netns {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl NetworkError {
    pub(crate) fn netns(
        path: &std::path::Path,
        op: &'static str,
        source: impl Into<std::io::Error>,
    ) -> Self {
        NetworkError::Netns {
            path: path.to_path_buf(),
            op,
            source: source.into(),
        }
    }
}
