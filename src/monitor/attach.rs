//! Attached clients of the monitor: each gets a copy of the container's output as the pump
//! reads it, may feed the container's stdin and resize its tty. Driven by the monitor's poll
//! loop like the pump: [`Fanout::poll_fds`] lists what to wait for, [`Fanout::on_ready`]
//! handles it. Nothing here blocks: a client whose queued output passes [`CLIENT_BACKLOG`]
//! is disconnected (and the log says so), so a slow reader can never hold up the container
//! or its log. The frame format is described at `AttachRequest` in proto/monitor.proto.

use nix::errno::Errno;
use nix::poll::PollFlags;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::cri_log::Stream;

pub const KIND_STDOUT: u8 = 1;
pub const KIND_STDERR: u8 = 2;
pub const KIND_STDIN: u8 = 3;
pub const KIND_STDIN_END: u8 = 4;
pub const KIND_RESIZE: u8 = 5;
/// Largest payload of one attach frame.
pub const MAX_FRAME: usize = 64 * 1024;
/// Frame header: kind and big-endian length.
pub const HEADER: usize = 5;
/// Attached clients at once; each costs the monitor a socket and up to a backlog of memory.
pub const MAX_CLIENTS: usize = 16;
/// Output queued for one client before it counts as unable to keep up.
const CLIENT_BACKLOG: usize = 1 << 20;
/// stdin bytes queued for the container before clients are no longer read from (the
/// container reads its stdin slower than clients send it).
const STDIN_BACKLOG: usize = 64 * 1024;
/// Bytes read from a client per wake-up.
const READ_CHUNK: usize = 16 * 1024;

struct Client {
    sock: UnixStream,
    serial: u64,
    /// Output not yet written to the client, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// Input read but not yet a whole frame.
    input: Vec<u8>,
    /// This client feeds stdin (and its end counts for stdin_once).
    stdin: bool,
    stdin_ended: bool,
    dead: bool,
}

