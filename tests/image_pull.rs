//! PullImage against a real registry (Debian's docker-registry on 127.0.0.1), through the
//! library API: content, platforms, dedup, removal, auth, mirrors, TLS policy, failures.
//! Root only (unpacking sets owners and overlay xattrs).

mod image_support;

use crius::image::pull::Platform;
use crius::image::{Credentials, ImageStore, PullErrorKind, PullOptions, Puller};
use image_support::*;
use std::path::Path;

fn new_store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = ImageStore::open(dir.path()).unwrap();
    (dir, s)
}

fn pull_opts() -> PullOptions {
    PullOptions::default()
}

fn skopeo_digest(reg: &Registry, repo_tag: &str) -> String {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{repo_tag}", reg.host()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    sha256(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_pull_is_byte_for_byte_and_idempotent() {
    require_tools();
    let reg = Registry::start(None);
    let layout = Layout::new();
    let entries = busybox_entries();
    let desc = layout.image(&[(layer_tar(&entries), Comp::Gzip)], "amd64", "1000:1000");
    reg.push(&layout, &desc, "test/busybox:1").await;

    let (_d, store) = new_store();
    let puller = Puller::new(store.clone(), plain_http(&[&reg.host()]));
    let name = format!("{}/test/busybox:1", reg.host());
    let report = puller.pull(&name, &pull_opts()).await.unwrap();
    let img = &report.image;
    assert_eq!(img.repo_tags, vec![name.clone()]);
    let digest = skopeo_digest(&reg, "test/busybox:1");
    assert_eq!(
        img.repo_digests,
        vec![format!("{}/test/busybox@{digest}", reg.host())]
    );
    assert_eq!((report.layers_fetched, report.layers_present), (1, 0));
    let dirs = store.snapshot_dirs(img).unwrap();
    assert_eq!(dirs.len(), 1);
    assert_tree(&dirs[0], &entries);

    // Again: nothing downloaded, same image. By digest: same image, no new tag.
    let again = puller.pull(&name, &pull_opts()).await.unwrap();
    assert_eq!(
        (again.image.id.as_str(), again.layers_fetched),
        (img.id.as_str(), 0)
    );
    let by_digest = format!("{}/test/busybox@{digest}", reg.host());
    let r = puller.pull(&by_digest, &pull_opts()).await.unwrap();
    assert_eq!(r.image.id, img.id);
    assert_eq!(store.get(&by_digest).unwrap().unwrap().id, img.id);
    assert_eq!(store.list().unwrap().len(), 1);
    // Ingest area empty after success.
    assert_eq!(dir_entries(&store.content().dir().join("ingest")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_compressions_dedup_and_removal_frees_disk() {
    require_tools();
    let reg = Registry::start(None);
    let layout = Layout::new();
    let base = layer_tar(&[
        Entry::Dir("a/", 0o755),
        file("a/keep", b"keep"),
        file("a/gone", b"gone"),
        Entry::Dir("o/", 0o755),
        file("o/old", b"old"),
    ]);
    let top = layer_tar(&[
        file("a/.wh.gone", b""),
        Entry::Dir("o/", 0o755),
        file("o/.wh..wh..opq", b""),
        file("o/new", b"new"),
    ]);
    let extra = layer_tar(&[file("plain", &vec![7u8; 300_000])]);
    let a = layout.image(&[(base.clone(), Comp::Gzip)], "amd64", "");
    let b = layout.image(
        &[(base, Comp::Gzip), (top, Comp::Zstd), (extra, Comp::None)],
        "amd64",
        "nobody",
    );
    reg.push(&layout, &a, "test/layers:a").await;
    reg.push(&layout, &b, "test/layers:b").await;

    let (_d, store) = new_store();
    let empty = store.fs_usage().unwrap().used_bytes;
    let puller = Puller::new(store.clone(), plain_http(&[&reg.host()]));
    let ra = puller
        .pull(&format!("{}/test/layers:a", reg.host()), &pull_opts())
        .await
        .unwrap();
    let after_a = store.fs_usage().unwrap().used_bytes;
    let rb = puller
        .pull(&format!("{}/test/layers:b", reg.host()), &pull_opts())
        .await
        .unwrap();
    // The shared base layer is neither downloaded nor unpacked again.
    assert_eq!((rb.layers_fetched, rb.layers_present), (2, 1));
    assert_eq!(ra.image.chain_ids[0], rb.image.chain_ids[0]);
    let dirs = store.snapshot_dirs(&rb.image).unwrap();
    assert_eq!(dirs[2], store.snapshot_dirs(&ra.image).unwrap()[0]);

    // Whiteout -> 0/0 char device; opaque marker -> xattr.
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = std::fs::symlink_metadata(dirs[1].join("a/gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert!(!dirs[1].join("a/.wh.gone").exists());
    let opq = xattr(&dirs[1].join("o"), "trusted.overlay.opaque");
    assert_eq!(opq.as_deref(), Some(&b"y"[..]));
    // The merged view is what the image means.
    let mnt = tempfile::tempdir().unwrap();
    crius::snapshot::mount_overlay(&dirs, None, mnt.path()).unwrap();
    let merged = (
        mnt.path().join("a/keep").exists(),
        mnt.path().join("a/gone").exists(),
        mnt.path().join("o/old").exists(),
        std::fs::read(mnt.path().join("o/new")).ok(),
        std::fs::metadata(mnt.path().join("plain"))
            .map(|m| m.len())
            .ok(),
    );
    crius::snapshot::unmount(mnt.path()).unwrap();
    assert_eq!(
        merged,
        (true, false, false, Some(b"new".to_vec()), Some(300_000))
    );

    // Removing b frees its own layers, keeps a's; removing a frees everything.
    store.remove(&rb.image.id).unwrap();
    assert!(store.snapshot_dirs(&ra.image).is_ok());
    assert!(!dirs[0].exists() && !dirs[1].exists() && dirs[2].exists());
    let now = store.fs_usage().unwrap().used_bytes;
    assert!(now <= after_a + 8192, "{now} vs {after_a}");
    store
        .remove(&format!("{}/test/layers:a", reg.host()))
        .unwrap();
    assert!(store.list().unwrap().is_empty());
    assert_eq!(dir_entries(&store.content().dir().join("blobs/sha256")), 0);
    let end = store.fs_usage().unwrap().used_bytes;
    assert!(end <= empty + 8192, "{end} vs {empty}");
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_resolves_os_arch_and_variant() {
    require_tools();
    let reg = Registry::start(None);
    let layout = Layout::new();
    let mut manifests = Vec::new();
    for p in ["amd64", "arm64/v8", "arm/v7", "arm/v6"] {
        let l = layer_tar(&[file("platform", p.as_bytes())]);
        manifests.push(layout.image(&[(l, Comp::Gzip)], p, ""));
    }
    let index = layout.index_of(manifests);
    reg.push(&layout, &index, "test/multi:1").await;
    let name = format!("{}/test/multi:1", reg.host());
    let index_digest = skopeo_digest(&reg, "test/multi:1");

    for (platform, want) in [
        ("linux/amd64", "amd64"),
        ("linux/arm64", "arm64/v8"),
        ("linux/arm/v7", "arm/v7"),
        ("linux/arm/v6", "arm/v6"),
    ] {
        let (_d, store) = new_store();
        let puller = Puller::for_platform(
            store.clone(),
            plain_http(&[&reg.host()]),
            platform.parse::<Platform>().unwrap(),
        );
        let r = puller.pull(&name, &pull_opts()).await.unwrap();
        let dir = &store.snapshot_dirs(&r.image).unwrap()[0];
        assert_eq!(
            std::fs::read(dir.join("platform")).unwrap(),
            want.as_bytes(),
            "{platform}"
        );
        assert_eq!(
            r.image.repo_digests,
            vec![format!("{}/test/multi@{index_digest}", reg.host())]
        );
    }
    let (_d, store) = new_store();
    let puller = Puller::for_platform(
        store,
        plain_http(&[&reg.host()]),
        "linux/s390x".parse().unwrap(),
    );
    let e = puller.pull(&name, &pull_opts()).await.unwrap_err();
    assert_eq!(e.kind(), PullErrorKind::FailedPrecondition);
    let msg = e.to_string();
    assert!(
        msg.contains("linux/s390x") && msg.contains("linux/arm/v7") && msg.contains(&name),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_request_or_config() {
    require_tools();
    let reg = Registry::start(Some(("alice", "s3cret")));
    let layout = Layout::new();
    let desc = layout.image(&[(layer_tar(&[file("f", b"x")]), Comp::Gzip)], "amd64", "");
    reg.push(&layout, &desc, "private/img:1").await;
    let name = format!("{}/private/img:1", reg.host());

    let (_d, store) = new_store();
    let puller = Puller::new(store.clone(), plain_http(&[&reg.host()]));
    let e = puller.pull(&name, &pull_opts()).await.unwrap_err();
    assert_eq!(e.kind(), PullErrorKind::Unauthenticated, "{e}");
    assert!(
        e.to_string().contains(&name) && e.to_string().contains("unauthorized"),
        "{e}"
    );
    let wrong = PullOptions {
        credentials: Some(Credentials::Basic {
            username: "alice".into(),
            password: "nope".into(),
        }),
        ..Default::default()
    };
    let e = puller.pull(&name, &wrong).await.unwrap_err();
    assert_eq!(e.kind(), PullErrorKind::Unauthenticated, "{e}");
    let right = PullOptions {
        credentials: Some(Credentials::from_fields("", "", &b64("alice:s3cret"), "", "").unwrap()),
        ..Default::default()
    };
    puller.pull(&name, &right).await.unwrap();

    // Credentials from the config file instead of the request.
    let (_d2, store2) = new_store();
    let cfg = registry_config(&format!(
        "[registry.mirrors.\"{h}\"]\nendpoint = [\"http://{h}\"]\n[registry.configs.\"{h}\".auth]\nusername = \"alice\"\npassword = \"s3cret\"\n",
        h = reg.host()
    ));
    Puller::new(store2, cfg)
        .pull(&name, &pull_opts())
        .await
        .unwrap();
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_serves_upstream_name() {
    require_tools();
    let reg = Registry::start(None);
    let layout = Layout::new();
    let desc = layout.image(
        &[(layer_tar(&[file("hello", b"mirror")]), Comp::Gzip)],
        "amd64",
        "",
    );
    reg.push(&layout, &desc, "foo:1").await;
    let dead = free_port();
    // The first mirror is down; the second serves; registry.k8s.io itself is never asked.
    let cfg = registry_config(&format!(
        "[registry.mirrors.\"registry.k8s.io\"]\nendpoint = [\"http://127.0.0.1:{dead}\", \"http://{}\"]\n",
        reg.host()
    ));
    let (_d, store) = new_store();
    let r = Puller::new(store.clone(), cfg)
        .pull("registry.k8s.io/foo:1", &pull_opts())
        .await
        .unwrap();
    assert_eq!(r.image.repo_tags, vec!["registry.k8s.io/foo:1"]);
    assert!(r.image.repo_digests[0].starts_with("registry.k8s.io/foo@sha256:"));
    assert_eq!(r.endpoint, format!("http://{}", reg.host()));
    assert!(store.get("registry.k8s.io/foo:1").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_registry_never_gets_plain_http() {
    require_tools();
    let reg = Registry::start(None);
    let (_d, store) = new_store();
    let puller = Puller::new(store, Default::default());
    let name = format!("{}/x:1", reg.host());
    let e = puller.pull(&name, &pull_opts()).await.unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), PullErrorKind::Unavailable, "{msg}");
    assert!(msg.contains(&format!("https://{}", reg.host())), "{msg}");
    assert!(msg.contains("TLS"), "{msg}");
    assert!(
        !reg.log().contains("/v2/x/manifests"),
        "plain HTTP was used:\n{}",
        reg.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_download_each_blob_once() {
    require_tools();
    let reg = Registry::start(None);
    let layout = Layout::new();
    let big = |seed: u8| {
        let data: Vec<u8> = (0..4_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
            .collect();
        layer_tar(&[Entry::File(format!("big{seed}"), data, 0o644, 0, 0)])
    };
    let shared = big(1);
    let a = layout.image(
        &[(shared.clone(), Comp::Gzip), (big(2), Comp::Gzip)],
        "amd64",
        "",
    );
    let b = layout.image(&[(shared, Comp::Gzip), (big(3), Comp::Gzip)], "amd64", "");
    reg.push(&layout, &a, "c/a:1").await;
    reg.push(&layout, &b, "c/b:1").await;
    let (_d, store) = new_store();
    let puller = Puller::new(store.clone(), plain_http(&[&reg.host()]));
    let na = format!("{}/c/a:1", reg.host());
    let nb = format!("{}/c/b:1", reg.host());
    let o = pull_opts();
    let (r1, r2, r3) = tokio::join!(
        puller.pull(&na, &o),
        puller.pull(&na, &o),
        puller.pull(&nb, &o)
    );
    let (r1, r2, r3) = (r1.unwrap(), r2.unwrap(), r3.unwrap());
    assert_eq!(r1.image.id, r2.image.id);
    // Three distinct layers among the three pulls: each downloaded exactly once.
    assert_eq!(r1.layers_fetched + r2.layers_fetched + r3.layers_fetched, 3);
    let gets = reg.log().matches("\"GET /v2/c/").count();
    let blob_gets = reg
        .log()
        .lines()
        .filter(|l| {
            l.contains("GET /v2/c/") && l.contains("/blobs/sha256:") && l.contains("\" 200 ")
        })
        .count();
    // 3 layers + 2 distinct configs fetched per pull (configs are small and not shared).
    assert!(
        blob_gets <= 3 + 3,
        "{blob_gets} blob GETs of {gets}:\n{}",
        reg.log()
    );
    assert_eq!(dir_entries(&store.content().dir().join("ingest")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_corrupt_blob_and_cancelled_pull_leave_nothing() {
    require_tools();
    let reg = Registry::start(None);
    let layout = Layout::new();
    let data: Vec<u8> = (0..8_000_000u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    let desc = layout.image(
        &[(
            layer_tar(&[Entry::File("blob".into(), data, 0o644, 0, 0)]),
            Comp::None,
        )],
        "amd64",
        "",
    );
    reg.push(&layout, &desc, "bad/img:1").await;
    let (_d, store) = new_store();
    let puller = Puller::new(store.clone(), plain_http(&[&reg.host()]));

    let missing = format!("{}/bad/img:nope", reg.host());
    let e = puller.pull(&missing, &pull_opts()).await.unwrap_err();
    assert_eq!(e.kind(), PullErrorKind::NotFound, "{e}");
    assert!(
        e.to_string().contains(&missing) && e.to_string().contains("MANIFEST_UNKNOWN"),
        "{e}"
    );

    // A pull cancelled mid-download leaves no partial blob behind.
    let name = format!("{}/bad/img:1", reg.host());
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_millis(30),
        puller.pull(&name, &pull_opts()),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "pull finished too fast to test cancellation"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(dir_entries(&store.content().dir().join("ingest")), 0);
    // An ingest file of a killed process is discarded when the store opens.
    std::fs::write(store.content().dir().join("ingest/leftover"), b"partial").unwrap();
    let store = ImageStore::open(store.root()).unwrap();
    assert_eq!(dir_entries(&store.content().dir().join("ingest")), 0);

    // Corrupt the layer in the registry's storage: the pull fails with a digest mismatch
    // and stores nothing.
    let layer = desc_layer(&layout, &desc);
    let path = reg.blob_data(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let puller = Puller::new(store.clone(), plain_http(&[&reg.host()]));
    let e = puller.pull(&name, &pull_opts()).await.unwrap_err();
    assert_eq!(e.kind(), PullErrorKind::DataLoss, "{e}");
    assert!(
        e.to_string().contains("digest mismatch") && e.to_string().contains(&layer),
        "{e}"
    );
    assert!(!store.content().contains(&layer));
    assert_eq!(dir_entries(&store.content().dir().join("ingest")), 0);
    assert!(store.list().unwrap().is_empty());
}

fn desc_layer(layout: &Layout, desc: &serde_json::Value) -> String {
    let d = desc["digest"].as_str().unwrap();
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.path().join("blobs/sha256").join(&d[7..])).unwrap(),
    )
    .unwrap();
    m["layers"][0]["digest"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_round_trip() {
    require_tools();
    let reg = Registry::start(None);
    let layout = Layout::new();
    let entries = busybox_entries();
    let desc = layout.image(&[(layer_tar(&entries), Comp::Zstd)], "amd64", "");
    reg.push(&layout, &desc, "rt/busybox:1").await;
    let (d, store) = new_store();
    let name = format!("{}/rt/busybox:1", reg.host());
    let r = Puller::new(store.clone(), plain_http(&[&reg.host()]))
        .pull(&name, &pull_opts())
        .await
        .unwrap();
    let file = d.path().join("export.tar");
    crius::cli::image::image_export(store.root(), std::slice::from_ref(&name), &file).unwrap();
    let (_d2, other) = store_pair();
    let imported = other
        .import_archive(std::fs::File::open(&file).unwrap())
        .unwrap();
    assert_eq!(imported.len(), 1);
    let i = &imported[0];
    assert_eq!(
        (&i.id, &i.repo_tags, &i.repo_digests),
        (&r.image.id, &r.image.repo_tags, &r.image.repo_digests)
    );
    assert_tree(&other.snapshot_dirs(i).unwrap()[0], &entries);
    // skopeo reads it as an OCI archive too.
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}:1", file.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn store_pair() -> (tempfile::TempDir, ImageStore) {
    new_store()
}
