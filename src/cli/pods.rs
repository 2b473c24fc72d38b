//! Pod sandbox verbs: pods, inspectp, runp, stopp, rmp.

use std::path::PathBuf;

use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxState,
    PodSandboxStateValue, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StopPodSandboxRequest,
};
use serde_json::json;

use super::config_json;
use super::connect::{Client, Deadline};
use super::error::CliError;
use super::output::{self, ListOutput, Table};

/// `crius pods`: list pod sandboxes.
#[derive(clap::Args, Debug)]
pub struct PodsArgs {
    /// Only pods whose name contains this.
    #[arg(long)]
    pub name: Option<String>,
    /// Only pods whose namespace contains this.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only pods in this state: ready or notready.
    #[arg(long, short = 's')]
    pub state: Option<String>,
    /// Only pods with this label (key=value; repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    /// Only the pod with this id (or id prefix, where the runtime supports it).
    #[arg(long)]
    pub id: Option<String>,
    #[command(flatten)]
    pub list: ListOutput,
}

/// Pod ids, optionally every pod (`-a`), with `-f` to stop before removing.
#[derive(clap::Args, Debug)]
pub struct RmpArgs {
    /// Pods to remove.
    pub ids: Vec<String>,
    /// Remove every pod.
    #[arg(long, short)]
    pub all: bool,
    /// Stop the pods first (removing a ready pod fails otherwise on some runtimes).
    #[arg(long, short)]
    pub force: bool,
}

#[derive(clap::Args, Debug)]
pub struct RunpArgs {
    /// The pod's PodSandboxConfig as JSON (crictl's format: camelCase or snake_case).
    pub config: PathBuf,
    /// The runtime handler to ask for.
    #[arg(long, short, default_value = "")]
    pub runtime: String,
}

fn state_name(state: i32) -> &'static str {
    match PodSandboxState::try_from(state) {
        Ok(PodSandboxState::SandboxReady) => "Ready",
        Ok(PodSandboxState::SandboxNotready) => "NotReady",
        Err(_) => "Unknown",
    }
}

fn parse_state(s: &str) -> Result<PodSandboxState, CliError> {
    match s.to_ascii_lowercase().as_str() {
        "ready" | "sandbox_ready" => Ok(PodSandboxState::SandboxReady),
        "notready" | "not_ready" | "sandbox_notready" => Ok(PodSandboxState::SandboxNotready),
        _ => Err(CliError::Usage(format!(
            "unknown pod state {s:?} (ready or notready)"
        ))),
    }
}

pub async fn list_pods(c: &Client, args: &PodsArgs) -> Result<(), CliError> {
    let filter = PodSandboxFilter {
        id: args.id.clone().unwrap_or_default(),
        state: args
            .state
            .as_deref()
            .map(parse_state)
            .transpose()?
            .map(|s| PodSandboxStateValue { state: s as i32 }),
        label_selector: output::parse_labels(&args.label)?,
    };
    let resp = c
        .call(
            "ListPodSandbox",
            Deadline::Normal,
            c.runtime.clone().list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(filter),
            }),
        )
        .await?;
    let mut pods: Vec<PodSandbox> = resp
        .items
        .into_iter()
        .filter(|p| {
            let m = p.metadata.clone().unwrap_or_default();
            args.name.as_deref().is_none_or(|n| m.name.contains(n))
                && args
                    .namespace
                    .as_deref()
                    .is_none_or(|n| m.namespace.contains(n))
        })
        .collect();
    // Newest first, as crictl lists them.
    pods.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    let ids = pods.iter().map(|p| p.id.as_str());
    if let Some(done) = args
        .list
        .print_ids_or_json(ids, || json!({ "items": pods }))
    {
        return done;
    }
    let now = crate::util::now_nanos();
    let mut t = Table::new(&[
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ]);
    for p in &pods {
        let m = p.metadata.clone().unwrap_or_default();
        let id = args.list.id(&p.id);
        let runtime = if p.runtime_handler.is_empty() {
            "(default)".to_string()
        } else {
            p.runtime_handler.clone()
        };
        t.row(vec![
            id,
            output::relative_time(p.created_at, now),
            state_name(p.state).to_string(),
            m.name,
            m.namespace,
            m.attempt.to_string(),
            runtime,
        ]);
    }
    t.print()
}

pub async fn inspect_pods(c: &Client, ids: &[String]) -> Result<(), CliError> {
    for id in ids {
        let resp = c
            .call(
                "PodSandboxStatus",
                Deadline::Normal,
                c.runtime
                    .clone()
                    .pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: id.clone(),
                        verbose: true,
                    }),
            )
            .await?;
        output::print_json(&json!({
            "status": resp.status,
            "info": output::info_json(&resp.info),
            "containers_statuses": resp.containers_statuses,
        }))?;
    }
    Ok(())
}

pub async fn run_pod(c: &Client, args: &RunpArgs) -> Result<(), CliError> {
    let config: PodSandboxConfig = config_json::read_file(&args.config)?;
    let resp = c
        .call(
            "RunPodSandbox",
            // Pulling the sandbox image and running CNI plugins may take long.
            Deadline::Long,
            c.runtime.clone().run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: args.runtime.clone(),
            }),
        )
        .await?;
    println!("{}", resp.pod_sandbox_id);
    Ok(())
}

pub async fn stop_pods(c: &Client, ids: &[String]) -> Result<(), CliError> {
    if ids.is_empty() {
        return Err(CliError::Usage("name at least one pod id".into()));
    }
    for id in ids {
        stop_pod(c, id).await?;
        println!("Stopped sandbox {id}");
    }
    Ok(())
}

async fn stop_pod(c: &Client, id: &str) -> Result<(), CliError> {
    c.call(
        "StopPodSandbox",
        Deadline::Normal,
        c.runtime.clone().stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        }),
    )
    .await?;
    Ok(())
}

pub async fn remove_pods(c: &Client, args: &RmpArgs) -> Result<(), CliError> {
    let ids = if args.all {
        c.call(
            "ListPodSandbox",
            Deadline::Normal,
            c.runtime
                .clone()
                .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
        )
        .await?
        .items
        .into_iter()
        .map(|p| p.id)
        .collect()
    } else if args.ids.is_empty() {
        return Err(CliError::Usage(
            "name at least one pod id, or use -a".into(),
        ));
    } else {
        args.ids.clone()
    };
    for id in &ids {
        if args.force {
            stop_pod(c, id).await?;
        }
        c.call(
            "RemovePodSandbox",
            Deadline::Normal,
            c.runtime
                .clone()
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }),
        )
        .await?;
        println!("Removed sandbox {id}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_and_print() {
        assert_eq!(parse_state("Ready").unwrap(), PodSandboxState::SandboxReady);
        assert_eq!(
            parse_state("notready").unwrap(),
            PodSandboxState::SandboxNotready
        );
        assert!(parse_state("running").is_err());
        assert_eq!(state_name(PodSandboxState::SandboxReady as i32), "Ready");
        assert_eq!(state_name(7), "Unknown");
    }
}
