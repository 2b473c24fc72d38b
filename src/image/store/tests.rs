//! ImageStore tests with archives built in memory.

use super::*;
use crate::image::archive::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, host_arch};
use crate::image::content::sha256_digest;
use crate::image::unpack::tests::LayerBuilder;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

#[derive(Clone, Copy)]
enum Comp {
    Plain,
    Gzip,
    Zstd,
}

struct TestImage {
    config: Vec<u8>,
    manifest: Vec<u8>,
    /// (blob bytes, uncompressed bytes)
    layers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl TestImage {
    fn new(layers: Vec<(Vec<u8>, Comp)>, marker: &str) -> TestImage {
        let layers: Vec<(Vec<u8>, Vec<u8>)> = layers
            .into_iter()
            .map(|(raw, c)| {
                let blob = match c {
                    Comp::Plain => raw.clone(),
                    Comp::Gzip => {
                        let mut gz =
                            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                        gz.write_all(&raw).unwrap();
                        gz.finish().unwrap()
                    }
                    Comp::Zstd => zstd::encode_all(&raw[..], 1).unwrap(),
                };
                (blob, raw)
            })
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|(_, raw)| sha256_digest(raw)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": host_arch(), "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Labels": {"marker": marker}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256_digest(&config), "size": config.len()},
            "layers": layers.iter().map(|(b, _)| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256_digest(b), "size": b.len()})).collect::<Vec<_>>(),
        }))
        .unwrap();
        TestImage {
            config,
            manifest,
            layers,
        }
    }

    fn id(&self) -> String {
        sha256_digest(&self.config)
    }

    fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    fn blobs(&self) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = vec![&self.config, &self.manifest];
        v.extend(self.layers.iter().map(|(b, _)| &b[..]));
        v
    }
}

fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn blob_name(data: &[u8]) -> String {
    format!("blobs/sha256/{}", &sha256_digest(data)[7..])
}

/// OCI layout with one index entry per (image, annotations); index.json written last to
/// check that tar order does not matter.
fn oci_archive(entries: &[(&TestImage, &[(&str, &str)])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let mut written = HashSet::new();
    let mut manifests = Vec::new();
    for (img, ann) in entries {
        for blob in img.blobs() {
            if written.insert(sha256_digest(blob)) {
                add(&mut b, &blob_name(blob), blob);
            }
        }
        let ann: serde_json::Map<String, serde_json::Value> = ann
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.manifest_digest(), "size": img.manifest.len(), "annotations": ann}));
    }
    let index =
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap();
    add(&mut b, "index.json", &index);
    b.into_inner().unwrap()
}

