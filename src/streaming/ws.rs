//! WebSocket (RFC 6455) server connections as Kubernetes' streaming clients use them
//! (client-go's WebSocket executor, kubectl, crictl `--transport websocket`): one connection
//! carries numbered channels, every message starting with its channel number.
//!
//! - `*.channel.k8s.io` and `*portforward.k8s.io`: binary messages, first byte the channel.
//! - `*base64.channel.k8s.io`: text messages, first byte the channel as an ASCII digit, the
//!   rest standard base64.
//! - `v5.channel.k8s.io`: the client may end one channel (stdin) with the message
//!   `[255, channel]`.
//!
//! Client frames must be masked (RFC 6455 section 5.1; an unmasked one closes the
//! connection with 1002). Fragmented messages are reassembled; control frames may come in
//! between. A message over [`MAX_MESSAGE`] closes the connection with 1009. Pings are
//! answered, a close is echoed. Backpressure comes from TCP, as for SPDY: a slow consumer
//! of one channel stops the reader.

use super::http;
use super::spdy::ConnectionGone;
use super::spdy::conn::{Activity, Closed, set_closed, spawn_watchdog, wait_closed, write_batched};
use base64::Engine;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

/// RFC 6455 section 1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest message accepted from a client. client-go writes stdin in 32 KiB pieces; this
/// leaves room for any sane client and bounds what one connection may make us buffer.
pub const MAX_MESSAGE: usize = 4 << 20;
/// Largest payload we put in one message.
const MAX_WRITE: usize = 32 << 10;
/// The v5 close signal's channel byte.
pub const CLOSE_SIGNAL: u8 = 255;
const OUT_QUEUE: usize = 64;
const IN_QUEUE: usize = 32;
/// After our close frame: how long the client may take to answer with its own.
const LINGER: Duration = Duration::from_secs(2);

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// Close codes (RFC 6455 section 7.4.1).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_INVALID_DATA: u16 = 1007;
const CLOSE_TOO_BIG: u16 = 1009;

/// Whether the request asks for a WebSocket upgrade.
pub fn is_upgrade(head: &http::RequestHead) -> bool {
    head.header_values("upgrade")
        .iter()
        .any(|u| u.eq_ignore_ascii_case("websocket"))
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.trim().as_bytes());
    ctx.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// Checks the handshake and picks the subprotocol: the first the client offers that is in
/// `supported` (as Kubernetes' wsstream does); `""` when the client offered none. `Err`:
/// status, reason and message of the refusal.
pub fn check_handshake(
    head: &http::RequestHead,
    supported: &[&str],
) -> Result<String, (u16, &'static str, String)> {
    if !head.method.eq_ignore_ascii_case("GET") {
        return Err((
            405,
            "Method Not Allowed",
            "a WebSocket upgrade must be a GET request".into(),
        ));
    }
    if !head.has_token("connection", "upgrade") {
        return Err((
            400,
            "Bad Request",
            "unable to upgrade: missing Connection: Upgrade".into(),
        ));
    }
    if head.header("sec-websocket-version") != Some("13") {
        return Err((
            426,
            "Upgrade Required",
            "unsupported Sec-WebSocket-Version (13 expected)".into(),
        ));
    }
    let key_ok = head
        .header("sec-websocket-key")
        .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
        .is_some_and(|k| k.len() == 16);
    if !key_ok {
        return Err((
            400,
            "Bad Request",
            "missing or malformed Sec-WebSocket-Key".into(),
        ));
    }
    let offered = head.header_values("sec-websocket-protocol");
    if offered.is_empty() {
        return Ok(String::new());
    }
    offered
        .iter()
        .find(|o| supported.contains(&o.as_str()))
        .cloned()
        .ok_or_else(|| {
            (
                403,
                "Forbidden",
                format!(
                    "unable to upgrade: none of the requested protocols {offered:?} is \
                     supported (server accepts {supported:?})"
                ),
            )
        })
}

