//! remotecommand: the protocol behind `kubectl exec`/`crictl exec` (and attach), over SPDY/3.1
//! or WebSocket.
//!
//! SPDY: after the upgrade the client opens one stream per channel, each named by its
//! `streamType` header: `error`, `stdin`, `stdout`, `stderr` and (v3+, with a tty) `resize`.
//! The server waits for all of them (as many as the request asked for).
//!
//! WebSocket: the channels are numbered (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize) and
//! exist as soon as the upgrade is done; the server says so with an empty message on the
//! lowest channel it writes (as kubelet's server does).
//!
//! Either way the server then runs the command, relays the channels, and reports the end on
//! the error channel: v4+ as a JSON `metav1.Status` (`Success`, or `Failure`/`NonZeroExitCode`
//! with an `ExitCode` cause), v1-v3 as the error text (nothing on success). Window sizes
//! arrive on `resize` as JSON `{"Width":W,"Height":H}` objects, one after another.

pub use super::channel::Channel;
use super::spdy::{self, Session};
use super::{http, negotiate, upgrade_spdy, ws};
use crate::monitor::{ExecRequest, ExecStream, MonitorError};
use bytes::Bytes;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// What a SPDY client may ask for, best first.
pub const PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// What a WebSocket client may ask for (`Sec-WebSocket-Protocol`), best first.
pub const WS_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// WebSocket channel numbers.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// How long the client may take to open its streams after the upgrade (kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long output may still arrive after the process ended (a background child that kept
/// stdout open is not waited for beyond this).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// A validated Exec: the process to run and the channels the client asked for.
#[derive(Debug, Clone)]
pub struct ExecPlan {
    pub request: ExecRequest,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The channels the client opened (SPDY) or that the request implies (WebSocket).
#[derive(Default)]
pub struct Channels {
    pub error: Option<Channel>,
    pub stdin: Option<Channel>,
    pub stdout: Option<Channel>,
    pub stderr: Option<Channel>,
    pub resize: Option<Channel>,
}

/// The negotiated protocol version (1 to 5), SPDY or WebSocket name.
pub(super) fn version_of(protocol: Option<&str>) -> u8 {
    match protocol {
        Some("v5.channel.k8s.io") => 5,
        Some("v4.channel.k8s.io" | "v4.base64.channel.k8s.io") => 4,
        Some("v3.channel.k8s.io") => 3,
        Some("v2.channel.k8s.io") => 2,
        _ => 1,
    }
}

/// Upgrades `io` (SPDY/3.1 or WebSocket, as the request asks), sets up the channels `want`
/// names (stdin, stdout, stderr, tty) and runs `handler` on them with the negotiated
/// protocol version (1 to 5). Returns once the handler is done or the client is gone (the
/// handler is dropped then).
pub async fn serve_channels<IO, F, Fut>(
    mut io: IO,
    head: &http::RequestHead,
    want: (bool, bool, bool, bool),
    idle: Option<Duration>,
    handler: F,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(Channels, u8) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if ws::is_upgrade(head) {
        let Some(protocol) = ws::upgrade(&mut io, head, WS_PROTOCOLS).await else {
            return;
        };
        let version = version_of(Some(&protocol));
        let (stdin, stdout, stderr, tty) = want;
        let mut readable = Vec::new();
        if stdin {
            readable.push(STDIN);
        }
        if tty {
            readable.push(RESIZE);
        }
        let opts = ws::Opts {
            base64: protocol.contains("base64"),
            close_signal: version >= 5,
            readable,
        };
        let why = ws::serve(io, idle, opts, |mut session| async move {
            let mut reader = |ch: u8| Channel::from_ws(session.take_reader(ch), session.writer(ch));
            let ch = Channels {
                error: Some(reader(ERROR)),
                stdin: stdin.then(|| reader(STDIN)),
                stdout: stdout.then(|| reader(STDOUT)),
                stderr: stderr.then(|| reader(STDERR)),
                resize: tty.then(|| reader(RESIZE)),
            };
            // The client learns the channels are there from an empty message on the lowest
            // one the server writes.
            let first = ch
                .stdout
                .as_ref()
                .or(ch.stderr.as_ref())
                .or(ch.error.as_ref());
            if let Some(c) = first {
                let _ = c.write(&[]).await;
            }
            handler(ch, version).await;
            drop(session);
        })
        .await;
        tracing::debug!(%protocol, ?why, "remotecommand WebSocket connection closed");
        return;
    }
    let protocol = negotiate(head, PROTOCOLS);
    let version = version_of(protocol.clone().ok().flatten());
    if !upgrade_spdy(&mut io, head, protocol).await {
        return;
    }
    let why = spdy::serve(io, idle, |mut session| async move {
        if let Some(ch) = wait_streams(&mut session, want, version).await {
            handler(ch, version).await;
        }
    })
    .await;
    tracing::debug!(?why, "remotecommand SPDY connection closed");
}

/// Upgrades `io` and serves one exec on it.
pub async fn serve_exec<IO>(
    io: IO,
    head: &http::RequestHead,
    plan: ExecPlan,
    idle: Option<Duration>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = plan.request.id.clone();
    let want = (plan.stdin, plan.stdout, plan.stderr, plan.tty);
    let span = tracing::info_span!("exec", container = %id, tty = plan.tty);
    let run = serve_channels(io, head, want, idle, |ch, version| {
        run_exec(ch, plan, version)
    });
    tracing::Instrument::instrument(run, span).await;
}

/// Waits until the client opened the streams it was expected to (kubelet counts them: one
/// error stream plus one per requested channel, resize with a tty from v3 on).
pub async fn wait_streams(
    session: &mut Session,
    want: (bool, bool, bool, bool),
    version: u8,
) -> Option<Channels> {
    let (stdin, stdout, stderr, tty) = want;
    let expected = 1
        + usize::from(stdin)
        + usize::from(stdout)
        + usize::from(stderr)
        + usize::from(tty && version >= 3);
    let mut ch = Channels::default();
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while got < expected {
        let s = match tokio::time::timeout_at(deadline, session.accept()).await {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(_) => {
                tracing::warn!(
                    got,
                    expected,
                    "timed out waiting for the client to create streams"
                );
                return None;
            }
        };
        let slot = match s.header("streamtype") {
            Some("error") => &mut ch.error,
            Some("stdin") => &mut ch.stdin,
            Some("stdout") => &mut ch.stdout,
            Some("stderr") => &mut ch.stderr,
            Some("resize") if version >= 3 => &mut ch.resize,
            other => {
                tracing::warn!(stream_type = ?other, "unexpected stream type");
                continue;
            }
        };
        *slot = Some(Channel::from_spdy(s));
        got += 1;
    }
    Some(ch)
}

async fn run_exec(mut ch: Channels, plan: ExecPlan, version: u8) {
    let mut proc = match crate::monitor::exec_stream(&plan.request, ch.stdin.is_some()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(container = %plan.request.id, error = %e, "streaming exec did not start");
            finish(&mut ch, version, Err(e)).await;
            return;
        }
    };
    let result = relay(&mut ch, &mut proc).await;
    if let Err(e) = &result {
        tracing::warn!(container = %plan.request.id, error = %e, "streaming exec failed");
    }
    finish(&mut ch, version, result).await;
}

