//! The local image store: a content-addressed blob store, one JSON record per image, OCI-archive
//! import and overlay snapshots (one unpacked directory per layer, shared between images).
//!
//! Layout under the daemon root:
//! - `content/blobs/sha256/<hex>`: manifests, configs and (compressed) layers;
//! - `images/<config-hex>.json`: one [`ImageRecord`] per image;
//! - `snapshots/<n>/fs` + `snapshots/index.json`: unpacked layers keyed by chain id;
//! - `lock`: an flock serialising mutations between the daemon and `crius image import`.
//!
//! Readers never take the lock: every file they read is replaced atomically, so they re-read
//! the records from disk and see images another process imported.

pub mod archive;
pub mod builtin;
pub mod compression;
pub mod content;
pub mod export;
pub mod lock;
pub mod pull;
pub mod record;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

use std::path::PathBuf;

pub use pull::{PullError, PullErrorKind, PullOptions, PullReport, Puller};
pub use record::ImageRecord;
pub use registry::Credentials;
pub use store::{FsUsage, ImageStore};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("invalid digest {digest:?}: expected sha256:<64 hex digits>")]
    InvalidDigest { digest: String },
    #[error("bad image archive: {reason}")]
    BadArchive { reason: String },
    #[error("content {digest}: {reason}")]
    BadContent { digest: String, reason: String },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("unpacking layer {layer}: entry {entry:?}: {reason}")]
    Unpack {
        layer: String,
        entry: PathBuf,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: unsupported record version {version} (this crius knows {known})")]
    RecordVersion {
        path: PathBuf,
        version: u32,
        known: u32,
    },
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }

    pub(crate) fn bad_archive(reason: impl Into<String>) -> ImageError {
        ImageError::BadArchive {
            reason: reason.into(),
        }
    }
}
