//! Shared by the image_* integration tests: a real `docker-registry` (Debian's
//! distribution 2.8) on 127.0.0.1, OCI image layouts built in Rust, pushed with skopeo.
#![allow(dead_code)]

pub mod token;

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Fails the test unless it can run: root, docker-registry, skopeo and htpasswd (installed by
/// hack/install-deps). A test that cannot run must not pass.
pub fn require_tools() {
    let missing: Vec<&str> = [
        "/usr/bin/docker-registry",
        "/usr/bin/skopeo",
        "/usr/bin/htpasswd",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .collect();
    assert!(
        missing.is_empty() && nix_is_root(),
        "this test needs root and {missing:?} (run hack/install-deps as root)"
    );
}

fn nix_is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// How a test registry checks its clients.
pub enum RegistryAuth<'a> {
    None,
    /// `auth: htpasswd` with one user.
    Htpasswd(&'a str, &'a str),
    /// `auth: token`: clients fetch a JWT at `realm`, signed by `signer`'s certificate.
    Token {
        realm: String,
        signer: &'a token::TokenSigner,
    },
}

/// A `docker-registry serve` process with its own config and storage; killed on drop.
pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
    pub creds: Option<(String, String)>,
    /// Sent as `Authorization: Bearer` by [`Registry::push`] (token-auth registries).
    pub push_token: Option<String>,
}

impl Registry {
    pub fn start(creds: Option<(&str, &str)>) -> Registry {
        match creds {
            Some((u, p)) => Registry::start_with(RegistryAuth::Htpasswd(u, p)),
            None => Registry::start_with(RegistryAuth::None),
        }
    }

