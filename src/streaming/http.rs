//! The HTTP/1.1 part of a streaming request: the request head up to the upgrade, and the
//! few responses the server gives (101, 400, 403, 404).

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Longest request head accepted.
const MAX_HEAD: usize = 16 << 10;
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    /// Names lowercase, in order; repeated names kept.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, comma-separated lists split (as Go's Header[] plus lists).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// Whether `name` lists `token` (case-insensitive), as in `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .iter()
            .any(|v| v.eq_ignore_ascii_case(token))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("connection closed before a request")]
    Eof,
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    #[error("request head over {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// Reads the request head; returns it and whatever bytes followed it.
pub async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<(RequestHead, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(2048);
    loop {
        let mut chunk = [0u8; 2048];
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeadError::Eof);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let head = RequestHead {
                    method: req.method.unwrap_or_default().to_string(),
                    path: req.path.unwrap_or_default().to_string(),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).trim().to_string(),
                            )
                        })
                        .collect(),
                };
                return Ok((head, buf[len..].to_vec()));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(HeadError::TooLarge),
            Err(e) => return Err(HeadError::Malformed(e.to_string())),
        }
    }
}

/// Writes a plain-text error response and flushes.
pub async fn respond_error<W: AsyncWrite + Unpin>(
    w: &mut W,
    code: u16,
    reason: &str,
    extra_headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         X-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len() + 1
    );
    for (n, v) in extra_headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.push('\n');
    w.write_all(head.as_bytes()).await?;
    w.flush().await
}

/// Writes `101 Switching Protocols` with `headers`.
pub async fn respond_upgrade<W: AsyncWrite + Unpin>(
    w: &mut W,
    headers: &[(&str, &str)],
) -> std::io::Result<()> {
    let mut head = String::from("HTTP/1.1 101 Switching Protocols\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await?;
    w.flush().await
}

/// An I/O object that first yields bytes already read past the request head.
pub struct Prefixed<IO> {
    prefix: Vec<u8>,
    pos: usize,
    inner: IO,
}

impl<IO> Prefixed<IO> {
    pub fn new(prefix: Vec<u8>, inner: IO) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn head_is_parsed_and_the_rest_kept() {
        let raw = b"POST /exec/abc HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
            Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
            X-Stream-Protocol-Version: v3.channel.k8s.io, channel.k8s.io\r\n\r\nREST";
        let (head, rest) = read_head(&mut &raw[..]).await.unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.path, "/exec/abc");
        assert!(head.has_token("connection", "upgrade"));
        assert_eq!(
            head.header_values("x-stream-protocol-version"),
            ["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"]
        );
        assert_eq!(rest, b"REST");
        let mut p = Prefixed::new(rest, &b"MORE"[..]);
        let mut all = Vec::new();
        p.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"RESTMORE");
    }

    #[tokio::test]
    async fn bad_heads_are_errors() {
        assert!(matches!(
            read_head(&mut &b""[..]).await,
            Err(HeadError::Eof)
        ));
        assert!(matches!(
            read_head(&mut &b"\x00\x01garbage\r\n\r\n"[..]).await,
            Err(HeadError::Malformed(_))
        ));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(
            read_head(&mut huge.as_bytes()).await,
            Err(HeadError::TooLarge) | Err(HeadError::Eof)
        ));
    }
}
