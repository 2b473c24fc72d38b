//! The built-in client's side of remotecommand over SPDY/3.1, for the URLs that Attach (and
//! streaming Exec) return: the upgrade request, one stream per channel as client-go opens
//! them, the local terminal in raw mode with its window size passed on, and the v4 status
//! at the end turned into an exit code. Frames are encoded with the server's SPDY code;
//! the stock clients (crictl, kubelet) are what checks it against an independent peer.

use crate::streaming::spdy::frame::{self, Frame, OutFrame};
use crate::streaming::spdy::headers::{Decoder, Encoder};
use bytes::Bytes;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::CliError;

const ERROR_ID: u32 = 1;
const STDIN_ID: u32 = 3;
const STDOUT_ID: u32 = 5;
const STDERR_ID: u32 = 7;
const RESIZE_ID: u32 = 9;

/// Which channels to open.
#[derive(Debug, Clone, Copy)]
pub struct Channels {
    pub stdin: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn failed(reason: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("streaming: {reason}"))
}

/// Runs one remotecommand session on `url`; returns the exit code the server reported.
pub async fn run(url: &str, ch: Channels) -> Result<i32, CliError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        failed(format!(
            "{url}: only http:// streaming URLs are supported by the built-in client"
        ))
    })?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut sock = TcpStream::connect(host)
        .await
        .map_err(|e| failed(format!("connect {host}: {e}")))?;
    let _ = sock.set_nodelay(true);
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
         X-Stream-Protocol-Version: v3.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    );
    sock.write_all(request.as_bytes())
        .await
        .map_err(|e| failed(format!("send the upgrade request: {e}")))?;
    let leftover = read_upgrade(&mut sock).await?;
    let (rd, wr) = sock.into_split();
    let mut rd = crate::streaming::http::Prefixed::new(leftover, rd);

    let (out_tx, out_rx) = mpsc::channel::<OutFrame>(64);
    let writer = tokio::spawn(write_loop(wr, out_rx));
    let mut open = vec![(ERROR_ID, "error")];
    if ch.stdin {
        open.push((STDIN_ID, "stdin"));
    }
    open.push((STDOUT_ID, "stdout"));
    if ch.stderr && !ch.tty {
        open.push((STDERR_ID, "stderr"));
    }
    if ch.tty {
        open.push((RESIZE_ID, "resize"));
    }
    for (id, kind) in &open {
        let headers = vec![("streamtype".to_owned(), (*kind).to_owned())];
        let _ = out_tx
            .send(OutFrame::SynStream {
                stream_id: *id,
                headers,
            })
            .await;
    }

    let raw = if ch.tty { RawTerminal::enable() } else { None };
    if ch.tty {
        tokio::spawn(send_sizes(out_tx.clone()));
    }
    if ch.stdin {
        spawn_stdin(out_tx.clone());
    }
    let result = read_loop(&mut rd, &out_tx, ch).await;
    drop(raw);
    drop(out_tx);
    writer.abort();
    let status = result?;
    exit_code(&status)
}

/// Reads the HTTP answer; anything but 101 is an error with the server's text.
async fn read_upgrade(sock: &mut TcpStream) -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let n = sock
            .read(&mut chunk)
            .await
            .map_err(|e| failed(format!("read the upgrade answer: {e}")))?;
        if n == 0 {
            return Err(failed(
                "the server closed the connection during the upgrade",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                if resp.code == Some(101) {
                    return Ok(buf[len..].to_vec());
                }
                let body = String::from_utf8_lossy(&buf[len..]).trim().to_owned();
                return Err(failed(format!(
                    "the server refused the upgrade: {} {}",
                    resp.code.unwrap_or(0),
                    body
                )));
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => {}
            Ok(httparse::Status::Partial) => return Err(failed("oversized upgrade answer")),
            Err(e) => return Err(failed(format!("bad upgrade answer: {e}"))),
        }
    }
}

