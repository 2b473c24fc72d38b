//! The client side of the CRI streaming protocols, over WebSocket, for the built-in verbs
//! (`crius exec`, `crius port-forward`, `crius attach`): connect to the URL a CRI call
//! returned, relay the local terminal or sockets, and read the exit status.
//!
//! remotecommand speaks `v5.channel.k8s.io` (stdin's end is the close signal `[255, 0]`);
//! port-forward speaks `v4.portforward.k8s.io`, one WebSocket connection per local TCP
//! connection (as kubectl's WebSocket port-forward does per stream pair).

use base64::Engine;
use bytes::Bytes;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE_SIGNAL: u8 = 255;
/// Largest message we accept from the server.
const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("streaming URL {0:?}: only http://HOST:PORT/... URLs are supported")]
    Url(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("the streaming server refused the upgrade: {0}")]
    Refused(String),
    #[error("streaming connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("streaming protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Remote(String),
}

/// A WebSocket client connection: frames in, masked frames out.
pub struct WsClient {
    rd: BufReader<OwnedReadHalf>,
    wr: WsWriter,
    /// The subprotocol the server chose.
    pub protocol: String,
}

/// The sending half (owned by one task).
pub struct WsWriter {
    wr: OwnedWriteHalf,
}

/// A message from the server.
pub enum Incoming {
    /// A data message on a channel.
    Data(u8, Vec<u8>),
    /// The server closed the connection (close frame or EOF).
    Closed,
}

fn split_url(url: &str) -> Result<(String, String), StreamError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| StreamError::Url(url.to_owned()))?;
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((addr.to_owned(), path.to_owned()))
}

impl WsClient {
    /// Connects to `url` (with `query` appended) offering `protocols`.
    pub async fn connect(
        url: &str,
        query: &str,
        protocols: &[&str],
    ) -> Result<WsClient, StreamError> {
        let (addr, mut path) = split_url(url)?;
        if !query.is_empty() {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(query);
        }
        let sock = TcpStream::connect(&addr)
            .await
            .map_err(|source| StreamError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = sock.set_nodelay(true);
        let (rd, mut wr) = sock.into_split();
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {}\r\nUser-Agent: crius\r\n\r\n",
            protocols.join(", ")
        );
        wr.write_all(req.as_bytes()).await?;
        let mut rd = BufReader::with_capacity(64 << 10, rd);
        // The response head, byte by byte up to the blank line: nothing of the first frame
        // may be consumed with it.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let b = rd.read_u8().await.map_err(|e| {
                StreamError::Refused(format!("connection closed during the handshake: {e}"))
            })?;
            head.push(b);
            if head.len() > 16 << 10 {
                return Err(StreamError::Refused("response head too large".into()));
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let status_line = text.lines().next().unwrap_or_default();
        if status_line.split_whitespace().nth(1) != Some("101") {
            // The body (the reason) follows for error responses.
            let mut body = vec![0u8; 4096];
            let n = tokio::time::timeout(std::time::Duration::from_secs(2), rd.read(&mut body))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            return Err(StreamError::Refused(format!(
                "{status_line}: {}",
                String::from_utf8_lossy(&body[..n]).trim()
            )));
        }
        let header = |name: &str| {
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        };
        let mut sha = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        sha.update(key.as_bytes());
        sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let want = base64::engine::general_purpose::STANDARD.encode(sha.finish().as_ref());
        if header("sec-websocket-accept").as_deref() != Some(want.as_str()) {
            return Err(StreamError::Refused(
                "wrong Sec-WebSocket-Accept in the answer".into(),
            ));
        }
        Ok(WsClient {
            rd,
            wr: WsWriter { wr },
            protocol: header("sec-websocket-protocol").unwrap_or_default(),
        })
    }

    pub fn split(self) -> (WsReader, WsWriter) {
        (
            WsReader {
                rd: self.rd,
                base64: self.protocol.contains("base64"),
            },
            self.wr,
        )
    }
}

/// The receiving half.
pub struct WsReader {
    rd: BufReader<OwnedReadHalf>,
    base64: bool,
}

