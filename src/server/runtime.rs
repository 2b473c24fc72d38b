//! CRI RuntimeService adapter.

use super::on_blocking_pool;
use crate::container::ContainerService;
use crate::error::CriError;
use crate::sandbox::SandboxService;
use crate::streaming::{Pending, StreamServer};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub const RUNTIME_NAME: &str = "crius";
pub const CRI_API_VERSION: &str = "v1";

pub struct Runtime {
    sandboxes: SandboxService,
    containers: ContainerService,
    stream: Arc<StreamServer>,
}

impl Runtime {
    pub fn new(sandboxes: SandboxService, stream: Arc<StreamServer>) -> Self {
        Runtime {
            containers: sandboxes.container_service.clone(),
            sandboxes,
            stream,
        }
    }

    fn issue(&self, pending: Pending) -> Result<String, Status> {
        self.stream
            .issue(pending)
            .map_err(|e| Status::resource_exhausted(e.to_string()))
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// Container verbs arrive with a later issue; until then kubelet gets a clear Unimplemented.
fn not_yet<T>(rpc: &str) -> Reply<T> {
    Err(CriError::Unimplemented(format!("{rpc} is not implemented by crius yet")).into())
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(&self, _req: Request<cri::VersionRequest>) -> Reply<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_API_VERSION.into(),
        }))
    }

    #[tracing::instrument(name = "RunPodSandbox", skip_all, fields(pod = tracing::field::Empty, id = tracing::field::Empty))]
    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Reply<cri::RunPodSandboxResponse> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| CriError::InvalidArgument("RunPodSandbox without a config".into()))?;
        if let Some(m) = &config.metadata {
            tracing::Span::current().record("pod", format!("{}/{}", m.namespace, m.name));
        }
        let id = self
            .sandboxes
            .run_pod_sandbox(config, req.runtime_handler)
            .await?;
        tracing::Span::current().record("id", id.as_str());
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    #[tracing::instrument(name = "StopPodSandbox", skip_all, fields(id = %req.get_ref().pod_sandbox_id))]
    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Reply<cri::StopPodSandboxResponse> {
        self.sandboxes
            .stop_pod_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    #[tracing::instrument(name = "RemovePodSandbox", skip_all, fields(id = %req.get_ref().pod_sandbox_id))]
    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Reply<cri::RemovePodSandboxResponse> {
        self.sandboxes
            .remove_pod_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    #[tracing::instrument(name = "PodSandboxStatus", level = "debug", skip_all, fields(id = %req.get_ref().pod_sandbox_id))]
    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Reply<cri::PodSandboxStatusResponse> {
        let req = req.into_inner();
        if req.pod_sandbox_id.is_empty() {
            return Err(CriError::InvalidArgument("pod sandbox id is empty".into()).into());
        }
        let status = on_blocking_pool(&self.sandboxes, move |s| {
            s.pod_sandbox_status(&req.pod_sandbox_id, req.verbose)
        })
        .await??;
        Ok(Response::new(status))
    }

    #[tracing::instrument(name = "ListPodSandbox", level = "debug", skip_all)]
    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Reply<cri::ListPodSandboxResponse> {
        let filter = req.into_inner().filter;
        let items = on_blocking_pool(&self.sandboxes, move |s| {
            s.list_pod_sandbox(filter.as_ref())
        })
        .await?;
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    #[tracing::instrument(name = "CreateContainer", skip_all, fields(pod = %req.get_ref().pod_sandbox_id, id = tracing::field::Empty))]
    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Reply<cri::CreateContainerResponse> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| CriError::InvalidArgument("CreateContainer without a config".into()))?;
        let id = self
            .containers
            .create_container(&req.pod_sandbox_id, config)
            .await?;
        tracing::Span::current().record("id", id.as_str());
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    #[tracing::instrument(name = "StartContainer", skip_all, fields(id = %req.get_ref().container_id))]
    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Reply<cri::StartContainerResponse> {
        self.containers
            .start_container(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    #[tracing::instrument(name = "StopContainer", skip_all, fields(id = %req.get_ref().container_id))]
    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Reply<cri::StopContainerResponse> {
        let req = req.into_inner();
        self.containers
            .stop_container(&req.container_id, req.timeout)
            .await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    #[tracing::instrument(name = "RemoveContainer", skip_all, fields(id = %req.get_ref().container_id))]
    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Reply<cri::RemoveContainerResponse> {
        self.containers
            .remove_container(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    #[tracing::instrument(name = "ListContainers", level = "debug", skip_all)]
    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Reply<cri::ListContainersResponse> {
        let filter = req.into_inner().filter;
        let containers = on_blocking_pool(&self.containers, move |c| {
            c.list_containers(filter.as_ref())
        })
        .await?;
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    #[tracing::instrument(name = "ContainerStatus", level = "debug", skip_all, fields(id = %req.get_ref().container_id))]
    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Reply<cri::ContainerStatusResponse> {
        let req = req.into_inner();
        let status = on_blocking_pool(&self.containers, move |c| {
            c.container_status(&req.container_id, req.verbose)
        })
        .await??;
        Ok(Response::new(status))
    }

    #[tracing::instrument(name = "UpdateContainerResources", skip_all, fields(id = %req.get_ref().container_id))]
    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Reply<cri::UpdateContainerResourcesResponse> {
        let req = req.into_inner();
        self.containers
            .update_container_resources(&req.container_id, req.linux)
            .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    #[tracing::instrument(name = "ReopenContainerLog", skip_all, fields(id = %req.get_ref().container_id))]
    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Reply<cri::ReopenContainerLogResponse> {
        self.containers
            .reopen_container_log(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    #[tracing::instrument(name = "ExecSync", skip_all, fields(id = %req.get_ref().container_id))]
    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> Reply<cri::ExecSyncResponse> {
        let req = req.into_inner();
        Ok(Response::new(
            self.containers
                .exec_sync(&req.container_id, req.cmd, req.timeout)
                .await?,
        ))
    }

    /// Validates the request now (a container that is not running is an error here, never a
    /// URL that fails later) and returns a single-use streaming URL.
    #[tracing::instrument(name = "Exec", skip_all, fields(id = %req.get_ref().container_id))]
    async fn exec(&self, req: Request<cri::ExecRequest>) -> Reply<cri::ExecResponse> {
        let plan = self.containers.prepare_exec(req.into_inner())?;
        let url = self.issue(Pending::Exec(Box::new(plan)))?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    /// Validates now (unknown: NotFound, not running: FailedPrecondition) and returns a
    /// single-use URL; the attach itself goes through the container's monitor.
    #[tracing::instrument(name = "Attach", skip_all, fields(id = %req.get_ref().container_id))]
    async fn attach(&self, req: Request<cri::AttachRequest>) -> Reply<cri::AttachResponse> {
        let plan = self.containers.prepare_attach(req.get_ref())?;
        let url = self.issue(Pending::Attach(plan))?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    #[tracing::instrument(name = "PortForward", skip_all, fields(pod = %req.get_ref().pod_sandbox_id))]
    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Reply<cri::PortForwardResponse> {
        let plan = self.containers.prepare_port_forward(req.get_ref())?;
        let url = self.issue(Pending::PortForward(plan))?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Reply<cri::ContainerStatsResponse> {
        let id = req.into_inner().container_id;
        let stats = on_blocking_pool(&self.containers, move |c| c.container_stats(&id)).await??;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Reply<cri::ListContainerStatsResponse> {
        let filter = req.into_inner().filter;
        let stats = on_blocking_pool(&self.containers, move |c| {
            c.list_container_stats(filter.as_ref())
        })
        .await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Reply<cri::PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let stats = on_blocking_pool(&self.containers, move |c| c.pod_sandbox_stats(&id)).await??;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Reply<cri::ListPodSandboxStatsResponse> {
        let filter = req.into_inner().filter;
        let stats = on_blocking_pool(&self.containers, move |c| {
            c.list_pod_sandbox_stats(filter.as_ref())
        })
        .await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    /// kubelet reports the node's pod CIDR here; CNI plugins own addressing, so nothing changes.
    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Reply<cri::UpdateRuntimeConfigResponse> {
        if let Some(cidr) = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
        {
            tracing::info!(pod_cidr = %cidr, "UpdateRuntimeConfig");
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, req: Request<cri::StatusRequest>) -> Reply<cri::StatusResponse> {
        // Reads the CNI configuration directory.
        let network = match on_blocking_pool(&self.containers, |c| c.cni.status()).await? {
            Ok(_) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            Err(e) => cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: format!("CNI is not ready: {e}"),
            },
        };
        let runtime = cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        let mut info = std::collections::HashMap::new();
        if req.into_inner().verbose {
            let c = &self.containers.config;
            info.insert(
                "config".to_string(),
                serde_json::json!({
                    "root": c.root, "state": c.state, "socket": c.socket,
                    "sandboxImage": c.sandbox_image, "cgroupDriver": c.cgroup_driver.as_str(),
                    "cniConfDir": c.cni.conf_dir, "cniBinDirs": c.cni.bin_dirs,
                })
                .to_string(),
            );
            // Ids with an operation running or waiting: 0 on an idle daemon.
            info.insert(
                "opLocks".to_string(),
                self.containers.locks.len().to_string(),
            );
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime, network],
            }),
            info,
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        _req: Request<cri::CheckpointContainerRequest>,
    ) -> Reply<cri::CheckpointContainerResponse> {
        Err(CriError::Unimplemented("checkpointing is not supported".into()).into())
    }

    type GetContainerEventsStream = Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn get_container_events(
        &self,
        _req: Request<cri::GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        use tokio_stream::StreamExt;
        let events =
            tokio_stream::wrappers::BroadcastStream::new(self.containers.events.subscribe())
                // A subscriber that falls behind loses events (as with containerd); kubelet's
                // evented PLEG relists when it sees a gap, so skipping is the right thing here.
                .filter_map(|e| e.ok().map(Ok));
        Ok(Response::new(Box::pin(events)))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Reply<cri::ListMetricDescriptorsResponse> {
        not_yet("ListMetricDescriptors")
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Reply<cri::ListPodSandboxMetricsResponse> {
        not_yet("ListPodSandboxMetrics")
    }

    async fn runtime_config(
        &self,
        _req: Request<cri::RuntimeConfigRequest>,
    ) -> Reply<cri::RuntimeConfigResponse> {
        let driver = match self.containers.config.cgroup_driver {
            crate::config::CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
            crate::config::CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
        };
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }
}