/// Answers the handshake (or refuses it) and returns the chosen subprotocol.
pub async fn upgrade<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    head: &http::RequestHead,
    supported: &[&str],
) -> Option<String> {
    match check_handshake(head, supported) {
        Ok(protocol) => {
            let accept = accept_key(head.header("sec-websocket-key").unwrap_or_default());
            let mut headers = vec![
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept.as_str()),
            ];
            if !protocol.is_empty() {
                headers.push(("Sec-WebSocket-Protocol", protocol.as_str()));
            }
            http::respond_upgrade(io, &headers).await.ok()?;
            Some(protocol)
        }
        Err((code, reason, msg)) => {
            tracing::debug!(code, %msg, "WebSocket upgrade refused");
            let extra: &[(&str, &str)] = if code == 426 {
                &[("Sec-WebSocket-Version", "13")]
            } else {
                &[]
            };
            let _ = http::respond_error(io, code, reason, extra, &msg).await;
            None
        }
    }
}

/// How the channels are framed on this connection.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// Text messages with base64 payloads (the `base64.` protocols).
    pub base64: bool,
    /// The client may end a channel with `[255, channel]` (v5).
    pub close_signal: bool,
    /// Channels the server reads; what the client sends on others is dropped.
    pub readable: Vec<u8>,
}

enum Out {
    Msg { channel: u8, data: Bytes },
    Pong(Bytes),
    Close { code: u16, reason: String },
}

/// Writes on one channel (cheap to clone).
#[derive(Clone)]
pub struct ChannelWriter {
    channel: u8,
    tx: mpsc::Sender<Out>,
    closed_local: Arc<AtomicBool>,
}

impl ChannelWriter {
    /// Sends `data` in messages of at most 32 KiB; empty data sends one empty message (which
    /// Kubernetes' server uses to tell the client the channels are ready).
    pub async fn write(&self, data: &[u8]) -> Result<(), ConnectionGone> {
        if data.is_empty() {
            return self.send(Bytes::new()).await;
        }
        for chunk in data.chunks(MAX_WRITE) {
            self.send(Bytes::copy_from_slice(chunk)).await?;
        }
        Ok(())
    }

    pub async fn write_bytes(&self, data: Bytes) -> Result<(), ConnectionGone> {
        if data.len() <= MAX_WRITE {
            return self.send(data).await;
        }
        self.write(&data).await
    }

    /// The protocol has no per-channel end from the server: later writes are dropped.
    pub fn close(&self) {
        self.closed_local.store(true, Ordering::SeqCst);
    }

    async fn send(&self, data: Bytes) -> Result<(), ConnectionGone> {
        if self.closed_local.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.tx
            .send(Out::Msg {
                channel: self.channel,
                data,
            })
            .await
            .map_err(|_| ConnectionGone)
    }
}

/// The handler's view of the connection.
pub struct Session {
    readers: HashMap<u8, mpsc::Receiver<Bytes>>,
    tx: mpsc::Sender<Out>,
}

impl Session {
    /// What the client sends on `channel` (one of [`Opts::readable`]); taken once.
    pub fn take_reader(&mut self, channel: u8) -> Option<mpsc::Receiver<Bytes>> {
        self.readers.remove(&channel)
    }

    pub fn writer(&self, channel: u8) -> ChannelWriter {
        ChannelWriter {
            channel,
            tx: self.tx.clone(),
            closed_local: Default::default(),
        }
    }
}

