//! A small WebSocket (RFC 6455) client for the streaming tests, written apart from the
//! server's framing (src/streaming/ws.rs) so a bug shared by both ends cannot hide. It speaks
//! what client-go's WebSocket executor and port-forwarder send: masked binary messages whose
//! first byte is the channel.
#![allow(dead_code)]

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub struct WsUpgrade {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl WsUpgrade {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }
}

pub struct Ws {
    pub rd: WsRead,
    pub wr: WsWrite,
}

pub struct WsRead {
    rd: BufReader<OwnedReadHalf>,
}

pub struct WsWrite {
    wr: OwnedWriteHalf,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
    /// The TCP connection ended without a close frame.
    Eof,
}

/// SHA-1 of key + GUID, base64: what the server must answer.
fn expected_accept(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// Upgrades `url` (+ `query`) to WebSocket offering `protocols`; the client only on 101.
pub async fn ws_connect(url: &str, query: &str, protocols: &[&str]) -> (WsUpgrade, Option<Ws>) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let path = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let sock = TcpStream::connect(addr).await.expect("connect");
    let (rd, mut wr) = sock.into_split();
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
    );
    if !protocols.is_empty() {
        req.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            protocols.join(", ")
        ));
    }
    req.push_str("\r\n");
    wr.write_all(req.as_bytes()).await.unwrap();
    let mut rd = BufReader::new(rd);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match rd.read_u8().await {
            Ok(b) => head.push(b),
            Err(_) => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut up = WsUpgrade {
        status,
        head,
        body: String::new(),
    };
    if status != 101 {
        let mut body = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut body)).await;
        up.body = String::from_utf8_lossy(&body).into_owned();
        return (up, None);
    }
    assert_eq!(
        up.header("sec-websocket-accept"),
        Some(expected_accept(&key)),
        "Sec-WebSocket-Accept"
    );
    (
        up,
        Some(Ws {
            rd: WsRead { rd },
            wr: WsWrite { wr },
        }),
    )
}

impl WsWrite {
    /// Writes one raw frame: `masked` false makes an (illegal) unmasked client frame.
    pub async fn raw_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let m = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n < 65536 => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key: [u8; 4] = rand::random();
            f.extend_from_slice(&key);
            f.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        } else {
            f.extend_from_slice(payload);
        }
        // A server that closed on us may make this fail; the reader sees why.
        let _ = self.wr.write_all(&f).await;
    }

    /// Writes bytes as they are (a frame header with no payload behind it, say).
    pub async fn raw_bytes(&mut self, b: &[u8]) {
        let _ = self.wr.write_all(b).await;
    }

    /// Sends `data` on `channel` as one binary message.
    pub async fn send(&mut self, channel: u8, data: &[u8]) {
        let mut p = vec![channel];
        p.extend_from_slice(data);
        self.raw_frame(true, 0x2, &p, true).await;
    }

    /// Sends one message in `parts` fragments.
    pub async fn send_fragmented(&mut self, channel: u8, data: &[u8], parts: usize) {
        let mut p = vec![channel];
        p.extend_from_slice(data);
        let size = p.len().div_ceil(parts);
        let chunks: Vec<&[u8]> = p.chunks(size).collect();
        for (i, c) in chunks.iter().enumerate() {
            let op = if i == 0 { 0x2 } else { 0x0 };
            self.raw_frame(i + 1 == chunks.len(), op, c, true).await;
        }
    }

    pub async fn ping(&mut self, data: &[u8]) {
        self.raw_frame(true, 0x9, data, true).await;
    }

    pub async fn close(&mut self) {
        self.raw_frame(true, 0x8, &1000u16.to_be_bytes(), true)
            .await;
    }
}

impl WsRead {
    /// The next message (fragments joined).
    pub async fn next(&mut self) -> Msg {
        let mut partial: Option<(u8, Vec<u8>)> = None;
        loop {
            let mut h = [0u8; 2];
            if self.rd.read_exact(&mut h).await.is_err() {
                return Msg::Eof;
            }
            assert_eq!(h[1] & 0x80, 0, "server frames are never masked");
            let len = match h[1] & 0x7f {
                126 => self.rd.read_u16().await.unwrap() as usize,
                127 => self.rd.read_u64().await.unwrap() as usize,
                n => n as usize,
            };
            let mut p = vec![0u8; len];
            if self.rd.read_exact(&mut p).await.is_err() {
                return Msg::Eof;
            }
            let (fin, op) = (h[0] & 0x80 != 0, h[0] & 0xf);
            match op {
                0x8 => {
                    return Msg::Close((p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]])));
                }
                0x9 => return Msg::Ping(p),
                0xa => return Msg::Pong(p),
                0x0 => partial.as_mut().expect("continuation").1.extend(p),
                op => partial = Some((op, p)),
            }
            if fin {
                let (op, p) = partial.take().unwrap();
                return if op == 0x1 {
                    Msg::Text(p)
                } else {
                    Msg::Binary(p)
                };
            }
        }
    }
}

/// What one remotecommand session over WebSocket returned.
#[derive(Debug, Default)]
pub struct WsExec {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: Vec<u8>,
    pub close: Option<u16>,
}

impl WsExec {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The exit code from the v4/v5 status (as client-go reads it).
    pub fn exit_code(&self) -> i32 {
        let v: serde_json::Value = serde_json::from_slice(&self.status)
            .unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(&self.status)));
        if v["status"] == "Success" {
            return 0;
        }
        assert_eq!(v["reason"], "NonZeroExitCode", "{v}");
        v["details"]["causes"][0]["message"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// Reads channels 1-3 until the server closes.
pub async fn collect(rd: &mut WsRead) -> WsExec {
    let mut r = WsExec::default();
    loop {
        match rd.next().await {
            Msg::Binary(p) => {
                let Some((&ch, data)) = p.split_first() else {
                    continue;
                };
                match ch {
                    1 => r.stdout.extend_from_slice(data),
                    2 => r.stderr.extend_from_slice(data),
                    3 => r.status.extend_from_slice(data),
                    other => panic!("unexpected channel {other}"),
                }
            }
            Msg::Close(code) => {
                r.close = code;
                return r;
            }
            Msg::Eof => return r,
            Msg::Ping(_) | Msg::Pong(_) | Msg::Text(_) => {}
        }
    }
}

/// One v5 exec: sends `stdin` (then the close signal), `sizes` on the resize channel, and
/// collects the rest.
pub async fn ws_exec(url: &str, stdin: Option<&[u8]>, sizes: &[(u16, u16)]) -> WsExec {
    let (up, ws) = ws_connect(url, "", &["v5.channel.k8s.io"]).await;
    assert_eq!(up.status, 101, "{} {}", up.head, up.body);
    assert_eq!(
        up.header("sec-websocket-protocol").as_deref(),
        Some("v5.channel.k8s.io")
    );
    let Ws { mut rd, mut wr } = ws.unwrap();
    let send = async move {
        for (w, h) in sizes {
            wr.send(4, format!(r#"{{"Width":{w},"Height":{h}}}"#).as_bytes())
                .await;
        }
        if let Some(data) = stdin {
            for chunk in data.chunks(32 << 10) {
                wr.send(0, chunk).await;
            }
            wr.raw_frame(true, 0x2, &[255, 0], true).await;
        }
        wr
    };
    let (mut wr, r) = tokio::join!(
        send,
        tokio::time::timeout(Duration::from_secs(120), collect(&mut rd))
    );
    wr.close().await;
    r.expect("exec over WebSocket finished")
}
