//! Container verbs: ps, inspect, create, start, stop, rm, exec, attach.

use std::io::Write;
use std::path::PathBuf;

use k8s_cri::v1::{
    AttachRequest, Container, ContainerConfig, ContainerFilter, ContainerState,
    ContainerStateValue, ContainerStatusRequest, CreateContainerRequest, ExecRequest,
    ExecSyncRequest, ListContainersRequest, PodSandboxConfig, RemoveContainerRequest,
    StartContainerRequest, StopContainerRequest,
};
use serde_json::json;

use super::config_json;
use super::connect::{Client, Deadline};
use super::error::CliError;
use super::output::{self, ListOutput, Table};

/// `crius ps`: list containers (running ones unless -a).
#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Show containers in every state, not only running ones.
    #[arg(long, short)]
    pub all: bool,
    /// Only containers of this pod.
    #[arg(long, short)]
    pub pod: Option<String>,
    /// Only containers whose name contains this.
    #[arg(long)]
    pub name: Option<String>,
    /// Only the container with this id.
    #[arg(long)]
    pub id: Option<String>,
    /// Only containers in this state: created, running, exited or unknown.
    #[arg(long, short = 's')]
    pub state: Option<String>,
    /// Only containers with this label (key=value; repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    #[command(flatten)]
    pub list: ListOutput,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The pod to create the container in.
    pub pod_id: String,
    /// The ContainerConfig as JSON (crictl's format).
    pub container_config: PathBuf,
    /// The pod's PodSandboxConfig as JSON, as given to runp.
    pub pod_config: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, short, default_value_t = 10)]
    pub timeout: i64,
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Stop running containers first.
    #[arg(long, short)]
    pub force: bool,
    /// Remove every container.
    #[arg(long, short)]
    pub all: bool,
    pub ids: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Seconds the command may run (0: no limit); implies --sync.
    #[arg(long, default_value_t = 0)]
    pub timeout: i64,
    /// Use ExecSync (output collected, then printed) instead of a streaming Exec.
    #[arg(long, short = 's')]
    pub sync: bool,
    /// Pass our stdin to the command.
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Run the command on a tty (our terminal in raw mode, its size followed).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// The container to run the command in.
    pub id: String,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// Send our stdin to the container's (it must have been created with stdin).
    #[arg(long, short = 'i')]
    pub stdin: bool,
    /// Attach as a terminal: raw local terminal, window size passed on, no separate stderr
    /// (the container must have been created with a tty).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// The running container.
    pub id: String,
}

pub fn state_name(state: i32) -> &'static str {
    match ContainerState::try_from(state) {
        Ok(ContainerState::ContainerCreated) => "Created",
        Ok(ContainerState::ContainerRunning) => "Running",
        Ok(ContainerState::ContainerExited) => "Exited",
        Ok(ContainerState::ContainerUnknown) | Err(_) => "Unknown",
    }
}

fn parse_state(s: &str) -> Result<ContainerState, CliError> {
    match s.to_ascii_lowercase().as_str() {
        "created" => Ok(ContainerState::ContainerCreated),
        "running" => Ok(ContainerState::ContainerRunning),
        "exited" => Ok(ContainerState::ContainerExited),
        "unknown" => Ok(ContainerState::ContainerUnknown),
        _ => Err(CliError::Usage(format!(
            "unknown container state {s:?} (created, running, exited or unknown)"
        ))),
    }
}

/// The image column: the name the container was created with, or the short id when the
/// runtime only reports an id.
fn image_column(c: &Container, no_trunc: bool) -> String {
    let image = c
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| c.image_ref.clone());
    let is_id = image.starts_with("sha256:")
        || (image.len() == 64 && image.chars().all(|ch| ch.is_ascii_hexdigit()));
    if is_id && !no_trunc {
        output::short_id(&image)
    } else {
        image
    }
}

