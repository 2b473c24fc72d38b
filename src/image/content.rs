//! The content store: blobs addressed by their sha256 digest under `content/blobs/sha256/<hex>`.
//!
//! Writers stream into a temp file under `content/ingest/` while hashing, then verify the digest
//! and rename into place, so a blob path exists only with complete, verified content. A registry
//! pull streams into a [`BlobWriter`] the same way an archive import does.

use super::ImageError;
use super::lock::try_flock;
use super::reference::validate_digest;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
}

impl ContentStore {
    /// `dir` is `<root>/content`; created if missing.
    pub fn open(dir: &Path) -> Result<ContentStore, ImageError> {
        let store = ContentStore {
            dir: dir.to_path_buf(),
        };
        for d in [store.blobs_dir(), store.ingest_dir()] {
            std::fs::create_dir_all(&d).map_err(ImageError::io(&d))?;
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directories whose entries come and go as blobs are written and removed (an ingest
    /// file created, renamed into the blobs, a blob deleted): the ImageFsInfo memo watches
    /// their mtimes (see `image::usage`).
    pub fn entry_dirs(&self) -> [PathBuf; 2] {
        [self.blobs_dir(), self.ingest_dir()]
    }

    fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    fn ingest_dir(&self) -> PathBuf {
        self.dir.join("ingest")
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let hex = validate_digest(digest)?;
        Ok(self.blobs_dir().join(hex))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.exists()).unwrap_or(false)
    }

    pub fn open_blob(&self, digest: &str) -> Result<File, ImageError> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ImageError::BadContent {
                    digest: digest.to_string(),
                    reason: "blob missing from the content store".into(),
                }
            } else {
                ImageError::Io { path, source: e }
            }
        })
    }

    /// Read a small blob (manifest, config, index) fully, refusing anything over `limit` bytes
    /// so a hostile archive cannot make us buffer a layer.
    pub fn read_small(&self, digest: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        let mut buf = Vec::new();
        self.open_blob(digest)?
            .take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(ImageError::io(&path))?;
        if buf.len() as u64 > limit {
            return Err(ImageError::BadContent {
                digest: digest.to_string(),
                reason: format!("larger than the {limit}-byte limit for metadata"),
            });
        }
        Ok(buf)
    }

    pub fn size(&self, digest: &str) -> Result<u64, ImageError> {
        let path = self.blob_path(digest)?;
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(ImageError::io(path))
    }

    /// Start writing a blob whose digest is known only at the end.
    pub fn writer(&self) -> Result<BlobWriter, ImageError> {
        let name = crate::util::new_id();
        let tmp = self.ingest_dir().join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(ImageError::io(&tmp))?;
        // Held while writing so clean_ingest in another process leaves this file alone.
        try_flock(&file);
        Ok(BlobWriter {
            store: self.clone(),
            file: Some(file),
            tmp,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Stream `reader` into the store; returns (digest, size). With `expected`, a mismatch is
    /// an error and nothing is stored.
    pub fn ingest(
        &self,
        mut reader: impl Read,
        expected: Option<&str>,
    ) -> Result<BlobInfo, ImageError> {
        let mut w = self.writer()?;
        std::io::copy(&mut reader, &mut w).map_err(|e| ImageError::Io {
            path: w.tmp.clone(),
            source: e,
        })?;
        w.commit(expected)
    }

    pub fn ingest_bytes(&self, data: &[u8]) -> Result<BlobInfo, ImageError> {
        let digest = sha256_digest(data);
        if self.contains(&digest) {
            return Ok(BlobInfo {
                digest,
                size: data.len() as u64,
                created: false,
            });
        }
        self.ingest(data, Some(&digest))
    }

    /// Remove a blob; absent is fine.
    pub fn delete(&self, digest: &str) -> Result<(), ImageError> {
        let path = self.blob_path(digest)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ImageError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// Digests of every stored blob.
    pub fn list(&self) -> Result<Vec<String>, ImageError> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
            let e = e.map_err(ImageError::io(&dir))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if super::reference::is_hex64(&name) {
                out.push(format!("sha256:{name}"));
            }
        }
        Ok(out)
    }

    /// Remove temp files left by writers that died (their flock is free).
    pub fn clean_ingest(&self) {
        let Ok(entries) = std::fs::read_dir(self.ingest_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if let Ok(f) = File::open(&path)
                && try_flock(&f)
            {
                tracing::debug!(path = %path.display(), "removing abandoned ingest file");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: String,
    pub size: u64,
    /// False when an identical blob was already stored.
    pub created: bool,
}

/// A blob being written. Dropped without `commit`, its temp file is removed.
pub struct BlobWriter {
    store: ContentStore,
    file: Option<File>,
    tmp: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("blob writer already committed"))?;
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWriter {
    pub fn bytes_written(&self) -> u64 {
        self.size
    }

    /// Verify the digest (if `expected`), fsync and rename into place.
    pub fn commit(mut self, expected: Option<&str>) -> Result<BlobInfo, ImageError> {
        let actual = format!(
            "sha256:{}",
            hex::encode(std::mem::take(&mut self.hasher).finalize())
        );
        if let Some(exp) = expected {
            validate_digest(exp)?;
            if exp != actual {
                return Err(ImageError::DigestMismatch {
                    expected: exp.to_string(),
                    actual,
                });
            }
        }
        let file = self.file.take().expect("file present until commit");
        file.sync_all().map_err(ImageError::io(&self.tmp))?;
        drop(file);
        let dest = self.store.blob_path(&actual)?;
        // If another writer got there first the content is identical: keep theirs.
        let created = !dest.exists();
        if created {
            std::fs::rename(&self.tmp, &dest).map_err(ImageError::io(&dest))?;
        }
        Ok(BlobInfo {
            digest: actual,
            size: self.size,
            created,
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful rename the temp path is gone and this is a no-op.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_verifies_and_dedups() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let info = cs.ingest(&b"abc"[..], None).unwrap();
        let d = info.digest.clone();
        assert_eq!(d, sha256_digest(b"abc"));
        assert_eq!((info.size, info.created), (3, true));
        assert_eq!(cs.read_small(&d, 10).unwrap(), b"abc");
        assert!(cs.read_small(&d, 2).is_err());
        // Same content again: fine, one blob.
        assert!(!cs.ingest(&b"abc"[..], Some(&d)).unwrap().created);
        // Wrong digest: refused, nothing left in ingest/.
        let e = cs.ingest(&b"abd"[..], Some(&d)).unwrap_err();
        assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
        assert!(!cs.contains(&sha256_digest(b"abd")));
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
        cs.delete(&d).unwrap();
        cs.delete(&d).unwrap();
        assert!(!cs.contains(&d));
        assert!(cs.blob_path("sha256:../../x").is_err());
    }

    #[test]
    fn abandoned_ingest_files_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("ingest/leftover"), b"x").unwrap();
        let mut live = cs.writer().unwrap();
        live.write_all(b"partial").unwrap();
        cs.clean_ingest();
        // The live writer's file survives (its flock is held); the leftover is gone.
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            1
        );
        live.commit(None).unwrap();
    }
}