/// Legacy `docker save`: `<config hex>.json`, `<n>/layer.tar` (duplicates as symlinks).
fn docker_archive(entries: &[(&TestImage, &[&str])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut manifest = Vec::new();
    let mut layer_paths: HashMap<String, String> = HashMap::new();
    for (i, (img, tags)) in entries.iter().enumerate() {
        let cfg = format!("{}.json", &img.id()[7..]);
        add(&mut b, &cfg, &img.config);
        let mut layers = Vec::new();
        for (j, (blob, _)) in img.layers.iter().enumerate() {
            let d = sha256_digest(blob);
            let path = format!("l{i}{j}/layer.tar");
            match layer_paths.get(&d) {
                Some(first) => {
                    let mut h = tar::Header::new_ustar();
                    h.set_path(&path).unwrap();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_link_name(format!("../{first}")).unwrap();
                    h.set_size(0);
                    h.set_cksum();
                    b.append(&h, &[][..]).unwrap();
                }
                None => {
                    add(&mut b, &path, blob);
                    layer_paths.insert(d, path.clone());
                }
            }
            layers.push(path);
        }
        manifest.push(serde_json::json!({"Config": cfg, "RepoTags": tags, "Layers": layers}));
    }
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    b.into_inner().unwrap()
}

fn base_layer() -> Vec<u8> {
    LayerBuilder::new()
        .dir("bin/", 0o755)
        .file("bin/sh", b"#!shell")
        .file("etc/os-release", b"test")
        .build()
}

fn top_layer(marker: &str) -> Vec<u8> {
    LayerBuilder::new()
        .file("app", marker.as_bytes())
        .file("etc/.wh.os-release", b"")
        .build()
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let tmp = tempfile::tempdir().unwrap();
    let s = ImageStore::open(tmp.path()).unwrap();
    (tmp, s)
}

/// Entries in `dir`, lock files left out (they stay for the store's lifetime).
fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| {
                !e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".lock"))
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn oci_import_lookup_and_snapshots() {
    let (tmp, s) = store();
    let img = TestImage::new(
        vec![(base_layer(), Comp::Gzip), (top_layer("a"), Comp::Zstd)],
        "a",
    );
    let ar = oci_archive(&[(&img, &[(ANNOTATION_REF_NAME, "busybox:1.36")])]);
    let recs = s.import_archive(&ar[..]).unwrap();
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(rec.id, img.id());
    assert_eq!(rec.repo_tags, vec!["docker.io/library/busybox:1.36"]);
    let rd = format!("docker.io/library/busybox@{}", img.manifest_digest());
    assert_eq!(rec.repo_digests, vec![rd.clone()]);
    assert_eq!(rec.layers.len(), 2);
    assert_eq!(rec.chain_ids[0], rec.layers[0]);
    assert_eq!(rec.chain_ids[1], chain_ids(&rec.layers)[1]);
    let hex = &img.id()[7..];
    for q in [
        &img.id()[..],
        hex,
        &hex[..12],
        "busybox:1.36",
        "docker.io/library/busybox:1.36",
        &rd,
    ] {
        assert_eq!(s.get(q).unwrap().map(|r| r.id), Some(img.id()), "{q}");
    }
    assert!(s.get("busybox").unwrap().is_none());
    assert!(s.get("Bad Ref").is_err());
    assert_eq!(s.list().unwrap().len(), 1);
    // A fresh store object (another process) sees it too.
    assert!(
        ImageStore::open(tmp.path())
            .unwrap()
            .get("busybox:1.36")
            .unwrap()
            .is_some()
    );

    let dirs = s.snapshot_dirs(rec).unwrap();
    assert_eq!(dirs.len(), 2);
    assert!(dirs[0].join("app").exists(), "top layer first");
    assert!(dirs[1].join("bin/sh").exists());
    assert!(
        dirs[0].ends_with("fs")
            && dirs[0].to_str().unwrap().len() < tmp.path().to_str().unwrap().len() + 20
    );
    let usage = s.fs_usage().unwrap();
    assert!(usage.used_bytes > 0 && usage.inodes_used > 5, "{usage:?}");
    assert_eq!(
        rec.config
            .config()
            .as_ref()
            .unwrap()
            .cmd()
            .as_ref()
            .unwrap(),
        &vec!["/bin/sh".to_string()]
    );
    // Only referenced blobs stay: config, manifest, 2 layers.
    assert_eq!(count(&tmp.path().join("content/blobs/sha256")), 4);
    assert_eq!(count(&tmp.path().join("content/ingest")), 0);
}

#[test]
fn docker_save_import_with_symlinked_layers() {
    let (_tmp, s) = store();
    let a = TestImage::new(
        vec![(base_layer(), Comp::Plain), (top_layer("a"), Comp::Plain)],
        "a",
    );
    let b = TestImage::new(vec![(base_layer(), Comp::Plain)], "b");
    let ar = docker_archive(&[(&a, &["busybox:latest", "localhost:5000/a:v1"]), (&b, &[])]);
    let recs = s.import_archive(&ar[..]).unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].id, a.id());
    assert_eq!(
        recs[0].repo_tags,
        vec!["docker.io/library/busybox:latest", "localhost:5000/a:v1"]
    );
    assert!(recs[0].repo_digests.is_empty());
    assert!(recs[1].repo_tags.is_empty());
    assert_eq!(s.get("busybox").unwrap().unwrap().id, a.id());
    assert_eq!(s.get(&b.id()).unwrap().unwrap().layers.len(), 1);
    assert!(
        s.snapshot_dirs(&recs[1]).unwrap()[0]
            .join("bin/sh")
            .exists()
    );
}