impl WsReader {
    /// The next data message; pings are not answered (the server sends none).
    pub async fn next(&mut self) -> Result<Incoming, StreamError> {
        let mut message: Vec<u8> = Vec::new();
        loop {
            let mut h = [0u8; 2];
            match self.rd.read_exact(&mut h).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(Incoming::Closed);
                }
                Err(e) => return Err(e.into()),
            }
            let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
            let len = match h[1] & 0x7f {
                126 => self.rd.read_u16().await? as usize,
                127 => self.rd.read_u64().await? as usize,
                n => n as usize,
            };
            if h[1] & 0x80 != 0 {
                return Err(StreamError::Protocol("the server masked a frame".into()));
            }
            if len + message.len() > MAX_MESSAGE {
                return Err(StreamError::Protocol(format!("message of {len} bytes")));
            }
            let mut payload = vec![0u8; len];
            self.rd.read_exact(&mut payload).await?;
            match opcode {
                0x8 => return Ok(Incoming::Closed),
                0x9 | 0xa => continue,
                _ => message.extend_from_slice(&payload),
            }
            if !fin {
                continue;
            }
            let Some((&ch, rest)) = message.split_first() else {
                message.clear();
                continue;
            };
            if self.base64 {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .map_err(|e| StreamError::Protocol(format!("base64: {e}")))?;
                return Ok(Incoming::Data(ch.wrapping_sub(b'0'), data));
            }
            return Ok(Incoming::Data(ch, rest.to_vec()));
        }
    }
}

impl WsWriter {
    async fn frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(payload.len() + 14);
        buf.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            buf.push(0x80 | len as u8);
        } else if len <= u16::MAX as usize {
            buf.push(0x80 | 126);
            buf.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            buf.push(0x80 | 127);
            buf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask: [u8; 4] = rand::random();
        buf.extend_from_slice(&mask);
        buf.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.wr.write_all(&buf).await
    }

    /// Sends `data` on `channel` (binary framing).
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> std::io::Result<()> {
        let mut msg = Vec::with_capacity(data.len() + 1);
        msg.push(channel);
        msg.extend_from_slice(data);
        self.frame(0x2, &msg).await
    }

    /// Says the client is done sending on `channel` (v5).
    pub async fn close_channel(&mut self, channel: u8) -> std::io::Result<()> {
        self.frame(0x2, &[CLOSE_SIGNAL, channel]).await
    }

    /// A normal close frame.
    pub async fn close(&mut self) -> std::io::Result<()> {
        self.frame(0x8, &1000u16.to_be_bytes()).await
    }
}

/// What a remotecommand session uses on this side.
pub struct RemoteOpts {
    /// Relay our stdin.
    pub stdin: bool,
    /// The remote side has a tty: put ours in raw mode and send window sizes.
    pub tty: bool,
}

/// The exit code a v4+ status carries (0 for Success).
pub fn exit_code_of(status: &[u8]) -> Result<i32, StreamError> {
    let v: serde_json::Value = serde_json::from_slice(status)
        .map_err(|e| StreamError::Protocol(format!("unreadable status: {e}")))?;
    if v["status"] == "Success" {
        return Ok(0);
    }
    if v["reason"] == "NonZeroExitCode" {
        let code = v["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str()?.parse().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(StreamError::Remote(
        v["message"]
            .as_str()
            .unwrap_or("remote command failed")
            .to_owned(),
    ))
}

