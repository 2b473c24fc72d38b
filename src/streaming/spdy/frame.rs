//! SPDY/3.1 frames on the wire (draft-mbelshe-httpbis-spdy-00 / SPDY/3.1): an 8-byte header,
//! then the payload. Control frames carry the version (3) and a type; data frames a stream id.

use super::headers::{Decoder, Encoder, HeaderError, Headers};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const VERSION: u16 = 3;
pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_SETTINGS: u16 = 4;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const TYPE_WINDOW_UPDATE: u16 = 9;
pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_INVALID_STREAM: u32 = 2;
pub const RST_CANCEL: u32 = 5;

/// Largest frame payload accepted. The format allows 16 MiB; clients write at most 32 KiB
/// per DATA frame, so anything bigger is treated as an attack or a bug.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest DATA payload written (what Go's io.Copy uses too).
pub const MAX_DATA_WRITE: usize = 32 << 10;

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings,
    Ping(u32),
    GoAway {
        last_good: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame of a type SPDY/3.1 does not define (to be ignored, as the spec says).
    Unknown(u16),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Eof,
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("control frame of version {0}, not SPDY/3")]
    Version(u16),
    #[error("{what} frame of {len} bytes is too short")]
    Short { what: &'static str, len: usize },
    #[error(transparent)]
    Header(#[from] HeaderError),
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads one frame; header blocks go through `dec` (the connection's inbound context).
pub async fn read<R: AsyncRead + Unpin>(r: &mut R, dec: &mut Decoder) -> Result<Frame, FrameError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Eof),
        Err(e) => return Err(e.into()),
    }
    let flags = head[4];
    let len = (be32(&head[4..8]) & 0x00ff_ffff) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Eof
        } else {
            e.into()
        }
    })?;
    let fin = flags & FLAG_FIN != 0;
    if head[0] & 0x80 == 0 {
        return Ok(Frame::Data {
            stream_id: be32(&head[0..4]) & 0x7fff_ffff,
            fin,
            data: Bytes::from(body),
        });
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let need = |what: &'static str, n: usize| {
        if len < n {
            Err(FrameError::Short { what, len })
        } else {
            Ok(())
        }
    };
    let sid = |b: &[u8]| be32(b) & 0x7fff_ffff;
    Ok(match kind {
        TYPE_SYN_STREAM => {
            need("SYN_STREAM", 10)?;
            Frame::SynStream {
                stream_id: sid(&body[0..4]),
                fin,
                headers: dec.decode(&body[10..])?,
            }
        }
        TYPE_SYN_REPLY => {
            need("SYN_REPLY", 4)?;
            Frame::SynReply {
                stream_id: sid(&body[0..4]),
                fin,
                headers: dec.decode(&body[4..])?,
            }
        }
        TYPE_RST_STREAM => {
            need("RST_STREAM", 8)?;
            Frame::RstStream {
                stream_id: sid(&body[0..4]),
                status: be32(&body[4..8]),
            }
        }
        TYPE_SETTINGS => Frame::Settings,
        TYPE_PING => {
            need("PING", 4)?;
            Frame::Ping(be32(&body[0..4]))
        }
        TYPE_GOAWAY => {
            need("GOAWAY", 4)?;
            Frame::GoAway {
                last_good: sid(&body[0..4]),
            }
        }
        TYPE_HEADERS => {
            need("HEADERS", 4)?;
            // Decoded to keep the inbound zlib context in step, then ignored.
            dec.decode(&body[4..])?;
            Frame::Headers {
                stream_id: sid(&body[0..4]),
                fin,
            }
        }
        TYPE_WINDOW_UPDATE => {
            need("WINDOW_UPDATE", 8)?;
            Frame::WindowUpdate {
                stream_id: sid(&body[0..4]),
                delta: be32(&body[4..8]) & 0x7fff_ffff,
            }
        }
        other => Frame::Unknown(other),
    })
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
}