#[test]
fn reimport_adds_tags_and_tags_move_between_images() {
    let (_tmp, s) = store();
    let a = TestImage::new(vec![(base_layer(), Comp::Gzip)], "a");
    let b = TestImage::new(vec![(top_layer("b"), Comp::Gzip)], "b");
    s.import_archive(&oci_archive(&[(&a, &[(ANNOTATION_REF_NAME, "x:1")])])[..])
        .unwrap();
    s.import_archive(&oci_archive(&[(&a, &[(ANNOTATION_REF_NAME, "x:2")])])[..])
        .unwrap();
    let rec = s.get("x:1").unwrap().unwrap();
    assert_eq!(
        rec.repo_tags,
        vec!["docker.io/library/x:1", "docker.io/library/x:2"]
    );
    assert_eq!(s.list().unwrap().len(), 1);
    // x:1 moves to b.
    s.import_archive(&oci_archive(&[(&b, &[(ANNOTATION_REF_NAME, "x:1")])])[..])
        .unwrap();
    assert_eq!(s.get("x:1").unwrap().unwrap().id, b.id());
    assert_eq!(
        s.get(&a.id()).unwrap().unwrap().repo_tags,
        vec!["docker.io/library/x:2"]
    );
    // The repo digest of repository x stays on a (it still has x:2).
    assert_eq!(s.get(&a.id()).unwrap().unwrap().repo_digests.len(), 1);
}

#[test]
fn shared_layers_dedup_and_remove_frees_only_unshared() {
    let (tmp, s) = store();
    let a = TestImage::new(
        vec![(base_layer(), Comp::Gzip), (top_layer("a"), Comp::Gzip)],
        "a",
    );
    let b = TestImage::new(
        vec![(base_layer(), Comp::Gzip), (top_layer("b"), Comp::Gzip)],
        "b",
    );
    s.import_archive(&oci_archive(&[(&a, &[(ANNOTATION_REF_NAME, "a:1")])])[..])
        .unwrap();
    s.import_archive(&oci_archive(&[(&b, &[(ANNOTATION_REF_NAME, "b:1")])])[..])
        .unwrap();
    let snaps = tmp.path().join("snapshots");
    assert_eq!(
        s.inner.snapshots.list().unwrap().len(),
        3,
        "shared base unpacked once"
    );
    let ra = s.get("a:1").unwrap().unwrap();
    let rb = s.get("b:1").unwrap().unwrap();
    assert_eq!(
        s.snapshot_dirs(&ra).unwrap()[1],
        s.snapshot_dirs(&rb).unwrap()[1]
    );

    s.remove("a:1").unwrap();
    assert!(s.get(&a.id()).unwrap().is_none());
    assert_eq!(s.inner.snapshots.list().unwrap().len(), 2);
    assert!(s.snapshot_dirs(&rb).unwrap().iter().all(|d| d.exists()));
    assert!(
        !s.snapshot_dirs(&ra)
            .is_ok_and(|v| v.iter().all(|d| d.exists()))
    );
    // b's config, manifest, 2 layers.
    assert_eq!(count(&tmp.path().join("content/blobs/sha256")), 4);

    s.remove(&b.id()[7..19]).unwrap();
    assert!(s.list().unwrap().is_empty());
    assert_eq!(count(&tmp.path().join("content/blobs/sha256")), 0);
    assert_eq!(count(&snaps), 1, "only index.json is left");
    assert!(matches!(s.remove("a:1"), Err(ImageError::NotFound(_))));
}

