//! The built-in client: crictl's everyday verbs over CRI v1 on the daemon's socket (for nodes
//! without crictl), plus `crius image import|export` which work on the store directly.

pub(crate) mod config_json;
pub(crate) mod connect;
pub(crate) mod containers;
pub(crate) mod error;
pub mod image;
pub(crate) mod images;
pub(crate) mod logs;
pub(crate) mod output;
pub(crate) mod pods;
pub(crate) mod portforward;
pub(crate) mod stats;
pub(crate) mod stream;
pub(crate) mod stream_client;
pub(crate) mod system;

pub use connect::ConnectOpts;
pub(crate) use error::CliError;
pub use image::{image_export, image_import};

use connect::Client;

/// The client verbs, named and shaped like crictl's.
#[derive(clap::Subcommand, Debug)]
pub enum Verb {
    /// Show the runtime's name and versions.
    Version,
    /// Show the runtime's status and configuration (JSON).
    Info,
    /// List pod sandboxes.
    Pods(pods::PodsArgs),
    /// Show pod sandboxes' status (JSON).
    Inspectp {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run a pod sandbox from a PodSandboxConfig JSON file.
    Runp(pods::RunpArgs),
    /// Stop pod sandboxes.
    Stopp { ids: Vec<String> },
    /// Remove pod sandboxes.
    Rmp(pods::RmpArgs),
    /// List containers (running ones unless -a).
    Ps(containers::PsArgs),
    /// Show containers' status (JSON).
    Inspect {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Create a container in a pod: POD_ID CONTAINER.json POD.json.
    Create(containers::CreateArgs),
    /// Start created containers.
    Start {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop running containers.
    Stop(containers::StopArgs),
    /// Remove containers.
    Rm(containers::RmArgs),
    /// Run a command in a container and exit with its exit code: [-i] [-t] ID -- CMD...
    Exec(containers::ExecArgs),
    /// Forward local ports to a pod: POD LOCAL:REMOTE...
    PortForward(portforward::PortForwardArgs),
    /// Attach to a running container's stdout/stderr (-i: and stdin, -t: as a terminal).
    Attach(containers::AttachArgs),
    /// Print a container's logs.
    Logs(logs::LogsArgs),
    /// List images.
    Images(images::ImagesArgs),
    /// Pull an image.
    Pull(images::PullArgs),
    /// Remove images.
    Rmi(images::RmiArgs),
    /// Show images' status (JSON).
    Inspecti {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Show the image filesystem's usage (JSON).
    Imagefsinfo,
    /// Show containers' resource usage.
    Stats(stats::StatsArgs),
    /// Show pods' resource usage.
    Statsp(stats::StatsArgs),
}

impl Verb {
    /// The verb's name, for error messages.
    fn name(&self) -> &'static str {
        match self {
            Verb::Version => "version",
            Verb::Info => "info",
            Verb::Pods(_) => "pods",
            Verb::Inspectp { .. } => "inspectp",
            Verb::Runp(_) => "runp",
            Verb::Stopp { .. } => "stopp",
            Verb::Rmp(_) => "rmp",
            Verb::Ps(_) => "ps",
            Verb::Inspect { .. } => "inspect",
            Verb::Create(_) => "create",
            Verb::Start { .. } => "start",
            Verb::Stop(_) => "stop",
            Verb::Rm(_) => "rm",
            Verb::Exec(_) => "exec",
            Verb::PortForward(_) => "port-forward",
            Verb::Attach(_) => "attach",
            Verb::Logs(_) => "logs",
            Verb::Images(_) => "images",
            Verb::Pull(_) => "pull",
            Verb::Rmi(_) => "rmi",
            Verb::Inspecti { .. } => "inspecti",
            Verb::Imagefsinfo => "imagefsinfo",
            Verb::Stats(_) => "stats",
            Verb::Statsp(_) => "statsp",
        }
    }
}

/// Run one verb against the daemon; returns the process exit code (1 on any error, after
/// printing it; `exec` passes on the command's own code).
pub fn run(opts: &ConnectOpts, verb: &Verb) -> u8 {
    // A reader that goes away (`crius pods | head`) ends us quietly, as it does other tools,
    // instead of making every print fail.
    // SAFETY: setting a signal disposition to the default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
        .and_then(|rt| rt.block_on(dispatch(opts, verb)));
    match result {
        Ok(code) => code,
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("crius {}: {e}", verb.name());
            1
        }
    }
}

async fn dispatch(opts: &ConnectOpts, verb: &Verb) -> Result<u8, CliError> {
    let c = Client::connect(opts).await?;
    match verb {
        Verb::Version => system::version(&c).await?,
        Verb::Info => system::info(&c).await?,
        Verb::Pods(a) => pods::list_pods(&c, a).await?,
        Verb::Inspectp { ids } => pods::inspect_pods(&c, ids).await?,
        Verb::Runp(a) => pods::run_pod(&c, a).await?,
        Verb::Stopp { ids } => pods::stop_pods(&c, ids).await?,
        Verb::Rmp(a) => pods::remove_pods(&c, a).await?,
        Verb::Ps(a) => containers::ps(&c, a).await?,
        Verb::Inspect { ids } => containers::inspect(&c, ids).await?,
        Verb::Create(a) => containers::create(&c, a).await?,
        Verb::Start { ids } => containers::start(&c, ids).await?,
        Verb::Stop(a) => containers::stop(&c, a).await?,
        Verb::Rm(a) => containers::remove(&c, a).await?,
        Verb::Exec(a) => {
            let code = containers::exec(&c, a).await?;
            // Exit codes outside 0..=255 (a signal as negative) still mean failure.
            return Ok(u8::try_from(code).unwrap_or(1));
        }
        Verb::PortForward(a) => portforward::port_forward(&c, a).await?,
        Verb::Attach(a) => {
            let code = containers::attach(&c, a).await?;
            return Ok(u8::try_from(code).unwrap_or(1));
        }
        Verb::Logs(a) => logs::logs(&c, a).await?,
        Verb::Images(a) => images::images(&c, a).await?,
        Verb::Pull(a) => images::pull(&c, a).await?,
        Verb::Rmi(a) => images::rmi(&c, a).await?,
        Verb::Inspecti { references } => images::inspecti(&c, references).await?,
        Verb::Imagefsinfo => images::imagefsinfo(&c).await?,
        Verb::Stats(a) => stats::stats(&c, a).await?,
        Verb::Statsp(a) => stats::statsp(&c, a).await?,
    }
    Ok(0)
}
