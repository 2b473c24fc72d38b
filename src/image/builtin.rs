//! The built-in sandbox image: the static pause binary built by build.rs, wrapped at run time
//! into an OCI image-layout tar. Every byte is fixed (mtime 0, uid 0, sorted JSON, no
//! timestamps), so the image id is stable across runs and daemon restarts.

use super::archive::{ANNOTATION_REF_NAME, host_arch};
use super::content::sha256_digest;

pub const REFERENCE: &str = crate::config::BUILTIN_SANDBOX_IMAGE;

static PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/crius-pause"));

/// The image as an OCI image-layout tar.
pub fn archive() -> Vec<u8> {
    let layer = layer_tar();
    let diff_id = sha256_digest(&layer);
    let config = serde_json::json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {
            "Entrypoint": ["/pause"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "crius built-in pause image"}],
    });
    let config = serde_json::to_vec(&config).expect("serialising a JSON value");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": diff_id,
            "size": layer.len(),
        }],
    });
    let manifest = serde_json::to_vec(&manifest).expect("serialising a JSON value");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256_digest(&manifest),
            "size": manifest.len(),
            "annotations": {(ANNOTATION_REF_NAME): REFERENCE},
        }],
    });
    let index = serde_json::to_vec(&index).expect("serialising a JSON value");

    let mut b = tar::Builder::new(Vec::new());
    append(
        &mut b,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );
    append(&mut b, "index.json", &index, 0o644);
    for blob in [&config, &manifest, &layer] {
        let name = format!("blobs/sha256/{}", &sha256_digest(blob)["sha256:".len()..]);
        append(&mut b, &name, blob, 0o644);
    }
    b.into_inner().expect("writing a tar to memory")
}

/// The single layer: /pause plus the empty mount-point directories a runtime expects.
fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for d in ["dev/", "etc/", "proc/", "sys/"] {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        h.set_path(d).expect("static path");
        h.set_cksum();
        b.append(&h, &[][..]).expect("writing a tar to memory");
    }
    append(&mut b, "pause", PAUSE, 0o755);
    b.into_inner().expect("writing a tar to memory")
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

fn append(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], mode: u32) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    h.set_path(name).expect("static path");
    h.set_cksum();
    b.append(&h, data).expect("writing a tar to memory");
}
