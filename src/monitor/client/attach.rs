//! The daemon's side of an attach: one connection to the container's monitor that stays open
//! after the Attach response and carries the frames described at `AttachRequest` in
//! proto/monitor.proto. The monitor survives daemon restarts, so a restarted daemon attaches
//! the same way as the one that created the container.

use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::{MonitorClient, MonitorError};
use crate::monitor::attach::{
    HEADER, KIND_RESIZE, KIND_STDERR, KIND_STDIN, KIND_STDIN_END, KIND_STDOUT, MAX_FRAME,
};
use crate::monitor::proto::{self, request::Op, state::Status};
use crate::monitor::{paths, wire};

/// How long the monitor may take to answer the Attach request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Which of the container's streams a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// The receiving half of an attach.
pub struct AttachOutput {
    rd: OwnedReadHalf,
}

/// The sending half of an attach: stdin, its end, window sizes. Dropping both halves
/// detaches.
pub struct AttachInput {
    wr: OwnedWriteHalf,
}

impl MonitorClient {
    /// Attaches to the container's stdio. `stdin`: this client will send stdin (it counts
    /// for stdin_once). Refused ([`MonitorError::NotRunning`]) once the container exited.
    pub async fn attach(
        &self,
        id: &str,
        stdin: bool,
    ) -> Result<(AttachOutput, AttachInput), MonitorError> {
        let socket = paths::socket_path(self.dir());
        let io_err = |source: io::Error| MonitorError::Io {
            what: "attach through",
            path: socket.clone(),
            source,
        };
        let exchange = async {
            let short = paths::ShortPath::new(&socket)?;
            let mut stream = UnixStream::connect(short.path()).await?;
            drop(short);
            let request = proto::Request {
                op: Some(Op::Attach(proto::AttachRequest { stdin })),
            };
            wire::write_msg_async(&mut stream, &request).await?;
            let response: proto::Response = wire::read_msg_async(&mut stream).await?;
            Ok::<_, io::Error>((stream, response))
        };
        let (stream, response) = match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
            Ok(Ok(r)) => r,
            // The monitor is gone: the container has exited (or is being cleaned up).
            Ok(Err(e)) if self.read_exit().is_some() || e.kind() == io::ErrorKind::NotFound => {
                return Err(MonitorError::NotRunning {
                    id: id.to_owned(),
                    reason: "its monitor has exited".to_owned(),
                });
            }
            Ok(Err(e)) => return Err(io_err(e)),
            Err(_) => {
                return Err(MonitorError::Timeout {
                    op: "attach",
                    dir: self.dir().to_owned(),
                    timeout: ANSWER_TIMEOUT,
                });
            }
        };
        let exited = response
            .state
            .as_ref()
            .is_some_and(|s| s.status == Status::Exited as i32);
        if exited {
            return Err(MonitorError::NotRunning {
                id: id.to_owned(),
                reason: response.error,
            });
        }
        if !response.error.is_empty() {
            return Err(MonitorError::Rejected {
                op: "attach",
                dir: self.dir().to_owned(),
                reason: response.error,
            });
        }
        let (rd, wr) = stream.into_split();
        Ok((AttachOutput { rd }, AttachInput { wr }))
    }
}

impl AttachOutput {
    /// The next chunk of output; `None` once the monitor closed the attach (the container's
    /// output ended, or this client fell too far behind). Not cancel-safe.
    pub async fn next(&mut self) -> io::Result<Option<(OutputStream, Vec<u8>)>> {
        let mut header = [0u8; HEADER];
        match self.rd.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("attach frame of {len} bytes"),
            ));
        }
        let stream = match header[0] {
            KIND_STDOUT => OutputStream::Stdout,
            KIND_STDERR => OutputStream::Stderr,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("attach frame of kind {other}"),
                ));
            }
        };
        let mut data = vec![0u8; len];
        self.rd.read_exact(&mut data).await?;
        Ok(Some((stream, data)))
    }
}

impl AttachInput {
    async fn send(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.push(kind);
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        self.wr.write_all(&frame).await
    }

    /// Writes to the container's stdin (ignored by the monitor when the container has none).
    pub async fn stdin(&mut self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_FRAME) {
            self.send(KIND_STDIN, chunk).await?;
        }
        Ok(())
    }

    /// This client's stdin ended: with stdin_once (and no tty) the container's stdin closes.
    pub async fn stdin_end(&mut self) -> io::Result<()> {
        self.send(KIND_STDIN_END, &[]).await
    }

    /// Sets the tty's window size (ignored without a tty).
    pub async fn resize(&mut self, columns: u16, rows: u16) -> io::Result<()> {
        let mut size = [0u8; 4];
        size[..2].copy_from_slice(&columns.to_be_bytes());
        size[2..].copy_from_slice(&rows.to_be_bytes());
        self.send(KIND_RESIZE, &size).await
    }
}