/// What the server writes (and SYN_STREAM, which only the built-in client sends).
#[derive(Debug)]
pub enum OutFrame {
    SynReply {
        stream_id: u32,
    },
    SynStream {
        stream_id: u32,
        headers: Vec<(String, String)>,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    Rst {
        stream_id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last_good: u32,
    },
}

/// Appends the encoding of `f` to `out`; header blocks go through `enc`.
pub fn write(out: &mut Vec<u8>, f: &OutFrame, enc: &mut Encoder) {
    match f {
        OutFrame::SynReply { stream_id } => {
            let mut p = stream_id.to_be_bytes().to_vec();
            p.extend_from_slice(&enc.encode(&[]));
            control(out, TYPE_SYN_REPLY, 0, &p);
        }
        OutFrame::SynStream { stream_id, headers } => {
            // Associated stream 0, priority 0, then the header block.
            let mut p = stream_id.to_be_bytes().to_vec();
            p.extend_from_slice(&[0; 6]);
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            p.extend_from_slice(&enc.encode(&pairs));
            control(out, TYPE_SYN_STREAM, 0, &p);
        }
        OutFrame::Data {
            stream_id,
            fin,
            data,
        } => {
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.push(if *fin { FLAG_FIN } else { 0 });
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(data);
        }
        OutFrame::Rst { stream_id, status } => {
            let mut p = stream_id.to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(out, TYPE_RST_STREAM, 0, &p);
        }
        OutFrame::Ping(id) => control(out, TYPE_PING, 0, &id.to_be_bytes()),
        OutFrame::GoAway { last_good } => {
            let mut p = last_good.to_be_bytes().to_vec();
            p.extend_from_slice(&0u32.to_be_bytes());
            control(out, TYPE_GOAWAY, 0, &p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn_stream(enc: &mut Encoder, id: u32, flags: u8, h: &[(&str, &str)]) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&enc.encode(h));
        let mut out = Vec::new();
        control(&mut out, TYPE_SYN_STREAM, flags, &p);
        out
    }

    #[tokio::test]
    async fn frames_decode() {
        let mut enc = Encoder::new();
        let mut wire = syn_stream(&mut enc, 1, FLAG_FIN, &[("streamtype", "error")]);
        let mut w = Encoder::new();
        write(
            &mut wire,
            &OutFrame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::from_static(b"hi"),
            },
            &mut w,
        );
        write(&mut wire, &OutFrame::Ping(7), &mut w);
        control(&mut wire, 0x77, 0, b"xx");
        let mut dec = Decoder::new();
        let mut r = &wire[..];
        match read(&mut r, &mut dec).await.unwrap() {
            Frame::SynStream {
                stream_id: 1,
                fin: true,
                headers,
            } => assert_eq!(headers, vec![("streamtype".into(), "error".into())]),
            f => panic!("{f:?}"),
        }
        assert_eq!(
            read(&mut r, &mut dec).await.unwrap(),
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::from_static(b"hi")
            }
        );
        assert_eq!(read(&mut r, &mut dec).await.unwrap(), Frame::Ping(7));
        assert_eq!(read(&mut r, &mut dec).await.unwrap(), Frame::Unknown(0x77));
        assert!(matches!(read(&mut r, &mut dec).await, Err(FrameError::Eof)));
    }

    #[tokio::test]
    async fn oversized_short_and_wrong_version_frames_are_errors() {
        let mut dec = Decoder::new();
        let big = [0u8, 0, 0, 1, 0, 0x20, 0, 0];
        assert!(matches!(
            read(&mut &big[..], &mut dec).await,
            Err(FrameError::TooLarge(_))
        ));
        let mut short = Vec::new();
        control(&mut short, TYPE_RST_STREAM, 0, &[0, 0]);
        assert!(matches!(
            read(&mut &short[..], &mut dec).await,
            Err(FrameError::Short { .. })
        ));
        let v2 = [0x80u8, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            read(&mut &v2[..], &mut dec).await,
            Err(FrameError::Version(2))
        ));
    }
}
