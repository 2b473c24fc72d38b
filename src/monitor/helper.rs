//! Short-lived helper children: every libcontainer call runs in a child forked from the monitor
//! for that one call. libcontainer changes its caller (oom_score_adj, dumpable flag, cwd) and
//! pulls megabytes of code and heap into it; a helper takes all of that with it when it exits,
//! and the container's init, whose parent the helper was, is handed to the monitor (the
//! subreaper).

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::sys;

/// Longest reply a helper sends; longer error texts are cut (the pipe must never fill up,
/// because nobody reads it before the helper has exited).
const MAX_REPLY: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("{what}: cannot create the helper's pipe: {source}")]
    Pipe { what: &'static str, source: Errno },
    #[error("{what}: cannot fork a helper: {source}")]
    Fork { what: &'static str, source: Errno },
    #[error("{what}: waiting for the helper failed: {source}")]
    Wait { what: &'static str, source: Errno },
    #[error("{what} failed: {reason}")]
    Failed { what: &'static str, reason: String },
    #[error("{what}: the helper ended without a reply ({status})")]
    NoReply { what: &'static str, status: String },
}

/// Runs `op` in a forked child and returns its reply. The child starts with default signal
/// handling and no descriptors of ours except its reply pipe.
pub fn run<F>(what: &'static str, op: F) -> Result<String, HelperError>
where
    F: FnOnce() -> Result<String, String>,
{
    run_keeping(what, &[], op)
}

/// Like [`run`], but the child also keeps the descriptors in `keep` (the container's stdio,
/// which `op` owns and hands to libcontainer). The caller's copies close when `op` is dropped
/// here in the parent, so the container's init ends up the only holder of the write ends.
pub fn run_keeping<F>(what: &'static str, keep: &[RawFd], op: F) -> Result<String, HelperError>
where
    F: FnOnce() -> Result<String, String>,
{
    let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|source| HelperError::Pipe { what, source })?;
    // SAFETY: the monitor is single-threaded, so the child is a full copy with no lock held by
    // another thread.
    match unsafe { fork() }.map_err(|source| HelperError::Fork { what, source })? {
        ForkResult::Child => {
            drop(rx);
            child(tx, keep, op)
        }
        ForkResult::Parent { child } => {
            drop(tx);
            drop(op);
            let status = loop {
                match waitpid(child, None) {
                    Err(Errno::EINTR) => continue,
                    other => break other.map_err(|source| HelperError::Wait { what, source })?,
                }
            };
            parse_reply(what, &drain(rx), status)
        }
    }
}

fn child<F>(tx: OwnedFd, keep: &[RawFd], op: F) -> !
where
    F: FnOnce() -> Result<String, String>,
{
    sys::reset_signals();
    let mut keep = keep.to_vec();
    keep.push(tx.as_raw_fd());
    sys::close_fds_except(&keep);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(op))
        .unwrap_or_else(|_| Err("the helper panicked".to_owned()));
    let (tag, text, code) = match result {
        Ok(text) => (b'+', text, 0),
        Err(text) => (b'-', text, 1),
    };
    let mut msg = Vec::with_capacity(1 + text.len().min(MAX_REPLY));
    msg.push(tag);
    msg.extend_from_slice(&text.as_bytes()[..text.len().min(MAX_REPLY)]);
    let _ = std::fs::File::from(tx).write_all(&msg);
    // SAFETY: _exit skips atexit handlers and destructors that belong to the monitor's copy of
    // the process state.
    unsafe { libc::_exit(code) }
}

/// Reads what the exited helper left in the pipe. The container's init may still hold the write
/// end (it is cloned from the helper and keeps it until execve closes it), so read only what is
/// there instead of waiting for EOF.
fn drain(rx: OwnedFd) -> Vec<u8> {
    let _ = fcntl(rx.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let mut file = std::fs::File::from(rx);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    out
}

fn parse_reply(
    what: &'static str,
    reply: &[u8],
    status: WaitStatus,
) -> Result<String, HelperError> {
    match reply.split_first() {
        Some((b'+', text)) => Ok(String::from_utf8_lossy(text).into_owned()),
        Some((b'-', text)) => Err(HelperError::Failed {
            what,
            reason: String::from_utf8_lossy(text).into_owned(),
        }),
        _ => Err(HelperError::NoReply {
            what,
            status: describe(status),
        }),
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit code {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by {sig}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Pid;

    #[test]
    fn replies_are_parsed() {
        let ok = WaitStatus::Exited(Pid::from_raw(1), 0);
        assert_eq!(parse_reply("x", b"+42", ok).unwrap(), "42");
        let err = parse_reply("create", b"-no such file", ok).unwrap_err();
        assert_eq!(err.to_string(), "create failed: no such file");
        let none = parse_reply(
            "start",
            b"",
            WaitStatus::Signaled(Pid::from_raw(1), nix::sys::signal::Signal::SIGSEGV, false),
        )
        .unwrap_err();
        assert!(none.to_string().contains("killed by SIGSEGV"), "{none}");
    }
}
