//! One remotecommand/portforward channel, whichever transport carries it: a SPDY stream, or a
//! channel number on a WebSocket connection. Exec and attach only see this type, so both
//! transports share their relays.

use super::spdy::{self, ConnectionGone};
use super::ws;
use bytes::Bytes;
use tokio::sync::mpsc;

/// A channel the client reads, writes, or both.
pub struct Channel {
    /// What the client sent on it (`None` for a write-only channel).
    rx: Option<mpsc::Receiver<Bytes>>,
    writer: ChannelWriter,
}

/// The sending half of a channel (cheap to clone).
#[derive(Clone)]
pub enum ChannelWriter {
    Spdy(spdy::StreamWriter),
    Ws(ws::ChannelWriter),
}

impl Channel {
    pub fn from_spdy(stream: spdy::Stream) -> Channel {
        let (_, rx, writer) = stream.into_parts();
        Channel {
            rx: Some(rx),
            writer: ChannelWriter::Spdy(writer),
        }
    }

    pub fn from_ws(rx: Option<mpsc::Receiver<Bytes>>, writer: ws::ChannelWriter) -> Channel {
        Channel {
            rx,
            writer: ChannelWriter::Ws(writer),
        }
    }

    /// The next chunk the client sent; `None` once it ended the channel (SPDY FIN or reset,
    /// the WebSocket v5 close signal) or the connection ended.
    pub async fn read(&mut self) -> Option<Bytes> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => None,
        }
    }

    /// A handle for writing while another task reads.
    pub fn writer(&self) -> ChannelWriter {
        self.writer.clone()
    }

    pub async fn write(&self, data: &[u8]) -> Result<(), ConnectionGone> {
        self.writer.write(data).await
    }

    pub async fn write_bytes(&self, data: Bytes) -> Result<(), ConnectionGone> {
        self.writer.write_bytes(data).await
    }

    /// Ends our side of the channel. Idempotent.
    pub async fn close(&self) -> Result<(), ConnectionGone> {
        self.writer.close().await
    }
}

impl ChannelWriter {
    pub async fn write(&self, data: &[u8]) -> Result<(), ConnectionGone> {
        match self {
            ChannelWriter::Spdy(w) => w.write(data).await,
            ChannelWriter::Ws(w) => w.write(data).await,
        }
    }

    pub async fn write_bytes(&self, data: Bytes) -> Result<(), ConnectionGone> {
        match self {
            ChannelWriter::Spdy(w) => w.write_bytes(data).await,
            ChannelWriter::Ws(w) => w.write_bytes(data).await,
        }
    }

    pub async fn close(&self) -> Result<(), ConnectionGone> {
        match self {
            ChannelWriter::Spdy(w) => w.close().await,
            ChannelWriter::Ws(w) => {
                w.close();
                Ok(())
            }
        }
    }
}