#[test]
fn remove_one_of_several_tags_keeps_the_image() {
    let (_tmp, s) = store();
    let a = TestImage::new(vec![(base_layer(), Comp::Gzip)], "a");
    let ar = oci_archive(&[
        (&a, &[(ANNOTATION_REF_NAME, "x:1")]),
        (&a, &[(ANNOTATION_REF_NAME, "y:1")]),
    ]);
    assert_eq!(s.import_archive(&ar[..]).unwrap().len(), 1);
    s.remove("x:1").unwrap();
    let rec = s.get(&a.id()).unwrap().unwrap();
    assert_eq!(rec.repo_tags, vec!["docker.io/library/y:1"]);
    assert_eq!(
        rec.repo_digests,
        vec![format!("docker.io/library/y@{}", a.manifest_digest())]
    );
    s.remove("y:1").unwrap();
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn builtin_archive_is_deterministic_and_importable() {
    let one = builtin::archive();
    assert_eq!(one, builtin::archive());
    let (_tmp, s) = store();
    let rec = s.ensure_builtin().unwrap();
    assert!(rec.pinned);
    assert_eq!(rec.repo_tags, vec![builtin::REFERENCE]);
    assert_eq!(s.ensure_builtin().unwrap().id, rec.id);
    let (_tmp2, s2) = store();
    assert_eq!(
        s2.ensure_builtin().unwrap().id,
        rec.id,
        "stable id across stores"
    );
    let cfg = rec.config.config().as_ref().unwrap();
    assert_eq!(
        cfg.entrypoint().as_ref().unwrap(),
        &vec!["/pause".to_string()]
    );
    assert_eq!(rec.config.architecture().to_string(), host_arch());
    let dirs = s.snapshot_dirs(&rec).unwrap();
    let pause = std::fs::metadata(dirs[0].join("pause")).unwrap();
    assert_eq!(pause.permissions().mode() & 0o777, 0o755);
    assert!(pause.len() > 1000);
    assert!(dirs[0].join("proc").is_dir() && dirs[0].join("dev").is_dir());
}

#[test]
fn crash_leftovers_are_cleaned_on_open() {
    let (tmp, s) = store();
    let a = TestImage::new(vec![(base_layer(), Comp::Gzip)], "a");
    s.import_archive(&oci_archive(&[(&a, &[(ANNOTATION_REF_NAME, "a:1")])])[..])
        .unwrap();
    let snaps = tmp.path().join("snapshots");
    std::fs::create_dir_all(snaps.join("tmp-deadbeef/fs/half")).unwrap();
    std::fs::create_dir_all(snaps.join("42/fs")).unwrap();
    std::fs::write(tmp.path().join("content/ingest/partial"), b"x").unwrap();
    let s2 = ImageStore::open(tmp.path()).unwrap();
    assert!(!snaps.join("tmp-deadbeef").exists());
    assert!(!snaps.join("42").exists());
    assert_eq!(count(&tmp.path().join("content/ingest")), 0);
    let rec = s2.get("a:1").unwrap().unwrap();
    assert!(s2.snapshot_dirs(&rec).unwrap()[0].join("bin/sh").exists());
}

#[test]
fn failed_imports_leave_nothing_behind() {
    let (tmp, s) = store();
    let blobs = tmp.path().join("content/blobs/sha256");
    let snaps = tmp.path().join("snapshots");

    // A layer whose content does not match the config's diff id.
    let mut bad = TestImage::new(vec![(base_layer(), Comp::Gzip)], "bad");
    let other = top_layer("other");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&other).unwrap();
    bad.layers[0].0 = gz.finish().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&bad.manifest).unwrap();
    let mut manifest = manifest;
    manifest["layers"][0]["digest"] = serde_json::json!(sha256_digest(&bad.layers[0].0));
    bad.manifest = serde_json::to_vec(&manifest).unwrap();
    let e = s
        .import_archive(&oci_archive(&[(&bad, &[(ANNOTATION_REF_NAME, "bad:1")])])[..])
        .unwrap_err();
    assert!(e.to_string().contains("config says"), "{e}");

    // A hostile layer.
    let evil = LayerBuilder::new().file("../../escape", b"x").build();
    let img = TestImage::new(vec![(evil, Comp::Gzip)], "evil");
    let e = s
        .import_archive(&oci_archive(&[(&img, &[(ANNOTATION_REF_NAME, "evil:1")])])[..])
        .unwrap_err();
    assert!(matches!(e, ImageError::Unpack { .. }), "{e}");
    assert!(!tmp.path().parent().unwrap().join("escape").exists());

    // A blob whose name lies about its content.
    let mut b = tar::Builder::new(Vec::new());
    add(
        &mut b,
        &format!("blobs/sha256/{}", "ab".repeat(32)),
        b"not that",
    );
    let e = s.import_archive(&b.into_inner().unwrap()[..]).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");

    // Missing blob.
    let img = TestImage::new(vec![(base_layer(), Comp::Gzip)], "m");
    let mut ar = tar::Builder::new(Vec::new());
    add(&mut ar, &blob_name(&img.manifest), &img.manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": img.manifest_digest(), "size": img.manifest.len()}]});
    add(&mut ar, "index.json", &serde_json::to_vec(&index).unwrap());
    let e = s.import_archive(&ar.into_inner().unwrap()[..]).unwrap_err();
    assert!(e.to_string().contains("not in the archive"), "{e}");

    assert!(matches!(
        s.import_archive(&b"garbage"[..]),
        Err(ImageError::BadArchive { .. })
    ));
    assert!(s.list().unwrap().is_empty());
    assert_eq!(count(&blobs), 0);
    assert_eq!(count(&snaps), 0);
    assert_eq!(count(&tmp.path().join("content/ingest")), 0);
}