async fn write_loop(mut wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<OutFrame>) {
    let mut enc = Encoder::new();
    let mut buf = Vec::new();
    while let Some(f) = rx.recv().await {
        buf.clear();
        frame::write(&mut buf, &f, &mut enc);
        if wr.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// Relays output until the error stream and the output streams have ended (or the server
/// closed the connection); returns what the error stream carried.
async fn read_loop(
    rd: &mut (impl tokio::io::AsyncRead + Unpin),
    out: &mpsc::Sender<OutFrame>,
    ch: Channels,
) -> Result<Vec<u8>, CliError> {
    let mut dec = Decoder::new();
    let mut status = Vec::new();
    let mut open_outputs = 1 + usize::from(ch.stderr && !ch.tty);
    let mut error_done = false;
    while !(error_done && open_outputs == 0) {
        let f = match frame::read(rd, &mut dec).await {
            Ok(f) => f,
            Err(frame::FrameError::Eof) => break,
            Err(e) => return Err(failed(e)),
        };
        match f {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                match stream_id {
                    STDOUT_ID => write_local(&mut std::io::stdout(), &data)?,
                    STDERR_ID => write_local(&mut std::io::stderr(), &data)?,
                    ERROR_ID => status.extend_from_slice(&data),
                    _ => {}
                }
                if fin {
                    match stream_id {
                        ERROR_ID => error_done = true,
                        STDOUT_ID | STDERR_ID => open_outputs = open_outputs.saturating_sub(1),
                        _ => {}
                    }
                }
            }
            Frame::RstStream { stream_id, .. } => match stream_id {
                ERROR_ID => error_done = true,
                STDOUT_ID | STDERR_ID => open_outputs = open_outputs.saturating_sub(1),
                _ => {}
            },
            Frame::Ping(id) => {
                let _ = out.send(OutFrame::Ping(id)).await;
            }
            Frame::GoAway { .. } if error_done => break,
            _ => {}
        }
    }
    Ok(status)
}

fn write_local(w: &mut impl Write, data: &[u8]) -> Result<(), CliError> {
    w.write_all(data)?;
    w.flush()?;
    Ok(())
}

/// The exit code from the error stream: v4 JSON status, or (v3) plain text, empty on
/// success.
fn exit_code(status: &[u8]) -> Result<i32, CliError> {
    if status.is_empty() {
        return Ok(0);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(status) else {
        return Err(failed(String::from_utf8_lossy(status).trim()));
    };
    if v["status"] == "Success" {
        return Ok(0);
    }
    if v["reason"] == "NonZeroExitCode"
        && let Some(code) = v["details"]["causes"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok())
    {
        return Ok(code);
    }
    Err(failed(v["message"].as_str().unwrap_or("failure")))
}

/// Local stdin, read on a thread of its own (a blocking read must not keep the runtime from
/// shutting down), sent as DATA on the stdin stream; its end ends the stream.
fn spawn_stdin(out: mpsc::Sender<OutFrame>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; frame::MAX_DATA_WRITE];
        loop {
            let (fin, data) = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => (true, Bytes::new()),
                Ok(n) => (false, Bytes::copy_from_slice(&buf[..n])),
            };
            let f = OutFrame::Data {
                stream_id: STDIN_ID,
                fin,
                data,
            };
            if out.blocking_send(f).is_err() || fin {
                return;
            }
        }
    });
}

/// The local terminal's size now and after every SIGWINCH.
async fn send_sizes(out: mpsc::Sender<OutFrame>) {
    let mut winch =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
    loop {
        if let Some((w, h)) = terminal_size() {
            let json = format!(r#"{{"Width":{w},"Height":{h}}}"#);
            let f = OutFrame::Data {
                stream_id: RESIZE_ID,
                fin: false,
                data: Bytes::from(json),
            };
            if out.send(f).await.is_err() {
                return;
            }
        }
        match &mut winch {
            Some(s) => {
                if s.recv().await.is_none() {
                    return;
                }
            }
            None => return,
        }
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, valid for the call.
    let rc = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

/// The local terminal in raw mode while attached with a tty (keys go to the container's tty
/// unprocessed); restored on drop.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enable() -> Option<Self> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_exit_codes() {
        assert_eq!(exit_code(b"").unwrap(), 0);
        assert_eq!(
            exit_code(br#"{"metadata":{},"status":"Success"}"#).unwrap(),
            0
        );
        let failure = br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(exit_code(failure).unwrap(), 3);
        assert!(exit_code(br#"{"status":"Failure","message":"boom"}"#).is_err());
        assert!(exit_code(b"plain text error").is_err());
    }
}
