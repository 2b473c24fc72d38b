//! Reading files of an image rootfs (its /etc/passwd and /etc/group) without letting a hostile
//! image redirect the read to the host through symlinks: the path is resolved with
//! RESOLVE_IN_ROOT, so `..` and absolute symlinks stay inside the rootfs.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Largest passwd/group file we read; a bigger one is not a real account database.
const MAX_SIZE: u64 = 4 << 20;

/// The contents of `rel` inside `rootfs`, or `None` when it does not exist or is not a regular
/// file.
pub fn read_in_root(rootfs: &Path, rel: &str) -> std::io::Result<Option<String>> {
    let root = std::fs::File::open(rootfs)?;
    let fd = match crate::image::unpack::open_in_root(root.as_raw_fd(), Path::new(rel)) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut file = std::fs::File::from(fd);
    if !file.metadata()?.is_file() {
        return Ok(None);
    }
    let mut text = String::new();
    (&mut file).take(MAX_SIZE).read_to_string(&mut text)?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_cannot_leave_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(tmp.path().join("secret"), "host secret").unwrap();
        std::os::unix::fs::symlink("/../../secret", root.join("etc/passwd")).unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        assert_eq!(read_in_root(&root, "etc/passwd").unwrap(), None);
        assert_eq!(
            read_in_root(&root, "etc/group").unwrap().as_deref(),
            Some("root:x:0:\n")
        );
        assert_eq!(read_in_root(&root, "etc/shadow").unwrap(), None);
    }
}
