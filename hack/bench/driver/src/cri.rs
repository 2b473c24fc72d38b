//! A CRI v1 client over a unix socket and the pod/container configs every scenario uses, so both
//! runtimes get byte-identical requests.

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Longest any single CRI call may take before the bench gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Cri {
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
}

/// Connects once (fails fast when nothing listens): used to poll a starting daemon.
pub async fn connect(socket: &Path) -> Result<Cri> {
    let path = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("connect to {}", socket.display()))?;
    Ok(Cri {
        rt: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
        img: ImageServiceClient::new(channel).max_decoding_message_size(64 << 20),
    })
}

/// True when the daemon answers both Version and Status (what "ready" means for cold start).
pub async fn answers(cri: &mut Cri) -> bool {
    cri.rt.version(VersionRequest::default()).await.is_ok()
        && cri.rt.status(StatusRequest::default()).await.is_ok()
}

/// Everything that makes the generated pods unique to one bench run.
#[derive(Debug, Clone)]
pub struct PodTemplate {
    /// Distinguishes this run's pods from anything else on the runtime.
    pub tag: String,
    /// Parent of every pod cgroup (cgroupfs path), removed by hack/bench/run afterwards.
    pub cgroup_root: String,
    pub log_root: PathBuf,
    pub busybox: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    Host,
    Bridge,
}

impl PodTemplate {
    pub fn sandbox(&self, name: &str, net: Net) -> PodSandboxConfig {
        let uid = format!("{}-{name}", self.tag);
        let network = match net {
            Net::Host => NamespaceMode::Node,
            Net::Bridge => NamespaceMode::Pod,
        };
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: uid.clone(),
                namespace: "crius-bench".into(),
                attempt: 0,
            }),
            // kubelet leaves the hostname empty for host-network pods: they share the node's
            // UTS namespace, and runc refuses to set a hostname there.
            hostname: if net == Net::Host {
                String::new()
            } else {
                name.to_string()
            },
            log_directory: self.log_root.join(&uid).to_string_lossy().into_owned(),
            labels: [("crius-bench".to_string(), self.tag.clone())].into(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod{uid}", self.cgroup_root),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        pid: NamespaceMode::Pod as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A busybox `sleep 3600` container: the smallest workload that stays running.
    pub fn sleeper(&self) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "sleep".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.busybox.clone(),
                ..Default::default()
            }),
            command: vec!["/bin/sleep".into(), "3600".into()],
            log_path: "sleep.log".into(),
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        }
    }
}

impl Cri {
    pub async fn run_pod(&mut self, config: PodSandboxConfig) -> Result<String, tonic::Status> {
        let req = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        Ok(self
            .rt
            .run_pod_sandbox(req)
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    pub async fn stop_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.rt.stop_pod_sandbox(req).await.map(|_| ())
    }

    pub async fn remove_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.rt.remove_pod_sandbox(req).await.map(|_| ())
    }

    pub async fn create_container(
        &mut self,
        pod_id: &str,
        config: ContainerConfig,
        sandbox: PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox),
        };
        Ok(self
            .rt
            .create_container(req)
            .await?
            .into_inner()
            .container_id)
    }

    pub async fn start_container(&mut self, id: &str) -> Result<(), tonic::Status> {
        let req = StartContainerRequest {
            container_id: id.into(),
        };
        self.rt.start_container(req).await.map(|_| ())
    }

    pub async fn container_state(&mut self, id: &str) -> Result<i32, tonic::Status> {
        let req = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let resp = self.rt.container_status(req).await?.into_inner();
        Ok(resp
            .status
            .map(|s| s.state)
            .unwrap_or(ContainerState::ContainerUnknown as i32))
    }

    /// Pods created by this bench run (matched by label).
    pub async fn our_pods(&mut self, tag: &str) -> Result<Vec<String>, tonic::Status> {
        let req = ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: [("crius-bench".to_string(), tag.to_string())].into(),
                ..Default::default()
            }),
        };
        let items = self.rt.list_pod_sandbox(req).await?.into_inner().items;
        Ok(items.into_iter().map(|p| p.id).collect())
    }

    /// Stops and removes a pod with everything in it; errors are returned, not hidden.
    pub async fn teardown_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.stop_pod(id).await?;
        self.remove_pod(id).await
    }

    pub async fn pull(&mut self, image: &str) -> Result<String, tonic::Status> {
        let req = PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(self.img.pull_image(req).await?.into_inner().image_ref)
    }

    pub async fn remove_image(&mut self, image: &str) -> Result<(), tonic::Status> {
        let req = RemoveImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        };
        self.img.remove_image(req).await.map(|_| ())
    }
}