pub async fn list(c: &Client, args: &PsArgs) -> Result<Vec<Container>, CliError> {
    let state = match (&args.state, args.all) {
        (Some(s), _) => Some(parse_state(s)?),
        (None, true) => None,
        (None, false) => Some(ContainerState::ContainerRunning),
    };
    let filter = ContainerFilter {
        id: args.id.clone().unwrap_or_default(),
        state: state.map(|s| ContainerStateValue { state: s as i32 }),
        pod_sandbox_id: args.pod.clone().unwrap_or_default(),
        label_selector: output::parse_labels(&args.label)?,
    };
    let resp = c
        .call(
            "ListContainers",
            Deadline::Normal,
            c.runtime.clone().list_containers(ListContainersRequest {
                filter: Some(filter),
            }),
        )
        .await?;
    let mut containers: Vec<Container> = resp
        .containers
        .into_iter()
        .filter(|ct| {
            args.name
                .as_deref()
                .is_none_or(|n| ct.metadata.as_ref().is_some_and(|m| m.name.contains(n)))
        })
        .collect();
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    Ok(containers)
}

pub async fn ps(c: &Client, args: &PsArgs) -> Result<(), CliError> {
    let containers = list(c, args).await?;
    let ids = containers.iter().map(|ct| ct.id.as_str());
    if let Some(done) = args
        .list
        .print_ids_or_json(ids, || json!({ "containers": containers }))
    {
        return done;
    }
    let now = crate::util::now_nanos();
    let mut t = Table::new(&[
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
    ]);
    for ct in &containers {
        let m = ct.metadata.clone().unwrap_or_default();
        let (id, pod) = (args.list.id(&ct.id), args.list.id(&ct.pod_sandbox_id));
        t.row(vec![
            id,
            image_column(ct, args.list.no_trunc),
            output::relative_time(ct.created_at, now),
            state_name(ct.state).to_string(),
            m.name,
            m.attempt.to_string(),
            pod,
        ]);
    }
    t.print()
}

pub async fn inspect(c: &Client, ids: &[String]) -> Result<(), CliError> {
    for id in ids {
        let resp = c
            .call(
                "ContainerStatus",
                Deadline::Normal,
                c.runtime.clone().container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: true,
                }),
            )
            .await?;
        output::print_json(&json!({
            "status": resp.status,
            "info": output::info_json(&resp.info),
        }))?;
    }
    Ok(())
}

pub async fn create(c: &Client, args: &CreateArgs) -> Result<(), CliError> {
    let config: ContainerConfig = config_json::read_file(&args.container_config)?;
    let sandbox_config: PodSandboxConfig = config_json::read_file(&args.pod_config)?;
    let resp = c
        .call(
            "CreateContainer",
            Deadline::Long,
            c.runtime.clone().create_container(CreateContainerRequest {
                pod_sandbox_id: args.pod_id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            }),
        )
        .await?;
    println!("{}", resp.container_id);
    Ok(())
}

pub async fn start(c: &Client, ids: &[String]) -> Result<(), CliError> {
    for id in ids {
        c.call(
            "StartContainer",
            Deadline::Normal,
            c.runtime.clone().start_container(StartContainerRequest {
                container_id: id.clone(),
            }),
        )
        .await?;
        println!("{id}");
    }
    Ok(())
}

async fn stop_one(c: &Client, id: &str, timeout: i64) -> Result<(), CliError> {
    c.call(
        "StopContainer",
        // The runtime waits up to `timeout` seconds before it kills.
        Deadline::Long,
        c.runtime.clone().stop_container(StopContainerRequest {
            container_id: id.to_string(),
            timeout,
        }),
    )
    .await?;
    Ok(())
}

pub async fn stop(c: &Client, args: &StopArgs) -> Result<(), CliError> {
    for id in &args.ids {
        stop_one(c, id, args.timeout).await?;
        println!("{id}");
    }
    Ok(())
}

