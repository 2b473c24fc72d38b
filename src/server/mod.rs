//! The daemon: configuration, start-up recovery and the gRPC server on the CRI socket.
//! The service adapters here are thin: decode, call the lifecycle code, encode; this is the
//! only layer where errors become gRPC statuses.

mod authority;
mod deadline;
mod image;
mod runtime;
mod socket;

use crate::config::{CgroupDriver, Config, DEFAULT_CONFIG_PATH};
use crate::image::ImageStore;
use crate::network::{Cni, CniOptions};
use crate::sandbox::{Context, OpLocks};
use crate::store::{ContainerStore, SandboxStore};
use anyhow::Context as _;
use clap::Args;
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use std::path::PathBuf;
use std::sync::Arc;

/// Every flag overrides the config file key of the same name.
#[derive(Args, Debug, Default)]
pub struct DaemonArgs {
    /// Config file (absent is fine when not given explicitly).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Persistent data directory [default: /var/lib/crius]
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Runtime state directory [default: /run/crius]
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// CRI socket [default: /run/crius/crius.sock]
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Image of every pod sandbox [default: the built-in pause image]
    #[arg(long)]
    pub sandbox_image: Option<String>,
    /// CNI network config directory [default: /etc/cni/net.d]
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI plugin directory; repeat for several [default: /opt/cni/bin and /usr/lib/cni]
    #[arg(long)]
    pub cni_bin_dir: Vec<PathBuf>,
    /// cgroupfs or systemd [default: cgroupfs]
    #[arg(long)]
    pub cgroup_driver: Option<CgroupDriver>,
    /// tracing filter, e.g. info or crius=debug [default: info]
    #[arg(long)]
    pub log_level: Option<String>,
}

