//! Short-lived helper children: every libcontainer call runs in a child forked from the monitor
//! for that one call. libcontainer changes its caller (oom_score_adj, dumpable flag, cwd) and
//! pulls megabytes of code and heap into it; a helper takes all of that with it when it exits,
//! and the container's init, whose parent the helper was, is handed to the monitor (the
//! subreaper).

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cause::{self, Causes};
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
    let (child, rx) = spawn(what, keep, &[], op)?;
    let status = wait(what, child)?;
    parse_reply(what, &drain(rx), status)
}

/// Like [`run_keeping`], but returns as soon as the reply is complete and leaves the exiting
/// helper to the caller's reaping (SIGCHLD). A helper's exit can take milliseconds: the create
/// helper's private mount namespace is torn down then, which waits for an expedited RCU grace
/// period. Without a reply, the helper's exit decides as in [`run_keeping`].
pub fn run_keeping_reply_first<F>(
    what: &'static str,
    keep: &[RawFd],
    ignore: &'static [&'static str],
    op: F,
) -> Result<String, HelperError>
where
    F: FnOnce() -> Result<String, String>,
{
    let (child, rx) = spawn(what, keep, ignore, op)?;
    // SAFETY: pidfd_open has no memory arguments; a failure leaves us on waitpid below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
    let pidfd = (pidfd >= 0).then(|| {
        // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) }
    });
    let _ = fcntl(rx.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let mut reply = Vec::new();
    let mut pipe = std::fs::File::from(rx);
    if let Some(pidfd) = &pidfd {
        loop {
            let mut fds = [
                PollFd::new(pipe.as_fd(), PollFlags::POLLIN),
                PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(source) => return Err(HelperError::Wait { what, source }),
            }
            let exited = fds[1].any().unwrap_or(false);
            read_available(&mut pipe, &mut reply);
            if complete(&reply) {
                return parse_reply(what, &reply, WaitStatus::StillAlive);
            }
            if exited {
                break;
            }
        }
    }
    let status = wait(what, child)?;
    read_available(&mut pipe, &mut reply);
    parse_reply(what, &reply, status)
}

/// Forks the helper running `op`; returns its pid and the read end of its reply pipe.
/// Error events whose text contains one of `ignore` are left out of the reply.
fn spawn<F>(
    what: &'static str,
    keep: &[RawFd],
    ignore: &[&str],
    op: F,
) -> Result<(Pid, OwnedFd), HelperError>
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
            child(tx, keep, ignore, op)
        }
        ForkResult::Parent { child } => {
            drop(tx);
            drop(op);
            Ok((child, rx))
        }
    }
}

fn wait(what: &'static str, child: Pid) -> Result<WaitStatus, HelperError> {
    loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            other => return other.map_err(|source| HelperError::Wait { what, source }),
        }
    }
}

/// Length of a reply's header: the tag byte and the text's length (u32, little endian).
const HEADER: usize = 5;

fn complete(reply: &[u8]) -> bool {
    reply.len() >= HEADER
        && reply.len() - HEADER
            >= u32::from_le_bytes([reply[1], reply[2], reply[3], reply[4]]) as usize
}

fn child<F>(tx: OwnedFd, keep: &[RawFd], ignore: &[&str], op: F) -> !
where
    F: FnOnce() -> Result<String, String>,
{
    sys::reset_signals();
    let mut keep = keep.to_vec();
    keep.push(tx.as_raw_fd());
    sys::close_fds_except(&keep);
    // The monitor's log writer drops whatever a helper (or its children) logs; what matters of
    // it is the cause of a failure, which goes into the reply (see `cause.rs`).
    let mut causes = Causes::install();
    let dispatch = match &causes {
        Some(_) => Causes::dispatch(),
        None => tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
    };
    let result = tracing::dispatcher::with_default(&dispatch, || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(op))
    })
    .unwrap_or_else(|payload| {
        Err(format!(
            "the helper panicked: {}",
            cause::panic_text(payload.as_ref())
        ))
    })
    .map_err(|text| match causes.as_mut() {
        Some(c) => cause::with_causes(text, &c.take(ignore)),
        None => text,
    });
    let (tag, text, code) = match result {
        Ok(text) => (b'+', text, 0),
        Err(text) => (b'-', text, 1),
    };
    let text = &text.as_bytes()[..text.len().min(MAX_REPLY)];
    let mut msg = Vec::with_capacity(HEADER + text.len());
    msg.push(tag);
    msg.extend_from_slice(&(text.len() as u32).to_le_bytes());
    msg.extend_from_slice(text);
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
    let mut out = Vec::new();
    read_available(&mut std::fs::File::from(rx), &mut out);
    out
}

/// Appends what a non-blocking pipe holds now to `out`, up to EOF or "would block".
fn read_available(pipe: &mut std::fs::File, out: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}

fn parse_reply(
    what: &'static str,
    reply: &[u8],
    status: WaitStatus,
) -> Result<String, HelperError> {
    let text = || String::from_utf8_lossy(&reply[HEADER..]).into_owned();
    match reply.first() {
        Some(b'+') if complete(reply) => Ok(text()),
        Some(b'-') if complete(reply) => Err(HelperError::Failed {
            what,
            reason: text(),
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

    fn framed(tag: u8, text: &str) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(text.len() as u32).to_le_bytes());
        v.extend_from_slice(text.as_bytes());
        v
    }

    #[test]
    fn replies_are_parsed() {
        let ok = WaitStatus::Exited(Pid::from_raw(1), 0);
        assert_eq!(parse_reply("x", &framed(b'+', "42"), ok).unwrap(), "42");
        let err = parse_reply("create", &framed(b'-', "no such file"), ok).unwrap_err();
        assert_eq!(err.to_string(), "create failed: no such file");
        let none = parse_reply(
            "start",
            b"",
            WaitStatus::Signaled(Pid::from_raw(1), nix::sys::signal::Signal::SIGSEGV, false),
        )
        .unwrap_err();
        assert!(none.to_string().contains("killed by SIGSEGV"), "{none}");
        let cut = framed(b'+', "12345");
        assert!(!complete(&cut[..7]));
        assert!(
            parse_reply("x", &cut[..7], ok).is_err(),
            "a cut reply is no reply"
        );
    }

    #[test]
    fn reply_first_reports_replies_and_silent_deaths() {
        let reply = run_keeping_reply_first("ok", &[], &[], || Ok("done".to_owned())).unwrap();
        assert_eq!(reply, "done");
        let failed = run_keeping_reply_first("failing", &[], &[], || Err("nope".to_owned()));
        assert_eq!(failed.unwrap_err().to_string(), "failing failed: nope");
        let silent = run_keeping_reply_first("silent", &[], &[], || {
            // SAFETY: ends the forked child at once, before it could reply.
            unsafe { libc::_exit(3) }
        });
        let e = silent.unwrap_err().to_string();
        assert!(e.contains("without a reply (exit code 3)"), "{e}");
        // The helpers that replied stay unreaped here (the monitor's SIGCHLD loop reaps them);
        // reaping with -1 in a test would steal other tests' children.
    }
}
