//! Reading image archives: OCI image layouts (`oci-layout`, `index.json`, `blobs/`) and
//! `docker save` tars (`manifest.json` with `Config`/`RepoTags`/`Layers`).
//!
//! A tar is read front to back once (it may come from stdin). Every file under `blobs/` is
//! streamed into the content store and verified against its name; other large files (legacy
//! `<id>/layer.tar`) are streamed in under their computed digest; small metadata files are
//! kept in memory. Only then are the index/manifest files interpreted, since tar order is not
//! specified.

use super::ImageError;
use super::compression::Compression;
use super::content::ContentStore;
use super::media_type;
use super::reference::{self, is_hex64};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path};

/// Metadata files above this size are refused (or, outside `blobs/`, stored as blobs).
pub const MAX_METADATA_BYTES: u64 = 4 << 20;
/// Total metadata an archive may make us hold in memory.
const MAX_IN_MEMORY_BYTES: u64 = 64 << 20;
const MAX_SYMLINK_HOPS: usize = 8;

pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd (and docker >= 25) put the full image name here.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Repository for bare tags (`ref.name` = "3.10"): `<base_name>:3.10`. Without it such an
    /// image is imported untagged (addressable by id) and a warning is logged.
    pub base_name: Option<String>,
    /// Mark the imported images pinned (never garbage-collected).
    pub pinned: bool,
}

/// One image found in an archive (or, later, pulled), with every blob already in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    /// Normalised `name:tag` references.
    pub tags: Vec<String>,
    /// Normalised `name@digest` references.
    pub repo_digests: Vec<String>,
}

/// The archive's files after one pass.
#[derive(Debug, Default)]
pub struct Staged {
    small: HashMap<String, Vec<u8>>,
    blobs: HashMap<String, String>,
    symlinks: HashMap<String, String>,
    /// Digests this import added to the content store (removed again if left unreferenced).
    pub created: Vec<String>,
}

/// Read the whole archive, streaming blobs into `content`. On error, the blobs created so far
/// are in `staged.created` of the partially filled value passed in, for the caller to clean.
pub fn stage(
    content: &ContentStore,
    reader: impl Read,
    staged: &mut Staged,
) -> Result<(), ImageError> {
    let mut archive = tar::Archive::new(reader);
    let mut in_memory = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| ImageError::bad_archive(format!("reading tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::bad_archive(format!("reading tar: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| ImageError::bad_archive(format!("entry path: {e}")))?
            .into_owned();
        let Some(path) = clean(&raw) else {
            return Err(ImageError::bad_archive(format!(
                "entry {} escapes the archive",
                raw.display()
            )));
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            if let Ok(Some(target)) = entry.link_name() {
                let dir = Path::new(&path).parent().unwrap_or(Path::new(""));
                if let Some(t) = clean(&dir.join(target)) {
                    staged.symlinks.insert(path, t);
                }
            }
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            continue;
        }
        let size = entry.size();
        if let Some(name) = path.strip_prefix("blobs/") {
            let Some(hex) = name.strip_prefix("sha256/").filter(|h| is_hex64(h)) else {
                return Err(ImageError::bad_archive(format!(
                    "unsupported blob {path} (only sha256 digests are supported)"
                )));
            };
            let digest = format!("sha256:{hex}");
            if !content.contains(&digest) {
                let info = content
                    .ingest(&mut entry, Some(&digest))
                    .map_err(|e| match e {
                        ImageError::DigestMismatch { .. } => ImageError::bad_archive(format!(
                            "{path}: content does not match its name"
                        )),
                        other => other,
                    })?;
                if info.created {
                    staged.created.push(digest.clone());
                }
            }
            staged.blobs.insert(path, digest);
        } else if size <= MAX_METADATA_BYTES {
            in_memory += size;
            if in_memory > MAX_IN_MEMORY_BYTES {
                return Err(ImageError::bad_archive("too much metadata outside blobs/"));
            }
            let mut buf = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut buf)
                .map_err(|e| ImageError::bad_archive(format!("reading {path}: {e}")))?;
            staged.small.insert(path, buf);
        } else {
            let info = content.ingest(&mut entry, None)?;
            if info.created {
                staged.created.push(info.digest.clone());
            }
            staged.blobs.insert(path, info.digest);
        }
    }
    Ok(())
}

