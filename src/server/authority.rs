//! Any `:authority` a client sends over the CRI socket is accepted.
//!
//! On a unix socket the authority means nothing, and clients send what they like: Go sends
//! `localhost`, Python's grpcio the percent-encoded socket path (`run%2Fcrius%2Fcrius.sock`),
//! grpc-java the raw path. h2 (under tonic) refuses every value that is not a valid URI
//! authority and resets the stream with PROTOCOL_ERROR, so those clients could make no call.
//!
//! [`AuthorityFix`] sits between the accepted socket and tonic. It reads the client's HTTP/2
//! frames and passes every frame through unchanged except header blocks (HEADERS and their
//! CONTINUATION frames), which it decodes (HPACK, keeping the client's dynamic table), and
//! re-encodes with an invalid `:authority` replaced by `localhost`. Re-encoded blocks use only
//! literals "without indexing", so h2's decoder table never grows and stays consistent whatever
//! the client's encoder did. The server's bytes to the client pass through untouched. A stream
//! that does not start with the HTTP/2 preface is passed through as it is.
//!
//! The same re-encoding renames `grpc-timeout` to [`DEADLINE_HEADER`]: tonic's own timeout answers
//! an expired deadline with CANCELLED, where gRPC (and kubelet, critest) expect
//! DEADLINE_EXCEEDED, and it runs outside any layer we can add. `deadline.rs` enforces the
//! renamed header instead.

use bytes::{Buf, BufMut, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload the server accepts without a SETTINGS change (h2's default).
const MAX_FRAME: usize = 16_384;
/// The largest HPACK table a client may ask us to keep (h2 advertises 4096).
const MAX_TABLE: usize = 65_536;
/// What replaces an authority h2 would refuse.
const REPLACEMENT: &[u8] = b"localhost";
/// The client's `grpc-timeout`, renamed so that only `deadline.rs` acts on it.
pub const DEADLINE_HEADER: &str = "crius-grpc-timeout";

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Before the 24-byte client preface.
    Preface,
    Frames,
    /// Not HTTP/2: bytes are passed through.
    Passthrough,
}

/// A header block waiting for its CONTINUATION frames.
struct Pending {
    stream: u32,
    /// END_STREAM of the HEADERS frame.
    end_stream: bool,
    /// The 5 priority bytes, when the HEADERS frame had them.
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// The client's bytes, with every header block's `:authority` made acceptable to h2.
pub struct AuthorityFix<S> {
    io: S,
    mode: Mode,
    /// Read from the client, not yet handled.
    raw: BytesMut,
    /// Handled, not yet given to the server.
    out: BytesMut,
    decoder: loona_hpack::Decoder<'static>,
    pending: Option<Pending>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(io: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(MAX_TABLE);
        AuthorityFix {
            io,
            mode: Mode::Preface,
            raw: BytesMut::new(),
            out: BytesMut::new(),
            decoder,
            pending: None,
            eof: false,
        }
    }

    /// Moves what can be handled from `raw` to `out`.
    fn handle(&mut self) -> io::Result<()> {
        if self.mode == Mode::Preface {
            let n = self.raw.len().min(PREFACE.len());
            if self.raw[..n] != PREFACE[..n] {
                self.mode = Mode::Passthrough;
            } else if n == PREFACE.len() {
                self.out.extend_from_slice(&self.raw.split_to(n));
                self.mode = Mode::Frames;
            } else {
                return Ok(());
            }
        }
        if self.mode == Mode::Passthrough {
            let all = self.raw.split();
            self.out.extend_from_slice(&all);
            return Ok(());
        }
        while self.raw.len() >= FRAME_HEADER {
            let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
            if self.raw.len() < FRAME_HEADER + len {
                break;
            }
            let frame = self.raw.split_to(FRAME_HEADER + len);
            self.frame(&frame)?;
        }
        Ok(())
    }

    fn frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match kind {
            HEADERS => {
                let (priority, fragment) = headers_fragment(flags, payload)?;
                let pending = Pending {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    block: fragment.to_vec(),
                };
                if flags & END_HEADERS != 0 {
                    self.emit(pending)
                } else {
                    self.pending = Some(pending);
                    Ok(())
                }
            }
            CONTINUATION if self.pending.as_ref().is_some_and(|p| p.stream == stream) => {
                let mut pending = self.pending.take().expect("checked");
                pending.block.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    self.emit(pending)
                } else {
                    self.pending = Some(pending);
                    Ok(())
                }
            }
            // Everything else (and protocol errors, which h2 reports itself) as it came.
            _ => {
                self.out.extend_from_slice(frame);
                Ok(())
            }
        }
    }

    /// Decodes a complete header block and writes it out re-encoded.
    fn emit(&mut self, pending: Pending) -> io::Result<()> {
        let headers = self.decoder.decode(&pending.block).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("HPACK block from the client: {e}"),
            )
        })?;
        let block = encode(&headers);
        write_header_frames(&mut self.out, &pending, &block);
        Ok(())
    }
}

