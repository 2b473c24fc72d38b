//! [`ImageStore`]: records, content and snapshots together, behind one lock for mutations.

use super::archive::{self, ImportOptions, ResolvedImage, Staged};
use super::compression::decompress;
use super::content::ContentStore;
use super::lock::StoreLock;
use super::record::{ImageRecord, RecordDir};
use super::reference::{self, is_hex64};
use super::unpack::unpack_layer;
use super::{ImageError, builtin, export};
use crate::snapshot::Snapshots;
use oci_spec::image::ImageConfiguration;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Shortest id prefix accepted as an image id (docker's short ids are 12).
const MIN_ID_PREFIX: usize = 12;

#[derive(Debug, Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    content: ContentStore,
    records: RecordDir,
    snapshots: Snapshots,
    lock_path: PathBuf,
}

/// Space used by images, for ImageFsInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// The directory holding images (the daemon root).
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

/// What a lookup string named.
enum Lookup {
    Id(String),
    Tag(String),
    Digest(String),
}

impl ImageStore {
    /// Open (creating) the store under `root` and clean up after any crash: abandoned
    /// downloads and half-unpacked snapshots are removed.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        std::fs::create_dir_all(root).map_err(ImageError::io(root))?;
        let inner = Inner {
            root: root.to_path_buf(),
            content: ContentStore::open(&root.join("content"))?,
            records: RecordDir::open(&root.join("images"))?,
            snapshots: Snapshots::open(&root.join("snapshots"))?,
            lock_path: root.join("lock"),
        };
        let store = ImageStore {
            inner: Arc::new(inner),
        };
        {
            let _lock = store.lock()?;
            store.inner.content.clean_ingest();
            store.inner.snapshots.recover()?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn content(&self) -> &ContentStore {
        &self.inner.content
    }

    fn lock(&self) -> Result<StoreLock, ImageError> {
        StoreLock::exclusive(&self.inner.lock_path)
    }

    /// Import an OCI image-layout or `docker save` tar. Returns the images it held.
    pub fn import_archive(&self, reader: impl Read) -> Result<Vec<ImageRecord>, ImageError> {
        self.import_archive_with(reader, &ImportOptions::default())
    }

    pub fn import_archive_with(
        &self,
        reader: impl Read,
        opts: &ImportOptions,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let _lock = self.lock()?;
        let mut staged = Staged::default();
        let result = (|| {
            archive::stage(&self.inner.content, reader, &mut staged)?;
            let images = archive::resolve(&self.inner.content, &mut staged, opts)?;
            images
                .iter()
                .map(|img| self.commit_locked(img, opts.pinned))
                .collect::<Result<Vec<_>, _>>()
        })();
        // Blobs this import added that no image references (index.json of a failed import,
        // other platforms' manifests...) go again.
        self.drop_unreferenced(&staged.created);
        result
    }

    /// Record an image whose blobs are all in the content store (archive import, or a
    /// registry pull that streamed them in): unpack missing layers, write the record, move
    /// its tags away from other images.
    pub fn commit_image(
        &self,
        img: &ResolvedImage,
        pinned: bool,
    ) -> Result<ImageRecord, ImageError> {
        let _lock = self.lock()?;
        self.commit_locked(img, pinned)
    }

    fn commit_locked(&self, img: &ResolvedImage, pinned: bool) -> Result<ImageRecord, ImageError> {
        let content = &self.inner.content;
        let config_bytes = content.read_small(&img.config_digest, archive::MAX_METADATA_BYTES)?;
        let config = ImageConfiguration::from_reader(&config_bytes[..]).map_err(|e| {
            ImageError::BadContent {
                digest: img.config_digest.clone(),
                reason: format!("invalid image config: {e}"),
            }
        })?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != img.layer_digests.len() {
            return Err(ImageError::BadContent {
                digest: img.config_digest.clone(),
                reason: format!(
                    "config lists {} diff ids but the manifest has {} layers",
                    diff_ids.len(),
                    img.layer_digests.len()
                ),
            });
        }
        for d in &diff_ids {
            reference::validate_digest(d)?;
        }
        let chain_ids = chain_ids(&diff_ids);
        for i in 0..diff_ids.len() {
            if self.inner.snapshots.get(&chain_ids[i])?.is_none() {
                let parent = i.checked_sub(1).map(|p| chain_ids[p].as_str());
                self.unpack_snapshot(&img.layer_digests[i], &diff_ids[i], &chain_ids[i], parent)?;
            }
        }
        let mut size = config_bytes.len() as u64;
        for l in &img.layer_digests {
            size += content.size(l)?;
        }

        let id = img.config_digest.clone();
        let mut rec = match self.inner.records.load(&id)? {
            Some(r) => r,
            None => ImageRecord {
                id: id.clone(),
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                size,
                manifest_digest: img.manifest_digest.clone(),
                layer_digests: img.layer_digests.clone(),
                layers: diff_ids.clone(),
                chain_ids: chain_ids.clone(),
                config,
                pinned: false,
                updated_nanos: 0,
            },
        };
        for t in &img.tags {
            if !rec.repo_tags.contains(t) {
                rec.repo_tags.push(t.clone());
            }
        }
        for d in &img.repo_digests {
            if !rec.repo_digests.contains(d) {
                rec.repo_digests.push(d.clone());
            }
        }
        rec.pinned |= pinned;
        rec.updated_nanos = crate::util::now_nanos();
        // The new owner is written first: a concurrent reader sees the tag on both images for
        // a moment (and picks the newer record), never on none.
        self.inner.records.save(&rec)?;
        for mut other in self.inner.records.load_all()? {
            if other.id == rec.id || !other.repo_tags.iter().any(|t| img.tags.contains(t)) {
                continue;
            }
            other.repo_tags.retain(|t| !img.tags.contains(t));
            retain_digests_of_tagged_repos(&mut other);
            tracing::info!(image = %other.id, "tag moved to {}", rec.id);
            self.inner.records.save(&other)?;
        }
        tracing::info!(image = %rec.id, tags = ?rec.repo_tags, "image recorded");
        Ok(rec)
    }

    fn unpack_snapshot(
        &self,
        layer_digest: &str,
        diff_id: &str,
        chain_id: &str,
        parent: Option<&str>,
    ) -> Result<(), ImageError> {
        let started = std::time::Instant::now();
        let tmp = self.inner.snapshots.prepare()?;
        let blob = self.inner.content.open_blob(layer_digest)?;
        let blob_path = self.inner.content.blob_path(layer_digest)?;
        let (compression, reader) =
            decompress(BufReader::new(blob)).map_err(ImageError::io(&blob_path))?;
        let mut hashing = HashingReader {
            inner: reader,
            hasher: Sha256::new(),
        };
        let stats = unpack_layer(&mut hashing, &tmp.fs(), layer_digest)?;
        // The tar may end before the stream does (padding); the diff id covers all of it.
        std::io::copy(&mut hashing, &mut std::io::sink()).map_err(ImageError::io(&blob_path))?;
        let actual = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        if actual != diff_id {
            return Err(ImageError::BadContent {
                digest: layer_digest.to_string(),
                reason: format!("uncompressed layer is {actual}, config says {diff_id}"),
            });
        }
        let entry = self
            .inner
            .snapshots
            .commit(tmp, chain_id, parent, diff_id)?;
        tracing::info!(
            layer = layer_digest,
            snapshot = entry.id,
            ?compression,
            entries = stats.entries,
            bytes = stats.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "layer unpacked"
        );
        Ok(())
    }

    /// Delete `digests` that no image record references. Best effort: a failure only leaves
    /// an orphan blob behind.
    fn drop_unreferenced(&self, digests: &[String]) {
        if digests.is_empty() {
            return;
        }
        let referenced = match self.inner.records.load_all() {
            Ok(recs) => recs.iter().flat_map(record_blobs).collect::<HashSet<_>>(),
            Err(e) => {
                tracing::warn!(error = %e, "not cleaning unreferenced blobs");
                return;
            }
        };
        for d in digests {
            if !referenced.contains(d)
                && let Err(e) = self.inner.content.delete(d)
            {
                tracing::warn!(blob = %d, error = %e, "removing unreferenced blob");
            }
        }
    }

    fn classify(&self, s: &str) -> Result<Lookup, ImageError> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if is_hex64(hex) {
            return Ok(Lookup::Id(format!("sha256:{hex}")));
        }
        if hex.len() >= MIN_ID_PREFIX && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            let matches: Vec<_> = self
                .inner
                .records
                .load_all()?
                .into_iter()
                .filter(|r| r.id["sha256:".len()..].starts_with(hex))
                .collect();
            if matches.len() == 1 {
                return Ok(Lookup::Id(matches[0].id.clone()));
            }
        }
        let r = reference::parse(s)?;
        Ok(match r.digested() {
            Some(d) => Lookup::Digest(d),
            None => Lookup::Tag(r.tagged().expect("parse gives a tag or a digest")),
        })
    }

    fn find(&self, lookup: &Lookup) -> Result<Option<ImageRecord>, ImageError> {
        match lookup {
            Lookup::Id(id) => self.inner.records.load(id),
            Lookup::Tag(t) => Ok(self
                .inner
                .records
                .load_all()?
                .into_iter()
                .filter(|r| r.repo_tags.contains(t))
                .max_by_key(|r| r.updated_nanos)),
            Lookup::Digest(d) => Ok(self
                .inner
                .records
                .load_all()?
                .into_iter()
                .filter(|r| r.repo_digests.contains(d))
                .max_by_key(|r| r.updated_nanos)),
        }
    }

    /// Look an image up by id (`sha256:<hex>`, `<hex>`, or a unique prefix of at least 12
    /// hex digits), tag (normalised: `busybox` finds `docker.io/library/busybox:latest`) or
    /// repo digest (`name@sha256:...`). Always reads the records from disk.
    pub fn get(&self, reference_or_id: &str) -> Result<Option<ImageRecord>, ImageError> {
        let lookup = self.classify(reference_or_id)?;
        self.find(&lookup)
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        self.inner.records.load_all()
    }

    /// Remove a tag (when named by a tag and the image has others) or the whole image (by id,
    /// digest, or its last tag). Snapshots and blobs no other image uses are freed.
    pub fn remove(&self, reference_or_id: &str) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        let lookup = self.classify(reference_or_id)?;
        let Some(mut rec) = self.find(&lookup)? else {
            return Err(ImageError::NotFound(reference_or_id.to_string()));
        };
        if let Lookup::Tag(t) = &lookup
            && rec.repo_tags.len() > 1
        {
            rec.repo_tags.retain(|x| x != t);
            retain_digests_of_tagged_repos(&mut rec);
            rec.updated_nanos = crate::util::now_nanos();
            self.inner.records.save(&rec)?;
            tracing::info!(image = %rec.id, tag = %t, "tag removed");
            return Ok(());
        }
        // Record first: if we crash below, the leftovers are unreferenced and harmless.
        self.inner.records.delete(&rec.id)?;
        let others = self.inner.records.load_all()?;
        let used_chains: HashSet<&String> = others.iter().flat_map(|r| &r.chain_ids).collect();
        for c in rec.chain_ids.iter().rev() {
            if !used_chains.contains(c) {
                self.inner.snapshots.remove(c)?;
            }
        }
        let used_blobs: HashSet<String> = others.iter().flat_map(record_blobs).collect();
        for b in record_blobs(&rec) {
            if !used_blobs.contains(&b) {
                self.inner.content.delete(&b)?;
            }
        }
        tracing::info!(image = %rec.id, "image removed");
        Ok(())
    }

    /// Write `references` (ids, tags or digests) as an OCI image-layout tar to `out`. A tag
    /// exports the image under that tag; an id or digest under all its tags.
    pub fn export(
        &self,
        references: &[String],
        out: impl std::io::Write,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let (items, blobs) = {
            // Held only while the blobs are opened: the open files survive a removal.
            let _lock = self.lock()?;
            let mut items: Vec<export::Item> = Vec::new();
            for r in references {
                let lookup = self.classify(r)?;
                let rec = self
                    .find(&lookup)?
                    .ok_or_else(|| ImageError::NotFound(r.clone()))?;
                let tags = match &lookup {
                    Lookup::Tag(t) => vec![t.clone()],
                    _ => rec.repo_tags.clone(),
                };
                match items.iter_mut().find(|i| i.record.id == rec.id) {
                    Some(i) => {
                        for t in tags {
                            if !i.tags.contains(&t) {
                                i.tags.push(t);
                            }
                        }
                    }
                    None => items.push(export::Item { record: rec, tags }),
                }
            }
            let blobs = export::open_blobs(&self.inner.content, &items)?;
            (items, blobs)
        };
        export::write(out, &items, blobs)?;
        Ok(items.into_iter().map(|i| i.record).collect())
    }

    /// overlay lowerdirs for `image`, top-most layer first.
    pub fn snapshot_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>, ImageError> {
        let all = self.inner.snapshots.list()?;
        image
            .chain_ids
            .iter()
            .rev()
            .map(|c| match all.get(c) {
                Some(e) => Ok(self.inner.snapshots.fs_path(e.id)),
                None => Err(ImageError::BadContent {
                    digest: c.clone(),
                    reason: format!("snapshot of image {} is missing", image.id),
                }),
            })
            .collect()
    }

    /// Bytes and inodes used by snapshots and content (hardlinks counted once).
    pub fn fs_usage(&self) -> Result<FsUsage, ImageError> {
        let mut seen = HashSet::new();
        let mut usage = FsUsage {
            mountpoint: self.inner.root.clone(),
            used_bytes: 0,
            inodes_used: 0,
        };
        for d in [self.inner.snapshots.dir(), self.inner.content.dir()] {
            walk_usage(d, &mut seen, &mut usage)?;
        }
        Ok(usage)
    }

    /// Import the built-in pause image unless it is present; it is pinned.
    pub fn ensure_builtin(&self) -> Result<ImageRecord, ImageError> {
        if let Some(rec) = self.get(builtin::REFERENCE)?
            && rec.pinned
        {
            return Ok(rec);
        }
        let opts = ImportOptions {
            base_name: None,
            pinned: true,
        };
        let mut recs = self.import_archive_with(&builtin::archive()[..], &opts)?;
        recs.pop()
            .ok_or_else(|| ImageError::NotFound(builtin::REFERENCE.to_string()))
    }
}