/// Normalise an archive path: no leading `/` or `./`, no `..`.
fn clean(p: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?.to_string()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

impl Staged {
    fn resolve_link(&self, path: &str) -> String {
        let mut p = path.to_string();
        for _ in 0..MAX_SYMLINK_HOPS {
            match self.symlinks.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        p
    }

    /// Bytes of a small file (from memory or the content store).
    fn read_small(&self, content: &ContentStore, path: &str) -> Result<Vec<u8>, ImageError> {
        let p = self.resolve_link(path);
        if let Some(b) = self.small.get(&p) {
            return Ok(b.clone());
        }
        match self.blobs.get(&p) {
            Some(d) => content.read_small(d, MAX_METADATA_BYTES),
            None => Err(ImageError::bad_archive(format!("missing file {path}"))),
        }
    }

    /// The digest of the file at `path`, storing it as a blob if it was held in memory.
    fn blob(&mut self, content: &ContentStore, path: &str) -> Result<String, ImageError> {
        let p = self.resolve_link(path);
        if let Some(d) = self.blobs.get(&p) {
            return Ok(d.clone());
        }
        let Some(bytes) = self.small.get(&p) else {
            return Err(ImageError::bad_archive(format!("missing file {path}")));
        };
        let info = content.ingest_bytes(bytes)?;
        if info.created {
            self.created.push(info.digest.clone());
        }
        self.blobs.insert(p, info.digest.clone());
        Ok(info.digest)
    }
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Interpret a staged archive: the images it holds, their blobs all in the content store.
pub fn resolve(
    content: &ContentStore,
    staged: &mut Staged,
    opts: &ImportOptions,
) -> Result<Vec<ResolvedImage>, ImageError> {
    let mut images = if staged.small.contains_key("index.json") {
        resolve_oci(content, staged, opts)?
    } else if staged.small.contains_key("manifest.json") {
        resolve_docker(content, staged)?
    } else {
        return Err(ImageError::bad_archive(
            "neither index.json (OCI image layout) nor manifest.json (docker save) found",
        ));
    };
    if images.is_empty() {
        return Err(ImageError::bad_archive(format!(
            "no image for {}/{} in the archive",
            std::env::consts::OS,
            host_arch()
        )));
    }
    // Several index entries may name one manifest (one per tag): merge them.
    let mut merged: Vec<ResolvedImage> = Vec::new();
    for img in images.drain(..) {
        match merged
            .iter_mut()
            .find(|m| m.config_digest == img.config_digest)
        {
            Some(m) => {
                for t in img.tags {
                    if !m.tags.contains(&t) {
                        m.tags.push(t);
                    }
                }
                for d in img.repo_digests {
                    if !m.repo_digests.contains(&d) {
                        m.repo_digests.push(d);
                    }
                }
            }
            None => merged.push(img),
        }
    }
    Ok(merged)
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::bad_archive(format!("{what}: {e}")))
}

fn resolve_oci(
    content: &ContentStore,
    staged: &mut Staged,
    opts: &ImportOptions,
) -> Result<Vec<ResolvedImage>, ImageError> {
    let index: Index = parse_json("index.json", &staged.read_small(content, "index.json")?)?;
    let mut out = Vec::new();
    for desc in index.manifests {
        if desc.platform.as_ref().is_some_and(|p| !platform_matches(p)) {
            continue;
        }
        let names = names_from_annotations(&desc.annotations, opts);
        let Some(manifest_digest) = select_manifest(content, &desc, 0)? else {
            continue;
        };
        let manifest: Manifest = parse_json(
            &format!("manifest {manifest_digest}"),
            &content.read_small(&manifest_digest, MAX_METADATA_BYTES)?,
        )?;
        reference::validate_digest(&manifest.config.digest)?;
        for l in &manifest.layers {
            reference::validate_digest(&l.digest)?;
        }
        let mut repo_digests = Vec::new();
        for n in &names {
            if let Ok(r) = reference::parse(n) {
                let d = format!("{}@{manifest_digest}", r.name());
                if !repo_digests.contains(&d) {
                    repo_digests.push(d);
                }
            }
        }
        let img = ResolvedImage {
            manifest_digest,
            config_digest: manifest.config.digest,
            layer_digests: manifest.layers.into_iter().map(|l| l.digest).collect(),
            tags: names,
            repo_digests,
        };
        check_present(content, &img)?;
        out.push(img);
    }
    Ok(out)
}

/// Follow nested indexes (multi-platform images) down to this host's manifest.
fn select_manifest(
    content: &ContentStore,
    desc: &Descriptor,
    depth: usize,
) -> Result<Option<String>, ImageError> {
    reference::validate_digest(&desc.digest)?;
    let is_index =
        desc.media_type == media_type::OCI_INDEX || desc.media_type == media_type::DOCKER_LIST;
    if !is_index {
        return Ok(Some(desc.digest.clone()));
    }
    if depth > 2 {
        return Err(ImageError::bad_archive("image indexes nested too deeply"));
    }
    let nested: Index = parse_json(
        &format!("index {}", desc.digest),
        &content.read_small(&desc.digest, MAX_METADATA_BYTES)?,
    )?;
    let mut candidates: Vec<&Descriptor> = nested
        .manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(platform_matches))
        .collect();
    // Prefer the host's default variant (arm64 -> v8, arm -> v7) when several match.
    candidates.sort_by_key(|d| {
        let v = d.platform.as_ref().and_then(|p| p.variant.clone());
        v.as_deref() != default_variant()
    });
    match candidates.first() {
        Some(d) if content.contains(&d.digest) => select_manifest(content, d, depth + 1),
        Some(d) => Err(ImageError::bad_archive(format!(
            "manifest {} for this platform is not in the archive",
            d.digest
        ))),
        None => Ok(None),
    }
}

fn resolve_docker(
    content: &ContentStore,
    staged: &mut Staged,
) -> Result<Vec<ResolvedImage>, ImageError> {
    let entries: Vec<DockerManifestEntry> = parse_json(
        "manifest.json",
        &staged.read_small(content, "manifest.json")?,
    )?;
    let mut out = Vec::new();
    for e in entries {
        let config_digest = staged.blob(content, &e.config)?;
        let config_size = content.size(&config_digest)?;
        let mut layer_digests = Vec::new();
        let mut layer_descs = Vec::new();
        for l in &e.layers {
            let d = staged.blob(content, l)?;
            let size = content.size(&d)?;
            let mut head = [0u8; 4];
            let n = content
                .open_blob(&d)?
                .read(&mut head)
                .map_err(ImageError::io(content.blob_path(&d)?))?;
            let media_type = match Compression::detect(&head[..n]) {
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
                Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            };
            layer_descs
                .push(serde_json::json!({"mediaType": media_type, "digest": d, "size": size}));
            layer_digests.push(d);
        }
        // docker save carries no manifest: synthesise an OCI one so every image has a
        // manifest digest (it is not a registry digest, so no repo digests are claimed).
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": {"mediaType": media_type::OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": layer_descs,
        });
        let bytes = serde_json::to_vec(&manifest).expect("serialising a JSON value");
        let info = content.ingest_bytes(&bytes)?;
        if info.created {
            staged.created.push(info.digest.clone());
        }
        let mut tags = Vec::new();
        for t in e.repo_tags.unwrap_or_default() {
            match reference::parse(&t) {
                Ok(r) if r.tag.is_some() => tags.extend(r.tagged()),
                _ => tracing::warn!(tag = %t, "ignoring invalid RepoTags entry"),
            }
        }
        out.push(ResolvedImage {
            manifest_digest: info.digest,
            config_digest,
            layer_digests,
            tags,
            repo_digests: Vec::new(),
        });
    }
    Ok(out)
}

