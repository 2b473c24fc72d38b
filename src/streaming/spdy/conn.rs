//! One SPDY/3.1 server connection: a reader task that decodes frames and routes DATA to the
//! streams the client opened, a writer task that owns the socket's write half and the
//! outbound zlib context, and handles the request handler uses.
//!
//! Flow control: spdystream (what client-go and kubelet use) neither sends nor honours
//! WINDOW_UPDATE, so none is sent and received ones are ignored; backpressure comes from
//! TCP instead (a stream whose consumer is slow stops the reader, as in spdystream).

use super::frame::{self, Frame, FrameError, OutFrame};
use super::headers::{Decoder, Encoder, Headers};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Frames queued for the writer (each at most 32 KiB of data).
const OUT_QUEUE: usize = 64;
/// DATA frames queued per inbound stream before the reader waits for its consumer.
const IN_QUEUE: usize = 32;
/// New streams queued before the handler takes them.
const NEW_STREAMS: usize = 16;
/// After the handler is done: how long the client may take to close its end.
const LINGER: Duration = Duration::from_secs(2);

/// Why a connection ended, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    Open,
    /// The client closed the connection or said GOAWAY.
    Client,
    Idle,
    Error(String),
}

#[derive(Clone)]
struct Out {
    tx: mpsc::Sender<OutFrame>,
    activity: Arc<Activity>,
}

/// When the connection last carried a frame, either way (for the idle timeout).
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
    pub(crate) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    pub(crate) fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A stream the client opened.
pub struct Stream {
    pub headers: Headers,
    data: mpsc::Receiver<Bytes>,
    writer: StreamWriter,
}

/// The sending half of a stream (cheap to clone).
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: Out,
    closed_local: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the streaming connection is closed")]
pub struct ConnectionGone;

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::headers::get(&self.headers, name)
    }

    /// Splits the stream into its inbound data and its writer (for transport-neutral
    /// wrappers such as remotecommand's `Channel`).
    pub fn into_parts(self) -> (Headers, mpsc::Receiver<Bytes>, StreamWriter) {
        (self.headers, self.data, self.writer)
    }
}

impl StreamWriter {
    /// Sends `data` in DATA frames.
    pub async fn write(&self, data: &[u8]) -> Result<(), ConnectionGone> {
        for chunk in data.chunks(frame::MAX_DATA_WRITE) {
            self.send(false, Bytes::copy_from_slice(chunk)).await?;
        }
        Ok(())
    }

    /// Sends owned data without a copy when it fits one frame.
    pub async fn write_bytes(&self, data: Bytes) -> Result<(), ConnectionGone> {
        if data.len() <= frame::MAX_DATA_WRITE {
            return self.send(false, data).await;
        }
        self.write(&data).await
    }

    /// Ends our side of the stream (an empty DATA frame with FIN). Idempotent.
    pub async fn close(&self) -> Result<(), ConnectionGone> {
        if self.closed_local.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.send(true, Bytes::new()).await
    }

    async fn send(&self, fin: bool, data: Bytes) -> Result<(), ConnectionGone> {
        self.out
            .tx
            .send(OutFrame::Data {
                stream_id: self.id,
                fin,
                data,
            })
            .await
            .map_err(|_| ConnectionGone)
    }
}

/// The handler's view of the connection.
pub struct Session {
    streams: mpsc::Receiver<Stream>,
    closed: watch::Receiver<Closed>,
}

impl Session {
    /// The next stream the client opens (already replied to); `None` once the connection is
    /// closed.
    pub async fn accept(&mut self) -> Option<Stream> {
        let closed = wait_closed(self.closed.clone());
        tokio::select! {
            s = self.streams.recv() => s,
            () = closed => None,
        }
    }
}

/// Waits until `rx` reports the connection closed.
pub async fn wait_closed(mut rx: watch::Receiver<Closed>) {
    let _ = rx.wait_for(|c| *c != Closed::Open).await;
}

/// Runs the connection on `io` until `handler` returns, then says GOAWAY, flushes, and
/// closes after the client did (or [`LINGER`] passed). `idle`: close a connection with no
/// frame either way for this long.
pub async fn serve<IO, F, Fut>(io: IO, idle: Option<Duration>, handler: F) -> Closed
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    F: FnOnce(Session) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (rd, wr) = tokio::io::split(io);
    let activity = Arc::new(Activity::new());
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let out = Out {
        tx: out_tx,
        activity: activity.clone(),
    };
    let (closed_tx, closed_rx) = watch::channel(Closed::Open);
    let closed_tx = Arc::new(closed_tx);
    let (new_tx, new_rx) = mpsc::channel(NEW_STREAMS);
    let (goaway_tx, goaway_rx) = watch::channel(0u32);

    let writer = tokio::spawn(write_loop(wr, out_rx, activity.clone(), closed_tx.clone()));
    let mut reader = tokio::spawn(read_loop(
        rd,
        out.clone(),
        new_tx,
        closed_tx.clone(),
        goaway_tx,
    ));
    let watchdog = idle.map(|limit| spawn_watchdog(limit, activity.clone(), closed_tx.clone()));

    let session = Session {
        streams: new_rx,
        closed: closed_rx.clone(),
    };
    // The handler runs until it is done. Once the client is gone (EOF, GOAWAY, error) or the
    // connection idled out nothing can reach it any more: the handler is dropped with
    // everything it owns (an exec'd process is killed, a forwarded socket closed).
    tokio::select! {
        () = handler(session) => {}
        () = wait_closed(closed_rx.clone()) => {
            tracing::debug!(why = ?*closed_rx.borrow(), "streaming client gone before the handler finished");
        }
    }
    let last_good = *goaway_rx.borrow();
    let _ = out.tx.send(OutFrame::GoAway { last_good }).await;
    drop(out);
    // The writer ends once every stream handle is gone and the queue is flushed.
    let _ = tokio::time::timeout(LINGER * 5, writer).await;
    if let Some(w) = watchdog {
        w.abort();
    }
    // Let the client read everything and close first; an early close could reset it.
    if tokio::time::timeout(LINGER, &mut reader).await.is_err() {
        reader.abort();
    }
    closed_rx.borrow().clone()
}

