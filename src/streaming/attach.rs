//! remotecommand Attach: the client's channels relayed to the container's stdio, which its
//! monitor holds (see `monitor/attach.rs`). The same streams as exec (error, stdin, stdout,
//! stderr, resize); the end is reported on the error stream as success (v4: a `Success`
//! status) when the container's output ended or the client's stdin did, as kubelet's server
//! does. stdin's end follows containerd: with stdin_once (and no tty) the container's stdin
//! is closed and the attach lasts until the output ends; otherwise the attach just ends.

use super::channel::Channel;
use super::http;
use super::remotecommand::{self, Channels};
use crate::monitor::{AttachInput, AttachOutput, MonitorClient, OutputStream};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;

/// A validated Attach: the container, its monitor and the channels the client asked for.
#[derive(Debug, Clone)]
pub struct AttachPlan {
    pub id: String,
    pub monitor_dir: PathBuf,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// What the client asked for (it opens a resize stream then).
    pub tty: bool,
    /// The container's stdin_once.
    pub stdin_once: bool,
}

/// Upgrades `io` (SPDY/3.1 or WebSocket, as the request asks) and serves one attach on it.
/// When the client goes away the attach is dropped there, which detaches it from the monitor.
pub async fn serve_attach<IO>(
    io: IO,
    head: &http::RequestHead,
    plan: AttachPlan,
    idle: Option<Duration>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = plan.id.clone();
    let want = (plan.stdin, plan.stdout, plan.stderr, plan.tty);
    let span = tracing::info_span!("attach", container = %id, tty = plan.tty);
    let run = remotecommand::serve_channels(io, head, want, idle, |ch, version| {
        run_attach(ch, plan, version)
    });
    tracing::Instrument::instrument(run, span).await;
}

/// How an attach ended.
enum End {
    /// The container's output ended (it exited), or the monitor let go of us.
    Output,
    /// The client's stdin ended without stdin_once.
    Stdin,
    /// The client went away: nothing to report to.
    ClientGone,
}

async fn run_attach(mut ch: Channels, plan: AttachPlan, version: u8) {
    let client = MonitorClient::new(&plan.monitor_dir);
    let (output, input) = match client.attach(&plan.id, ch.stdin.is_some()).await {
        Ok(halves) => halves,
        Err(e) => {
            tracing::warn!(container = %plan.id, error = %e, "attach to the container's monitor failed");
            remotecommand::finish(&mut ch, version, Err(e)).await;
            return;
        }
    };
    let end = relay(&mut ch, output, input, plan.stdin_once).await;
    tracing::info!(container = %plan.id, end = match end {
        End::Output => "output ended",
        End::Stdin => "stdin ended",
        End::ClientGone => "client gone",
    }, "attach finished");
    if !matches!(end, End::ClientGone) {
        remotecommand::finish(&mut ch, version, Ok(0)).await;
    }
}

async fn relay(
    ch: &mut Channels,
    output: AttachOutput,
    input: AttachInput,
    stdin_once: bool,
) -> End {
    let input = Arc::new(Mutex::new(input));
    let out = pump_output(output, ch.stdout.as_ref(), ch.stderr.as_ref());
    let stdin = pump_stdin(ch.stdin.as_mut(), input.clone(), stdin_once);
    let resize = pump_resize(ch.resize.as_mut(), input);
    tokio::pin!(out, stdin, resize);
    let mut resize_done = false;
    loop {
        tokio::select! {
            client_left = &mut out => {
                return if client_left { End::ClientGone } else { End::Output };
            }
            () = &mut stdin => return End::Stdin,
            () = &mut resize, if !resize_done => resize_done = true,
        }
    }
}

/// Copies the container's output to the client's streams (a stream the client did not open
/// drops its part) until the monitor ends the attach (false) or the client is gone (true).
async fn pump_output(
    mut output: AttachOutput,
    stdout: Option<&Channel>,
    stderr: Option<&Channel>,
) -> bool {
    loop {
        let (which, data) = match output.next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "reading the attach from the monitor");
                return false;
            }
        };
        let to = match which {
            OutputStream::Stdout => stdout,
            OutputStream::Stderr => stderr,
        };
        if let Some(s) = to
            && s.write_bytes(Bytes::from(data)).await.is_err()
        {
            return true;
        }
    }
}

/// Copies the client's stdin to the container. Returns when the attach should end because
/// of it: its end without stdin_once. With stdin_once the end is passed on (the monitor
/// closes the container's stdin) and this never returns, nor without a stdin stream.
async fn pump_stdin(from: Option<&mut Channel>, to: Arc<Mutex<AttachInput>>, stdin_once: bool) {
    let Some(from) = from else {
        return std::future::pending().await;
    };
    while let Some(chunk) = from.read().await {
        if to.lock().await.stdin(&chunk).await.is_err() {
            // The monitor let go; the output side sees it too and ends the attach.
            return std::future::pending().await;
        }
    }
    if stdin_once {
        let _ = to.lock().await.stdin_end().await;
        std::future::pending::<()>().await;
    }
}

async fn pump_resize(from: Option<&mut Channel>, to: Arc<Mutex<AttachInput>>) {
    let Some(from) = from else { return };
    let mut buf = Vec::new();
    while let Some(chunk) = from.read().await {
        buf.extend_from_slice(&chunk);
        if buf.len() > 64 << 10 {
            buf.clear();
        }
        for (w, h) in remotecommand::parse_sizes(&mut buf) {
            if to.lock().await.resize(w, h).await.is_err() {
                return;
            }
        }
    }
}
