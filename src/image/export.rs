//! `crius image export`: images as an OCI image-layout tar (`oci-layout`, `index.json`,
//! `blobs/sha256/*`) that `crius image import`, containerd (`ctr images import`) and skopeo
//! read. Each repo tag becomes an index entry annotated with the full name
//! (`io.containerd.image.name`) and the tag (`org.opencontainers.image.ref.name`), as
//! containerd writes them; a docker-style `manifest.json` is added so `docker load` works too.
//!
//! Every byte is deterministic (mtime 0, sorted blobs), so exporting twice gives the same tar.

use super::archive::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use super::content::ContentStore;
use super::media_type;
use super::{ImageError, ImageRecord, reference};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// One image to export and the tags to name it by (none: exported by digest only).
#[derive(Debug, Clone)]
pub struct Item {
    pub record: ImageRecord,
    pub tags: Vec<String>,
}

/// Blobs opened while the store lock was held: an image removed afterwards still exports
/// whole (the open files keep the data).
pub struct OpenBlobs {
    blobs: BTreeMap<String, (File, u64)>,
    manifest_types: BTreeMap<String, String>,
}

pub fn open_blobs(content: &ContentStore, items: &[Item]) -> Result<OpenBlobs, ImageError> {
    let mut blobs = BTreeMap::new();
    let mut manifest_types = BTreeMap::new();
    for item in items {
        let r = &item.record;
        let m: serde_json::Value = serde_json::from_slice(
            &content.read_small(&r.manifest_digest, super::archive::MAX_METADATA_BYTES)?,
        )
        .map_err(|e| ImageError::BadContent {
            digest: r.manifest_digest.clone(),
            reason: format!("invalid manifest: {e}"),
        })?;
        let media_type = m
            .get("mediaType")
            .and_then(|v| v.as_str())
            .unwrap_or(media_type::OCI_MANIFEST)
            .to_string();
        manifest_types.insert(r.manifest_digest.clone(), media_type);
        for d in std::iter::once(&r.manifest_digest)
            .chain(std::iter::once(&r.id))
            .chain(&r.layer_digests)
        {
            if !blobs.contains_key(d) {
                let f = content.open_blob(d)?;
                let size = content.size(d)?;
                blobs.insert(d.clone(), (f, size));
            }
        }
    }
    Ok(OpenBlobs {
        blobs,
        manifest_types,
    })
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// Write the archive for `items` to `out`.
pub fn write(out: impl Write, items: &[Item], blobs: OpenBlobs) -> Result<(), ImageError> {
    let mut index_entries = Vec::new();
    let mut docker_manifest = Vec::new();
    for item in items {
        let r = &item.record;
        let media_type = &blobs.manifest_types[&r.manifest_digest];
        let size = blobs.blobs[&r.manifest_digest].1;
        let descriptor = |annotations: Option<serde_json::Value>| {
            let mut d = serde_json::json!({
                "mediaType": media_type,
                "digest": r.manifest_digest,
                "size": size,
            });
            if let Some(a) = annotations {
                d["annotations"] = a;
            }
            d
        };
        if item.tags.is_empty() {
            index_entries.push(descriptor(None));
        }
        for t in &item.tags {
            let tag = reference::parse(t)
                .ok()
                .and_then(|p| p.tag)
                .unwrap_or_default();
            index_entries.push(descriptor(Some(serde_json::json!({
                (ANNOTATION_IMAGE_NAME): t,
                (ANNOTATION_REF_NAME): tag,
            }))));
        }
        docker_manifest.push(serde_json::json!({
            "Config": blob_path(&r.id),
            "RepoTags": item.tags,
            "Layers": r.layer_digests.iter().map(|d| blob_path(d)).collect::<Vec<_>>(),
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": index_entries,
    });
    let io = |e: std::io::Error| ImageError::io("export archive")(e);
    let mut tar = tar::Builder::new(out);
    append(&mut tar, "oci-layout", OCI_LAYOUT).map_err(io)?;
    let index = serde_json::to_vec(&index).expect("serialising a JSON value");
    append(&mut tar, "index.json", &index).map_err(io)?;
    let docker = serde_json::to_vec(&docker_manifest).expect("serialising a JSON value");
    append(&mut tar, "manifest.json", &docker).map_err(io)?;
    for (digest, (file, size)) in blobs.blobs {
        let mut h = header(size);
        h.set_path(blob_path(&digest)).map_err(io)?;
        h.set_cksum();
        // Exactly `size` bytes: the blob files are immutable once committed.
        tar.append(&h, std::io::Read::take(file, size))
            .map_err(io)?;
    }
    tar.into_inner().map_err(io)?.flush().map_err(io)?;
    Ok(())
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

fn append(tar: &mut tar::Builder<impl Write>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = header(data.len() as u64);
    h.set_path(name)?;
    h.set_cksum();
    tar.append(&h, data)
}
