//! [`ImageStore`]: records, content and snapshots together.
//!
//! Locking, outermost first (always taken in this order):
//! - per chain id ([`KeyedMutex`]): one unpack of a layer at a time, outside every other lock,
//!   so pulls and imports of different images unpack side by side;
//! - the store flock (`<root>/lock`, [`StoreLock`]): held only for short index and record
//!   writes, never over a download or an unpack;
//! - the in-memory index (`cache`): readers share it, writers hold it over their record write;
//! - the lease table ([`Leases`]): held by whoever deletes blobs or snapshots, over "is it
//!   referenced or leased?" and the deletion.
//!
//! Lookups are answered from the in-memory index. Another process (`crius image import`)
//! writing records bumps `<root>/images.gen`; a lookup reads that one small file and reloads
//! the records only when it changed.

use super::archive::{self, ImportOptions, ResolvedImage, Staged};
use super::compression::decompress;
use super::content::ContentStore;
use super::index::ImageIndex;
use super::leases::{GcLock, ImageRemoval, ImageUse, KeyedMutex, Lease, Leases, UseLocks};
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
use std::sync::{Arc, RwLock};

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
    gc_lock_path: PathBuf,
    /// Bumped (under the store lock) by every record write, in any process.
    generation_path: PathBuf,
    cache: RwLock<Cached>,
    leases: Arc<Leases>,
    unpacking: KeyedMutex,
    users: UseLocks,
    /// The last ImageFsInfo walk (see [`super::usage`]).
    usage: super::usage::UsageMemo<FsUsage>,
}

