//! Process-level plumbing for the monitor: signals, file descriptors, stdio, subreaping.
//! Everything here assumes a single-threaded process (the monitor never starts threads).

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

/// Signals the monitor takes through its signalfd instead of default handlers: SIGCHLD to reap,
/// and the terminating ones so that stopping the daemon (or its service unit) cannot take a
/// container down with it: they are logged and otherwise ignored.
pub const HANDLED: [Signal; 4] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
];

/// Blocks the handled signals and returns a non-blocking signalfd that receives them.
pub fn signalfd() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in HANDLED {
        mask.add(s);
    }
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// Gives a freshly forked child default signal handling: an empty mask and default
/// dispositions. Both survive execve, so without this a container would start with SIGCHLD and
/// SIGTERM blocked, or SIGPIPE ignored, inherited from the monitor (or from the daemon).
pub fn reset_signals() {
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for s in Signal::iterator() {
        if matches!(s, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code in this process.
        let _ = unsafe { signal::signal(s, SigHandler::SigDfl) };
    }
}

/// Closes every descriptor from 3 up except those in `keep`, so that a helper (and the
/// container it clones) holds none of the monitor's sockets and pipes.
pub fn close_fds_except(keep: &[RawFd]) {
    let close = |first: u32, last: u32| {
        if first <= last {
            // SAFETY: close_range only closes descriptors; nothing else in this single-threaded
            // child uses the closed ones afterwards.
            unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
        }
    };
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd >= 3)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut next = 3u32;
    for fd in keep {
        if fd > next {
            close(next, fd - 1);
        }
        next = fd + 1;
    }
    close(next, u32::MAX);
}

/// Points stdin at /dev/null and stdout/stderr at `log` (appending), so the monitor holds no
/// descriptor of whoever started it (the daemon waits for EOF on those pipes).
pub fn redirect_stdio(log: &Path) -> std::io::Result<()> {
    let null = OpenOptions::new().read(true).open("/dev/null")?;
    let log = OpenOptions::new().create(true).append(true).open(log)?;
    nix::unistd::dup2(null.as_raw_fd(), 0)?;
    nix::unistd::dup2(log.as_raw_fd(), 1)?;
    nix::unistd::dup2(log.as_raw_fd(), 2)?;
    Ok(())
}

/// Makes this process the reaper of its orphaned descendants: the container's init is handed
/// to us when the helper that created it exits.
pub fn set_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Unmaps the resident pages of read-only, unmodified file mappings (our code, libc's): they
/// are clean page-cache pages that refault on use, so this only drops the ones start-up and
/// libcontainer's setup path touched. The kernel maps code in 64 KiB fault-around chunks, so a
/// few dozen functions called once otherwise keep megabytes resident for the monitor's whole
/// life. Mappings with private (copy-on-write) pages, such as relocated data, are left alone:
/// zapping those would lose their contents.
pub fn trim_file_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut ranges = Vec::with_capacity(32);
    let mut candidate: Option<(usize, usize)> = None;
    let mut rss = 0u64;
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Rss:") {
            rss = kib(v);
        } else if let Some(v) = line.strip_prefix("Anonymous:") {
            if let Some(range) = candidate.take()
                && rss > 0
                && kib(v) == 0
            {
                ranges.push(range);
            }
        } else if let Some(range) = mapping_header(line) {
            candidate = range;
            rss = 0;
        }
    }
    drop(smaps);
    // Zap last, in one tight loop: whatever runs after the zap is faulted back in.
    for (start, end) in ranges {
        // SAFETY: the range is a whole private, read-only file mapping of this process with no
        // anonymous pages; dropping its page-table entries makes later accesses refault the
        // same file contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

fn kib(v: &str) -> u64 {
    v.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// For a smaps header line ("start-end perms offset dev inode path"): `Some(Some(range))` for a
/// private read-only mapping of a regular file, `Some(None)` for any other mapping, `None` for
/// a line that is not a header.
fn mapping_header(line: &str) -> Option<Option<(usize, usize)>> {
    let mut fields = line.split_whitespace();
    let (range, perms) = (fields.next()?, fields.next()?);
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let path = fields.nth(3).unwrap_or("");
    let eligible = perms.len() == 4
        && perms.starts_with('r')
        && &perms[1..2] == "-"
        && perms.ends_with('p')
        && path.starts_with('/')
        && !path.starts_with("/dev/");
    Some(eligible.then_some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_read_only_file_mappings_are_trimmed() {
        let text = "55a9-55b0 r-xp 0044c000 fe:00 5376540    /usr/bin/crius";
        assert_eq!(mapping_header(text), Some(Some((0x55a9, 0x55b0))));
        for other in [
            "55a9-55b0 rw-p 00ea3000 fe:00 5376540    /usr/bin/crius",
            "55a9-55b0 r--s 00000000 00:05 12         /dev/shm/x",
            "55a9-55b0 r--p 00000000 00:05 12         /dev/zero",
            "7ffc-7ffd r-xp 00000000 00:00 0          [vdso]",
            "7ffc-7ffd rw-p 00000000 00:00 0",
        ] {
            assert_eq!(mapping_header(other), Some(None), "{other}");
        }
        assert_eq!(mapping_header("Rss:                 576 kB"), None);
        assert_eq!(kib("   576 kB"), 576);
    }
}
