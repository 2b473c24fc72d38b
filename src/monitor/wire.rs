//! Message framing on the control socket: a 4-byte big-endian length, then that many bytes of
//! protobuf. The blocking half is used by the monitor, the async half by the daemon.

use prost::Message;
use std::io::{self, Read, Write};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bound on a message; requests and responses are tiny, so anything larger is garbage.
pub const MAX_MESSAGE: usize = 64 * 1024;

fn check_len(len: usize) -> io::Result<()> {
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds the {MAX_MESSAGE}-byte limit"),
        ));
    }
    Ok(())
}

fn decode<M: Message + Default>(buf: &[u8]) -> io::Result<M> {
    M::decode(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Encodes `msg` with its length prefix.
pub fn frame<M: Message>(msg: &M) -> io::Result<Vec<u8>> {
    let len = msg.encoded_len();
    check_len(len)?;
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut buf).map_err(io::Error::other)?;
    Ok(buf)
}

/// Reads one framed message (blocking; the caller sets the socket's timeouts).
pub fn read_msg<M: Message + Default>(r: &mut impl Read) -> io::Result<M> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    check_len(len)?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    decode(&buf)
}

/// Writes one framed message (blocking).
pub fn write_msg<M: Message>(w: &mut impl Write, msg: &M) -> io::Result<()> {
    w.write_all(&frame(msg)?)
}

/// Reads one framed message.
pub async fn read_msg_async<M: Message + Default>(
    r: &mut (impl AsyncReadExt + Unpin),
) -> io::Result<M> {
    let len = r.read_u32().await? as usize;
    check_len(len)?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    decode(&buf)
}

/// Writes one framed message.
pub async fn write_msg_async<M: Message>(
    w: &mut (impl AsyncWriteExt + Unpin),
    msg: &M,
) -> io::Result<()> {
    w.write_all(&frame(msg)?).await?;
    w.flush().await
}
