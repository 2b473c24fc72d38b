//! What a client verb can fail with; `main` prints it and exits 1.

use std::path::PathBuf;
use std::time::Duration;

use super::config_json::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("connecting to {}: {}", .socket.display(), chain(.source))]
    Connect {
        socket: PathBuf,
        source: tonic::transport::Error,
    },
    /// A failed RPC, shown as crictl shows it: the gRPC code and the runtime's message.
    #[error("{rpc}: rpc error: code = {code:?} desc = {message}", code = .status.code(), message = .status.message())]
    Rpc {
        rpc: &'static str,
        status: tonic::Status,
    },
    #[error(
        "{rpc}: rpc error: code = DeadlineExceeded desc = no answer within {after:?} (see --timeout)"
    )]
    Timeout { rpc: &'static str, after: Duration },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what} {id}: {reason}")]
    Answer {
        what: &'static str,
        id: String,
        reason: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error("reading the log {}: {source}", .path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("encoding JSON output: {0}")]
    Json(#[from] serde_json::Error),
    #[error("starting the client runtime: {0}")]
    Runtime(std::io::Error),
}

/// An error with its causes (see [`crate::error::cause_chain`]).
fn chain(e: &dyn std::error::Error) -> String {
    crate::error::cause_chain(e)
}
