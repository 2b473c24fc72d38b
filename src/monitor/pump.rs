//! Moves the container's output from its pipes (or pty) into the CRI log. Driven by the
//! monitor's poll loop: the monitor polls [`Pump::fds`] and calls [`Pump::on_ready`]; after
//! the container exited, [`Pump::drain`] reads what is left until every writer is gone.
//! Every chunk read also goes to the attached clients ([`Fanout`]).

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use super::attach::Fanout;
use super::cri_log::{CriLog, LineSplitter, MAX_LINE, Stream};
use super::stdio::MonitorStdio;

/// Bytes taken from one stream per wake-up: small enough to keep the monitor's stack and
/// resident set small, large enough that a chatty container is not slowed down by us.
const READ_CHUNK: usize = 16 * 1024;

struct Output {
    fd: OwnedFd,
    stream: Stream,
    splitter: LineSplitter,
}

pub struct Pump {
    outputs: Vec<Output>,
    log: Option<CriLog>,
    /// Set after a failed log write, so a full disk yields one warning, not one per line.
    write_failed: bool,
}

fn nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

impl Pump {
    /// `ends.stdout` is the pty master for a tty container (logged as stdout). The stdin
    /// writer is not the pump's business (see [`Fanout`]) and is closed if still there.
    pub fn new(ends: MonitorStdio, log: Option<CriLog>) -> io::Result<Self> {
        let mut outputs = Vec::with_capacity(2);
        for (fd, stream) in [(ends.stdout, Stream::Stdout), (ends.stderr, Stream::Stderr)] {
            if let Some(fd) = fd {
                nonblocking(&fd)?;
                outputs.push(Output {
                    fd,
                    stream,
                    splitter: LineSplitter::new(MAX_LINE),
                });
            }
        }
        Ok(Self {
            outputs,
            log,
            write_failed: false,
        })
    }

    /// The descriptors to poll for input, in the order [`Pump::on_ready`] indexes them.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.outputs.iter().map(|o| o.fd.as_fd())
    }

    /// Handles the outputs at `ready` (indexes into [`Pump::fds`], ascending): reads once from
    /// each, and drops those that reached EOF.
    pub fn on_ready(&mut self, ready: &[usize], fanout: &mut Fanout) {
        for &i in ready.iter().rev() {
            if i < self.outputs.len() && self.read_once(i, fanout) {
                let mut done = self.outputs.remove(i);
                let log = &mut self.log;
                let failed = &mut self.write_failed;
                done.splitter
                    .finish(&mut |tag, content| write(log, failed, done.stream, tag, content));
            }
        }
    }

    /// Reads once from output `i`; true at end of stream.
    fn read_once(&mut self, i: usize, fanout: &mut Fanout) -> bool {
        let mut buf = [0u8; READ_CHUNK];
        let out = &mut self.outputs[i];
        let n = loop {
            match nix::unistd::read(out.fd.as_raw_fd(), &mut buf) {
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return false,
                // A pty master reports EIO once no slave is open: the tty's EOF.
                Ok(0) | Err(Errno::EIO) => return true,
                Err(e) => {
                    tracing::warn!(stream = out.stream.name(), error = %e, "reading container output");
                    return true;
                }
                Ok(n) => break n,
            }
        };
        let stream = out.stream;
        fanout.output(stream, &buf[..n]);
        let log = &mut self.log;
        let failed = &mut self.write_failed;
        out.splitter.feed(&buf[..n], &mut |tag, content| {
            write(log, failed, stream, tag, content)
        });
        false
    }

    /// Reads every output to its end (the container is gone, so its writers are closing), or
    /// until `deadline` when something outside the container still holds a write end.
    pub fn drain(&mut self, deadline: Instant, fanout: &mut Fanout) {
        while !self.outputs.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    open = self.outputs.len(),
                    "container output still open after its exit; closing it"
                );
                break;
            }
            let ready: Vec<usize> = {
                let mut fds: Vec<PollFd> = self
                    .fds()
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                    .collect();
                let ms = left.as_millis().min(u128::from(u16::MAX)) as u16;
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "poll on container output failed");
                        break;
                    }
                }
                fds.iter()
                    .enumerate()
                    .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(i, _)| i)
                    .collect()
            };
            self.on_ready(&ready, fanout);
        }
        // Whatever is left is cut off; its pending partial line is still written.
        for mut out in std::mem::take(&mut self.outputs) {
            let (log, failed) = (&mut self.log, &mut self.write_failed);
            out.splitter
                .finish(&mut |tag, content| write(log, failed, out.stream, tag, content));
        }
    }

    /// Reopens the log file at its path (log rotation).
    pub fn reopen_log(&mut self) -> Result<(), String> {
        let Some(log) = &mut self.log else {
            return Err("the container has no log path".to_owned());
        };
        log.reopen()
            .map_err(|e| format!("reopen {}: {e}", log.path().display()))?;
        self.write_failed = false;
        tracing::info!(path = %log.path().display(), "container log reopened");
        Ok(())
    }
}

fn write(
    log: &mut Option<CriLog>,
    failed: &mut bool,
    stream: Stream,
    tag: super::cri_log::Tag,
    content: &[u8],
) {
    let Some(log) = log else { return };
    match log.write(stream, tag, content) {
        Ok(()) => *failed = false,
        Err(e) if !*failed => {
            *failed = true;
            tracing::warn!(path = %log.path().display(), error = %e, "writing the container log");
        }
        Err(_) => {}
    }
}
