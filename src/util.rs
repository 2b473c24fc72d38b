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
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        Ok(())
    });
    // A half-written temp file (ENOSPC) would hold on to the space that is short.
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if durable && let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Page size the space reserves below are rounded to: filesystems allocate whole blocks, so a
/// rewrite within a file's allocated pages needs no new space.
const RESERVE_UNIT: usize = 4096;

/// `data` padded with trailing blanks (which JSON readers skip) to whole pages with at least
/// `slack` bytes to spare: a file written so can later be rewritten in place with a slightly
/// longer version ([`overwrite_in_place`]) without allocating, e.g. on a full disk.
pub fn padded(data: &[u8], slack: usize) -> Vec<u8> {
    let len = (data.len() + slack).div_ceil(RESERVE_UNIT) * RESERVE_UNIT;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(data);
    out.resize(len, b' ');
    // A newline at the end keeps the file friendly to `cat`.
    if let Some(last) = out.last_mut() {
        *last = b'\n';
    }
    out
}

/// Rewrite `path` in place with `data`, blank-padded to the file's current length, so the
/// write lands in space the file already holds: the way to record a change when the disk is
/// full and a new file cannot be made. `data` longer than the file is refused (ENOSPC) before
/// anything is written, so the old content is never torn by a write that runs out of space.
/// Unlike [`replace_file`] a crash during the write could tear the file; this is only the
/// fallback for when the atomic way is impossible.
pub fn overwrite_in_place(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = f.metadata()?.len() as usize;
    if data.len() > len {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
    }
    let mut buf = data.to_vec();
    buf.resize(len, b' ');
    if let Some(last) = buf.last_mut().filter(|_| len > data.len()) {
        *last = b'\n';
    }
    f.write_all_at(&buf, 0)?;
    if durable {
        f.sync_all()?;
    }
    Ok(())
}

/// The fields of a /proc/PID/stat line from field 3 (state) on. The command name (field 2)
/// may hold spaces and parentheses, so counting starts after its last ')'.
pub fn proc_stat_fields(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace())
}

/// The environment variable naming a [`failpoint`] to hang at.
pub const FAILPOINT_ENV: &str = "CRIUS_FAILPOINT";

/// A test hook: when the daemon runs with `CRIUS_FAILPOINT=<name>`, a request reaching the
/// point called `name` hangs there for good, so that an integration test can kill -9 the
/// daemon at exactly that step of a create and check what a restart makes of it. With
/// `CRIUS_FAILPOINT=<name>!fail` the request waits a second there (time for the test to
/// break something, e.g. freeze a monitor) and then fails, so its rollback runs. Unset (as
/// in production) it costs one environment lookup.
pub async fn failpoint(name: &str) -> Result<(), String> {
    let Ok(value) = std::env::var(FAILPOINT_ENV) else {
        return Ok(());
    };
    if value == name {
        tracing::warn!(failpoint = name, "failpoint reached; hanging here");
        std::future::pending::<()>().await;
    }
    if value.strip_suffix("!fail") == Some(name) {
        tracing::warn!(failpoint = name, "failpoint reached; failing in a second");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        return Err(format!("failpoint {name}: injected failure"));
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

/// Run short blocking work (a few file reads or writes: a record, a bundle file, a mount)
/// from wherever the caller is, without stalling an async worker. On a worker of the daemon's
/// multi-threaded runtime this is `block_in_place`: tokio hands the worker's other tasks to
/// another thread while this one blocks, and the calling task simply waits, so callers keep
/// borrowing what they hold (no `'static` closure as with `spawn_blocking`). On a blocking
/// thread, outside a runtime, or in a current-thread runtime (unit tests, the CLI), where
/// `block_in_place` does nothing useful or panics, it just runs `f`.
///
/// Use it for work bounded by a few syscalls; walks and other long work go to
/// `spawn_blocking`. The other branches of a `join!`/`select!` in the same task wait for `f`.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
