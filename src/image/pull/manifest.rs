//! Registry documents: image indexes / manifest lists and image manifests (OCI and Docker
//! schema 2), checked for what a container runtime can use.

use super::platform::Platform;
use crate::image::media_type;
use crate::image::reference::validate_digest;
use serde::Deserialize;

const MT_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";

const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// Layer media types we unpack (compression is detected from the bytes anyway).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

#[derive(Debug, Clone)]
pub enum Document {
    Index(Vec<Descriptor>),
    Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Parse a manifest or index. `content_type` is the registry's Content-Type; the document's
/// own `mediaType`, or its shape, decides when the header is missing or generic.
pub fn parse(bytes: &[u8], content_type: &str) -> Result<Document, String> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let media_type = if raw.media_type.is_empty() {
        content_type
    } else {
        raw.media_type.as_str()
    };
    if raw.schema_version == 1 || media_type.starts_with(MT_DOCKER_SCHEMA1) {
        return Err("Docker schema 1 manifests are not supported (push the image again with a current client)".into());
    }
    if raw.schema_version != 2 {
        return Err(format!("unsupported schemaVersion {}", raw.schema_version));
    }
    let is_index = media_type == media_type::OCI_INDEX
        || media_type == media_type::DOCKER_LIST
        || (raw.manifests.is_some() && raw.config.is_none());
    if is_index {
        let manifests = raw.manifests.unwrap_or_default();
        for m in &manifests {
            check_digest(&m.digest)?;
        }
        return Ok(Document::Index(manifests));
    }
    let config = raw.config.ok_or("manifest without a config")?;
    check_digest(&config.digest)?;
    if !config.media_type.is_empty() && !CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Err(format!(
            "config media type {} is not a container image (an artifact?)",
            config.media_type
        ));
    }
    let layers = raw.layers.unwrap_or_default();
    for l in &layers {
        check_digest(&l.digest)?;
        if !LAYER_TYPES.contains(&l.media_type.as_str()) {
            return Err(format!(
                "layer {} has unsupported media type {:?}",
                l.digest, l.media_type
            ));
        }
    }
    Ok(Document::Manifest { config, layers })
}

fn check_digest(d: &str) -> Result<(), String> {
    validate_digest(d)
        .map(|_| ())
        .map_err(|_| format!("unsupported digest {d:?} (only sha256 is supported)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::media_type::{DOCKER_MANIFEST, OCI_MANIFEST};

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn manifests_and_indexes() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D}","size":1}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D}","size":2}}]}}"#
        );
        match parse(m.as_bytes(), "").unwrap() {
            Document::Manifest { layers, .. } => assert_eq!(layers[0].size, 2),
            other => panic!("{other:?}"),
        }
        // No mediaType field: the shape decides.
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":3,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#
        );
        match parse(i.as_bytes(), "application/json").unwrap() {
            Document::Index(m) => {
                assert_eq!(m[0].platform.as_ref().unwrap().to_string(), "linux/arm/v7")
            }
            other => panic!("{other:?}"),
        }
        let bad = [
            r#"{"schemaVersion":1,"name":"x"}"#.to_string(),
            format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{D}","size":1}},"layers":[]}}"#
            ),
            format!(
                r#"{{"schemaVersion":2,"config":{{"digest":"{D}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip+encrypted","digest":"{D}","size":1}}]}}"#
            ),
            r#"{"schemaVersion":2,"config":{"digest":"sha512:00","size":1},"layers":[]}"#
                .to_string(),
            "nope".to_string(),
        ];
        for b in bad {
            assert!(parse(b.as_bytes(), "").is_err(), "{b}");
        }
    }
}