/// Runs the connection on `io` until `handler` returns (or the client is gone, or the
/// connection idled out: the handler is dropped then, with what it owns), then closes it
/// with a close frame.
pub async fn serve<IO, F, Fut>(io: IO, idle: Option<Duration>, opts: Opts, handler: F) -> Closed
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    F: FnOnce(Session) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (rd, wr) = tokio::io::split(io);
    let activity = Arc::new(Activity::new());
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let (closed_tx, closed_rx) = watch::channel(Closed::Open);
    let closed_tx = Arc::new(closed_tx);
    let mut routes = HashMap::new();
    let mut readers = HashMap::new();
    for ch in &opts.readable {
        let (tx, rx) = mpsc::channel(IN_QUEUE);
        routes.insert(*ch, tx);
        readers.insert(*ch, rx);
    }
    let writer = tokio::spawn(write_loop(
        wr,
        out_rx,
        opts.base64,
        activity.clone(),
        closed_tx.clone(),
    ));
    let mut reader = tokio::spawn(read_loop(
        BufReader::with_capacity(64 << 10, rd),
        opts.clone(),
        routes,
        out_tx.clone(),
        activity.clone(),
        closed_tx.clone(),
    ));
    let watchdog = idle.map(|limit| spawn_watchdog(limit, activity.clone(), closed_tx.clone()));
    let session = Session {
        readers,
        tx: out_tx.clone(),
    };
    tokio::select! {
        () = handler(session) => {}
        () = wait_closed(closed_rx.clone()) => {
            tracing::debug!(why = ?*closed_rx.borrow(), "WebSocket client gone before the handler finished");
        }
    }
    let code = match *closed_rx.borrow() {
        Closed::Idle => CLOSE_GOING_AWAY,
        _ => CLOSE_NORMAL,
    };
    let _ = out_tx
        .send(Out::Close {
            code,
            reason: String::new(),
        })
        .await;
    drop(out_tx);
    // The writer stops after the close frame (queued data first).
    let _ = tokio::time::timeout(LINGER * 5, writer).await;
    if let Some(w) = watchdog {
        w.abort();
    }
    // Let the client answer our close; then the connection is dropped either way.
    if tokio::time::timeout(LINGER, &mut reader).await.is_err() {
        reader.abort();
    }
    closed_rx.borrow().clone()
}

