//! Build small image archives in the test, so image edge cases need no registry: an OCI image
//! layout tar that also carries Docker's manifest.json (as `docker save` >= 25 writes).

use std::path::Path;

use sha2::{Digest, Sha256};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// `LayerFile::mode` of a symbolic link; its `data` is then the link target.
pub const SYMLINK: u32 = 0o120777;

/// One regular file (or, with mode [`SYMLINK`], a symlink) in the image's single layer.
pub struct LayerFile<'a> {
    pub path: &'a str,
    pub data: &'a [u8],
    pub mode: u32,
}

/// Write an archive for image `name` ("registry/repo:tag") with one uncompressed layer and
/// `runtime_config` as the config's "config" object (Entrypoint, Cmd, Env, ...).
pub fn write_image_archive(
    out: &Path,
    name: &str,
    runtime_config: serde_json::Value,
    files: &[LayerFile<'_>],
) {
    let layer = layer_tar(files);
    let layer_digest = sha256(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": oci_arch(),
        "os": "linux",
        "config": runtime_config,
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
        "history": [{ "created": "2024-01-01T00:00:00Z", "created_by": "crius integration test" }],
    }))
    .expect("serialize image config");
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": { "mediaType": CONFIG_TYPE, "digest": format!("sha256:{config_digest}"), "size": config.len() },
        "layers": [{ "mediaType": LAYER_TYPE, "digest": format!("sha256:{layer_digest}"), "size": layer.len() }],
    }))
    .expect("serialize manifest");
    let manifest_digest = sha256(&manifest);
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))
    .expect("serialize index");
    let docker_manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("blobs/sha256/{config_digest}"),
        "RepoTags": [name],
        "Layers": [format!("blobs/sha256/{layer_digest}")],
    }]))
    .expect("serialize manifest.json");

    let file =
        std::fs::File::create(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let mut tar = tar::Builder::new(file);
    for dir in ["blobs/", "blobs/sha256/"] {
        append_dir(&mut tar, dir);
    }
    append(
        &mut tar,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );
    append(&mut tar, "index.json", &index, 0o644);
    append(&mut tar, "manifest.json", &docker_manifest, 0o644);
    for (digest, blob) in [
        (&layer_digest, &layer),
        (&config_digest, &config),
        (&manifest_digest, &manifest),
    ] {
        append(&mut tar, &format!("blobs/sha256/{digest}"), blob, 0o644);
    }
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .expect("finish image archive");
}

fn layer_tar(files: &[LayerFile<'_>]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for f in files {
        let path = f.path.trim_start_matches('/');
        if f.mode == SYMLINK {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            h.set_mtime(1_704_067_200);
            let target = std::str::from_utf8(f.data).expect("utf-8 link target");
            tar.append_link(&mut h, path, target)
                .unwrap_or_else(|e| panic!("add symlink {path} to tar: {e}"));
        } else {
            append(&mut tar, path, f.data, f.mode);
        }
    }
    tar.into_inner().expect("finish layer tar")
}

fn append<W: std::io::Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(1_704_067_200);
    tar.append_data(&mut h, path, data)
        .unwrap_or_else(|e| panic!("add {path} to tar: {e}"));
}

fn append_dir<W: std::io::Write>(tar: &mut tar::Builder<W>, path: &str) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(1_704_067_200);
    tar.append_data(&mut h, path, std::io::empty())
        .unwrap_or_else(|e| panic!("add {path} to tar: {e}"));
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// GOARCH spelling of this machine's architecture, as image configs use.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}
