//! portforward.k8s.io over SPDY: the protocol behind `kubectl port-forward`.
//!
//! For every local connection the client opens two streams with the same `requestID` and
//! `port` headers: `streamType: error` then `streamType: data`. Once both are there the
//! server connects to that port on the pod's loopback, from inside the pod's network
//! namespace, and copies bytes both ways on the data stream. A failure (say, connection
//! refused) is written as text on that request's error stream; other requests carry on.
//!
//! Over WebSocket (kubelet's `portforward/websocket.go` framing) the ports come from the
//! `port` (or `ports`) query parameter; port i gets data channel 2i and error channel 2i+1,
//! and the server's first message on each is the port, 2 bytes little-endian. One
//! connection forwards one TCP connection per port.

use super::channel::Channel;
use super::spdy::{self, Session, Stream};
use super::{PortForwardPlan, http, negotiate, upgrade_spdy, ws};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

pub const PROTOCOLS: &[&str] = &["portforward.k8s.io"];
/// What a WebSocket client may ask for (`Sec-WebSocket-Protocol`).
pub const WS_PROTOCOLS: &[&str] = &[
    TUNNEL_PROTOCOL,
    "v4.portforward.k8s.io",
    "portforward.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// SPDY tunnelled through WebSocket (client-go's port-forward over WebSocket).
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// Most ports one WebSocket connection forwards (two channels each, below the v5 close
/// signal's 255).
const MAX_WS_PORTS: usize = 64;
/// How long a TCP connect inside the pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the second stream of a pair may keep the first waiting.
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve<IO>(
    mut io: IO,
    head: &http::RequestHead,
    plan: PortForwardPlan,
    idle: Option<Duration>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if ws::is_upgrade(head) {
        return serve_ws(io, head, plan, idle).await;
    }
    if !upgrade_spdy(&mut io, head, negotiate(head, PROTOCOLS)).await {
        return;
    }
    let pod = plan.pod_sandbox_id.clone();
    let why = spdy::serve(io, idle, |session| run(session, plan)).await;
    tracing::debug!(%pod, ?why, "port-forward connection closed");
}

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
    since: Option<tokio::time::Instant>,
}

async fn run(mut session: Session, plan: PortForwardPlan) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Dropped with the handler: every forward ends with the connection.
    let mut forwards = JoinSet::new();
    let mut sweep = tokio::time::interval(PAIR_TIMEOUT);
    loop {
        tokio::select! {
            s = session.accept() => {
                let Some(s) = s else { break };
                // Clients before requestID paired streams by order; every current one sends it.
                let key = s.header("requestid").unwrap_or_default().to_string();
                let pair = pairs.entry(key.clone()).or_default();
                pair.since.get_or_insert_with(tokio::time::Instant::now);
                match s.header("streamtype") {
                    Some("error") => pair.error = Some(s),
                    Some("data") => pair.data = Some(s),
                    other => {
                        tracing::warn!(stream_type = ?other, "unexpected port-forward stream type");
                        continue;
                    }
                }
                if pair.error.is_some() && pair.data.is_some()
                    && let Some(Pair { error: Some(e), data: Some(d), .. }) = pairs.remove(&key)
                {
                    forwards.spawn(forward_spdy(plan.clone(), e, d));
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
            _ = sweep.tick() => {
                let now = tokio::time::Instant::now();
                pairs.retain(|id, p| {
                    let keep = p.since.is_some_and(|t| now - t < PAIR_TIMEOUT);
                    if !keep {
                        tracing::warn!(request = %id, "port-forward stream pair never completed");
                    }
                    keep
                });
            }
        }
    }
}

/// The ports a WebSocket request names: `?port=80&port=8080` (kubelet) or `ports=80,8080`.
pub fn query_ports(path: &str) -> Result<Vec<u16>, String> {
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let mut ports = Vec::new();
    for pair in query.split('&') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        if name != "port" && name != "ports" {
            continue;
        }
        let value = value.replace("%2C", ",").replace("%2c", ",");
        for p in value.split(',').filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("invalid port {p:?}")),
            }
        }
    }
    Ok(ports)
}

