//! ExecSync and the streaming Exec: run a command in a running container. The process is
//! started by a one-shot `crius monitor --exec` process through libcontainer's tenant builder
//! (never in the daemon), with the container's own process settings. Also the validation of
//! Attach and PortForward, whose URLs the streaming server serves too.

use super::ContainerService;
use crate::error::{CriError, CriResult};
use crate::monitor::ExecRequest;
use crate::store::ContainerState;
use k8s_cri::v1 as cri;
use std::time::Duration;

impl ContainerService {
    /// The monitor request for running `cmd` in the running container `id` with the
    /// container's own process settings (user, env, cwd, capabilities, no_new_privileges...).
    pub fn exec_request(
        &self,
        id: &str,
        cmd: Vec<String>,
        tty: bool,
        timeout: Option<Duration>,
    ) -> CriResult<ExecRequest> {
        if cmd.is_empty() || cmd[0].is_empty() {
            return Err(CriError::InvalidArgument("exec command is empty".into()));
        }
        let record = self.refresh_container(self.container(id)?);
        if record.state != ContainerState::Running {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        let bundle = self.container_dir(&record.id);
        let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
            .map_err(|e| CriError::internal("reading the container's config.json", e))?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(cmd));
        process.set_terminal(Some(tty));
        process.set_console_size(None);
        Ok(ExecRequest {
            id: record.id.clone(),
            runtime_root: self.runtime_root(),
            bundle,
            process,
            tty,
            timeout,
            exe: self.exe.clone(),
        })
    }

    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_seconds: i64,
    ) -> CriResult<cri::ExecSyncResponse> {
        let timeout = (timeout_seconds > 0).then(|| Duration::from_secs(timeout_seconds as u64));
        let request = self.exec_request(id, cmd, false, timeout)?;
        let output = crate::monitor::exec_sync(&request)
            .await
            .map_err(|e| CriError::internal(format!("exec in container {}", request.id), e))?;
        if output.timed_out {
            return Err(CriError::DeadlineExceeded(format!(
                "command timed out after {timeout_seconds}s in container {}",
                request.id
            )));
        }
        Ok(cri::ExecSyncResponse {
            stdout: output.stdout,
            stderr: output.stderr,
            exit_code: output.exit_code,
        })
    }

    /// Validates a streaming Exec (as kubelet's and containerd's servers do) and returns
    /// what the streaming server runs once the client connects.
    pub fn prepare_exec(&self, req: cri::ExecRequest) -> CriResult<crate::streaming::ExecPlan> {
        if !req.stdin && !req.stdout && !req.stderr {
            return Err(CriError::InvalidArgument(
                "one of stdin, stdout, or stderr must be set".into(),
            ));
        }
        if req.tty && req.stderr {
            return Err(CriError::InvalidArgument(
                "tty and stderr cannot both be true".into(),
            ));
        }
        let request = self.exec_request(&req.container_id, req.cmd, req.tty, None)?;
        Ok(crate::streaming::ExecPlan {
            request,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            tty: req.tty,
        })
    }

    /// Validates an Attach as kubelet's streaming server and containerd do: a running
    /// container, at least one stream, not tty with stderr. stdin asked of a container
    /// created without stdin is accepted and goes nowhere, as in containerd (kubectl asks for
    /// it whenever `-i` is given).
    pub fn prepare_attach(
        &self,
        req: &cri::AttachRequest,
    ) -> CriResult<crate::streaming::AttachPlan> {
        if req.container_id.is_empty() {
            return Err(CriError::InvalidArgument("container id is empty".into()));
        }
        if !req.stdin && !req.stdout && !req.stderr {
            return Err(CriError::InvalidArgument(
                "one of stdin, stdout, or stderr must be set".into(),
            ));
        }
        if req.tty && req.stderr {
            return Err(CriError::InvalidArgument(
                "tty and stderr cannot both be true".into(),
            ));
        }
        let record = self.refresh_container(self.container(&req.container_id)?);
        if record.state != ContainerState::Running {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running (it is {})",
                record.id,
                record.state.as_str()
            )));
        }
        if req.stdin && !record.config.stdin {
            tracing::info!(id = %record.id, "attach asked for stdin of a container created without it; stdin is ignored");
        }
        Ok(crate::streaming::AttachPlan {
            id: record.id.clone(),
            monitor_dir: self.monitor_dir(&record.id),
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            // What the container has, not what the client said: a tty container's output
            // is all on stdout, and only it has a window to size.
            tty: record.config.tty,
            stdin_once: record.config.stdin_once,
        })
    }

    /// Validates a PortForward: the pod must exist and be ready.
    pub fn prepare_port_forward(
        &self,
        req: &cri::PortForwardRequest,
    ) -> CriResult<crate::streaming::PortForwardPlan> {
        if req.pod_sandbox_id.is_empty() {
            return Err(CriError::InvalidArgument("pod sandbox id is empty".into()));
        }
        let record = self.refreshed(self.sandbox(&req.pod_sandbox_id)?);
        if !record.is_ready() {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                record.id
            )));
        }
        if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(CriError::InvalidArgument(format!("invalid port {p}")));
        }
        let netns = if record.host_network {
            None
        } else {
            Some(record.netns_path.clone().ok_or_else(|| {
                CriError::FailedPrecondition(format!(
                    "pod sandbox {} has no network namespace",
                    record.id
                ))
            })?)
        };
        Ok(crate::streaming::PortForwardPlan {
            pod_sandbox_id: record.id,
            netns,
            // Checked above to be 1..=65535.
            ports: req.port.iter().map(|p| *p as u16).collect(),
        })
    }
}