impl DaemonArgs {
    /// The config file, then the flags on top, validated as a whole.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let (path, explicit) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut config = Config::load(&path, explicit)?;
        if let Some(v) = self.root {
            config.root = v;
        }
        if let Some(v) = self.state {
            config.state = v;
        }
        if let Some(v) = self.socket {
            config.socket = v;
        }
        if let Some(v) = self.sandbox_image {
            config.sandbox_image = v;
        }
        if let Some(v) = self.cni_conf_dir {
            config.cni.conf_dir = v;
        }
        if !self.cni_bin_dir.is_empty() {
            config.cni.bin_dirs = self.cni_bin_dir;
        }
        if let Some(v) = self.cgroup_driver {
            config.cgroup_driver = v;
        }
        if let Some(v) = self.log_level {
            config.log_level = v;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Events kept for a GetContainerEvents subscriber that is briefly behind.
const EVENT_BUFFER: usize = 1024;

/// `crius daemon`: resolve the config, start tokio, serve until SIGTERM/SIGINT.
pub fn run_daemon(args: DaemonArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log_level))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a log file or the journal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("crius")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    if config.cgroup_driver == CgroupDriver::Systemd {
        // Refused before anything is made: pods would fail one by one otherwise, each with
        // libcontainer's less telling error.
        tokio::task::spawn_blocking(crate::cgroup_driver::check_systemd)
            .await?
            .context("cgroup_driver = \"systemd\"")?;
        tracing::info!("cgroup driver: systemd (transient scopes over D-Bus)");
    }
    for dir in [&config.root, &config.state] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let images = ImageStore::open(&config.root)
        .with_context(|| format!("opening the image store in {}", config.root.display()))?;
    if config.sandbox_image == crate::config::BUILTIN_SANDBOX_IMAGE {
        let images = images.clone();
        tokio::task::spawn_blocking(move || images.ensure_builtin())
            .await?
            .context("importing the built-in sandbox image")?;
    }
    // Before any pull can run: blobs and snapshots of pulls refused or cut off before the
    // last stop (a full disk, a registry gone mid-pull) are referenced by nothing.
    {
        let images = images.clone();
        match tokio::task::spawn_blocking(move || images.gc()).await? {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "collecting unreferenced image content"),
        }
    }
    crate::snapshot::skeleton::ensure(&config.sandbox_skeleton_dir())
        .context("creating the sandbox rootfs skeleton")?;
    let (sandboxes, orphans) = SandboxStore::open(&config.sandboxes_dir())?;
    let (containers, container_orphans) = ContainerStore::open(&config.containers_dir())?;
    let cni = Cni::new(CniOptions {
        conf_dir: config.cni.conf_dir.clone(),
        bin_dirs: config.cni.bin_dirs.clone(),
        cache_dir: config.cni_cache_dir(),
        plugin_timeout: config.cni.plugin_timeout(),
    });
    let exe = std::fs::read_link("/proc/self/exe").context("resolving /proc/self/exe")?;
    let sandbox_oom_score_adj = crate::oci::oom::clamp(
        crate::oci::oom::SANDBOX_OOM_SCORE_ADJ,
        crate::oci::oom::own_score(),
        crate::oci::oom::node_can_lower(),
    );
    let puller = crate::image::Puller::new(images.clone(), config.registry.clone());
    // A broken ca_file fails only the pulls that need it; say so at start-up already.
    if let Err(e) = puller.registry().check() {
        tracing::warn!(error = %e, "registry configuration");
    }
    let ctx = Arc::new(Context {
        config: config.clone(),
        images,
        puller,
        sandboxes,
        containers,
        cni,
        locks: OpLocks::default(),
        standby: crate::monitor::Standby::new(exe.clone()),
        exe,
        sandbox_oom_score_adj,
        events: tokio::sync::broadcast::channel(EVENT_BUFFER).0,
        cpu: Default::default(),
        layer_usage: crate::stats::UsageCache::new(crate::stats::USAGE_MAX_AGE),
    });
    let container_service = crate::container::ContainerService::new(ctx.clone());
    let sandbox_service =
        crate::sandbox::SandboxService::new(ctx.clone(), container_service.clone());
    sandbox_service.recover_sandboxes(orphans).await;
    container_service
        .recover_containers(container_orphans)
        .await;
    container_service.spawn_exit_watcher();

    let stream = crate::streaming::StreamServer::start(&config)
        .await
        .context("starting the streaming server")?;
    let listener = socket::bind(&config.socket)?;
    ctx.standby.refill();
    tracing::info!(
        socket = %config.socket.display(),
        root = %config.root.display(),
        state = %config.state.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "crius serving CRI v1"
    );
    // Clients on a unix socket send any :authority; see `authority.rs`.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::UnixListenerStream::new(listener),
        |conn| conn.map(authority::AuthorityFix::new),
    );
    tonic::transport::Server::builder()
        .layer(deadline::DeadlineLayer)
        .add_service(RuntimeServiceServer::new(runtime::Runtime::new(
            sandbox_service,
            stream,
        )))
        .add_service(ImageServiceServer::new(image::Images::new(ctx.clone())))
        .serve_with_incoming_shutdown(incoming, shutdown_signal())
        .await
        .context("serving CRI")?;
    // Pods keep running: their monitors are not our children and are not signalled.
    let _ = std::fs::remove_file(&config.socket);
    tracing::info!("crius stopped; pods left running");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Runs a handler body that reads files (exit records of the containers it refreshes, cgroup
/// files, writable layers, the image store) on the blocking pool, off the async workers.
/// `service` is one of the cheap-to-clone services (or anything else `Clone`), moved into the
/// blocking task. Private here, so the handler modules below share it.
async fn on_blocking_pool<S, T, F>(service: &S, f: F) -> Result<T, tonic::Status>
where
    S: Clone + Send + 'static,
    T: Send + 'static,
    F: FnOnce(&S) -> T + Send + 'static,
{
    let service = service.clone();
    tokio::task::spawn_blocking(move || f(&service))
        .await
        .map_err(|e| tonic::Status::internal(format!("handler task: {e}")))
}