/// Marks the connection idle once nothing moved for `limit`.
pub(crate) fn spawn_watchdog(
    limit: Duration,
    activity: Arc<Activity>,
    closed_tx: Arc<watch::Sender<Closed>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let idle = activity.idle();
            if idle >= limit {
                tracing::info!(
                    idle_s = idle.as_secs(),
                    "streaming connection idle; closing"
                );
                closed_tx.send_if_modified(|c| set_closed(c, Closed::Idle));
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    })
}

pub(crate) fn set_closed(c: &mut Closed, why: Closed) -> bool {
    if *c == Closed::Open {
        *c = why;
        true
    } else {
        false
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    wr: W,
    rx: mpsc::Receiver<OutFrame>,
    activity: Arc<Activity>,
    closed: Arc<watch::Sender<Closed>>,
) {
    let mut enc = Encoder::new();
    write_batched(wr, rx, activity, closed, |buf, f| {
        frame::write(buf, f, &mut enc);
        false
    })
    .await;
}

/// The writer task of a streaming connection (SPDY or WebSocket): encodes each queued item with
/// `encode`, batching whatever else is already queued (up to 256 KiB) into one write, until the
/// queue ends or `encode` says the item it wrote was the last (a close). A failed write marks
/// the connection closed. The socket is shut down at the end.
pub(crate) async fn write_batched<T, W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<T>,
    activity: Arc<Activity>,
    closed: Arc<watch::Sender<Closed>>,
    mut encode: impl FnMut(&mut Vec<u8>, &T) -> bool,
) {
    let mut buf = Vec::with_capacity(64 << 10);
    let mut done = false;
    while !done {
        let Some(first) = rx.recv().await else { break };
        buf.clear();
        done = encode(&mut buf, &first);
        while !done && buf.len() < (256 << 10) {
            match rx.try_recv() {
                Ok(item) => done = encode(&mut buf, &item),
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            tracing::debug!(error = %e, "streaming connection write failed");
            closed.send_if_modified(|c| set_closed(c, Closed::Error(format!("write: {e}"))));
            return;
        }
        activity.touch();
    }
    // After a WebSocket close frame nothing may follow; the server closes TCP first
    // (RFC 6455 7.1.1).
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    out: Out,
    new_streams: mpsc::Sender<Stream>,
    closed: Arc<watch::Sender<Closed>>,
    last_good: watch::Sender<u32>,
) {
    let mut dec = Decoder::new();
    let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut last_id = 0u32;
    let why = loop {
        let f = match frame::read(&mut rd, &mut dec).await {
            Ok(f) => f,
            Err(FrameError::Eof) => break Closed::Client,
            Err(e) => {
                // A broken frame or header block ends this connection only.
                tracing::warn!(error = %e, "bad SPDY frame; closing the streaming connection");
                break Closed::Error(e.to_string());
            }
        };
        out.activity.touch();
        match f {
            Frame::SynStream {
                stream_id,
                fin,
                headers,
            } => {
                // Client streams are odd and increasing (SPDY/3.1 section 2.3.2).
                if stream_id % 2 == 0 || stream_id <= last_id {
                    let _ = out
                        .tx
                        .send(OutFrame::Rst {
                            stream_id,
                            status: frame::RST_PROTOCOL_ERROR,
                        })
                        .await;
                    continue;
                }
                last_id = stream_id;
                let _ = last_good.send(stream_id);
                let (tx, rx) = mpsc::channel(IN_QUEUE);
                if !fin {
                    streams.insert(stream_id, tx);
                }
                // The reply goes out before the handler can write on the stream.
                if out.tx.send(OutFrame::SynReply { stream_id }).await.is_err() {
                    break Closed::Error("writer gone".into());
                }
                let stream = Stream {
                    headers,
                    data: rx,
                    writer: StreamWriter {
                        id: stream_id,
                        out: out.clone(),
                        closed_local: Default::default(),
                    },
                };
                if new_streams.send(stream).await.is_err() {
                    // The handler stopped accepting streams: refuse it.
                    let _ = out
                        .tx
                        .send(OutFrame::Rst {
                            stream_id,
                            status: frame::RST_CANCEL,
                        })
                        .await;
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if let Some(tx) = streams.get(&stream_id) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        // Nobody reads this stream any more; drop what arrives on it.
                        streams.remove(&stream_id);
                    }
                } else if stream_id > last_id {
                    let _ = out
                        .tx
                        .send(OutFrame::Rst {
                            stream_id,
                            status: frame::RST_INVALID_STREAM,
                        })
                        .await;
                }
                if fin {
                    streams.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                streams.remove(&stream_id);
            }
            Frame::Ping(id) => {
                // Answer the client's pings (odd ids); ours would be even and we send none.
                if id % 2 == 1 {
                    let _ = out.tx.send(OutFrame::Ping(id)).await;
                }
            }
            Frame::GoAway { .. } => break Closed::Client,
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings
            | Frame::WindowUpdate { .. }
            | Frame::Unknown(_) => {}
        }
    };
    drop(streams);
    closed.send_if_modified(|c| set_closed(c, why));
}