#[test]
fn nested_index_selects_this_platform_and_bare_tags() {
    let (_tmp, s) = store();
    let mine = TestImage::new(vec![(base_layer(), Comp::Gzip)], "mine");
    let foreign = TestImage::new(vec![(top_layer("f"), Comp::Gzip)], "foreign");
    let nested = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": foreign.manifest_digest(),
             "size": foreign.manifest.len(), "platform": {"architecture": "s390x", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mine.manifest_digest(),
             "size": mine.manifest.len(), "platform": {"architecture": host_arch(), "os": "linux"}}]}))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for blob in mine
        .blobs()
        .into_iter()
        .chain(foreign.blobs())
        .chain([&nested[..]])
    {
        add(&mut b, &blob_name(blob), blob);
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256_digest(&nested),
         "size": nested.len(), "annotations": {(ANNOTATION_REF_NAME): "3.10"}}]});
    add(&mut b, "index.json", &serde_json::to_vec(&index).unwrap());
    let ar = b.into_inner().unwrap();

    // Bare tag, no base name: imported untagged.
    let recs = s.import_archive(&ar[..]).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].id, mine.id());
    assert!(recs[0].repo_tags.is_empty());
    let opts = ImportOptions {
        base_name: Some("registry.k8s.io/pause".into()),
        pinned: false,
    };
    let recs = s.import_archive_with(&ar[..], &opts).unwrap();
    assert_eq!(recs[0].repo_tags, vec!["registry.k8s.io/pause:3.10"]);
    // Foreign platform's blobs were not kept.
    assert!(!s.content().contains(&foreign.id()));

    // containerd's full-name annotation wins over a bare ref.name.
    let ar = oci_archive(&[(
        &mine,
        &[
            (ANNOTATION_REF_NAME, "v2"),
            (ANNOTATION_IMAGE_NAME, "quay.io/x/y:v2"),
        ],
    )]);
    s.import_archive(&ar[..]).unwrap();
    assert_eq!(s.get("quay.io/x/y:v2").unwrap().unwrap().id, mine.id());
}

