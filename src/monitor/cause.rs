//! What a helper and the processes libcontainer forks from it say about a failure.
//!
//! libcontainer's errors often name no cause ("failed syscall", "BrokenChannel"): the real one
//! (the syscall and errno) is only in a `tracing::error!` it emits first, often inside the
//! container's init, which is cloned from the helper and dies before it can answer. And a panic
//! anywhere in there reached us as a bare "the helper panicked".
//!
//! So a helper collects error events and panic messages in a pipe: the subscriber and the
//! panic hook write each as one line (one `write(2)` below PIPE_BUF, atomic between processes)
//! to a descriptor that the intermediate and init inherit until they exec the container's
//! program (close-on-exec). Both ends are non-blocking, so a flood of messages cannot block a
//! helper; what does not fit is dropped. When the helper's operation fails, it reads what is
//! there (everyone who wrote did so before the failure reached the helper) and adds it to its
//! error reply.

use nix::fcntl::OFlag;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Longest cause text added to an error reply.
const MAX_CAUSE: usize = 4 * 1024;

/// The write end of this process's collector (-1: none). A static, so that a panic hook and the
/// subscriber of any process cloned from the helper find it.
static SINK: AtomicI32 = AtomicI32::new(-1);

/// A helper's collector; dropped with the helper.
pub struct Causes {
    rx: std::fs::File,
    _tx: OwnedFd,
}

impl Causes {
    /// Installs the collector in this (helper) process: its subscriber and panic hook.
    /// `None` if no pipe could be made (the helper then runs without one).
    pub fn install() -> Option<Causes> {
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).ok()?;
        SINK.store(tx.as_raw_fd(), Ordering::SeqCst);
        std::panic::set_hook(Box::new(|info| {
            let message = panic_text(info.payload());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            write_line(&format!("panicked{at}: {message}"));
        }));
        Some(Causes {
            rx: std::fs::File::from(rx),
            _tx: tx,
        })
    }

    /// The subscriber for the helper: error events as plain lines into the pipe. Lower levels
    /// are disabled at their call sites, so they cost nothing (libcontainer warns about every
    /// v1 controller the node lacks on every create).
    pub fn dispatch() -> tracing::Dispatch {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| Sink)
            .with_max_level(tracing::Level::ERROR)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_level(false)
            .finish();
        tracing::Dispatch::new(subscriber)
    }

    /// What was said so far, one cause per `; `-separated item, at most [`MAX_CAUSE`] bytes,
    /// without the lines that contain one of `ignore`.
    pub fn take(&mut self, ignore: &[&str]) -> String {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.rx.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let raw = String::from_utf8_lossy(&raw);
        let kept: Vec<&str> = raw
            .lines()
            .filter(|l| !ignore.iter().any(|i| l.contains(i)))
            .collect();
        join_lines(&kept.join("\n"))
    }
}

/// The message of a panic payload (`panic!` with a literal or a formatted string).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// `text` with the collected causes, if any.
pub fn with_causes(text: String, causes: &str) -> String {
    if causes.is_empty() {
        text
    } else {
        format!("{text} (reported before: {causes})")
    }
}

fn join_lines(raw: &str) -> String {
    let mut out = String::new();
    for line in raw.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if out.len() + line.len() + 2 > MAX_CAUSE {
            out.push_str("; ...");
            break;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(line);
    }
    out
}

fn write_line(line: &str) {
    let fd: RawFd = SINK.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let mut data = line.replace('\n', " ").into_bytes();
    // One write of at most PIPE_BUF bytes is atomic: lines of several processes never mix.
    data.truncate(libc::PIPE_BUF - 1);
    data.push(b'\n');
    // SAFETY: fd is the collector's write end (or, in a process that closed it, a failed write
    // to a closed or unrelated descriptor number, which O_CLOEXEC keeps away from exec'd code).
    unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
}

/// A writer for one formatted event; it collects the line and writes it in one go on drop.
struct Sink;

thread_local! {
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LINE.with(|l| l.borrow_mut().extend_from_slice(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let line = LINE.with(|l| std::mem::take(&mut *l.borrow_mut()));
        write_line(String::from_utf8_lossy(&line).trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_joined_and_bounded() {
        assert_eq!(join_lines("a\n\n b \nc\n"), "a; b; c");
        let long = "x".repeat(3000);
        let joined = join_lines(&format!("{long}\n{long}\n"));
        assert!(joined.ends_with("; ..."), "{joined}");
        assert!(joined.len() <= MAX_CAUSE + 5);
        assert_eq!(with_causes("failed".into(), ""), "failed");
        assert_eq!(
            with_causes("failed".into(), "EPERM"),
            "failed (reported before: EPERM)"
        );
    }
}
