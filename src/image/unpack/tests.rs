//! Unpack tests: layers built in memory with the tar crate; hostile names are written into the
//! raw header fields because the builder (rightly) refuses them.

use super::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

pub(crate) struct LayerBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl LayerBuilder {
    pub(crate) fn new() -> Self {
        LayerBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &[u8], kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_size(size);
        h
    }

    pub(crate) fn dir(mut self, name: &str, mode: u32) -> Self {
        let mut h = Self::header(name.as_bytes(), tar::EntryType::Directory, mode, 0);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub(crate) fn file(mut self, name: &str, data: &[u8]) -> Self {
        self = self.file_owned(name, data, 0o644, 0, 0);
        self
    }

    pub(crate) fn file_owned(
        mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Self {
        let mut h = Self::header(
            name.as_bytes(),
            tar::EntryType::Regular,
            mode,
            data.len() as u64,
        );
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub(crate) fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Self {
        let mut h = Self::header(name.as_bytes(), kind, 0o777, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub(crate) fn device(
        mut self,
        kind: tar::EntryType,
        name: &str,
        major: u32,
        minor: u32,
    ) -> Self {
        let mut h = Self::header(name.as_bytes(), kind, 0o620, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub(crate) fn pax_file(mut self, name: &str, data: &[u8], pax: &[(&str, &[u8])]) -> Self {
        self.b.append_pax_extensions(pax.iter().copied()).unwrap();
        self = self.file(name, data);
        self
    }

    pub(crate) fn build(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dest: PathBuf,
    sentinel: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("a/b/snap");
    let sentinel = tmp.path().join("sentinel");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&sentinel).unwrap();
    Fixture {
        _tmp: tmp,
        dest,
        sentinel,
    }
}

impl Fixture {
    fn assert_sentinel_untouched(&self) {
        let n = std::fs::read_dir(&self.sentinel).unwrap().count();
        assert_eq!(n, 0, "something was written outside the snapshot");
        // And nothing next to the snapshot either.
        let siblings: Vec<_> = std::fs::read_dir(self.dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(siblings, vec![OsString::from("snap")]);
    }
}

#[test]
fn unpacks_files_dirs_links_devices_and_metadata() {
    let fx = fixture();
    let layer = LayerBuilder::new()
        .dir("./", 0o755)
        .dir("etc/", 0o750)
        .file_owned("etc/passwd", b"root:x:0:0\n", 0o4755, 1000, 1001)
        .file("implicit/parent/file", b"x")
        .link(tar::EntryType::Symlink, "etc/abs", "/usr/bin/nothing")
        .link(tar::EntryType::Symlink, "rel", "etc/passwd")
        .link(tar::EntryType::Link, "hard", "etc/passwd")
        .link(tar::EntryType::Link, "hard2", "/etc/passwd")
        .device(tar::EntryType::Char, "null", 1, 3)
        .device(tar::EntryType::Fifo, "fifo", 0, 0)
        .pax_file(
            "capped",
            b"c",
            &[
                ("SCHILY.xattr.user.test", b"v1"),
                ("SCHILY.xattr.trusted.overlay.redirect", b"/x"),
                ("mtime", b"1700000000.5"),
                ("uid", b"70000"),
            ],
        )
        .file("dup", b"first")
        .file("dup", b"second")
        .build();
    let stats = unpack_layer(&layer[..], &fx.dest, "l1").unwrap();
    assert_eq!(stats.entries, 13);
    let d = &fx.dest;
    let m = std::fs::metadata(d.join("etc/passwd")).unwrap();
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o4755,
        "setuid kept after chown"
    );
    assert_eq!((m.uid(), m.gid()), (1000, 1001));
    assert_eq!(m.mtime(), 1_000_000);
    assert_eq!(m.nlink(), 3);
    assert_eq!(
        std::fs::metadata(d.join("etc"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
    assert_eq!(
        std::fs::metadata(d.join("etc")).unwrap().mtime(),
        1_000_000,
        "dir mtime set last"
    );
    assert_eq!(
        std::fs::metadata(d.join("implicit/parent"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_link(d.join("etc/abs")).unwrap(),
        Path::new("/usr/bin/nothing")
    );
    assert_eq!(
        std::fs::read_to_string(d.join("rel")).unwrap(),
        "root:x:0:0\n"
    );
    let null = std::fs::symlink_metadata(d.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert!(
        std::fs::symlink_metadata(d.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let capped = std::fs::metadata(d.join("capped")).unwrap();
    assert_eq!(capped.mtime(), 1_700_000_000);
    assert_eq!(capped.mtime_nsec(), 500_000_000);
    assert_eq!(capped.uid(), 70000);
    assert_eq!(
        get_xattr(&d.join("capped"), "user.test").as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(
        get_xattr(&d.join("capped"), "trusted.overlay.redirect"),
        None
    );
    assert_eq!(std::fs::read_to_string(d.join("dup")).unwrap(), "second");
    fx.assert_sentinel_untouched();
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let fx = fixture();
    let layer = LayerBuilder::new()
        .dir("dir/", 0o755)
        .file("dir/.wh..wh..opq", b"")
        .file("dir/.wh.gone", b"")
        .file(".wh.top", b"")
        .file("x/.wh..wh.plnk", b"")
        .build();
    unpack_layer(&layer[..], &fx.dest, "l").unwrap();
    let d = &fx.dest;
    for w in ["dir/gone", "top"] {
        let m = std::fs::symlink_metadata(d.join(w)).unwrap();
        assert!(m.file_type().is_char_device(), "{w}");
        assert_eq!(m.rdev(), 0, "{w}");
    }
    assert_eq!(
        get_xattr(&d.join("dir"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!d.join("dir/.wh..wh..opq").exists());
    assert!(!d.join("x/.wh..wh.plnk").exists());
}

fn expect_refused(layer: Vec<u8>, what: &str) {
    let fx = fixture();
    let e = unpack_layer(&layer[..], &fx.dest, "evil").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ImageError::Unpack { .. }), "{what}: {msg}");
    assert!(msg.contains("evil"), "{what}: error names the layer: {msg}");
    fx.assert_sentinel_untouched();
}

#[test]
fn dotdot_escape_is_refused() {
    let layer = LayerBuilder::new()
        .file("../../../sentinel/pwned", b"x")
        .build();
    expect_refused(layer, "dotdot");
    let layer = LayerBuilder::new()
        .file("a/../../sentinel/pwned", b"x")
        .build();
    expect_refused(layer, "inner dotdot");
}

#[test]
fn absolute_path_is_refused() {
    let fx = fixture();
    let abs = format!("{}/pwned", fx.sentinel.display());
    let layer = LayerBuilder::new().file(&abs, b"x").build();
    let e = unpack_layer(&layer[..], &fx.dest, "evil")
        .unwrap_err()
        .to_string();
    assert!(e.contains("absolute"), "{e}");
    fx.assert_sentinel_untouched();
}

#[test]
fn write_through_symlink_is_refused() {
    let fx = fixture();
    let layer = LayerBuilder::new()
        .link(
            tar::EntryType::Symlink,
            "evil",
            fx.sentinel.to_str().unwrap(),
        )
        .file("evil/pwned", b"x")
        .build();
    let e = unpack_layer(&layer[..], &fx.dest, "evil")
        .unwrap_err()
        .to_string();
    assert!(e.contains("symlink"), "{e}");
    fx.assert_sentinel_untouched();
    // A relative symlink climbing out, then a write through it.
    let layer = LayerBuilder::new()
        .link(tar::EntryType::Symlink, "up", "../../../sentinel")
        .file("up/pwned", b"x")
        .build();
    expect_refused(layer, "relative symlink");
    // Symlink then a nested directory creation through it.
    let layer = LayerBuilder::new()
        .link(tar::EntryType::Symlink, "up", "../../../sentinel")
        .dir("up/sub/", 0o755)
        .build();
    expect_refused(layer, "mkdir through symlink");
}

#[test]
fn hardlink_outside_is_refused() {
    let fx = fixture();
    std::fs::write(fx.sentinel.join("secret"), b"s").unwrap();
    let layer = LayerBuilder::new()
        .link(tar::EntryType::Link, "hl", "../../../sentinel/secret")
        .build();
    let e = unpack_layer(&layer[..], &fx.dest, "evil")
        .unwrap_err()
        .to_string();
    assert!(e.contains("hl"), "{e}");
    // Absolute target: resolved inside the snapshot, where it does not exist.
    let abs = format!("{}/secret", fx.sentinel.display());
    let layer = LayerBuilder::new()
        .link(tar::EntryType::Link, "hl2", &abs)
        .build();
    unpack_layer(&layer[..], &fx.dest, "evil").unwrap_err();
    // Through a symlink planted earlier in the layer.
    let layer = LayerBuilder::new()
        .link(tar::EntryType::Symlink, "s", fx.sentinel.to_str().unwrap())
        .link(tar::EntryType::Link, "hl3", "s/secret")
        .build();
    unpack_layer(&layer[..], &fx.dest, "evil").unwrap_err();
    assert_eq!(
        std::fs::metadata(fx.sentinel.join("secret"))
            .unwrap()
            .nlink(),
        1
    );
    assert!(!fx.dest.join("hl").exists() && !fx.dest.join("hl2").exists());
    assert!(!fx.dest.join("hl3").exists());
}

#[test]
fn dir_does_not_replace_nonempty_dir_with_file() {
    let fx = fixture();
    let layer = LayerBuilder::new()
        .file("d/f", b"x")
        .file("d", b"now a file")
        .build();
    unpack_layer(&layer[..], &fx.dest, "l").unwrap_err();
}

#[test]
fn pax_time_parsing() {
    let t = parse_pax_time(b"12.25").unwrap();
    assert_eq!((t.tv_sec, t.tv_nsec), (12, 250_000_000));
    let t = parse_pax_time(b"-1.5").unwrap();
    assert_eq!((t.tv_sec, t.tv_nsec), (-2, 500_000_000));
    assert!(parse_pax_time(b"x").is_none());
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid strings and buffer.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}
