//! Small helpers shared by several modules.

use std::io::Write;
use std::path::Path;

/// Write `data` to `path` so that a crash leaves either the old or the new content, never a
/// torn file: write a temp file beside it, fsync it, rename it over, fsync the directory.
pub fn atomic_write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_via_rename(path, data, true)
}

/// Replace `path` with `data` through a rename, so readers never see half a file, but without
/// the fsyncs of [`atomic_write`]: for files that describe live processes and mean nothing
/// after a reboot (pid files, runtime state), where durability only costs latency.
pub fn replace_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_via_rename(path, data, false)
}

fn write_via_rename(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if durable && let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// kubelet's id filter: empty matches everything, otherwise an id prefix.
pub fn id_matches(filter: &str, id: &str) -> bool {
    filter.is_empty() || id.starts_with(filter)
}

/// kubelet's label selector: every key=value of the selector is among the labels.
pub fn labels_match(
    selector: &std::collections::HashMap<String, String>,
    labels: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Nanoseconds since the Unix epoch, as CRI timestamps are.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A fresh 64-hex-digit id, like containerd's and CRI-O's.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Remove a directory tree, treating "already gone" as success.
pub fn remove_dir_all_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
