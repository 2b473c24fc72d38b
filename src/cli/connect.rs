//! The client's connection to the daemon: CRI v1 over the unix socket, with a deadline on
//! every call.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::error::CliError;

/// A connection attempt that takes longer than this means no daemon is listening.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The per-call deadline when --timeout is not given (pulls and execs have none by default:
/// they take as long as the image or the command takes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Flags every client verb shares (given before the verb: `crius --socket S pods`).
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectOpts {
    /// The CRI socket of the daemon to talk to.
    #[arg(long, env = "CRIUS_SOCKET", default_value = "/run/crius/crius.sock")]
    pub socket: PathBuf,
    /// Seconds to wait for each call's answer (default 60; pull and exec wait as long as
    /// needed unless this is given).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

/// Which deadline a call gets when the user gave none.
#[derive(Clone, Copy)]
pub enum Deadline {
    /// The default per-call deadline.
    Normal,
    /// No deadline (image pulls, command execution).
    Long,
}

pub struct Client {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
    pub(crate) timeout: Option<u64>,
}

impl Client {
    pub async fn connect(opts: &ConnectOpts) -> Result<Client, CliError> {
        let path = opts.socket.clone();
        // The URI is required by the API but unused: the connector always dials the socket.
        let channel =
            Endpoint::from_static("http://[::]:50051")
                .connect_timeout(CONNECT_TIMEOUT)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|source| CliError::Connect {
                    socket: opts.socket.clone(),
                    source,
                })?;
        Ok(Client {
            runtime: RuntimeServiceClient::new(channel.clone()),
            image: ImageServiceClient::new(channel),
            timeout: opts.timeout,
        })
    }

    /// Await one RPC under its deadline; `rpc` names it in errors.
    pub async fn call<T>(
        &self,
        rpc: &'static str,
        deadline: Deadline,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CliError> {
        let limit = match (self.timeout, deadline) {
            (Some(0), _) | (None, Deadline::Long) => None,
            (Some(secs), _) => Some(Duration::from_secs(secs)),
            (None, Deadline::Normal) => Some(DEFAULT_TIMEOUT),
        };
        let result = match limit {
            None => fut.await,
            Some(after) => tokio::time::timeout(after, fut)
                .await
                .map_err(|_| CliError::Timeout { rpc, after })?,
        };
        result
            .map(tonic::Response::into_inner)
            .map_err(|status| CliError::Rpc { rpc, status })
    }
}
