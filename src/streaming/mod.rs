//! The CRI streaming server: the HTTP(S) endpoint behind the URLs that Exec, Attach and
//! PortForward return.
//!
//! A CRI call validates its target, stores what it validated under a random single-use
//! token ([`token`]) and returns `http://ADDR:PORT/{exec,attach,portforward}/TOKEN`. The client
//! (crictl, or kubelet proxying kubectl) then upgrades a request on that URL to SPDY/3.1
//! ([`spdy`]) or WebSocket ([`ws`]), and uses one stream or numbered channel per channel
//! ([`channel`] hides which): remotecommand ([`remotecommand`]) for exec
//! and attach, portforward ([`portforward`]) for port forwarding. An unknown, used or expired
//! token gets 404. Connections idle for `stream_idle_timeout` are closed.

pub mod attach;
pub mod channel;
pub mod http;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod token;
pub mod ws;

use crate::config::Config;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tracing::Instrument;

pub use attach::AttachPlan;
pub use remotecommand::ExecPlan;

/// What a token stands for.
pub enum Pending {
    Exec(Box<ExecPlan>),
    Attach(AttachPlan),
    PortForward(PortForwardPlan),
}

impl Pending {
    fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// A validated PortForward: where to connect from.
#[derive(Debug, Clone)]
pub struct PortForwardPlan {
    pub pod_sandbox_id: String,
    /// The pod's pinned network namespace; `None` for a host-network pod.
    pub netns: Option<PathBuf>,
    /// The ports the PortForward call named (a WebSocket request without a `port` query
    /// parameter forwards these).
    pub ports: Vec<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("binding the streaming server on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("streaming TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    TooMany(#[from] token::TooMany),
}

pub struct StreamServer {
    base: String,
    tokens: token::Tokens<Pending>,
    idle: Option<Duration>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl StreamServer {
    /// Binds the listener and starts serving; returns the handle the CRI calls use.
    pub async fn start(config: &Config) -> Result<Arc<StreamServer>, StreamError> {
        let ip: IpAddr = config
            .stream_server_address
            .parse()
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let addr = SocketAddr::new(ip, config.stream_server_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StreamError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StreamError::Bind { addr, source })?;
        let tls = if config.enable_tls_streaming {
            Some(tls_acceptor(config)?)
        } else {
            None
        };
        // kubelet proxies from this node, so an unspecified bind address is reached on
        // loopback.
        let url_ip = match local.ip() {
            IpAddr::V4(v) if v.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            IpAddr::V6(v) if v.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            other => other,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = Arc::new(StreamServer {
            base: format!("{scheme}://{}", SocketAddr::new(url_ip, local.port())),
            tokens: token::Tokens::new(token::TOKEN_TTL),
            idle: config.stream_idle_timeout(),
            tls,
        });
        tracing::info!(url = %server.base, "streaming server listening");
        let s = server.clone();
        tokio::spawn(async move { s.accept_loop(listener).await });
        Ok(server)
    }

    /// Stores `pending` and returns its URL.
    pub fn issue(&self, pending: Pending) -> Result<String, StreamError> {
        let kind = pending.kind();
        let token = self.tokens.insert(pending)?;
        Ok(format!("{}/{kind}/{token}", self.base))
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "streaming accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            let s = self.clone();
            let span = tracing::info_span!("stream", %peer);
            tokio::spawn(
                async move {
                    match &s.tls {
                        Some(acceptor) => match acceptor.accept(sock).await {
                            Ok(tls) => s.handle(tls).await,
                            Err(e) => tracing::debug!(error = %e, "streaming TLS handshake failed"),
                        },
                        None => s.handle(sock).await,
                    }
                }
                .instrument(span),
            );
        }
    }

    async fn handle<IO>(&self, mut io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (head, rest) =
            match tokio::time::timeout(Duration::from_secs(30), http::read_head(&mut io)).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "streaming request refused");
                    let _ =
                        http::respond_error(&mut io, 400, "Bad Request", &[], &e.to_string()).await;
                    return;
                }
                Err(_) => return,
            };
        let mut parts = head.path.split('?').next().unwrap_or_default().split('/');
        let (kind, token) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(""), Some(kind), Some(token), None) => (kind, token),
            _ => {
                let _ =
                    http::respond_error(&mut io, 404, "Not Found", &[], "404 page not found").await;
                return;
            }
        };
        let pending = match self.tokens.take(token) {
            Some(p) if p.kind() == kind => p,
            _ => {
                tracing::info!(
                    kind,
                    "streaming request with an unknown, used or expired token"
                );
                let _ =
                    http::respond_error(&mut io, 404, "Not Found", &[], "404 page not found").await;
                return;
            }
        };
        let io = http::Prefixed::new(rest, io);
        match pending {
            Pending::Exec(plan) => remotecommand::serve_exec(io, &head, *plan, self.idle).await,
            Pending::Attach(plan) => attach::serve_attach(io, &head, plan, self.idle).await,
            Pending::PortForward(plan) => portforward::serve(io, &head, plan, self.idle).await,
        }
    }
}

fn tls_acceptor(config: &Config) -> Result<tokio_rustls::TlsAcceptor, StreamError> {
    use rustls_pki_types::pem::PemObject;
    let files = &config.x509_key_pair_streaming;
    let (Some(cert), Some(key)) = (&files.tls_cert_file, &files.tls_key_file) else {
        return Err(StreamError::Tls("no certificate and key configured".into()));
    };
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StreamError::Tls(format!("{}: {e}", cert.display())))?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| StreamError::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StreamError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StreamError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Negotiates the subprotocol: the first of the client's `X-Stream-Protocol-Version` values
/// that the server supports (as Go's httpstream.Handshake). `Ok(None)`: the client asked for
/// none.
pub fn negotiate<'a>(
    head: &http::RequestHead,
    supported: &[&'a str],
) -> Result<Option<&'a str>, String> {
    let offered = head.header_values("x-stream-protocol-version");
    if offered.is_empty() {
        return Ok(None);
    }
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, \
                 server accepts {supported:?}"
            )
        })
}

/// Answers the SPDY/3.1 upgrade (or the reason it cannot be done) and returns whether the
/// connection is now SPDY.
pub async fn upgrade_spdy<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    head: &http::RequestHead,
    protocol: Result<Option<&str>, String>,
) -> bool {
    let protocol = match protocol {
        Ok(p) => p,
        Err(msg) => {
            let _ = http::respond_error(io, 403, "Forbidden", &[], &msg).await;
            return false;
        }
    };
    let spdy = head
        .header_values("upgrade")
        .iter()
        .any(|u| u.eq_ignore_ascii_case("SPDY/3.1"));
    if !spdy || !head.has_token("connection", "upgrade") {
        let _ = http::respond_error(
            io,
            400,
            "Bad Request",
            &[],
            "unable to upgrade: missing upgrade headers in request (Upgrade: SPDY/3.1 expected)",
        )
        .await;
        return false;
    }
    let mut headers = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
    if let Some(p) = protocol {
        headers.push(("X-Stream-Protocol-Version", p));
    }
    http::respond_upgrade(io, &headers).await.is_ok()
}