/// Relays the channels until the process ended and its output is drained.
async fn relay(ch: &mut Channels, proc: &mut ExecStream) -> Result<i32, MonitorError> {
    let (done_tx, done_rx) = watch::channel(false);
    let stdout = proc.stdout_take();
    let stderr = proc.stderr_take();
    let out = pump_out(stdout, ch.stdout.as_ref(), done_rx.clone());
    // With a tty, the helper's stderr carries only its own complaints: log, never relay.
    let err_target = if proc.is_tty() {
        None
    } else {
        ch.stderr.as_ref()
    };
    let err = pump_out(stderr, err_target, done_rx);
    let stdin = pump_stdin(ch.stdin.as_mut(), proc.stdin.take());
    let resize = pump_resize(ch.resize.as_mut(), proc.resizer());
    let wait = async {
        let r = proc.wait().await;
        let _ = done_tx.send(true);
        r
    };
    let main = async { tokio::join!(out, err, wait) };
    tokio::pin!(main, stdin, resize);
    let (mut stdin_done, mut resize_done) = (false, false);
    loop {
        tokio::select! {
            (_, helper_err, result) = &mut main => {
                if !helper_err.is_empty() {
                    tracing::debug!(stderr = %String::from_utf8_lossy(&helper_err).trim(), "exec helper stderr");
                }
                return result;
            }
            () = &mut stdin, if !stdin_done => stdin_done = true,
            () = &mut resize, if !resize_done => resize_done = true,
        }
    }
}

/// Ends stdout/stderr, writes the status on the error stream and ends it.
pub(super) async fn finish(ch: &mut Channels, version: u8, result: Result<i32, MonitorError>) {
    for s in [&mut ch.stdout, &mut ch.stderr].into_iter().flatten() {
        let _ = s.close().await;
    }
    if let Some(e) = &mut ch.error {
        if let Some(body) = status_body(version, &result) {
            let _ = e.write(&body).await;
        }
        let _ = e.close().await;
    }
}