/// Keep only repo digests whose repository still has a tag on this image.
fn retain_digests_of_tagged_repos(rec: &mut ImageRecord) {
    let repos: HashSet<String> = rec
        .repo_tags
        .iter()
        .filter_map(|t| reference::parse(t).ok().map(|r| r.name()))
        .collect();
    rec.repo_digests.retain(|d| {
        d.split_once('@')
            .is_some_and(|(name, _)| repos.contains(name))
    });
}

fn record_blobs(r: &ImageRecord) -> Vec<String> {
    let mut v = vec![r.id.clone(), r.manifest_digest.clone()];
    v.extend(r.layer_digests.iter().cloned());
    v
}

/// chain[0] = diff[0]; chain[i] = sha256(chain[i-1] + " " + diff[i]) (OCI image spec).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => super::content::sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

fn walk_usage(
    dir: &Path,
    seen: &mut HashSet<(u64, u64)>,
    usage: &mut FsUsage,
) -> Result<(), ImageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io(dir)(e)),
    };
    for e in entries {
        let Ok(e) = e else { continue };
        // Entries can vanish under a concurrent remove; skip them.
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        if seen.insert((m.dev(), m.ino())) {
            usage.used_bytes += m.blocks() * 512;
            usage.inodes_used += 1;
        }
        if m.is_dir() {
            walk_usage(&e.path(), seen, usage)?;
        }
    }
    Ok(())
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
