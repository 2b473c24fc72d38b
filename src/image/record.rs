//! One JSON record per image under `images/<config-hex>.json`, replaced atomically.

use super::ImageError;
use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<config hex>`, the image id.
    pub id: String,
    /// Normalised `name:tag` references.
    pub repo_tags: Vec<String>,
    /// `name@sha256:<manifest hex>`.
    pub repo_digests: Vec<String>,
    /// Bytes of config + (compressed) layer blobs, as containerd reports it.
    pub size: u64,
    pub manifest_digest: String,
    /// Layer blob digests (compressed), bottom first.
    pub layer_digests: Vec<String>,
    /// Uncompressed layer digests (rootfs.diff_ids), bottom first.
    pub layers: Vec<String>,
    /// Chain ids, bottom first; the snapshot keys.
    pub chain_ids: Vec<String>,
    pub config: ImageConfiguration,
    /// Pinned images are never garbage-collected (the sandbox image).
    #[serde(default)]
    pub pinned: bool,
    /// When this record last changed (ns since epoch). Breaks ties while a tag moves between
    /// images: the newer record wins.
    #[serde(default)]
    pub updated_nanos: i64,
}

#[derive(Serialize)]
struct StoredRef<'a> {
    version: u32,
    #[serde(flatten)]
    image: &'a ImageRecord,
}

#[derive(Deserialize)]
struct Stored {
    version: u32,
    #[serde(flatten)]
    image: ImageRecord,
}

/// The records directory, `<root>/images`.
#[derive(Debug, Clone)]
pub struct RecordDir {
    dir: PathBuf,
}

impl RecordDir {
    pub fn open(dir: &Path) -> Result<RecordDir, ImageError> {
        std::fs::create_dir_all(dir).map_err(ImageError::io(dir))?;
        Ok(RecordDir {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &str) -> Result<PathBuf, ImageError> {
        let hex = super::reference::validate_digest(id)?;
        Ok(self.dir.join(format!("{hex}.json")))
    }

    pub fn save(&self, rec: &ImageRecord) -> Result<(), ImageError> {
        let path = self.path(&rec.id)?;
        let data = serde_json::to_vec_pretty(&StoredRef {
            version: RECORD_VERSION,
            image: rec,
        })
        .map_err(|source| ImageError::Json {
            path: path.clone(),
            source,
        })?;
        crate::util::atomic_write(&path, &data).map_err(ImageError::io(path))
    }

    fn load_path(path: &Path) -> Result<Option<ImageRecord>, ImageError> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io(path)(e)),
        };
        let stored: Stored = serde_json::from_slice(&data).map_err(|source| ImageError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        if stored.version != RECORD_VERSION {
            return Err(ImageError::RecordVersion {
                path: path.to_path_buf(),
                version: stored.version,
                known: RECORD_VERSION,
            });
        }
        Ok(Some(stored.image))
    }

    /// Every record, sorted by id. A record removed while we read is skipped.
    pub fn load_all(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(ImageError::io(&self.dir))?;
        for e in entries {
            let e = e.map_err(ImageError::io(&self.dir))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            // Temp files of atomic_write start with '.'.
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            if let Some(rec) = Self::load_path(&e.path())? {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub fn delete(&self, id: &str) -> Result<(), ImageError> {
        let path = self.path(id)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ImageError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }
}
