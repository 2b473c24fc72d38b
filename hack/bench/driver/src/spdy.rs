//! The least SPDY/3.1 client that runs a streaming Exec the way client-go's remotecommand v4
//! executor does (kubelet and crictl use it): upgrade, then the error, stdout and stderr streams
//! opened one after the other, each waiting for its SYN_REPLY, then frames read until the error
//! stream ends. It is the bench's own code, identical for both runtimes, and does only what
//! the measurement needs:
//! - header blocks are sent as zlib *without* the SPDY dictionary (stored blocks, sync flush):
//!   the FDICT bit stays clear, so Go's zlib reader (containerd) and crius' both read them
//!   without one;
//! - header blocks the server sends (SYN_REPLY, HEADERS) are never decoded: the bench only needs
//!   to know that a stream was answered, so no inflate context is kept;
//! - stdout is counted, not kept (100 MiB throughput); stderr and the error stream are kept.

use anyhow::{Context, Result, anyhow, bail};
use flate2::{Compress, Compression, FlushCompress};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Longest one exec may take from upgrade to the end of its error stream.
const EXEC_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest frame the bench accepts (the length field has 24 bits).
const MAX_FRAME: usize = 1 << 24;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 1;

/// What one exec gave back.
#[derive(Debug, Default)]
pub struct ExecOutcome {
    pub stdout_bytes: u64,
    pub stderr: Vec<u8>,
    /// The error stream: v4's JSON metav1.Status.
    pub status: Vec<u8>,
}

impl ExecOutcome {
    /// Ok when the status says Success; the status text otherwise.
    pub fn success(&self) -> Result<()> {
        let v: serde_json::Value = serde_json::from_slice(&self.status)
            .with_context(|| format!("status {:?}", String::from_utf8_lossy(&self.status)))?;
        match v["status"].as_str() {
            Some("Success") => Ok(()),
            _ => Err(anyhow!(
                "exec failed: {v} (stderr {:?})",
                String::from_utf8_lossy(&self.stderr)
            )),
        }
    }
}

/// `http://host:port/path` -> (host:port, path). The bench only meets plain-HTTP URLs.
fn split_url(url: &str) -> Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http:// URL: {url}"))?;
    let slash = rest.find('/').ok_or_else(|| anyhow!("no path in {url}"))?;
    Ok(rest.split_at(slash))
}

/// A control frame: version 3, `kind`, `flags`, then `body`.
fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(0x8003u16).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

/// One header block: count, then length-prefixed names and values, through the connection's
/// one compression context (flushed so the server can decode it on its own).
fn header_block(z: &mut Compress, headers: &[(&str, &str)]) -> Result<Vec<u8>> {
    let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
    for s in headers.iter().flat_map(|(n, v)| [n, v]) {
        plain.extend_from_slice(&(s.len() as u32).to_be_bytes());
        plain.extend_from_slice(s.as_bytes());
    }
    // Stored blocks: the input plus a few bytes of framing per block and the sync marker.
    let mut out = Vec::with_capacity(plain.len() + 64);
    z.compress_vec(&plain, &mut out, FlushCompress::Sync)
        .context("deflate header block")?;
    if out.len() == out.capacity() {
        bail!("header block did not fit its buffer");
    }
    Ok(out)
}

struct Session {
    rd: BufReader<OwnedReadHalf>,
    wr: BufWriter<OwnedWriteHalf>,
    z: Compress,
    next_id: u32,
}

/// One frame as the exec loop needs it.
enum Frame {
    Data {
        id: u32,
        fin: bool,
        len: usize,
    },
    Reply {
        id: u32,
        fin: bool,
    },
    Reset {
        id: u32,
        code: u32,
    },
    Ping(Vec<u8>),
    GoAway,
    /// The server closed the connection between frames.
    Closed,
    Other,
}