#[test]
fn gc_removes_orphans_and_keeps_shared_and_leased_content() {
    let (tmp, s) = store();
    let blobs = tmp.path().join("content/blobs/sha256");
    let a = TestImage::new(
        vec![(base_layer(), Comp::Gzip), (top_layer("a"), Comp::Gzip)],
        "a",
    );
    s.import_archive(&oci_archive(&[(&a, &[(ANNOTATION_REF_NAME, "a:1")])])[..])
        .unwrap();
    let kept = count(&blobs);
    let rec = s.get("a:1").unwrap().unwrap();

    // Orphans: a blob (a refused pull's layer), a snapshot no record names.
    let orphan = s.content().ingest_bytes(b"orphan layer").unwrap().digest;
    let t = s.inner.snapshots.prepare().unwrap();
    s.inner
        .snapshots
        .commit(t, "sha256:orphan-chain", None, "sha256:x")
        .unwrap();
    // Leased: a pull in flight that has stored a blob and a snapshot but no record yet.
    let inflight = s.content().ingest_bytes(b"in flight").unwrap().digest;
    let lease = s.lease();
    lease.add(&inflight);
    lease.add("sha256:inflight-chain");
    let t = s.inner.snapshots.prepare().unwrap();
    s.inner
        .snapshots
        .commit(t, "sha256:inflight-chain", None, "sha256:y")
        .unwrap();
    let before = s.fs_usage().unwrap().used_bytes;

    let report = gc_undisturbed(&s);
    assert_eq!((report.blobs, report.snapshots), (1, 1), "{report:?}");
    assert!(!report.deferred);
    assert!(!s.content().contains(&orphan));
    assert!(s.content().contains(&inflight));
    assert!(
        s.inner
            .snapshots
            .get("sha256:orphan-chain")
            .unwrap()
            .is_none()
    );
    assert!(
        s.inner
            .snapshots
            .get("sha256:inflight-chain")
            .unwrap()
            .is_some()
    );
    assert!(s.snapshot_dirs(&rec).unwrap().iter().all(|d| d.exists()));
    assert_eq!(count(&blobs), kept + 1);
    assert!(
        s.fs_usage().unwrap().used_bytes < before,
        "ImageFsInfo counted them"
    );

    // Once the lease goes, so does its content.
    drop(lease);
    let report = gc_undisturbed(&s);
    assert_eq!((report.blobs, report.snapshots), (1, 1), "{report:?}");
    assert_eq!(count(&blobs), kept);
    assert_eq!(gc_undisturbed(&s), GcReport::default());

    // Another process staging an import: nothing is deleted meanwhile.
    let orphan = s.content().ingest_bytes(b"orphan again").unwrap().digest;
    let staging = GcLock::shared(&tmp.path().join("gc.lock")).unwrap();
    assert!(s.gc().unwrap().deferred);
    assert!(s.content().contains(&orphan));
    drop(staging);
    assert_eq!(gc_undisturbed(&s).blobs, 1);
}

#[test]
fn removal_keeps_layers_a_pull_has_leased() {
    let (_tmp, s) = store();
    let a = TestImage::new(
        vec![(base_layer(), Comp::Gzip), (top_layer("a"), Comp::Gzip)],
        "a",
    );
    s.import_archive(&oci_archive(&[(&a, &[(ANNOTATION_REF_NAME, "a:1")])])[..])
        .unwrap();
    let rec = s.get("a:1").unwrap().unwrap();
    // A pull of another image sharing the base layer has found it present.
    let lease = s.lease();
    lease.add(&rec.layer_digests[0]);
    lease.add(&rec.chain_ids[0]);
    assert_eq!(
        s.remove_if("a:1", Some(&rec.id)).unwrap(),
        Removed::Image(rec.id.clone())
    );
    assert!(s.content().contains(&rec.layer_digests[0]));
    assert!(!s.content().contains(&rec.layer_digests[1]));
    assert!(s.inner.snapshots.get(&rec.chain_ids[0]).unwrap().is_some());
    assert!(s.inner.snapshots.get(&rec.chain_ids[1]).unwrap().is_none());
    drop(lease);
    assert_eq!(gc_undisturbed(&s).snapshots, 1);
}