/// The priority bytes and the header block fragment of a HEADERS frame's payload.
fn headers_fragment(flags: u8, payload: &[u8]) -> io::Result<(Option<[u8; 5]>, &[u8])> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed HEADERS frame");
    let mut rest = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, tail) = rest.split_first().ok_or_else(bad)?;
        pad = n as usize;
        rest = tail;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        if rest.len() < 5 {
            return Err(bad());
        }
        let mut p = [0u8; 5];
        p.copy_from_slice(&rest[..5]);
        priority = Some(p);
        rest = &rest[5..];
    }
    if pad > rest.len() {
        return Err(bad());
    }
    Ok((priority, &rest[..rest.len() - pad]))
}

/// Whether h2 accepts `value` as an `:authority`.
fn acceptable(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// The block as literals without indexing, with an unacceptable `:authority` replaced and
/// `grpc-timeout` renamed.
fn encode(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let value: &[u8] = if name == b":authority" && !acceptable(value) {
            REPLACEMENT
        } else {
            value
        };
        let name: &[u8] = if name == b"grpc-timeout" {
            DEADLINE_HEADER.as_bytes()
        } else {
            name
        };
        // Literal header field without indexing, new name (RFC 7541, 6.2.2).
        out.push(0x00);
        string(&mut out, name);
        string(&mut out, value);
    }
    out
}

/// An HPACK string literal without Huffman coding (RFC 7541, 5.2).
fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// An HPACK integer with an `n`-bit prefix, the byte's other bits from `high` (RFC 7541, 5.1).
fn integer(out: &mut Vec<u8>, high: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A HEADERS frame (and CONTINUATION frames when the block is larger than a frame).
fn write_header_frames(out: &mut BytesMut, pending: &Pending, block: &[u8]) {
    let priority: &[u8] = match &pending.priority {
        Some(p) => p,
        None => &[],
    };
    let first_room = MAX_FRAME - priority.len();
    let (first, mut rest) = block.split_at(block.len().min(first_room));
    let mut flags = 0;
    if pending.end_stream {
        flags |= END_STREAM;
    }
    if pending.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_header(
        out,
        priority.len() + first.len(),
        HEADERS,
        flags,
        pending.stream,
    );
    out.extend_from_slice(priority);
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (part, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if tail.is_empty() { END_HEADERS } else { 0 };
        frame_header(out, part.len(), CONTINUATION, flags, pending.stream);
        out.extend_from_slice(part);
        rest = tail;
    }
}

fn frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    out.put_slice(&(len as u32).to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // A cut frame at EOF goes to the server as it is; h2 reports it.
                this.eof = true;
                let rest = this.raw.split();
                this.out.extend_from_slice(&rest);
                continue;
            }
            this.raw.extend_from_slice(read.filled());
            this.handle()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AuthorityFix<tokio::net::UnixStream> {
    type ConnectInfo = tonic::transport::server::UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests;