/// What the error stream carries for `result` (None: nothing, v1-v3 success).
pub fn status_body(version: u8, result: &Result<i32, MonitorError>) -> Option<Vec<u8>> {
    let (json, text) = match result {
        Ok(0) => (
            serde_json::json!({"metadata": {}, "status": "Success"}),
            None,
        ),
        Ok(code) => {
            let msg = format!("command terminated with non-zero exit code: exit status {code}");
            (
                serde_json::json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": msg,
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
                }),
                Some(msg),
            )
        }
        Err(e) => {
            let inner = format!("error executing command in container: {e}");
            let msg = format!("Internal error occurred: {inner}");
            (
                serde_json::json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": msg,
                    "reason": "InternalError",
                    "details": {"causes": [{"message": inner}]},
                    "code": 500,
                }),
                Some(msg),
            )
        }
    };
    if version >= 4 {
        Some(json.to_string().into_bytes())
    } else {
        text.map(String::into_bytes)
    }
}

/// Copies `from` to `to` (or drops it without a stream) until EOF, or until a grace period
/// after `done` (a background process may keep the pipe open). Returns what was dropped
/// without a stream, at most 4 KiB, for the log.
async fn pump_out(
    from: Option<impl AsyncRead + Unpin>,
    to: Option<&Channel>,
    mut done: watch::Receiver<bool>,
) -> Vec<u8> {
    let mut dropped = Vec::new();
    let Some(mut from) = from else {
        return dropped;
    };
    let grace = async move {
        let _ = done.wait_for(|d| *d).await;
        tokio::time::sleep(OUTPUT_GRACE).await;
    };
    tokio::pin!(grace);
    let mut buf = vec![0u8; 32 << 10];
    loop {
        tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => match to {
                    Some(s) => {
                        if s.write_bytes(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        let room = 4096usize.saturating_sub(dropped.len());
                        dropped.extend_from_slice(&buf[..n.min(room)]);
                    }
                },
            },
            () = &mut grace => break,
        }
    }
    dropped
}

/// Copies the client's stdin to the process until the client ends it; then closes the
/// process's stdin (EOF).
async fn pump_stdin(from: Option<&mut Channel>, to: Option<impl AsyncWrite + Unpin>) {
    let (Some(from), Some(mut to)) = (from, to) else {
        return;
    };
    while let Some(chunk) = from.read().await {
        if to.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[derive(serde::Deserialize)]
struct TerminalSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Parses every complete JSON size in `buf`, leaving an incomplete tail. Bad JSON empties
/// the buffer (nothing later could be trusted to line up).
pub(super) fn parse_sizes(buf: &mut Vec<u8>) -> Vec<(u16, u16)> {
    let mut sizes = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<TerminalSize>();
    let mut consumed = 0;
    loop {
        match it.next() {
            Some(Ok(s)) => {
                consumed = it.byte_offset();
                sizes.push((s.width, s.height));
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                consumed = buf.len();
                break;
            }
            None => {
                consumed = buf.len();
                break;
            }
        }
    }
    buf.drain(..consumed);
    sizes
}

async fn pump_resize(from: Option<&mut Channel>, to: Option<crate::monitor::Resizer>) {
    let (Some(from), Some(mut to)) = (from, to) else {
        return;
    };
    let mut buf = Vec::new();
    while let Some(chunk) = from.read().await {
        buf.extend_from_slice(&chunk);
        if buf.len() > 64 << 10 {
            buf.clear();
        }
        for (w, h) in parse_sizes(&mut buf) {
            to.resize(w, h).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_across_chunks() {
        let mut b = br#"{"Width":80,"Height":24}{"Width":100,"#.to_vec();
        assert_eq!(parse_sizes(&mut b), vec![(80, 24)]);
        b.extend_from_slice(br#""Height":50}"#);
        assert_eq!(parse_sizes(&mut b), vec![(100, 50)]);
        assert!(b.is_empty());
        let mut bad = b"nonsense".to_vec();
        assert!(parse_sizes(&mut bad).is_empty());
        assert!(bad.is_empty());
    }

    #[test]
    fn status_follows_the_protocol_version() {
        let ok = status_body(4, &Ok(0)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&ok).unwrap();
        assert_eq!(v["status"], "Success");
        let fail = status_body(4, &Ok(137)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fail).unwrap();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "137");
        assert_eq!(status_body(3, &Ok(0)), None);
        let text = String::from_utf8(status_body(2, &Ok(1)).unwrap()).unwrap();
        assert!(text.contains("non-zero exit code"), "{text}");
        assert_eq!(version_of(Some("v4.channel.k8s.io")), 4);
        assert_eq!(version_of(None), 1);
    }
}