impl Session {
    /// Upgrades `url` to SPDY/3.1 offering remotecommand v4 only (exit status on the error
    /// stream), as client-go's executor does first.
    async fn connect(url: &str) -> Result<Self> {
        let (addr, path) = split_url(url)?;
        let sock = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        sock.set_nodelay(true)?;
        let (rd, wr) = sock.into_split();
        let (mut rd, mut wr) = (BufReader::new(rd), BufWriter::new(wr));
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: crius-bench\r\n\
             Content-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
        );
        wr.write_all(req.as_bytes()).await?;
        wr.flush().await?;
        let mut status_line = String::new();
        rd.read_line(&mut status_line).await?;
        // The rest of the head, up to the blank line; the SPDY session follows in the buffer.
        let mut line = String::new();
        loop {
            line.clear();
            if rd.read_line(&mut line).await? == 0 || line == "\r\n" {
                break;
            }
        }
        if status_line.split(' ').nth(1) != Some("101") {
            bail!("upgrade refused: {}", status_line.trim_end());
        }
        Ok(Self {
            rd,
            wr,
            z: Compress::new(Compression::none(), true),
            next_id: 1,
        })
    }

    async fn read_frame(&mut self, buf: &mut Vec<u8>) -> Result<Frame> {
        let mut h = [0u8; 8];
        if self.rd.fill_buf().await?.is_empty() {
            return Ok(Frame::Closed);
        }
        self.rd
            .read_exact(&mut h)
            .await
            .context("truncated frame")?;
        let flags = h[4];
        let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
        if len > MAX_FRAME {
            bail!("frame of {len} bytes");
        }
        buf.resize(len, 0);
        self.rd.read_exact(buf).await.context("truncated frame")?;
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff;
        if h[0] & 0x80 == 0 {
            return Ok(Frame::Data {
                id: be32(&h),
                fin: flags & FLAG_FIN != 0,
                len,
            });
        }
        let need = |n: usize| {
            if len < n {
                Err(anyhow!("control frame of {len} bytes"))
            } else {
                Ok(())
            }
        };
        Ok(match u16::from_be_bytes([h[2], h[3]]) {
            TYPE_SYN_REPLY => {
                need(4)?;
                Frame::Reply {
                    id: be32(buf),
                    fin: flags & FLAG_FIN != 0,
                }
            }
            TYPE_RST_STREAM => {
                need(8)?;
                Frame::Reset {
                    id: be32(buf),
                    code: be32(&buf[4..]),
                }
            }
            TYPE_PING => Frame::Ping(buf.clone()),
            TYPE_GOAWAY => Frame::GoAway,
            _ => Frame::Other,
        })
    }

    /// SYN_STREAM with `streamtype`, then frames until its SYN_REPLY (client-go waits for each
    /// reply before it opens the next stream).
    async fn open(&mut self, stream_type: &str) -> Result<u32> {
        let id = self.next_id;
        self.next_id += 2;
        let block = header_block(&mut self.z, &[("streamtype", stream_type)])?;
        let mut body = id.to_be_bytes().to_vec();
        // Associated stream 0, priority 0, slot 0.
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&block);
        self.wr
            .write_all(&control(TYPE_SYN_STREAM, 0, &body))
            .await?;
        self.wr.flush().await?;
        let mut buf = Vec::new();
        loop {
            match self.read_frame(&mut buf).await? {
                Frame::Reply { id: r, .. } if r == id => return Ok(id),
                Frame::Reset { id: r, code } if r == id => {
                    bail!("{stream_type} stream refused (RST_STREAM {code})")
                }
                Frame::Ping(p) => self.pong(&p).await?,
                Frame::GoAway | Frame::Closed => {
                    bail!("connection ended while opening {stream_type}")
                }
                _ => {}
            }
        }
    }

    async fn pong(&mut self, payload: &[u8]) -> Result<()> {
        self.wr.write_all(&control(TYPE_PING, 0, payload)).await?;
        self.wr.flush().await.map_err(Into::into)
    }
}

/// Runs the exec behind `url` (no stdin, no tty) until the error stream ends; the connection is
/// closed when this returns.
pub async fn exec(url: &str) -> Result<ExecOutcome> {
    tokio::time::timeout(EXEC_TIMEOUT, exec_inner(url))
        .await
        .map_err(|_| anyhow!("exec not finished after {EXEC_TIMEOUT:?}"))?
}

async fn exec_inner(url: &str) -> Result<ExecOutcome> {
    let mut s = Session::connect(url).await?;
    let error = s.open("error").await?;
    let stdout = s.open("stdout").await?;
    let stderr = s.open("stderr").await?;
    let mut out = ExecOutcome::default();
    let mut buf = Vec::new();
    // The status comes last (the server writes it once the process has exited and its output
    // is sent). The error stream then ends with a FIN (crius), or with a RST_STREAM CANCEL
    // (containerd: k8s' httpstream connection resets every stream when it closes, then sends
    // GOAWAY and closes the socket). client-go's executor sees any of these as the end of the
    // error stream and returns with the status it read.
    loop {
        match s.read_frame(&mut buf).await? {
            Frame::Data { id, fin, len } => {
                if id == stdout {
                    out.stdout_bytes += len as u64;
                } else if id == stderr {
                    out.stderr.extend_from_slice(&buf);
                } else if id == error {
                    out.status.extend_from_slice(&buf);
                    if fin {
                        return Ok(out);
                    }
                }
            }
            Frame::Reply { id, fin: true } if id == error => return Ok(out),
            Frame::Reset { id, .. } if id == error && !out.status.is_empty() => return Ok(out),
            Frame::Reset { id, code } if id == error => {
                bail!("error stream reset ({code}) before the exit status")
            }
            Frame::Ping(p) => s.pong(&p).await?,
            Frame::GoAway | Frame::Closed if !out.status.is_empty() => return Ok(out),
            Frame::GoAway | Frame::Closed => bail!("connection ended before the exit status"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:4000/exec/abc").unwrap(),
            ("127.0.0.1:4000", "/exec/abc")
        );
        assert!(split_url("https://x/y").is_err());
        assert!(split_url("http://x").is_err());
    }

    #[test]
    fn control_frames_carry_version_type_and_length() {
        let f = control(TYPE_PING, 0, &[0, 0, 0, 2]);
        assert_eq!(f, [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2]);
    }

    #[test]
    fn header_blocks_decode_without_a_dictionary() {
        let mut z = Compress::new(Compression::none(), true);
        let mut inflate = Decompress::new(true);
        // Two blocks through one context, each decodable on its own as it arrives.
        for ty in ["error", "stdout"] {
            let block = header_block(&mut z, &[("streamtype", ty)]).unwrap();
            let mut plain = Vec::with_capacity(256);
            inflate
                .decompress_vec(&block, &mut plain, FlushDecompress::Sync)
                .unwrap();
            let mut want = 1u32.to_be_bytes().to_vec();
            want.extend_from_slice(&10u32.to_be_bytes());
            want.extend_from_slice(b"streamtype");
            want.extend_from_slice(&(ty.len() as u32).to_be_bytes());
            want.extend_from_slice(ty.as_bytes());
            assert_eq!(plain, want);
        }
    }

    #[test]
    fn status_success_and_failure() {
        let ok = ExecOutcome {
            status: br#"{"metadata":{},"status":"Success"}"#.to_vec(),
            ..Default::default()
        };
        assert!(ok.success().is_ok());
        let failed = ExecOutcome {
            status: br#"{"status":"Failure","reason":"NonZeroExitCode"}"#.to_vec(),
            ..Default::default()
        };
        assert!(failed.success().is_err());
        assert!(ExecOutcome::default().success().is_err());
    }
}
