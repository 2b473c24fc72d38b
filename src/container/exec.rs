//! ExecSync: run a command in a running container and return its output and exit code. The
//! process is started by a one-shot `crius monitor` process through libcontainer's tenant
//! builder (never in the daemon), with the container's own process settings.

use crate::context::Context;
use crate::error::{CriError, CriResult};
use crate::monitor::ExecRequest;
use crate::store::ContainerState;
use k8s_cri::v1 as cri;
use std::time::Duration;

impl Context {
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_seconds: i64,
    ) -> CriResult<cri::ExecSyncResponse> {
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
        process.set_terminal(Some(false));
        process.set_console_size(None);
        let timeout = (timeout_seconds > 0).then(|| Duration::from_secs(timeout_seconds as u64));
        let output = crate::monitor::exec_sync(&ExecRequest {
            id: record.id.clone(),
            runtime_root: self.runtime_root(),
            bundle,
            process,
            tty: false,
            timeout,
            exe: self.exe.clone(),
        })
        .await
        .map_err(|e| CriError::internal(format!("exec in container {}", record.id), e))?;
        if output.timed_out {
            return Err(CriError::DeadlineExceeded(format!(
                "command timed out after {timeout_seconds}s in container {}",
                record.id
            )));
        }
        Ok(cri::ExecSyncResponse {
            stdout: output.stdout,
            stderr: output.stderr,
            exit_code: output.exit_code,
        })
    }
}
