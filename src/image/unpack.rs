//! Unpack one (already decompressed) layer tar into a fresh snapshot directory, safely.
//!
//! Layers are hostile input. Every entry's parent directory is resolved with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`
//! relative to the snapshot root, and the entry itself is created with `*at()` calls relative
//! to that parent descriptor, so no path component the layer controls is ever followed out of
//! the snapshot. Entry paths with `..` or a leading `/` are refused outright; so is writing
//! through a symlink (a tar of a real filesystem never contains a path below a symlink), and a
//! hardlink whose target does not resolve inside the snapshot.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.<name>` -> a 0/0 character device `<name>`;
//! `.wh..wh..opq` -> `trusted.overlay.opaque=y` on the directory.
//!
//! The tar is streamed entry by entry; nothing is held in memory beyond one copy buffer.

use super::ImageError;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// overlayfs interprets these; a layer must not be able to set them (redirects, metacopy).
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

const RESOLVE: u64 = libc::RESOLVE_IN_ROOT
    | libc::RESOLVE_NO_SYMLINKS
    | libc::RESOLVE_NO_MAGICLINKS
    | libc::RESOLVE_NO_XDEV;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Unpack the uncompressed layer tar `reader` into `dest`, an existing empty directory.
/// `layer` names the layer in errors. On error `dest` is left partially filled: the caller
/// owns it and removes it (snapshots are only published after a successful unpack).
pub fn unpack_layer(
    reader: impl Read,
    dest: &Path,
    layer: &str,
) -> Result<UnpackStats, ImageError> {
    let root = open_dir(dest).map_err(ImageError::io(dest))?;
    let mut u = Unpacker {
        root,
        layer: layer.to_string(),
        dir_times: Vec::new(),
        stats: UnpackStats::default(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| u.err(Path::new(""), format!("reading tar: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| u.err(Path::new(""), format!("reading tar: {e}")))?;
        u.entry(entry)?;
    }
    u.finish_dir_times();
    Ok(u.stats)
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: libc::timespec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

struct Unpacker {
    root: OwnedFd,
    layer: String,
    /// Directory mtimes are set last: creating children changes them.
    dir_times: Vec<(Vec<OsString>, libc::timespec)>,
    stats: UnpackStats,
}

impl Unpacker {
    fn err(&self, entry: &Path, reason: impl Into<String>) -> ImageError {
        ImageError::Unpack {
            layer: self.layer.clone(),
            entry: entry.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = e
            .path()
            .map_err(|err| self.err(Path::new("?"), format!("bad path: {err}")))?
            .into_owned();
        let kind = e.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            return Ok(());
        }
        let comps = clean_path(&raw, false).map_err(|r| self.err(&raw, r))?;
        let meta = read_meta(&mut e).map_err(|r| self.err(&raw, r))?;
        self.stats.entries += 1;

        let Some((name, parent_comps)) = comps.split_last() else {
            // "./": the layer's root directory itself.
            if !kind.is_dir() {
                return Err(self.err(&raw, "the layer root must be a directory"));
            }
            // The root is held as O_PATH; f*chown/f*chmod need a real descriptor.
            let fd = reopen_dir(&self.root).map_err(|e| self.err(&raw, e.to_string()))?;
            self.apply_meta_fd(&raw, &fd, &meta)?;
            self.dir_times.push((Vec::new(), meta.mtime));
            return Ok(());
        };
        let parent = self.open_parent(parent_comps, true, &raw)?;
        let name_str = name.to_string_lossy();

        if name_str == WHITEOUT_OPAQUE {
            let dir = reopen_dir(&parent).map_err(|e| self.err(&raw, e.to_string()))?;
            fsetxattr(dir.as_raw_fd(), OPAQUE_XATTR, b"y")
                .map_err(|e| self.err(&raw, format!("marking directory opaque: {e}")))?;
            return Ok(());
        }
        if name_str.starts_with(WHITEOUT_META_PREFIX) {
            // Other aufs metadata (.wh..wh.plnk etc.) has no overlayfs meaning.
            tracing::debug!(layer = %self.layer, entry = %raw.display(), "skipping aufs metadata");
            return Ok(());
        }
        if let Some(target) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if target.is_empty() || target == "." || target == ".." {
                return Err(self.err(&raw, "invalid whiteout name"));
            }
            let target = OsStr::from_bytes(&name.as_bytes()[WHITEOUT_PREFIX.len()..]);
            self.remove_existing(&parent, target, false, &raw)?;
            mknodat(parent.as_raw_fd(), target, libc::S_IFCHR, 0)
                .map_err(|e| self.err(&raw, format!("creating whiteout: {e}")))?;
            return Ok(());
        }

        let is_dir = kind.is_dir();
        let exists_as_dir = self.remove_existing(&parent, name, is_dir, &raw)?;
        let pfd = parent.as_raw_fd();
        if is_dir {
            if !exists_as_dir {
                mkdirat(pfd, name, 0o700).map_err(|e| self.err(&raw, format!("mkdir: {e}")))?;
            }
            let dir = openat(
                pfd,
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(|e| self.err(&raw, format!("opening new directory: {e}")))?;
            self.apply_meta_fd(&raw, &dir, &meta)?;
            self.dir_times.push((comps.clone(), meta.mtime));
        } else if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            let fd = openat(
                pfd,
                name,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
            )
            .map_err(|e| self.err(&raw, format!("creating file: {e}")))?;
            let mut file = File::from(fd);
            let n = std::io::copy(&mut e, &mut file)
                .map_err(|e| self.err(&raw, format!("writing file: {e}")))?;
            self.stats.bytes += n;
            let fd = OwnedFd::from(file);
            self.apply_meta_fd(&raw, &fd, &meta)?;
            futimens(fd.as_raw_fd(), meta.mtime).map_err(|e| self.err(&raw, e.to_string()))?;
        } else if kind.is_symlink() {
            // Symlink targets are not resolved now; at run time they are relative to the
            // container's root, so absolute targets are fine.
            let target = e
                .link_name()
                .map_err(|err| self.err(&raw, err.to_string()))?
                .ok_or_else(|| self.err(&raw, "symlink without a target"))?
                .into_owned();
            symlinkat(target.as_os_str(), pfd, name)
                .map_err(|e| self.err(&raw, format!("symlink: {e}")))?;
            self.apply_meta_nofollow(&raw, &parent, name, &meta, false)?;
        } else if kind.is_hard_link() {
            let target = e
                .link_name()
                .map_err(|err| self.err(&raw, err.to_string()))?
                .ok_or_else(|| self.err(&raw, "hardlink without a target"))?
                .into_owned();
            let tcomps = clean_path(&target, true).map_err(|r| {
                self.err(&raw, format!("hardlink target {}: {r}", target.display()))
            })?;
            let Some((tname, tparent)) = tcomps.split_last() else {
                return Err(self.err(&raw, "hardlink to the layer root"));
            };
            let tparent = self.open_parent(tparent, false, &raw).map_err(|_| {
                self.err(
                    &raw,
                    format!(
                        "hardlink target {} is not inside the layer",
                        target.display()
                    ),
                )
            })?;
            linkat(tparent.as_raw_fd(), tname, pfd, name)
                .map_err(|e| self.err(&raw, format!("hardlink to {}: {e}", target.display())))?;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let (ftype, dev) = if kind.is_fifo() {
                (libc::S_IFIFO, 0)
            } else {
                let major = e.header().device_major().ok().flatten().unwrap_or(0);
                let minor = e.header().device_minor().ok().flatten().unwrap_or(0);
                let t = if kind.is_character_special() {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                (t, libc::makedev(major, minor))
            };
            mknodat(pfd, name, ftype, dev).map_err(|e| self.err(&raw, format!("mknod: {e}")))?;
            self.apply_meta_nofollow(&raw, &parent, name, &meta, true)?;
        } else {
            tracing::warn!(layer = %self.layer, entry = %raw.display(), kind = ?kind,
                "skipping unsupported tar entry type");
        }
        Ok(())
    }

    /// Resolve `comps` below the snapshot root to an O_PATH directory descriptor, creating
    /// missing directories (0755, like tar) when `create`.
    fn open_parent(
        &self,
        comps: &[OsString],
        create: bool,
        raw: &Path,
    ) -> Result<OwnedFd, ImageError> {
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        if comps.is_empty() {
            return self
                .root
                .try_clone()
                .map_err(|e| self.err(raw, e.to_string()));
        }
        let full: PathBuf = comps.iter().collect();
        match openat2(self.root.as_raw_fd(), full.as_os_str(), flags, RESOLVE) {
            Ok(fd) => return Ok(fd),
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.resolve_err(raw, &full, e)),
        }
        // Slow path: walk and create one component at a time, each step confined the same way.
        let mut cur = self
            .root
            .try_clone()
            .map_err(|e| self.err(raw, e.to_string()))?;
        for c in comps {
            let next = match openat2(cur.as_raw_fd(), c, flags, RESOLVE) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    mkdirat(cur.as_raw_fd(), c, 0o755)
                        .map_err(|e| self.err(raw, format!("creating parent {c:?}: {e}")))?;
                    openat2(cur.as_raw_fd(), c, flags, RESOLVE)
                        .map_err(|e| self.resolve_err(raw, &full, e))?
                }
                Err(e) => return Err(self.resolve_err(raw, &full, e)),
            };
            cur = next;
        }
        Ok(cur)
    }

    fn resolve_err(&self, raw: &Path, parent: &Path, e: std::io::Error) -> ImageError {
        let reason = match e.raw_os_error() {
            Some(libc::ELOOP) => format!("parent {} goes through a symlink", parent.display()),
            Some(libc::ENOTDIR) => format!("parent {} is not a directory", parent.display()),
            Some(libc::EXDEV) => format!("parent {} escapes the layer", parent.display()),
            _ => format!("resolving parent {}: {e}", parent.display()),
        };
        self.err(raw, reason)
    }

    /// Make room for a new entry `name`. Returns true if a directory is already there and the
    /// new entry is a directory too (it is then kept: later entries only update metadata).
    fn remove_existing(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        new_is_dir: bool,
        raw: &Path,
    ) -> Result<bool, ImageError> {
        let st = match fstatat_nofollow(parent.as_raw_fd(), name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
            Err(e) => return Err(self.err(raw, format!("stat: {e}"))),
        };
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir && new_is_dir {
            return Ok(true);
        }
        let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        unlinkat(parent.as_raw_fd(), name, flags)
            .map_err(|e| self.err(raw, format!("replacing existing entry: {e}")))?;
        Ok(false)
    }

    /// Owner, then mode (chown clears set-id bits), then xattrs, on an open descriptor.
    fn apply_meta_fd(&self, raw: &Path, fd: &OwnedFd, meta: &Meta) -> Result<(), ImageError> {
        let f = fd.as_raw_fd();
        // SAFETY: plain syscalls on a descriptor we own.
        cvt(unsafe { libc::fchown(f, meta.uid, meta.gid) })
            .map_err(|e| self.err(raw, format!("chown: {e}")))?;
        cvt(unsafe { libc::fchmod(f, meta.mode) })
            .map_err(|e| self.err(raw, format!("chmod: {e}")))?;
        for (k, v) in &meta.xattrs {
            // SAFETY: k is NUL-terminated, v is a valid buffer of v.len() bytes.
            let rc = unsafe { libc::fsetxattr(f, k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
            self.xattr_result(raw, k, rc)?;
        }
        Ok(())
    }

    /// Metadata for entries that cannot be opened (symlinks, device nodes): the *at variants
    /// with AT_SYMLINK_NOFOLLOW relative to the parent descriptor.
    fn apply_meta_nofollow(
        &self,
        raw: &Path,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), ImageError> {
        let p = parent.as_raw_fd();
        let c = cstr(name).map_err(|e| self.err(raw, e.to_string()))?;
        // SAFETY: c is NUL-terminated; p is a directory descriptor we own.
        cvt(unsafe {
            libc::fchownat(p, c.as_ptr(), meta.uid, meta.gid, libc::AT_SYMLINK_NOFOLLOW)
        })
        .map_err(|e| self.err(raw, format!("chown: {e}")))?;
        if chmod {
            // fchmodat cannot take AT_SYMLINK_NOFOLLOW on Linux; `name` is a device node or
            // FIFO we just created in a descriptor-resolved parent, never a symlink.
            cvt(unsafe { libc::fchmodat(p, c.as_ptr(), meta.mode, 0) })
                .map_err(|e| self.err(raw, format!("chmod: {e}")))?;
        }
        if !meta.xattrs.is_empty() {
            // l*xattr on /proc/self/fd/<parent>/<name>: the parent is already resolved and the
            // last component is not followed.
            let path = Path::new("/proc/self/fd").join(p.to_string()).join(name);
            let cpath = cstr(path.as_os_str()).map_err(|e| self.err(raw, e.to_string()))?;
            for (k, v) in &meta.xattrs {
                // SAFETY: NUL-terminated strings and a valid value buffer.
                let rc = unsafe {
                    libc::lsetxattr(cpath.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0)
                };
                self.xattr_result(raw, k, rc)?;
            }
        }
        let times = [meta.mtime, meta.mtime];
        // SAFETY: as above; times is a valid [timespec; 2].
        cvt(unsafe { libc::utimensat(p, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
            .map_err(|e| self.err(raw, format!("setting times: {e}")))?;
        Ok(())
    }

    fn xattr_result(&self, raw: &Path, key: &CString, rc: libc::c_int) -> Result<(), ImageError> {
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            tracing::warn!(layer = %self.layer, entry = %raw.display(), xattr = ?key,
                "filesystem does not support this xattr; skipped");
            return Ok(());
        }
        Err(self.err(raw, format!("setting xattr {key:?}: {e}")))
    }

    fn finish_dir_times(&mut self) {
        for (comps, ts) in std::mem::take(&mut self.dir_times) {
            let path: PathBuf = comps.iter().collect();
            let fd = if comps.is_empty() {
                self.root.try_clone()
            } else {
                openat2(
                    self.root.as_raw_fd(),
                    path.as_os_str(),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    RESOLVE,
                )
            };
            // A directory replaced by a later entry is simply skipped.
            if let Ok(fd) = fd {
                let _ = futimens(fd.as_raw_fd(), ts);
            }
        }
    }
}

/// Split an entry path into normal components. `..` is always refused; a leading `/` is
/// refused for entry names and stripped for hardlink targets (archive-root relative).
fn clean_path(p: &Path, allow_absolute: bool) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::RootDir if allow_absolute => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute path refused".to_string());
            }
            Component::ParentDir => return Err("path with a '..' component refused".to_string()),
        }
    }
    Ok(out)
}

fn read_meta<R: Read>(e: &mut tar::Entry<'_, R>) -> Result<Meta, String> {
    let h = e.header();
    let mode = h.mode().map_err(|e| format!("bad mode: {e}"))? & 0o7777;
    // An all-blank numeric field reads as 0, as Go's archive/tar (which wrote most layers in
    // the wild) treats it.
    let blank = |field: &[u8]| field.iter().all(|b| *b == 0 || *b == b' ');
    let mut uid = match h.uid() {
        Err(_) if blank(&h.as_old().uid) => 0,
        other => other.map_err(|e| format!("bad uid: {e}"))?,
    };
    let mut gid = match h.gid() {
        Err(_) if blank(&h.as_old().gid) => 0,
        other => other.map_err(|e| format!("bad gid: {e}"))?,
    };
    let mut mtime = libc::timespec {
        tv_sec: h.mtime().unwrap_or(0) as libc::time_t,
        tv_nsec: 0,
    };
    let mut xattrs = Vec::new();
    if let Some(exts) = e
        .pax_extensions()
        .map_err(|e| format!("bad PAX header: {e}"))?
    {
        for ext in exts {
            let ext = ext.map_err(|e| format!("bad PAX header: {e}"))?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            match key {
                "uid" => uid = parse_u64(value).ok_or("bad PAX uid")?,
                "gid" => gid = parse_u64(value).ok_or("bad PAX gid")?,
                "mtime" => mtime = parse_pax_time(value).ok_or("bad PAX mtime")?,
                _ => {
                    if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                        if name.starts_with(OVERLAY_XATTR_PREFIX) {
                            tracing::warn!(xattr = name, "refusing overlayfs xattr from a layer");
                            continue;
                        }
                        let k = CString::new(name).map_err(|_| "xattr name with NUL")?;
                        xattrs.push((k, value.to_vec()));
                    }
                }
            }
        }
    }
    let uid = u32::try_from(uid).map_err(|_| format!("uid {uid} out of range"))?;
    let gid = u32::try_from(gid).map_err(|_| format!("gid {gid} out of range"))?;
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX times are decimal seconds with an optional fraction: "1700000000.123456789".
fn parse_pax_time(v: &[u8]) -> Option<libc::timespec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nanos = format!("{digits:0<9}").parse().ok()?;
        if secs < 0 && nanos > 0 {
            return Some(libc::timespec {
                tv_sec: (secs - 1) as libc::time_t,
                tv_nsec: (1_000_000_000 - nanos) as _,
            });
        }
    }
    Some(libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as _,
    })
}

