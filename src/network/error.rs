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

    /// The plugin ran and reported an error (boxed: it is much larger than the others).
    #[error("{0}")]
    PluginFailed(Box<PluginFailure>),

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

/// What a failing plugin said: its JSON error object ({code, msg, details}) and stderr's tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    pub plugin: String,
    pub network: String,
    pub command: &'static str,
    pub code: Option<u64>,
    pub msg: String,
    pub details: String,
    pub stderr: String,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CNI plugin {} (network {}) {} failed",
            self.plugin, self.network, self.command
        )?;
        if let Some(code) = self.code {
            write!(f, " with code {code}")?;
        }
        write!(f, ": {}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        if !self.stderr.is_empty() {
            write!(f, "; stderr: {}", self.stderr)?;
        }
        Ok(())
    }
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