/// Puts a terminal in raw mode until dropped.
struct RawMode {
    fd: std::os::fd::RawFd,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'_>) -> Option<RawMode> {
        use nix::sys::termios;
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode {
            fd: fd.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the fd is our stdin, open for the whole process.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = nix::sys::termios::tcsetattr(fd, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// The local terminal's size as (columns, rows).
fn window_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [1, 0, 2] {
        // SAFETY: TIOCGWINSZ writes one winsize into the valid pointer.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
            return Some((ws.ws_col, ws.ws_row));
        }
    }
    None
}

/// Runs a remotecommand session (exec or attach) on `url`: relays our stdin/stdout/stderr,
/// the terminal size (at the start and on SIGWINCH), and returns the remote exit code.
pub async fn remote_command(url: &str, opts: RemoteOpts) -> Result<i32, StreamError> {
    let client = WsClient::connect(url, "", &["v5.channel.k8s.io", "v4.channel.k8s.io"]).await?;
    let v5 = client.protocol == "v5.channel.k8s.io";
    let (mut rd, mut wr) = client.split();
    let stdin_fd = std::io::stdin();
    let _raw = if opts.tty {
        RawMode::enter(stdin_fd.as_fd())
    } else {
        None
    };
    // One writer task; stdin and resizes queue for it. It closes the WebSocket only once the
    // session is over: with nothing to send (no stdin, no tty) its queue ends at once, and a
    // close then would end the exec before it ran.
    let (tx, mut rx) = mpsc::channel::<(u8, Option<Bytes>)>(16);
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let mut queue_open = true;
        loop {
            tokio::select! {
                item = rx.recv(), if queue_open => match item {
                    Some((ch, data)) => {
                        let r = match data {
                            Some(d) => wr.send(ch, &d).await,
                            None => wr.close_channel(ch).await,
                        };
                        if r.is_err() {
                            return;
                        }
                    }
                    None => queue_open = false,
                },
                _ = &mut done_rx => break,
            }
        }
        let _ = wr.close().await;
    });
    let mut tasks = tokio::task::JoinSet::new();
    if opts.tty {
        let tx = tx.clone();
        tasks.spawn(async move {
            let send = |tx: &mpsc::Sender<(u8, Option<Bytes>)>| {
                let tx = tx.clone();
                async move {
                    if let Some((w, h)) = window_size() {
                        let json = format!(r#"{{"Width":{w},"Height":{h}}}"#);
                        let _ = tx.send((RESIZE, Some(Bytes::from(json)))).await;
                    }
                }
            };
            send(&tx).await;
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                send(&tx).await;
            }
        });
    }
    if opts.stdin {
        // A plain thread reads our stdin (blocking reads cannot be cancelled; the thread is
        // left to the process exit once the session ends).
        let tx = tx.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut input = std::io::stdin().lock();
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(&buf[..n]);
                        if tx.blocking_send((STDIN, Some(chunk))).is_err() {
                            return;
                        }
                    }
                }
            }
            if v5 {
                let _ = tx.blocking_send((STDIN, None));
            }
        });
    }
    drop(tx);
    let mut status = Vec::new();
    let result = loop {
        match rd.next().await {
            Ok(Incoming::Data(STDOUT, d)) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&d)?;
                out.flush()?;
            }
            Ok(Incoming::Data(STDERR, d)) => {
                let mut err = std::io::stderr().lock();
                err.write_all(&d)?;
                err.flush()?;
            }
            Ok(Incoming::Data(ERROR, d)) => status.extend_from_slice(&d),
            Ok(Incoming::Data(..)) => {}
            Ok(Incoming::Closed) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    tasks.abort_all();
    let _ = done_tx.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), writer).await;
    result?;
    if status.is_empty() {
        return Ok(0);
    }
    exit_code_of(&status)
}

/// Forwards one accepted local connection to `port` in the pod over its own WebSocket.
pub async fn forward_connection(url: &str, port: u16, local: TcpStream) -> Result<(), StreamError> {
    let client =
        WsClient::connect(url, &format!("port={port}"), &["v4.portforward.k8s.io"]).await?;
    let (mut rd, mut wr) = client.split();
    let (mut lrd, mut lwr) = local.into_split();
    let up = async {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match lrd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if wr.send(0, &buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Hold the connection open: the pod's answer may still be on its way.
        std::future::pending::<()>().await;
    };
    let down = relay_down(&mut rd, &mut lwr);
    tokio::select! {
        () = up => Ok(()),
        r = down => r,
    }
}

/// Copies the pod's side to the local socket; the first message on each channel is the port
/// number, anything else on the error channel is the failure.
async fn relay_down(rd: &mut WsReader, lwr: &mut OwnedWriteHalf) -> Result<(), StreamError> {
    let (mut seen_data_port, mut seen_error_port) = (false, false);
    loop {
        match rd.next().await? {
            Incoming::Data(0, d) => {
                if !seen_data_port {
                    seen_data_port = true;
                    continue;
                }
                lwr.write_all(&d).await?;
            }
            Incoming::Data(1, d) => {
                if !seen_error_port {
                    seen_error_port = true;
                    continue;
                }
                if !d.is_empty() {
                    return Err(StreamError::Remote(
                        String::from_utf8_lossy(&d).into_owned(),
                    ));
                }
            }
            Incoming::Data(..) => {}
            Incoming::Closed => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_exit_codes() {
        assert_eq!(exit_code_of(br#"{"status":"Success"}"#).unwrap(), 0);
        let fail = br#"{"status":"Failure","reason":"NonZeroExitCode",
            "details":{"causes":[{"reason":"ExitCode","message":"127"}]}}"#;
        assert_eq!(exit_code_of(fail).unwrap(), 127);
        let internal = br#"{"status":"Failure","reason":"InternalError","message":"boom"}"#;
        assert!(matches!(exit_code_of(internal), Err(StreamError::Remote(m)) if m == "boom"));
    }

    #[test]
    fn only_plain_http_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:1234/exec/tok").unwrap(),
            ("127.0.0.1:1234".into(), "/exec/tok".into())
        );
        assert!(split_url("https://x/exec").is_err());
    }
}