#[derive(Debug)]
struct Cached {
    /// The generation `index` was loaded at (or last written by this process).
    generation: u64,
    index: ImageIndex,
}

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs: usize,
    pub snapshots: usize,
    pub bytes: u64,
    /// True when another process was staging content, so nothing was deleted this time.
    pub deferred: bool,
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
    /// Open (creating) the store under `root`, load the records into memory, and clean up
    /// after any crash: abandoned downloads and half-unpacked snapshots are removed (those
    /// another process is still writing are kept). Unreferenced blobs are left to [`gc`],
    /// which only the daemon runs.
    ///
    /// [`gc`]: ImageStore::gc
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        std::fs::create_dir_all(root).map_err(ImageError::io(root))?;
        let content = ContentStore::open(&root.join("content"))?;
        let snapshots = Snapshots::open(&root.join("snapshots"))?;
        // A snapshot comes or goes as an entry of `snapshots` (tmp dir created, renamed to its
        // number, index.json replaced, directory removed); a blob as one of the content dirs.
        let mut watched = content.entry_dirs().to_vec();
        watched.push(snapshots.dir().to_path_buf());
        let inner = Inner {
            root: root.to_path_buf(),
            content,
            records: RecordDir::open(&root.join("images"))?,
            snapshots,
            lock_path: root.join("lock"),
            gc_lock_path: root.join("gc.lock"),
            generation_path: root.join("images.gen"),
            cache: RwLock::new(Cached {
                generation: u64::MAX,
                index: ImageIndex::default(),
            }),
            leases: Arc::default(),
            unpacking: KeyedMutex::default(),
            users: UseLocks::default(),
            usage: super::usage::UsageMemo::new(watched, crate::stats::USAGE_MAX_AGE),
        };
        let store = ImageStore {
            inner: Arc::new(inner),
        };
        {
            let _lock = store.lock()?;
            store.inner.content.clean_ingest();
            store.inner.snapshots.recover()?;
            // Load without bumping the generation: opening writes nothing, so a daemon still
            // starts on a full disk (it must, to stop and remove what filled it).
            let generation = store.read_generation()?;
            let mut c = store.cache_write();
            c.index = ImageIndex::from_records(store.inner.records.load_all()?);
            c.generation = generation;
        }
        Ok(store)
    }

    /// Keep content alive while no record references it yet (see [`Leases`]).
    pub fn lease(&self) -> Lease {
        self.inner.leases.lease()
    }

    /// Per-image-id use locks: CreateContainer shares, RemoveImage excludes.
    pub fn users(&self) -> &UseLocks {
        &self.inner.users
    }

    /// Hold image `id` in use (see [`UseLocks`]).
    pub async fn hold(&self, id: &str) -> ImageUse {
        self.inner.users.share(id).await
    }

    /// Keep new users of image `id` out (see [`UseLocks`]).
    pub async fn hold_for_removal(&self, id: &str) -> ImageRemoval {
        self.inner.users.exclusive(id).await
    }

    fn read_generation(&self) -> Result<u64, ImageError> {
        let path = &self.inner.generation_path;
        match std::fs::read_to_string(path) {
            Ok(s) => Ok(s.trim().parse().unwrap_or(0)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(ImageError::io(path)(e)),
        }
    }

    fn cache_read(&self) -> std::sync::RwLockReadGuard<'_, Cached> {
        self.inner.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn cache_write(&self) -> std::sync::RwLockWriteGuard<'_, Cached> {
        self.inner.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the index, reloading it first if another process changed the records.
    fn read_index<R>(&self, f: impl FnOnce(&ImageIndex) -> R) -> Result<R, ImageError> {
        // Read before loading: a write that lands while we load bumps past this value and
        // makes the next lookup reload again.
        let generation = self.read_generation()?;
        {
            let c = self.cache_read();
            if c.generation == generation {
                return Ok(f(&c.index));
            }
        }
        let mut c = self.cache_write();
        if c.generation != generation {
            c.index = ImageIndex::from_records(self.inner.records.load_all()?);
            c.generation = generation;
        }
        Ok(f(&c.index))
    }

    /// Change records: `f` writes them to disk and updates the index to match. Call under the
    /// store lock. Lookups wait meanwhile; afterwards the generation is bumped so other
    /// processes reload. If `f` fails half-way, the index is reloaded from disk.
    fn write_index<R>(
        &self,
        f: impl FnOnce(&mut ImageIndex) -> Result<R, ImageError>,
    ) -> Result<R, ImageError> {
        let mut c = self.cache_write();
        let on_disk = self.read_generation()?;
        if c.generation != on_disk {
            c.index = ImageIndex::from_records(self.inner.records.load_all()?);
            c.generation = on_disk;
        }
        let result = f(&mut c.index);
        if result.is_err() {
            c.index = ImageIndex::from_records(self.inner.records.load_all()?);
        }
        let next = on_disk.wrapping_add(1);
        // Not fsynced: after a crash every process loads the records afresh anyway.
        crate::util::replace_file(&self.inner.generation_path, next.to_string().as_bytes())
            .map_err(ImageError::io(&self.inner.generation_path))?;
        c.generation = next;
        result
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
        let mut staged = Staged::default();
        let result = {
            // Shared: no deletion (ours, a daemon's RemoveImage or GC) touches what we stage
            // until our records reference it.
            let _staging = GcLock::shared(&self.inner.gc_lock_path)?;
            let lease = self.lease();
            (|| {
                archive::stage(&self.inner.content, reader, &mut staged)?;
                let images = archive::resolve(&self.inner.content, &mut staged, opts)?;
                images
                    .iter()
                    .map(|img| self.commit_leased(img, opts.pinned, &lease))
                    .collect::<Result<Vec<_>, _>>()
            })()
        };
        // Blobs this import added that no image references (index.json of a failed import,
        // other platforms' manifests...) go again.
        if let Err(e) = self.collect(Some(&staged.created)) {
            tracing::warn!(error = %e, "not cleaning unreferenced blobs");
        }
        result
    }

    /// Record an image whose blobs are all in the content store (archive import, or a
    /// registry pull that streamed them in): unpack missing layers, write the record, move
    /// its tags away from other images.
    /// `lease` (the caller's, holding the blobs it stored) gets the snapshots too.
    pub fn commit_image(
        &self,
        img: &ResolvedImage,
        pinned: bool,
        lease: &Lease,
    ) -> Result<ImageRecord, ImageError> {
        self.commit_leased(img, pinned, lease)
    }

    fn commit_leased(
        &self,
        img: &ResolvedImage,
        pinned: bool,
        lease: &Lease,
    ) -> Result<ImageRecord, ImageError> {
        let content = &self.inner.content;
        for d in [&img.config_digest, &img.manifest_digest]
            .into_iter()
            .chain(&img.layer_digests)
        {
            lease.add(d);
        }
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
            // Leased before the presence check: a removal after it cannot take the snapshot.
            lease.add(&chain_ids[i]);
            let parent = i.checked_sub(1).map(|p| chain_ids[p].as_str());
            self.ensure_snapshot(&img.layer_digests[i], &diff_ids[i], &chain_ids[i], parent)?;
        }
        let mut size = config_bytes.len() as u64;
        for l in &img.layer_digests {
            size += content.size(l)?;
        }

        let id = img.config_digest.clone();
        let _lock = self.lock()?;
        self.write_index(|index| {
            let mut rec = match index.get(&id).cloned() {
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
            index.insert(rec.clone());
            for other_id in index.holders_of(&img.tags, &rec.id) {
                let Some(mut other) = index.get(&other_id).cloned() else {
                    continue;
                };
                other.repo_tags.retain(|t| !img.tags.contains(t));
                retain_digests_of_tagged_repos(&mut other);
                tracing::info!(image = %other.id, "tag moved to {}", rec.id);
                self.inner.records.save(&other)?;
                index.insert(other);
            }
            tracing::info!(image = %rec.id, tags = ?rec.repo_tags, "image recorded");
            Ok(rec)
        })
    }

    /// Unpack layer `chain_id` unless it is there. Only one unpack per chain id runs at a
    /// time (a second waits and finds it done); unpacks of other layers run alongside, and
    /// the store lock is taken only to publish the snapshot.
    fn ensure_snapshot(
        &self,
        layer_digest: &str,
        diff_id: &str,
        chain_id: &str,
        parent: Option<&str>,
    ) -> Result<(), ImageError> {
        let m = self.inner.unpacking.entry(chain_id);
        let _unpacking = m.lock().unwrap_or_else(|p| p.into_inner());
        if self.inner.snapshots.get(chain_id)?.is_some() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        tracing::debug!(layer = layer_digest, chain = chain_id, "unpacking layer");
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
        let entry = {
            let _lock = self.lock()?;
            self.inner
                .snapshots
                .commit(tmp, chain_id, parent, diff_id)?
        };
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

    /// Garbage-collect: delete every blob and snapshot no image record references and no
    /// live lease holds (blobs of refused or cut-off pulls, snapshots of failed unpacks), and
    /// crash leftovers in the ingest and temp-snapshot areas. Skipped (`deferred`) while
    /// another process stages content.
    pub fn gc(&self) -> Result<GcReport, ImageError> {
        let report = self.collect(None)?;
        if report.blobs + report.snapshots > 0 || report.deferred {
            tracing::info!(
                blobs = report.blobs,
                snapshots = report.snapshots,
                bytes = report.bytes,
                deferred = report.deferred,
                "image store garbage collected"
            );
        }
        Ok(report)
    }

    /// [`gc`](ImageStore::gc), of the blobs in `only` when given (and then no snapshots).
    fn collect(&self, only: Option<&[String]>) -> Result<GcReport, ImageError> {
        let mut report = GcReport::default();
        if only.is_some_and(|o| o.is_empty()) {
            return Ok(report);
        }
        let Some(_deleting) = GcLock::try_exclusive(&self.inner.gc_lock_path)? else {
            report.deferred = true;
            return Ok(report);
        };
        let _lock = self.lock()?;
        let (blobs_used, chains_used) =
            self.read_index(|i| (i.referenced_blobs(), i.referenced_chains()))?;
        let leased = self.inner.leases.table();
        let candidates = match only {
            Some(o) => o.to_vec(),
            None => self.inner.content.list()?,
        };
        for d in candidates {
            if blobs_used.contains(&d) || leased.contains(&d) {
                continue;
            }
            let size = self.inner.content.size(&d).unwrap_or(0);
            match self.inner.content.delete(&d) {
                Ok(()) => {
                    tracing::debug!(blob = %d, "removing unreferenced blob");
                    report.blobs += 1;
                    report.bytes += size;
                }
                Err(e) => tracing::warn!(blob = %d, error = %e, "removing unreferenced blob"),
            }
        }
        if only.is_none() {
            // Children first, so an interrupted collection never leaves a child whose parent
            // directory is gone (the order does not matter to overlay, only to a reader).
            let mut chains: Vec<(String, u64)> = self
                .inner
                .snapshots
                .list()?
                .into_iter()
                .filter(|(c, _)| !chains_used.contains(c) && !leased.contains(c))
                .map(|(c, e)| (c, e.id))
                .collect();
            chains.sort_by_key(|(_, id)| std::cmp::Reverse(*id));
            for (c, _) in chains {
                tracing::debug!(chain = %c, "removing unreferenced snapshot");
                self.inner.snapshots.remove(&c)?;
                report.snapshots += 1;
            }
            self.inner.content.clean_ingest();
            self.inner.snapshots.recover()?;
        }
        Ok(report)
    }

    /// Look an image up by id (`sha256:<hex>`, `<hex>`, or a unique prefix of at least 12
    /// hex digits), tag (normalised: `busybox` finds `docker.io/library/busybox:latest`) or
    /// repo digest (`name@sha256:...`), in the in-memory index.
    pub fn get(&self, reference_or_id: &str) -> Result<Option<ImageRecord>, ImageError> {
        self.read_index(|index| {
            let lookup = classify(index, reference_or_id)?;
            Ok::<_, ImageError>(find(index, &lookup).cloned())
        })?
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        self.read_index(ImageIndex::list)
    }

    /// Remove a tag (when named by a tag and the image has others) or the whole image (by id,
    /// digest, or its last tag). Snapshots and blobs no other image uses are freed.
    pub fn remove(&self, reference_or_id: &str) -> Result<(), ImageError> {
        self.remove_if(reference_or_id, None).map(|_| ())
    }

    /// [`remove`](ImageStore::remove), only if `reference_or_id` still names image
    /// `expected_id` (else [`ImageError::Changed`]): the caller checked that image is unused.
    /// Returns what was done.
    pub fn remove_if(
        &self,
        reference_or_id: &str,
        expected_id: Option<&str>,
    ) -> Result<Removed, ImageError> {
        let _lock = self.lock()?;
        let (rec, deleting) = self.write_index(|index| {
            let lookup = classify(index, reference_or_id)?;
            let Some(mut rec) = find(index, &lookup).cloned() else {
                return Err(ImageError::NotFound(reference_or_id.to_string()));
            };
            if let Some(e) = expected_id
                && rec.id != e
            {
                return Err(ImageError::Changed {
                    reference: reference_or_id.to_string(),
                    expected: e.to_string(),
                    actual: rec.id,
                });
            }
            if let Lookup::Tag(t) = &lookup
                && rec.repo_tags.len() > 1
            {
                rec.repo_tags.retain(|x| x != t);
                retain_digests_of_tagged_repos(&mut rec);
                rec.updated_nanos = crate::util::now_nanos();
                self.inner.records.save(&rec)?;
                tracing::info!(image = %rec.id, tag = %t, "tag removed");
                index.insert(rec);
                return Ok((None, None));
            }
            // Record first: if we crash below, the leftovers are unreferenced and GC takes them.
            self.inner.records.delete(&rec.id)?;
            index.remove(&rec.id);
            let used = (index.referenced_blobs(), index.referenced_chains());
            Ok((Some(rec), Some(used)))
        })?;
        let (Some(rec), Some((used_blobs, used_chains))) = (rec, deleting) else {
            return Ok(Removed::Tag);
        };
        // Another process staging content may be relying on these blobs: leave them to GC.
        let Some(_deleting) = GcLock::try_exclusive(&self.inner.gc_lock_path)? else {
            tracing::info!(image = %rec.id, "image removed; its content is left to GC");
            return Ok(Removed::Image(rec.id));
        };
        // Held over the deletions: a pull that leased a shared layer keeps it.
        let leased = self.inner.leases.table();
        for c in rec.chain_ids.iter().rev() {
            if !used_chains.contains(c) && !leased.contains(c) {
                self.inner.snapshots.remove(c)?;
            }
        }
        for b in record_blobs(&rec) {
            if !used_blobs.contains(&b) && !leased.contains(&b) {
                self.inner.content.delete(&b)?;
            }
        }
        tracing::info!(image = %rec.id, "image removed");
        Ok(Removed::Image(rec.id))
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
                let (lookup, rec) = self.read_index(|index| {
                    let lookup = classify(index, r)?;
                    let rec = find(index, &lookup).cloned();
                    Ok::<_, ImageError>((lookup, rec))
                })??;
                let rec = rec.ok_or_else(|| ImageError::NotFound(r.clone()))?;
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

    /// [`fs_usage`](Self::fs_usage), from the last walk while no blob or snapshot came or
    /// went (see [`super::usage`]).
    pub fn fs_usage_cached(&self) -> Result<FsUsage, ImageError> {
        self.inner.usage.get(|| self.fs_usage())
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

/// What [`ImageStore::remove_if`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// One of several tags went; the image stays.
    Tag,
    /// The image (this id) went.
    Image(String),
}

fn classify(index: &ImageIndex, s: &str) -> Result<Lookup, ImageError> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    if is_hex64(hex) {
        return Ok(Lookup::Id(format!("sha256:{hex}")));
    }
    if hex.len() >= MIN_ID_PREFIX
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && let [one] = index.ids_with_prefix(hex)[..]
    {
        return Ok(Lookup::Id(one.to_string()));
    }
    let r = reference::parse(s)?;
    Ok(match r.digested() {
        Some(d) => Lookup::Digest(d),
        None => Lookup::Tag(r.tagged().expect("parse gives a tag or a digest")),
    })
}

fn find<'a>(index: &'a ImageIndex, lookup: &Lookup) -> Option<&'a ImageRecord> {
    match lookup {
        Lookup::Id(id) => index.get(id),
        Lookup::Tag(t) => index.by_tag(t),
        Lookup::Digest(d) => index.by_digest(d),
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

pub(crate) fn record_blobs(r: &ImageRecord) -> Vec<String> {
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