fn check_present(content: &ContentStore, img: &ResolvedImage) -> Result<(), ImageError> {
    for d in std::iter::once(&img.config_digest).chain(&img.layer_digests) {
        if !content.contains(d) {
            return Err(ImageError::bad_archive(format!(
                "blob {d} of manifest {} is not in the archive",
                img.manifest_digest
            )));
        }
    }
    Ok(())
}

/// Image names for an index entry. `io.containerd.image.name` is a full name; `ref.name` is a
/// full reference when it has a '/', ':' or '@', otherwise a bare tag that needs a base name.
fn names_from_annotations(ann: &HashMap<String, String>, opts: &ImportOptions) -> Vec<String> {
    let mut names = Vec::new();
    let mut push = |r: &str| match reference::parse(r) {
        Ok(p) if p.tag.is_some() => names.extend(p.tagged()),
        Ok(_) => tracing::info!(reference = r, "digest-only image name; not a tag"),
        Err(e) => tracing::warn!(error = %e, "ignoring invalid image name in archive"),
    };
    if let Some(n) = ann.get(ANNOTATION_IMAGE_NAME) {
        push(n);
    } else if let Some(r) = ann.get(ANNOTATION_REF_NAME) {
        if r.contains(['/', ':', '@']) {
            push(r);
        } else if reference::valid_tag(r) {
            match &opts.base_name {
                Some(base) => push(&format!("{base}:{r}")),
                None => tracing::warn!(
                    tag = %r,
                    "archive names this image only by a bare tag; imported untagged"
                ),
            }
        } else {
            tracing::warn!(name = %r, "ignoring invalid ref.name annotation");
        }
    }
    names
}

