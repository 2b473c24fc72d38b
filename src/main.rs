//! The `crius` binary: the daemon, the per-container monitor and the built-in client verbs.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "crius", version, about = "A small Kubernetes CRI runtime")]
struct Cli {
    /// Where the client verbs find the daemon, and how long they wait for it.
    #[command(flatten)]
    client: crius::cli::ConnectOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CRI v1 API on a unix socket.
    Daemon(crius::server::DaemonArgs),
    /// Supervise one container (started by the daemon; not for interactive use).
    #[command(hide = true)]
    Monitor(crius::monitor::MonitorArgs),
    /// Manage the local image store.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    #[command(flatten)]
    Client(crius::cli::Verb),
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Load an OCI image-layout (or `docker save`) tar archive into the image store.
    Import {
        /// The archive; "-" reads standard input.
        file: PathBuf,
        /// The daemon's root directory.
        #[arg(long, default_value = "/var/lib/crius")]
        root: PathBuf,
    },
    /// Write images (by tag, digest or id) to an OCI image-layout tar archive, tags kept.
    Export {
        /// Images to export.
        #[arg(required = true)]
        refs: Vec<String>,
        /// The archive to write; "-" writes standard output.
        #[arg(long, short)]
        output: PathBuf,
        /// The daemon's root directory.
        #[arg(long, default_value = "/var/lib/crius")]
        root: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Client(verb) => ExitCode::from(crius::cli::run(&cli.client, &verb)),
        // The monitor must stay single-threaded: it runs before any tokio runtime exists.
        Command::Monitor(args) => ExitCode::from(crius::monitor::run(args)),
        Command::Daemon(args) => match crius::server::run_daemon(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crius daemon: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Image { command } => {
            let (verb, result) = match command {
                ImageCommand::Import { file, root } => {
                    ("import", crius::cli::image_import(&root, &file))
                }
                ImageCommand::Export { refs, output, root } => {
                    ("export", crius::cli::image_export(&root, &refs, &output))
                }
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("crius image {verb}: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