impl Client {
    fn queued(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Writes what the socket takes now; false when the client is gone.
    fn flush(&mut self) -> bool {
        while self.sent < self.out.len() {
            match self.sock.write(&self.out[self.sent..]) {
                Ok(0) => return false,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent > CLIENT_BACKLOG / 2 {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        true
    }
}

/// What a client asked for in one input frame.
enum Input {
    Stdin(Vec<u8>),
    StdinEnd,
    Resize(u16, u16),
}

pub struct Fanout {
    id: String,
    clients: Vec<Client>,
    next_serial: u64,
    /// The container's stdin: the pipe's write end, or a duplicate of the pty master.
    stdin: Option<OwnedFd>,
    stdin_pending: Vec<u8>,
    /// stdin_once: close the container's stdin once `stdin_pending` is written.
    close_stdin: bool,
    /// The pty master, for window sizes.
    tty: Option<OwnedFd>,
    stdin_once: bool,
}

impl Fanout {
    /// `stdin`: where client stdin goes (`None` when the container has none). `tty`: the pty
    /// master of a tty container. `stdin_once` only matters without a tty (as in containerd:
    /// a tty's stdin is never closed on detach).
    pub fn new(id: &str, stdin: Option<OwnedFd>, tty: Option<OwnedFd>, stdin_once: bool) -> Self {
        Self {
            id: id.to_owned(),
            clients: Vec::new(),
            next_serial: 0,
            stdin,
            stdin_pending: Vec::new(),
            close_stdin: false,
            stdin_once: stdin_once && tty.is_none(),
            tty,
        }
    }

    /// Takes on a client whose Attach request was answered. `stdin`: it will send stdin.
    pub fn add(&mut self, sock: UnixStream, stdin: bool) -> io::Result<()> {
        sock.set_nonblocking(true)?;
        let serial = self.next_serial;
        self.next_serial += 1;
        tracing::info!(id = %self.id, client = serial, stdin, attached = self.clients.len() + 1, "client attached");
        self.clients.push(Client {
            sock,
            serial,
            out: Vec::new(),
            sent: 0,
            input: Vec::new(),
            stdin: stdin && self.stdin.is_some(),
            stdin_ended: false,
            dead: false,
        });
        Ok(())
    }

    /// Whether another client may attach.
    pub fn has_room(&self) -> bool {
        self.clients.iter().filter(|c| !c.dead).count() < MAX_CLIENTS
    }

    /// Copies container output to every client. Never blocks: a client whose queue passes
    /// the backlog is disconnected.
    pub fn output(&mut self, stream: Stream, data: &[u8]) {
        if self.clients.is_empty() || data.is_empty() {
            return;
        }
        let kind = match stream {
            Stream::Stdout => KIND_STDOUT,
            Stream::Stderr => KIND_STDERR,
        };
        for c in self.clients.iter_mut().filter(|c| !c.dead) {
            for chunk in data.chunks(MAX_FRAME) {
                c.out.push(kind);
                c.out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
                c.out.extend_from_slice(chunk);
            }
            // Try right away: most clients keep up, and then nothing stays queued.
            if !c.flush() {
                c.dead = true;
            } else if c.queued() > CLIENT_BACKLOG {
                tracing::warn!(id = %self.id, client = c.serial, queued = c.queued(),
                    "attached client does not keep up with the container's output; disconnecting it");
                c.dead = true;
            }
        }
    }

    /// Removes dead clients; a stdin client that goes counts as its stdin ending.
    fn sweep(&mut self) {
        let mut i = 0;
        while i < self.clients.len() {
            if self.clients[i].dead {
                let c = self.clients.remove(i);
                tracing::info!(id = %self.id, client = c.serial, attached = self.clients.len(), "client detached");
                if c.stdin && !c.stdin_ended {
                    self.stdin_end(c.serial);
                }
            } else {
                i += 1;
            }
        }
    }

    fn stdin_end(&mut self, serial: u64) {
        if self.stdin_once && self.stdin.is_some() && !self.close_stdin {
            tracing::info!(id = %self.id, client = serial, "stdin_once: closing the container's stdin after the first detach");
            self.close_stdin = true;
            self.write_stdin();
        }
    }

    /// The descriptors to poll and for what, in the order [`Fanout::on_ready`] expects.
    pub fn poll_fds(&mut self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        self.sweep();
        let reading = self.stdin_pending.len() < STDIN_BACKLOG;
        let mut fds: Vec<(BorrowedFd<'_>, PollFlags)> = self
            .clients
            .iter()
            .map(|c| {
                let mut f = PollFlags::empty();
                if reading {
                    f |= PollFlags::POLLIN;
                }
                if c.queued() > 0 {
                    f |= PollFlags::POLLOUT;
                }
                (c.sock.as_fd(), f)
            })
            .collect();
        if let Some(stdin) = &self.stdin
            && !self.stdin_pending.is_empty()
        {
            fds.push((stdin.as_fd(), PollFlags::POLLOUT));
        }
        fds
    }

    /// Handles what poll reported for [`Fanout::poll_fds`] (same order, same length).
    pub fn on_ready(&mut self, revents: &[PollFlags]) {
        let n = self.clients.len();
        for (i, r) in revents.iter().enumerate().take(n) {
            if r.is_empty() || self.clients[i].dead {
                continue;
            }
            if r.contains(PollFlags::POLLOUT) && !self.clients[i].flush() {
                self.clients[i].dead = true;
                continue;
            }
            if r.contains(PollFlags::POLLIN) {
                self.read_client(i);
            } else if r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                self.clients[i].dead = true;
            }
        }
        if revents.len() > n {
            self.write_stdin();
        }
        self.sweep();
    }

    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; READ_CHUNK];
        let c = &mut self.clients[i];
        match c.sock.read(&mut buf) {
            Ok(0) => {
                c.dead = true;
                return;
            }
            Ok(n) => c.input.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return;
            }
            Err(_) => {
                c.dead = true;
                return;
            }
        }
        let (inputs, bad) = parse_inputs(&mut c.input);
        let (serial, feeds) = (c.serial, c.stdin);
        if let Some(reason) = bad {
            tracing::warn!(id = %self.id, client = serial, %reason, "bad attach frame; disconnecting the client");
            c.dead = true;
        }
        for input in inputs {
            match input {
                Input::Stdin(data) if feeds && self.stdin.is_some() && !self.close_stdin => {
                    self.stdin_pending.extend_from_slice(&data);
                }
                Input::Stdin(_) => {}
                Input::StdinEnd => {
                    if feeds && !self.clients[i].stdin_ended {
                        self.clients[i].stdin_ended = true;
                        self.stdin_end(serial);
                    }
                }
                Input::Resize(cols, rows) => self.resize(cols, rows),
            }
        }
        self.write_stdin();
    }

    fn resize(&self, cols: u16, rows: u16) {
        let Some(tty) = &self.tty else { return };
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid for the call.
        let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            tracing::warn!(id = %self.id, error = %io::Error::last_os_error(), "resizing the container's tty");
        }
    }