#[test]
fn remove_if_refuses_a_reference_that_moved() {
    let (_tmp, s) = store();
    let a = TestImage::new(vec![(base_layer(), Comp::Gzip)], "a");
    s.import_archive(&oci_archive(&[(&a, &[(ANNOTATION_REF_NAME, "a:1")])])[..])
        .unwrap();
    let other = format!("sha256:{}", "0".repeat(64));
    assert!(matches!(
        s.remove_if("a:1", Some(&other)),
        Err(ImageError::Changed { .. })
    ));
    assert!(s.get("a:1").unwrap().is_some());
}

#[test]
fn index_sees_another_process_writes() {
    let (tmp, s) = store();
    // A second store on the same root stands for `crius image import` in another process.
    let other = ImageStore::open(tmp.path()).unwrap();
    let a = TestImage::new(vec![(base_layer(), Comp::Gzip)], "a");
    let b = TestImage::new(vec![(top_layer("b"), Comp::Gzip)], "b");
    assert!(s.get("a:1").unwrap().is_none());
    other
        .import_archive(&oci_archive(&[(&a, &[(ANNOTATION_REF_NAME, "a:1")])])[..])
        .unwrap();
    assert_eq!(s.get("a:1").unwrap().unwrap().id, a.id());
    // Our own write, then theirs moving the tag: both seen.
    s.import_archive(&oci_archive(&[(&b, &[(ANNOTATION_REF_NAME, "b:1")])])[..])
        .unwrap();
    assert_eq!(other.get("b:1").unwrap().unwrap().id, b.id());
    other
        .import_archive(&oci_archive(&[(&b, &[(ANNOTATION_REF_NAME, "a:1")])])[..])
        .unwrap();
    assert_eq!(s.get("a:1").unwrap().unwrap().id, b.id());
    assert!(s.get(&a.id()).unwrap().unwrap().repo_tags.is_empty());
    other.remove(&a.id()).unwrap();
    assert!(s.get(&a.id()).unwrap().is_none());
    assert_eq!(s.list().unwrap().len(), 1);
    // By unique id prefix, from memory.
    assert_eq!(s.get(&b.id()[7..20]).unwrap().unwrap().id, b.id());
}

#[test]
fn concurrent_imports_of_shared_layers() {
    let (_tmp, s) = store();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let img = TestImage::new(
                    vec![
                        (base_layer(), Comp::Gzip),
                        (top_layer(&i.to_string()), Comp::Gzip),
                    ],
                    &i.to_string(),
                );
                let name = format!("img:{i}");
                s.import_archive(&oci_archive(&[(&img, &[(ANNOTATION_REF_NAME, &name)])])[..])
                    .unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(s.list().unwrap().len(), 4);
    assert_eq!(s.inner.snapshots.list().unwrap().len(), 5);
}

/// Root test: the built-in image's snapshots stack into a rootfs whose /pause runs.
#[test]
fn builtin_image_mounts_and_pause_runs() {
    use crate::snapshot::{is_mountpoint, prepare_rootfs, remove_rootfs};
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = remove_rootfs(&self.0);
        }
    }
    let (tmp, s) = store();
    let rec = s.ensure_builtin().unwrap();
    let base = tmp.path().join("ctr");
    let _c = Cleanup(base.clone());
    let dirs = prepare_rootfs(&s.snapshot_dirs(&rec).unwrap(), &base).unwrap();
    assert!(is_mountpoint(&dirs.merged));
    let mut child = std::process::Command::new("chroot")
        .arg(&dirs.merged)
        .arg("/pause")
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none(), "pause keeps running");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    remove_rootfs(&base).unwrap();
    assert!(!dirs.merged.exists());
}

/// `gc` again while it is deferred by someone else's hold of the lock: any fork elsewhere in
/// the test process (other tests spawn commands) briefly shares the last collection's lock.
fn gc_undisturbed(s: &ImageStore) -> GcReport {
    for _ in 0..100 {
        let report = s.gc().unwrap();
        if !report.deferred {
            return report;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("gc deferred for a second with no other holder");
}