/// Go's GOARCH name for the architecture this binary was built for.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

fn default_variant() -> Option<&'static str> {
    match host_arch() {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        _ => None,
    }
}

fn platform_matches(p: &Platform) -> bool {
    p.os == std::env::consts::OS && p.architecture == host_arch()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_are_cleaned() {
        assert_eq!(
            clean(Path::new("./blobs/sha256/ab")).unwrap(),
            "blobs/sha256/ab"
        );
        assert_eq!(clean(Path::new("/index.json")).unwrap(), "index.json");
        assert_eq!(clean(Path::new("a/../b")).unwrap(), "b");
        assert!(clean(Path::new("../x")).is_none());
    }

    #[test]
    fn names_from_annotations_cases() {
        let ann = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let none = ImportOptions::default();
        assert_eq!(
            names_from_annotations(&ann(&[(ANNOTATION_REF_NAME, "busybox:1.36")]), &none),
            vec!["docker.io/library/busybox:1.36"]
        );
        assert_eq!(
            names_from_annotations(
                &ann(&[(ANNOTATION_REF_NAME, "localhost/crius/pause:builtin")]),
                &none
            ),
            vec!["localhost/crius/pause:builtin"]
        );
        assert!(names_from_annotations(&ann(&[(ANNOTATION_REF_NAME, "3.10")]), &none).is_empty());
        let base = ImportOptions {
            base_name: Some("registry.k8s.io/pause".into()),
            pinned: false,
        };
        assert_eq!(
            names_from_annotations(&ann(&[(ANNOTATION_REF_NAME, "3.10")]), &base),
            vec!["registry.k8s.io/pause:3.10"]
        );
        assert_eq!(
            names_from_annotations(
                &ann(&[
                    (ANNOTATION_REF_NAME, "3.10"),
                    (ANNOTATION_IMAGE_NAME, "registry.k8s.io/pause:3.10")
                ]),
                &none
            ),
            vec!["registry.k8s.io/pause:3.10"]
        );
    }
}