    /// Writes queued stdin without blocking; closes stdin when stdin_once asked for it and
    /// everything queued is written.
    fn write_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.stdin_pending.clear();
            return;
        };
        let mut written = 0;
        while written < self.stdin_pending.len() {
            match nix::unistd::write(fd, &self.stdin_pending[written..]) {
                Ok(n) => written += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(e) => {
                    // EPIPE: nothing in the container reads its stdin any more.
                    tracing::info!(id = %self.id, error = %e, "the container's stdin is closed");
                    self.stdin = None;
                    self.stdin_pending.clear();
                    return;
                }
            }
        }
        self.stdin_pending.drain(..written);
        if self.close_stdin && self.stdin_pending.is_empty() {
            self.stdin = None;
        }
    }

    /// After the container's output ended: gives every client until `deadline` to take what
    /// is queued, then disconnects them all (their EOF says the output is complete).
    pub fn finish(&mut self, deadline: Instant) {
        use nix::poll::{PollFd, PollTimeout, poll};
        loop {
            self.clients
                .retain_mut(|c| !c.dead && c.flush() && c.queued() > 0);
            let left = deadline.saturating_duration_since(Instant::now());
            if self.clients.is_empty() || left.is_zero() {
                break;
            }
            let mut fds: Vec<PollFd> = self
                .clients
                .iter()
                .map(|c| PollFd::new(c.sock.as_fd(), PollFlags::POLLOUT))
                .collect();
            let ms = left.as_millis().min(u128::from(u16::MAX)) as u16;
            if matches!(poll(&mut fds, PollTimeout::from(ms)), Err(e) if e != Errno::EINTR) {
                break;
            }
        }
        if !self.clients.is_empty() {
            tracing::warn!(id = %self.id, clients = self.clients.len(), "attached clients did not take the last output in time");
        }
        self.clients.clear();
    }
}

/// Takes every whole frame from `buf`; returns them and the reason the rest is garbage.
fn parse_inputs(buf: &mut Vec<u8>) -> (Vec<Input>, Option<String>) {
    let mut inputs = Vec::new();
    let mut at = 0;
    let mut bad = None;
    while buf.len() - at >= HEADER {
        let kind = buf[at];
        let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if len > MAX_FRAME {
            bad = Some(format!("frame of {len} bytes"));
            break;
        }
        if buf.len() - at < HEADER + len {
            break;
        }
        let payload = &buf[at + HEADER..at + HEADER + len];
        at += HEADER + len;
        match kind {
            KIND_STDIN => inputs.push(Input::Stdin(payload.to_vec())),
            KIND_STDIN_END => inputs.push(Input::StdinEnd),
            KIND_RESIZE if len == 4 => inputs.push(Input::Resize(
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
            )),
            other => {
                bad = Some(format!("frame kind {other} of {len} bytes"));
                break;
            }
        }
    }
    if bad.is_some() {
        buf.clear();
    } else {
        buf.drain(..at);
    }
    (inputs, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_parse_across_reads() {
        let mut all = frame(KIND_STDIN, b"hello");
        all.extend(frame(KIND_RESIZE, &[0, 80, 0, 24]));
        all.extend(frame(KIND_STDIN_END, b""));
        let mut buf = all[..7].to_vec();
        let (got, bad) = parse_inputs(&mut buf);
        assert!(got.is_empty() && bad.is_none());
        buf.extend_from_slice(&all[7..]);
        let (got, bad) = parse_inputs(&mut buf);
        assert!(bad.is_none() && buf.is_empty());
        assert!(
            matches!(&got[..], [Input::Stdin(d), Input::Resize(80, 24), Input::StdinEnd] if d == b"hello")
        );
        let mut junk = frame(9, b"x");
        assert!(parse_inputs(&mut junk).1.is_some());
        let mut huge = vec![KIND_STDIN, 0xff, 0xff, 0xff, 0xff];
        assert!(parse_inputs(&mut huge).1.is_some());
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped_and_others_keep_theirs() {
        let mut f = Fanout::new("t", None, None, false);
        let (slow, _slow_peer) = UnixStream::pair().unwrap();
        let (fast, mut fast_peer) = UnixStream::pair().unwrap();
        f.add(slow, false).unwrap();
        f.add(fast, false).unwrap();
        fast_peer.set_nonblocking(true).unwrap();
        let chunk = vec![b'x'; 32 * 1024];
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..64 {
            f.output(Stream::Stdout, &chunk);
            let fds: Vec<PollFlags> = f.poll_fds().iter().map(|_| PollFlags::POLLOUT).collect();
            f.on_ready(&fds);
            while let Ok(n) = fast_peer.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got += n;
            }
        }
        assert_eq!(f.poll_fds().len(), 1, "the slow client is gone");
        assert_eq!(got, 64 * (chunk.len() + HEADER));
    }
}
