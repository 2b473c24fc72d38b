//! Container helpers: kubelet-like container configs on the busybox test image, the CRI calls
//! the tests make, and a parser for the CRI log format.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecRequest, ExecSyncRequest, ExecSyncResponse, ImageSpec, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, PodSandboxConfig,
    RemoveContainerRequest, SecurityProfile, StartContainerRequest, StopContainerRequest,
};

use k8s_cri::v1::security_profile::ProfileType;

use super::TestDaemon;
use super::images::BUSYBOX_IMAGE;

/// A container as kubelet describes it: image, command, env, labels, a log path under the
/// pod's log directory, RuntimeDefault seccomp.
pub fn container_config(name: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: BUSYBOX_IMAGE.to_string(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        envs: vec![KeyValue {
            key: "FROM_CONFIG".into(),
            value: "yes".into(),
        }],
        labels: HashMap::from([
            ("io.kubernetes.container.name".to_string(), name.to_string()),
            ("app".to_string(), name.to_string()),
        ]),
        log_path: format!("{name}/0.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources::default()),
            security_context: Some(LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// A streaming Exec request as kubectl sends it: stdout always, stderr unless a tty merges it.
pub fn exec_req(id: &str, cmd: &[&str], stdin: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

/// The streaming URL an Exec call returns (the daemon's log tail on failure).
pub async fn exec_url(d: &TestDaemon, req: ExecRequest) -> String {
    d.runtime()
        .exec(req)
        .await
        .unwrap_or_else(|e| panic!("Exec: {e}\n{}", d.log_tail()))
        .into_inner()
        .url
}

pub fn security(c: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

pub fn resources(c: &mut ContainerConfig) -> &mut LinuxContainerResources {
    c.linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}

/// One parsed CRI log line: `<RFC3339Nano> <stream> <P|F> <content>`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub time: String,
    pub stream: String,
    pub tag: String,
    pub content: String,
}

pub fn parse_log(text: &str) -> Vec<LogLine> {
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let line = LogLine {
                time: parts.next().unwrap_or_default().to_string(),
                stream: parts.next().unwrap_or_default().to_string(),
                tag: parts.next().unwrap_or_default().to_string(),
                content: parts.next().unwrap_or_default().to_string(),
            };
            assert!(
                chrono::DateTime::parse_from_rfc3339(&line.time).is_ok(),
                "bad CRI log timestamp in {l:?}"
            );
            assert!(
                line.stream == "stdout" || line.stream == "stderr",
                "bad stream in {l:?}"
            );
            assert!(line.tag == "F" || line.tag == "P", "bad tag in {l:?}");
            line
        })
        .collect()
}

impl TestDaemon {
    pub async fn create_container(
        &self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> String {
        let name = config.metadata.clone().unwrap_or_default().name;
        self.runtime()
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", self.log_tail()))
            .into_inner()
            .container_id
    }

    pub async fn start_container(&self, id: &str) {
        self.runtime()
            .start_container(StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("StartContainer {id}: {e}\n{}", self.log_tail()));
    }

    /// Create and start; returns the id.
    pub async fn run_container(
        &self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> String {
        let id = self.create_container(pod, pod_config, config).await;
        self.start_container(&id).await;
        id
    }

    /// busybox imported, a pod named `name` and a `sleep 3600` container running in it (what a
    /// test execs into); returns (pod, container). [`Self::remove_sleeper`] undoes it.
    pub async fn run_sleeper(&self, name: &str) -> (String, String) {
        self.import_busybox();
        let pod_config = self.pod_config(name);
        let pod = self.run_pod(pod_config.clone()).await;
        let sleeper = container_config("sleeper", &["sleep", "3600"]);
        let id = self.run_container(&pod, &pod_config, sleeper).await;
        (pod, id)
    }

    /// Stops and removes what [`Self::run_sleeper`] made, then checks nothing is left behind.
    pub async fn remove_sleeper(&self, pod: &str, id: &str) {
        self.stop_container(id, 0).await;
        self.remove_container(id).await;
        self.stop_and_remove(pod).await;
        super::assert_no_leaks(self).await;
    }

    pub async fn container_status(&self, id: &str) -> (ContainerStatus, HashMap<String, String>) {
        let r = self
            .runtime()
            .container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
            .into_inner();
        (r.status.expect("status"), r.info)
    }

    /// The container's init pid from the verbose status.
    pub async fn container_pid(&self, id: &str) -> i32 {
        let (_, info) = self.container_status(id).await;
        super::pods::pid_from_info(&info).expect("pid in container verbose info")
    }

    /// Poll until the container has exited (or panic after `timeout`).
    pub async fn wait_exited(&self, id: &str, timeout: Duration) -> ContainerStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, _) = self.container_status(id).await;
            if status.state == ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} did not exit within {timeout:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop_container(&self, id: &str, timeout: i64) {
        self.runtime()
            .stop_container(StopContainerRequest {
                container_id: id.to_string(),
                timeout,
            })
            .await
            .unwrap_or_else(|e| panic!("StopContainer {id}: {e}"));
    }

    pub async fn remove_container(&self, id: &str) {
        self.runtime()
            .remove_container(RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}"));
    }

    pub async fn exec(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, tonic::Status> {
        self.runtime()
            .exec_sync(ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Exec that must exit 0; returns stdout.
    pub async fn exec_ok(&self, id: &str, cmd: &[&str]) -> String {
        let r = self
            .exec(
                id,
                cmd,
                super::scaled(Duration::from_secs(10)).as_secs() as i64,
            )
            .await
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {id}: {e}"));
        assert_eq!(
            r.exit_code,
            0,
            "{cmd:?} exited {}: {}",
            r.exit_code,
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    /// The absolute CRI log path of a container created with [`container_config`].
    pub fn container_log(&self, pod_config: &PodSandboxConfig, name: &str) -> PathBuf {
        Path::new(&pod_config.log_directory).join(format!("{name}/0.log"))
    }

    /// Import the busybox test image (built from this machine's busybox-static).
    pub fn import_busybox(&self) {
        let archive = self.dir().join("busybox.tar");
        super::images::write_busybox_image(&archive);
        self.import_image(&archive);
    }
}