/// SPDY tunnelled in WebSocket binary messages (client-go's `SPDY/3.1+portforward.k8s.io`,
/// what `kubectl port-forward`/`crictl port-forward --transport websocket` speak): returns a
/// byte stream the SPDY server runs on; pumps move the message payloads in and out.
pub fn tunnel<IO>(io: IO) -> tokio::io::DuplexStream
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (near, far) = tokio::io::duplex(256 << 10);
    let (mut rd, mut wr) = tokio::io::split(io);
    let (mut far_rd, mut far_wr) = tokio::io::split(far);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Out>(8);
    tokio::spawn(async move {
        let mut rd = BufReader::with_capacity(64 << 10, &mut rd);
        loop {
            match read_frame(&mut rd, 0).await {
                Ok(Some((_, OP_BINARY | OP_CONT | OP_TEXT, p))) => {
                    if far_wr.write_all(&p).await.is_err() {
                        break;
                    }
                }
                Ok(Some((_, OP_PING, p))) => {
                    let _ = ctl_tx.send(Out::Pong(Bytes::from(p))).await;
                }
                Ok(Some((_, OP_PONG, _))) => {}
                Ok(Some((_, OP_CLOSE, _))) | Ok(None) => break,
                Ok(Some(_)) => break,
                Err(Violation(code, msg)) => {
                    tracing::warn!(code, error = %msg, "bad WebSocket frame; closing the SPDY tunnel");
                    let _ = ctl_tx.send(Out::Close { code, reason: msg }).await;
                    break;
                }
            }
        }
        // EOF for the SPDY server.
        let _ = far_wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        let mut frame = Vec::with_capacity(40 << 10);
        loop {
            frame.clear();
            let done = tokio::select! {
                n = far_rd.read(&mut buf) => match n {
                    Ok(0) | Err(_) => {
                        encode(&mut frame, &Out::Close { code: CLOSE_NORMAL, reason: String::new() }, false);
                        true
                    }
                    Ok(n) => {
                        put_frame(&mut frame, OP_BINARY, &[&buf[..n]]);
                        false
                    }
                },
                Some(ctl) = ctl_rx.recv() => encode(&mut frame, &ctl, false),
            };
            if wr.write_all(&frame).await.is_err() || done {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    near
}

/// Appends one unmasked server frame.
fn put_frame(buf: &mut Vec<u8>, opcode: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    buf.push(0x80 | opcode);
    if len < 126 {
        buf.push(len as u8);
    } else if len <= u16::MAX as usize {
        buf.push(126);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        buf.push(127);
        buf.extend_from_slice(&(len as u64).to_be_bytes());
    }
    for p in parts {
        buf.extend_from_slice(p);
    }
}

fn encode(buf: &mut Vec<u8>, out: &Out, base64: bool) -> bool {
    match out {
        Out::Msg { channel, data } if base64 => {
            let text = base64::engine::general_purpose::STANDARD.encode(data);
            put_frame(buf, OP_TEXT, &[&[b'0' + *channel], text.as_bytes()]);
        }
        Out::Msg { channel, data } => put_frame(buf, OP_BINARY, &[&[*channel], data.as_ref()]),
        Out::Pong(p) => put_frame(buf, OP_PONG, &[p.as_ref()]),
        Out::Close { code, reason } => {
            let reason = &reason.as_bytes()[..reason.len().min(120)];
            put_frame(buf, OP_CLOSE, &[&code.to_be_bytes(), reason]);
            return true;
        }
    }
    false
}

async fn write_loop<W: AsyncWrite + Unpin>(
    wr: W,
    rx: mpsc::Receiver<Out>,
    base64: bool,
    activity: Arc<Activity>,
    closed: Arc<watch::Sender<Closed>>,
) {
    write_batched(wr, rx, activity, closed, |buf, o| encode(buf, o, base64)).await;
}

/// Why reading stopped with a protocol violation: the close code and the log line.
struct Violation(u16, String);

fn violation(code: u16, msg: impl Into<String>) -> Violation {
    Violation(code, msg.into())
}

/// Reads one frame: (fin, opcode, unmasked payload). `Ok(None)`: clean EOF before a frame.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    in_message: usize,
) -> Result<Option<(bool, u8, Vec<u8>)>, Violation> {
    let io = |e: std::io::Error| violation(CLOSE_PROTOCOL, format!("read: {e}"));
    let mut h = [0u8; 2];
    match rd.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io(e)),
    }
    let fin = h[0] & 0x80 != 0;
    if h[0] & 0x70 != 0 {
        return Err(violation(
            CLOSE_PROTOCOL,
            "reserved bits set (no extension was negotiated)",
        ));
    }
    let opcode = h[0] & 0x0f;
    if h[1] & 0x80 == 0 {
        return Err(violation(CLOSE_PROTOCOL, "unmasked client frame"));
    }
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            rd.read_exact(&mut b).await.map_err(io)?;
            u16::from_be_bytes(b) as u64
        }
        127 => {
            let mut b = [0u8; 8];
            rd.read_exact(&mut b).await.map_err(io)?;
            u64::from_be_bytes(b)
        }
        n => n as u64,
    };
    if opcode >= 0x8 {
        if len > 125 || !fin {
            return Err(violation(
                CLOSE_PROTOCOL,
                "control frame fragmented or over 125 bytes",
            ));
        }
    } else if len > (MAX_MESSAGE - in_message.min(MAX_MESSAGE)) as u64 {
        return Err(violation(
            CLOSE_TOO_BIG,
            format!("message over {MAX_MESSAGE} bytes (frame of {len})"),
        ));
    }
    let mut mask = [0u8; 4];
    rd.read_exact(&mut mask).await.map_err(io)?;
    let mut payload = vec![0u8; len as usize];
    rd.read_exact(&mut payload).await.map_err(io)?;
    unmask(&mut payload, mask);
    Ok(Some((fin, opcode, payload)))
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    opts: Opts,
    mut routes: HashMap<u8, mpsc::Sender<Bytes>>,
    out: mpsc::Sender<Out>,
    activity: Arc<Activity>,
    closed: Arc<watch::Sender<Closed>>,
) {
    let mut message: Option<(u8, Vec<u8>)> = None;
    let why = loop {
        let in_message = message.as_ref().map_or(0, |(_, m)| m.len());
        let (fin, opcode, payload) = match read_frame(&mut rd, in_message).await {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(Closed::Client),
            Err(v) => break Err(v),
        };
        activity.touch();
        let complete = match opcode {
            OP_TEXT | OP_BINARY => {
                if message.is_some() {
                    break Err(violation(
                        CLOSE_PROTOCOL,
                        "new message inside a fragmented one",
                    ));
                }
                if fin {
                    Some((opcode, payload))
                } else {
                    message = Some((opcode, payload));
                    None
                }
            }
            OP_CONT => {
                let Some((_, m)) = message.as_mut() else {
                    break Err(violation(CLOSE_PROTOCOL, "continuation without a message"));
                };
                m.extend_from_slice(&payload);
                if fin { message.take() } else { None }
            }
            OP_PING => {
                let _ = out.send(Out::Pong(Bytes::from(payload))).await;
                None
            }
            OP_PONG => None,
            OP_CLOSE => {
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    CLOSE_NORMAL
                };
                let _ = out
                    .send(Out::Close {
                        code,
                        reason: String::new(),
                    })
                    .await;
                break Ok(Closed::Client);
            }
            other => {
                break Err(violation(
                    CLOSE_PROTOCOL,
                    format!("unknown opcode {other:#x}"),
                ));
            }
        };
        let Some((_, data)) = complete else { continue };
        let (channel, data) = match decode(&data, opts.base64) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(v) => break Err(v),
        };
        if opts.close_signal && channel == CLOSE_SIGNAL {
            // [255, n]: the client is done sending on channel n.
            if let Some(n) = data.first() {
                routes.remove(n);
            }
            continue;
        }
        if data.is_empty() {
            continue;
        }
        if let Some(tx) = routes.get(&channel)
            && tx.send(data).await.is_err()
        {
            // Nobody reads this channel any more; drop what arrives on it.
            routes.remove(&channel);
        }
    };
    drop(routes);
    let why = match why {
        Ok(c) => c,
        Err(Violation(code, msg)) => {
            // A broken frame ends this connection only.
            tracing::warn!(code, error = %msg, "bad WebSocket frame; closing the streaming connection");
            let _ = out
                .send(Out::Close {
                    code,
                    reason: msg.clone(),
                })
                .await;
            Closed::Error(msg)
        }
    };
    closed.send_if_modified(|c| set_closed(c, why));
}

