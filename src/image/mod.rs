//! The local image store: a content-addressed blob store, one JSON record per image, OCI-archive
//! import and overlay snapshots (one unpacked directory per layer, shared between images).
//!
//! Layout under the daemon root:
//! - `content/blobs/sha256/<hex>`: manifests, configs and (compressed) layers;
//! - `images/<config-hex>.json`: one [`ImageRecord`] per image;
//! - `snapshots/<n>/fs` + `snapshots/index.json`: unpacked layers keyed by chain id;
//! - `lock`: an flock serialising index and record writes between the daemon and
//!   `crius image import` (held briefly, never over a download or an unpack);
//! - `images.gen`: bumped by every record write, so a process's in-memory index notices
//!   another process's writes with one small read;
//! - `gc.lock`: shared while content is staged, exclusive while it is deleted (see `leases`).
//!
//! Readers never take the lock: every file they read is replaced atomically.

pub(crate) mod archive;
pub mod builtin;
pub(crate) mod compression;
pub(crate) mod content;
pub(crate) mod export;
pub(crate) mod index;
pub(crate) mod leases;
pub(crate) mod lock;
pub(crate) mod media_type;
pub mod pull;
pub(crate) mod record;
pub(crate) mod reference;
pub(crate) mod registry;
pub(crate) mod store;
pub(crate) mod unpack;
mod usage;

use std::path::PathBuf;

pub(crate) use pull::PullError;
pub use pull::{PullErrorKind, PullOptions, Puller};
pub(crate) use record::ImageRecord;
pub use registry::Credentials;
pub use store::ImageStore;

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
    /// A removal found the reference naming another image than the one checked.
    #[error("image {reference:?} is now {actual}, not {expected}")]
    Changed {
        reference: String,
        expected: String,
        actual: String,
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