// ---- thin syscall wrappers -------------------------------------------------------------

fn cvt(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cstr(s: &OsStr) -> std::io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn open_dir(p: &Path) -> std::io::Result<OwnedFd> {
    let c = cstr(p.as_os_str())?;
    // SAFETY: c is NUL-terminated; the returned descriptor is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A readable descriptor for a directory held as O_PATH (f*xattr refuses O_PATH fds).
fn reopen_dir(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    openat(
        fd.as_raw_fd(),
        OsStr::new("."),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )
}

fn openat(
    dir: RawFd,
    name: &OsStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> std::io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated; dir is a valid descriptor.
    let fd = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2(2) through the raw syscall (nix 0.29 has no wrapper). EAGAIN (a concurrent rename
/// under RESOLVE_IN_ROOT) is retried.
pub(crate) fn openat2(
    dir: RawFd,
    path: &OsStr,
    flags: libc::c_int,
    resolve: u64,
) -> std::io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: open_how is plain old data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    for _ in 0..16 {
        // SAFETY: the pointers are valid for the duration of the call; size matches the struct.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if rc >= 0 {
            // SAFETY: fresh descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) });
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
}

fn mkdirat(dir: RawFd, name: &OsStr, mode: libc::mode_t) -> std::io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated.
    cvt(unsafe { libc::mkdirat(dir, c.as_ptr(), mode) })
}

fn mknodat(dir: RawFd, name: &OsStr, ftype: libc::mode_t, dev: libc::dev_t) -> std::io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated.
    cvt(unsafe { libc::mknodat(dir, c.as_ptr(), ftype, dev) })
}

fn symlinkat(target: &OsStr, dir: RawFd, name: &OsStr) -> std::io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: both NUL-terminated.
    cvt(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) })
}