/// Splits a complete message into its channel and payload. `Ok(None)`: an empty message.
fn decode(msg: &[u8], base64: bool) -> Result<Option<(u8, Bytes)>, Violation> {
    let Some((&first, rest)) = msg.split_first() else {
        return Ok(None);
    };
    if !base64 {
        return Ok(Some((first, Bytes::copy_from_slice(rest))));
    }
    let channel = first.wrapping_sub(b'0');
    if channel > 9 {
        return Err(violation(
            CLOSE_INVALID_DATA,
            format!("base64 message with channel byte {first:#x}"),
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(rest)
        .map(|d| Some((channel, Bytes::from(d))))
        .map_err(|e| violation(CLOSE_INVALID_DATA, format!("bad base64 payload: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn unmask_is_xor_with_the_key() {
        let mask = [1, 2, 3, 4];
        let mut d: Vec<u8> = (0..11).collect();
        unmask(&mut d, mask);
        let want: Vec<u8> = (0..11u8).map(|i| i ^ mask[i as usize % 4]).collect();
        assert_eq!(d, want);
    }

    #[test]
    fn base64_messages_carry_an_ascii_channel() {
        let (ch, data) = decode(b"0aGk=", true).ok().flatten().unwrap();
        assert_eq!((ch, &data[..]), (0, &b"hi"[..]));
        assert!(decode(b"\x00hi", true).is_err());
        let (ch, data) = decode(b"\x04{}", false).ok().flatten().unwrap();
        assert_eq!((ch, &data[..]), (4, &b"{}"[..]));
        assert!(decode(b"", false).ok().flatten().is_none());
    }

    #[tokio::test]
    async fn unmasked_and_oversized_frames_are_violations() {
        let unmasked = [0x82u8, 0x01, 0x00];
        let r = read_frame(&mut &unmasked[..], 0).await;
        assert!(matches!(r, Err(Violation(CLOSE_PROTOCOL, _))));
        let mut big = vec![0x82u8, 0xff];
        big.extend_from_slice(&((MAX_MESSAGE as u64) + 1).to_be_bytes());
        let r = read_frame(&mut &big[..], 0).await;
        assert!(matches!(r, Err(Violation(CLOSE_TOO_BIG, _))));
    }
}