    pub fn start_with(how: RegistryAuth<'_>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut auth = String::new();
        let mut creds = None;
        if let RegistryAuth::Token { realm, signer } = &how {
            let cert = signer.write_cert(dir.path());
            auth = format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                token::SERVICE,
                token::ISSUER,
                cert.display()
            );
        }
        if let RegistryAuth::Htpasswd(u, p) = how {
            creds = Some((u, p));
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .unwrap();
            assert!(out.status.success(), "htpasswd: {out:?}");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: crius-test\n    path: {}\n",
                file.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            storage.display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = Registry {
            port,
            dir,
            child,
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
            push_token: None,
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Storage file of blob `digest` (to corrupt it).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Push `desc` (a manifest or index of `layout`) as `repo:tag` with plain distribution
    /// API calls, so every blob arrives exactly as built (skopeo would recompress).
    pub async fn push(&self, layout: &Layout, desc: &serde_json::Value, repo_tag: &str) {
        let (repo, tag) = repo_tag.rsplit_once(':').unwrap();
        let http = reqwest::Client::new();
        self.push_manifest(&http, layout, desc, repo, tag).await;
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(t) = &self.push_token {
            return r.bearer_auth(t);
        }
        match &self.creds {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    async fn push_blob(&self, http: &reqwest::Client, layout: &Layout, repo: &str, digest: &str) {
        let data = std::fs::read(layout.path().join("blobs/sha256").join(&digest[7..])).unwrap();
        let base = format!("http://{}", self.host());
        let resp = self
            .auth(http.post(format!("{base}/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
        let loc = resp.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with('/') {
            format!("{base}{loc}")
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let resp = self
            .auth(http.put(format!("{loc}{sep}digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(data)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    }

    fn push_manifest<'a>(
        &'a self,
        http: &'a reqwest::Client,
        layout: &'a Layout,
        desc: &'a serde_json::Value,
        repo: &'a str,
        reference: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
        Box::pin(async move {
            let digest = desc["digest"].as_str().unwrap();
            let media_type = desc["mediaType"].as_str().unwrap();
            let bytes =
                std::fs::read(layout.path().join("blobs/sha256").join(&digest[7..])).unwrap();
            let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            if let Some(children) = doc["manifests"].as_array() {
                for c in children {
                    let d = c["digest"].as_str().unwrap().to_string();
                    self.push_manifest(http, layout, c, repo, &d).await;
                }
            } else {
                let config = doc["config"]["digest"].as_str().unwrap();
                self.push_blob(http, layout, repo, config).await;
                for l in doc["layers"].as_array().unwrap() {
                    self.push_blob(http, layout, repo, l["digest"].as_str().unwrap())
                        .await;
                }
            }
            let resp = self
                .auth(http.put(format!(
                    "http://{}/v2/{repo}/manifests/{reference}",
                    self.host()
                )))
                .header("content-type", media_type)
                .body(bytes)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One entry of a test layer.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir(&'static str, u32),
    File(String, Vec<u8>, u32, u64, u64),
    Symlink(&'static str, &'static str),
}

pub fn file(path: &str, data: &[u8]) -> Entry {
    Entry::File(path.to_string(), data.to_vec(), 0o644, 0, 0)
}

pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::File(p, data, mode, uid, gid) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

#[derive(Clone, Copy, Debug)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub fn compress(tar: &[u8], c: Comp) -> (Vec<u8>, &'static str) {
    match c {
        Comp::None => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        Comp::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).unwrap();
            (
                gz.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Comp::Zstd => (
            zstd::encode_all(tar, 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    }
}

/// An OCI image layout directory being filled.
pub struct Layout {
    pub dir: tempfile::TempDir,
    index: Vec<serde_json::Value>,
}

impl Layout {
    pub fn new() -> Layout {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        Layout {
            dir,
            index: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn blob(&self, data: &[u8]) -> (String, usize) {
        let d = sha256(data);
        std::fs::write(
            self.dir
                .path()
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            data,
        )
        .unwrap();
        (d, data.len())
    }

    /// An image of `layers` (uncompressed tars, each with its compression) for
    /// `arch[/variant]`; returns its manifest descriptor.
    pub fn image(&self, layers: &[(Vec<u8>, Comp)], arch: &str, user: &str) -> serde_json::Value {
        let (arch, variant) = match arch.split_once('/') {
            Some((a, v)) => (a, Some(v)),
            None => (arch, None),
        };
        let mut diff_ids = Vec::new();
        let mut descs = Vec::new();
        for (tar, c) in layers {
            diff_ids.push(sha256(tar));
            let (data, mt) = compress(tar, *c);
            let (d, n) = self.blob(&data);
            descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": n}));
        }
        let mut config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"User": user, "Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let Some(v) = variant {
            config["variant"] = v.into();
        }
        let config = serde_json::to_vec(&config).unwrap();
        let (cd, cn) = self.blob(&config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
            "layers": descs,
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let (md, mn) = self.blob(&manifest);
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": mn, "platform": platform,
        })
    }

    /// A nested image index of `manifests`; returns its descriptor.
    pub fn index_of(&self, manifests: Vec<serde_json::Value>) -> serde_json::Value {
        let idx = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let bytes = serde_json::to_vec(&idx).unwrap();
        let (d, n) = self.blob(&bytes);
        serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": n})
    }

    /// Name `desc` in index.json (`oci:<dir>:<name>`).
    pub fn tag(&mut self, desc: &serde_json::Value, name: &str) {
        let mut d = desc.clone();
        d.as_object_mut().unwrap().remove("platform");
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": name});
        self.index.push(d);
        let idx = serde_json::json!({"schemaVersion": 2, "manifests": self.index});
        std::fs::write(
            self.dir.path().join("index.json"),
            serde_json::to_vec(&idx).unwrap(),
        )
        .unwrap();
    }
}

/// A config that lets plain HTTP reach `hosts` (each listed as its own http:// endpoint).
pub fn plain_http(hosts: &[&str]) -> crius::config::RegistryConfig {
    let mut text = String::new();
    for h in hosts {
        text.push_str(&format!(
            "[registry.mirrors.\"{h}\"]\nendpoint = [\"http://{h}\"]\n"
        ));
    }
    registry_config(&text)
}

pub fn registry_config(text: &str) -> crius::config::RegistryConfig {
    let c = crius::config::Config::parse(text).unwrap();
    c.validate().unwrap();
    c.registry
}

/// The busybox-static rootfs: /bin/busybox, applet symlinks, an owned file, a private dir.
pub fn busybox_entries() -> Vec<Entry> {
    let bb = std::fs::read("/bin/busybox").unwrap();
    vec![
        Entry::Dir("bin/", 0o755),
        Entry::File("bin/busybox".into(), bb, 0o755, 0, 0),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::Symlink("bin/ls", "/bin/busybox"),
        Entry::Dir("etc/", 0o755),
        file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        ),
        Entry::Dir("home/", 0o755),
        Entry::Dir("home/user/", 0o700),
        Entry::File(
            "home/user/.profile".into(),
            b"export X=1\n".to_vec(),
            0o600,
            1000,
            1000,
        ),
        Entry::Dir("tmp/", 0o1777),
    ]
}

/// Assert `dir` holds exactly `entries` (content, mode, owner, link targets).
pub fn assert_tree(dir: &Path, entries: &[Entry]) {
    use std::os::unix::fs::MetadataExt;
    let mut expected = std::collections::BTreeSet::new();
    for e in entries {
        match e {
            Entry::Dir(p, mode) => {
                let p = p.trim_end_matches('/');
                expected.insert(p.to_string());
                let m = std::fs::symlink_metadata(dir.join(p)).unwrap();
                assert!(m.is_dir(), "{p}");
                assert_eq!(m.mode() & 0o7777, *mode, "{p} mode");
            }
            Entry::File(p, data, mode, uid, gid) => {
                expected.insert(p.clone());
                let m = std::fs::symlink_metadata(dir.join(p)).unwrap();
                assert_eq!(std::fs::read(dir.join(p)).unwrap(), *data, "{p} content");
                assert_eq!(m.mode() & 0o7777, *mode, "{p} mode");
                assert_eq!((m.uid() as u64, m.gid() as u64), (*uid, *gid), "{p} owner");
            }
            Entry::Symlink(p, target) => {
                expected.insert(p.to_string());
                assert_eq!(
                    std::fs::read_link(dir.join(p)).unwrap(),
                    Path::new(target),
                    "{p}"
                );
            }
        }
    }
    let mut found = std::collections::BTreeSet::new();
    walk(dir, dir, &mut found);
    assert_eq!(found, expected, "entries of {}", dir.display());
}

fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        if e.file_type().unwrap().is_dir() {
            walk(root, &p, out);
        }
    }
}

pub fn dir_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}