fn linkat(odir: RawFd, oname: &OsStr, ndir: RawFd, nname: &OsStr) -> std::io::Result<()> {
    let o = cstr(oname)?;
    let n = cstr(nname)?;
    // SAFETY: both NUL-terminated. Flags 0: a symlink target is linked, never followed.
    cvt(unsafe { libc::linkat(odir, o.as_ptr(), ndir, n.as_ptr(), 0) })
}

fn unlinkat(dir: RawFd, name: &OsStr, flags: libc::c_int) -> std::io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated.
    cvt(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) })
}

fn fstatat_nofollow(dir: RawFd, name: &OsStr) -> std::io::Result<libc::stat> {
    let c = cstr(name)?;
    // SAFETY: st is written by the kernel on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

fn futimens(fd: RawFd, ts: libc::timespec) -> std::io::Result<()> {
    let times = [ts, ts];
    // SAFETY: times is a valid [timespec; 2].
    cvt(unsafe { libc::futimens(fd, times.as_ptr()) })
}

fn fsetxattr(fd: RawFd, key: &str, value: &[u8]) -> std::io::Result<()> {
    let k = CString::new(key).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: k NUL-terminated, value valid for value.len() bytes.
    cvt(unsafe { libc::fsetxattr(fd, k.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

#[cfg(test)]
pub(crate) mod tests;

/// Open `path` for reading inside the tree rooted at `root`, resolving every symlink and `..`
/// as if `root` were `/` (RESOLVE_IN_ROOT): a hostile image cannot point the read at the host.
pub fn open_in_root(root: RawFd, path: &std::path::Path) -> std::io::Result<OwnedFd> {
    openat2(
        root,
        path.as_os_str(),
        libc::O_RDONLY | libc::O_NOCTTY,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}