async fn serve_ws<IO>(
    mut io: IO,
    head: &http::RequestHead,
    plan: PortForwardPlan,
    idle: Option<Duration>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if head
        .header_values("sec-websocket-protocol")
        .iter()
        .any(|p| p == TUNNEL_PROTOCOL)
    {
        if ws::upgrade(&mut io, head, &[TUNNEL_PROTOCOL])
            .await
            .is_none()
        {
            return;
        }
        let pod = plan.pod_sandbox_id.clone();
        let why = spdy::serve(ws::tunnel(io), idle, |session| run(session, plan)).await;
        tracing::debug!(%pod, ?why, "port-forward SPDY-over-WebSocket connection closed");
        return;
    }
    // The ports are checked before the upgrade, so a bad request gets a plain 400.
    let ports = match query_ports(&head.path) {
        // No ports in the URL: those of the PortForward call.
        Ok(p) if p.is_empty() => plan.ports.clone(),
        Ok(p) => p,
        Err(msg) => {
            let _ = http::respond_error(&mut io, 400, "Bad Request", &[], &msg).await;
            return;
        }
    };
    if ports.is_empty() || ports.len() > MAX_WS_PORTS {
        let msg =
            format!("between 1 and {MAX_WS_PORTS} ports must be specified (query parameter port)");
        let _ = http::respond_error(&mut io, 400, "Bad Request", &[], &msg).await;
        return;
    }
    let Some(protocol) = ws::upgrade(&mut io, head, WS_PROTOCOLS).await else {
        return;
    };
    let opts = ws::Opts {
        base64: protocol.contains("base64"),
        close_signal: false,
        readable: (0..ports.len()).map(|i| (2 * i) as u8).collect(),
    };
    let pod = plan.pod_sandbox_id.clone();
    let why = ws::serve(io, idle, opts, |mut session| async move {
        let mut forwards = JoinSet::new();
        for (i, port) in ports.iter().copied().enumerate() {
            let (d, e) = ((2 * i) as u8, (2 * i + 1) as u8);
            let data = Channel::from_ws(session.take_reader(d), session.writer(d));
            let error = Channel::from_ws(None, session.writer(e));
            // Each channel's first message is its port (what client-go checks).
            let _ = data.write(&port.to_le_bytes()).await;
            let _ = error.write(&port.to_le_bytes()).await;
            forwards.spawn(forward(plan.clone(), port, error, data));
        }
        while forwards.join_next().await.is_some() {}
        drop(session);
    })
    .await;
    tracing::debug!(%pod, %protocol, ?why, "port-forward WebSocket connection closed");
}

/// Checks the port header of a SPDY pair and forwards it.
async fn forward_spdy(plan: PortForwardPlan, error: Stream, data: Stream) {
    let header = data.header("port").map(str::to_owned);
    let (error, data) = (Channel::from_spdy(error), Channel::from_spdy(data));
    match header.as_deref().map(str::parse::<u16>) {
        Some(Ok(p)) if p > 0 => forward(plan, p, error, data).await,
        other => {
            let msg = format!("invalid port header {header:?}");
            tracing::debug!(?other, "{msg}");
            let _ = error.write(msg.as_bytes()).await;
            let _ = error.close().await;
            let _ = data.close().await;
        }
    }
}

async fn forward(plan: PortForwardPlan, port: u16, error: Channel, mut data: Channel) {
    let conn = match connect(plan.netns.clone(), port).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {}, uid : {e}",
                plan.pod_sandbox_id
            );
            tracing::info!(pod = %plan.pod_sandbox_id, port, error = %e, "port-forward connect failed");
            let _ = error.write(msg.as_bytes()).await;
            let _ = error.close().await;
            let _ = data.close().await;
            return;
        }
    };
    let (mut rd, mut wr) = conn.into_split();
    let out = data.writer();
    let to_pod = async {
        while let Some(chunk) = data.read().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let from_pod = async {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out
                        .write_bytes(bytes::Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    // As containerd does: once one direction ends, the other gets a second to finish (a
    // server that closed after its reply, a client that sent its request and half-closed),
    // then both streams end.
    tokio::pin!(from_pod, to_pod);
    let (mut pod_done, mut client_done) = (false, false);
    tokio::select! {
        () = &mut from_pod => pod_done = true,
        () = &mut to_pod => client_done = true,
    }
    let rest = async {
        if !pod_done {
            (&mut from_pod).await;
        }
        if !client_done {
            (&mut to_pod).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), rest).await;
    let _ = out.close().await;
    let _ = error.close().await;
}

/// Connects to `port` on loopback inside `netns` (the host's for `None`).
async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // setns(2) moves only the calling thread: a thread of our own, which exits afterwards,
    // never a pool thread.
    std::thread::Builder::new()
        .name("portforward".into())
        .spawn(move || {
            let _ = tx.send(connect_blocking(netns.as_deref(), port));
        })?;
    let sock = rx
        .await
        .map_err(|_| std::io::Error::other("the connect thread died"))??;
    sock.set_nonblocking(true)?;
    let _ = sock.set_nodelay(true);
    tokio::net::TcpStream::from_std(sock)
}

fn connect_blocking(netns: Option<&Path>, port: u16) -> std::io::Result<std::net::TcpStream> {
    if let Some(ns) = netns {
        let f = std::fs::File::open(ns)?;
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| std::io::Error::other(format!("setns {}: {e}", ns.display())))?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        // A server listening on [::1] only is still "localhost".
        Err(e) => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e)
        }
    }
}