pub async fn remove(c: &Client, args: &RmArgs) -> Result<(), CliError> {
    let ids: Vec<String> = if args.all {
        let all = PsArgs {
            all: true,
            pod: None,
            name: None,
            id: None,
            state: None,
            label: Vec::new(),
            list: ListOutput::default(),
        };
        list(c, &all).await?.into_iter().map(|ct| ct.id).collect()
    } else if args.ids.is_empty() {
        return Err(CliError::Usage(
            "name at least one container id, or use -a".into(),
        ));
    } else {
        args.ids.clone()
    };
    for id in &ids {
        if args.force {
            stop_one(c, id, 0).await?;
        }
        c.call(
            "RemoveContainer",
            Deadline::Normal,
            c.runtime.clone().remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            }),
        )
        .await?;
        println!("{id}");
    }
    Ok(())
}

/// Run the command and relay its output; returns its exit code (for ours).
pub async fn exec(c: &Client, args: &ExecArgs) -> Result<i32, CliError> {
    if args.sync || args.timeout > 0 {
        if args.interactive || args.tty {
            return Err(CliError::Usage(
                "-i and -t need a streaming exec (no --sync or --timeout)".into(),
            ));
        }
        return exec_sync(c, args).await;
    }
    let resp = c
        .call(
            "Exec",
            Deadline::Normal,
            c.runtime.clone().exec(ExecRequest {
                container_id: args.id.clone(),
                cmd: args.cmd.clone(),
                tty: args.tty,
                stdin: args.interactive,
                stdout: true,
                // A tty merges stderr into its output.
                stderr: !args.tty,
            }),
        )
        .await?;
    let opts = super::stream_client::RemoteOpts {
        stdin: args.interactive,
        tty: args.tty,
    };
    super::stream_client::remote_command(&resp.url, opts)
        .await
        .map_err(|e| CliError::Answer {
            what: "exec in container",
            id: args.id.clone(),
            reason: e.to_string(),
        })
}

async fn exec_sync(c: &Client, args: &ExecArgs) -> Result<i32, CliError> {
    let resp = c
        .call(
            "ExecSync",
            Deadline::Long,
            c.runtime.clone().exec_sync(ExecSyncRequest {
                container_id: args.id.clone(),
                cmd: args.cmd.clone(),
                timeout: args.timeout,
            }),
        )
        .await?;
    std::io::stdout().lock().write_all(&resp.stdout)?;
    std::io::stdout().lock().flush()?;
    std::io::stderr().lock().write_all(&resp.stderr)?;
    Ok(resp.exit_code)
}

/// Attach to a running container's stdio through the streaming URL the Attach call
/// returns (as `crictl attach`); returns 0, or 1 when the server reported a failure.
pub async fn attach(c: &Client, args: &AttachArgs) -> Result<i32, CliError> {
    let resp = c
        .call(
            "Attach",
            Deadline::Normal,
            c.runtime.clone().attach(AttachRequest {
                container_id: args.id.clone(),
                stdin: args.stdin,
                tty: args.tty,
                stdout: true,
                stderr: !args.tty,
            }),
        )
        .await?;
    let channels = super::stream::Channels {
        stdin: args.stdin,
        stderr: !args.tty,
        tty: args.tty,
    };
    super::stream::run(&resp.url, channels).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::ImageSpec;

    #[test]
    fn states_parse_and_print() {
        assert_eq!(
            parse_state("Running").unwrap(),
            ContainerState::ContainerRunning
        );
        assert!(parse_state("ready").is_err());
        assert_eq!(state_name(ContainerState::ContainerExited as i32), "Exited");
        assert_eq!(state_name(42), "Unknown");
    }

    #[test]
    fn image_column_shortens_ids_only() {
        let mut c = Container {
            image: Some(ImageSpec {
                image: "docker.io/library/busybox:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(image_column(&c, false), "docker.io/library/busybox:1");
        c.image = None;
        c.image_ref = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(image_column(&c, false), "ababababababa");
        assert_eq!(image_column(&c, true), c.image_ref);
    }
}
