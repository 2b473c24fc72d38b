//! A small OCI-distribution client: endpoint selection (mirrors, then the registry itself),
//! per-host TLS, the Basic and Bearer token flows, manifests read into memory with a size
//! limit and blobs handed back as streaming responses.
//!
//! Protocol facts follow the OCI distribution spec and Docker's token auth spec; nothing here
//! knows about the image store.

mod auth;
mod client;
mod endpoint;
mod tls;

pub use auth::Credentials;
pub use client::{Fetched, RegistryClient, Session};
pub use endpoint::{Endpoint, Scheme, endpoints, upstream_host};

/// What kind of failure a registry reported: decides the gRPC code and whether another
/// endpoint is worth trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    /// Credentials missing or rejected (HTTP 401).
    Unauthenticated,
    /// Credentials accepted but not allowed to pull (HTTP 403, DENIED).
    PermissionDenied,
    /// The registry could not be reached or broke the protocol.
    Unavailable,
    /// Our own configuration is wrong (bad CA file, bad endpoint).
    Config,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{endpoint}: {what} not found: {reply}")]
    NotFound {
        endpoint: String,
        what: String,
        reply: String,
    },
    #[error("{endpoint}: unauthorized: {reply}")]
    Unauthorized { endpoint: String, reply: String },
    #[error("{endpoint}: access denied: {reply}")]
    Denied { endpoint: String, reply: String },
    #[error("{endpoint}: {what}: HTTP {status}: {reply}")]
    Status {
        endpoint: String,
        what: String,
        status: u16,
        reply: String,
    },
    /// Connection, TLS or stream failure; `detail` holds the whole cause chain.
    #[error("{endpoint}: {what}: {detail}")]
    Transport {
        endpoint: String,
        what: String,
        detail: String,
    },
    #[error("{endpoint}: {what}: {reason}")]
    BadResponse {
        endpoint: String,
        what: String,
        reason: String,
    },
    #[error("registry config for {host}: {reason}")]
    Config { host: String, reason: String },
}

impl RegistryError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::NotFound { .. } => ErrorKind::NotFound,
            RegistryError::Unauthorized { .. } => ErrorKind::Unauthenticated,
            RegistryError::Denied { .. } => ErrorKind::PermissionDenied,
            RegistryError::Status { .. }
            | RegistryError::Transport { .. }
            | RegistryError::BadResponse { .. } => ErrorKind::Unavailable,
            RegistryError::Config { .. } => ErrorKind::Config,
        }
    }

    pub(crate) fn transport(
        endpoint: &Endpoint,
        what: impl Into<String>,
        err: &(dyn std::error::Error + 'static),
    ) -> RegistryError {
        let mut detail = crate::error::cause_chain(err);
        // rustls reading an HTTP reply as a TLS record: say what is most likely going on.
        if endpoint.scheme == Scheme::Https
            && (detail.contains("InvalidContentType") || detail.contains("corrupt message"))
        {
            detail.push_str(
                " (the server does not speak TLS; a plain-HTTP registry must be listed as an \
                 http:// endpoint under [registry.mirrors])",
            );
        }
        RegistryError::Transport {
            endpoint: endpoint.to_string(),
            what: what.into(),
            detail,
        }
    }
}
