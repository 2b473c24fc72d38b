//! A CRI v1 client over a unix socket and the pod/container configs every scenario uses, so both
//! runtimes get byte-identical requests.

use crate::podcgroup::Qos;
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

/// The container's CPU request in the Burstable and Guaranteed pods (100m), as kubelet turns it
/// into cpu shares; the Guaranteed pod's 100m limit as a CFS quota of a 100 ms period.
pub const REQUEST_CPU_SHARES: u64 = 102;
pub const GUARANTEED_CPU_QUOTA: i64 = 10_000;
const CPU_PERIOD: i64 = 100_000;
/// Memory: the Guaranteed pod's request = limit; the Burstable pod's limit (its request is half).
pub const GUARANTEED_MEMORY: i64 = 64 << 20;
pub const BURSTABLE_MEMORY_LIMIT: i64 = 128 << 20;
/// The pod security context every bench pod has: runAsUser, fsGroup and supplementalGroups.
const RUN_AS_USER: i64 = 1000;
const FS_GROUP: i64 = 2000;
const SUPPLEMENTAL_GROUP: i64 = 3000;

/// kubelet's default masked and read-only paths for an unprivileged container
/// (k8s.io/kubernetes/pkg/securitycontext).
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Everything that makes the generated pods unique to one bench run.
#[derive(Debug, Clone)]
pub struct PodTemplate {
    /// Distinguishes this run's pods from anything else on the runtime.
    pub tag: String,
    /// Parent of kubepods (cgroupfs path), removed by hack/bench/run afterwards.
    pub cgroup_root: String,
    pub log_root: PathBuf,
    /// Per-pod files kubelet bind-mounts into containers (/etc/hosts, termination log, token).
    pub pod_root: PathBuf,
    pub busybox: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    Host,
    Bridge,
}

/// One pod as kubelet would ask for it: its sandbox config, QoS class and pod cgroup.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub qos: Qos,
    pub cgroup: String,
    pub config: PodSandboxConfig,
}

fn seccomp_runtime_default() -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    })
}

/// The container resources kubelet computes for the bench's one container per QoS class
/// (kuberuntime's generateLinuxContainerResources; oom_score_adj from the QoS policy).
fn container_resources(qos: Qos) -> LinuxContainerResources {
    let base = LinuxContainerResources {
        cpu_period: CPU_PERIOD,
        ..Default::default()
    };
    match qos {
        Qos::BestEffort => LinuxContainerResources {
            cpu_shares: 2,
            oom_score_adj: 1000,
            ..base
        },
        Qos::Burstable => LinuxContainerResources {
            cpu_shares: REQUEST_CPU_SHARES as i64,
            memory_limit_in_bytes: BURSTABLE_MEMORY_LIMIT,
            // 1000 - 1000 * request / capacity, clamped to [2, 999]: near 999 on any real node.
            oom_score_adj: 999,
            ..base
        },
        Qos::Guaranteed => LinuxContainerResources {
            cpu_shares: REQUEST_CPU_SHARES as i64,
            cpu_quota: GUARANTEED_CPU_QUOTA,
            memory_limit_in_bytes: GUARANTEED_MEMORY,
            oom_score_adj: -997,
            ..base
        },
    }
}

impl PodTemplate {
    /// The `index`-th pod of a scenario: QoS classes rotate (BestEffort, Burstable, Guaranteed).
    pub fn pod(&self, name: &str, index: usize, net: Net) -> Pod {
        let qos = Qos::of_index(index);
        let uid = format!("{}-{name}", self.tag);
        let cgroup = qos.pod_cgroup(&self.cgroup_root, &uid);
        let network = match net {
            Net::Host => NamespaceMode::Node,
            Net::Bridge => NamespaceMode::Pod,
        };
        // kubelet sends the pod-level resources (the sum of its containers') for the runtime to
        // size the sandbox; BestEffort pods have none.
        let resources = (qos != Qos::BestEffort).then(|| LinuxContainerResources {
            oom_score_adj: 0,
            ..container_resources(qos)
        });
        let config = PodSandboxConfig {
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
            dns_config: (net == Net::Bridge).then(|| DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec![
                    "crius-bench.svc.cluster.local".into(),
                    "svc.cluster.local".into(),
                    "cluster.local".into(),
                ],
                options: vec!["ndots:5".into()],
            }),
            labels: [
                ("crius-bench".to_string(), self.tag.clone()),
                ("io.kubernetes.pod.name".to_string(), name.to_string()),
                (
                    "io.kubernetes.pod.namespace".to_string(),
                    "crius-bench".into(),
                ),
                ("io.kubernetes.pod.uid".to_string(), uid.clone()),
            ]
            .into(),
            annotations: [
                ("kubernetes.io/config.source".to_string(), "api".to_string()),
                (
                    "kubernetes.io/config.seen".to_string(),
                    "2026-01-01T00:00:00Z".into(),
                ),
            ]
            .into(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        // kubelet's default: no shared process namespace.
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    run_as_user: Some(Int64Value { value: RUN_AS_USER }),
                    supplemental_groups: vec![FS_GROUP, SUPPLEMENTAL_GROUP],
                    seccomp: seccomp_runtime_default(),
                    ..Default::default()
                }),
                resources,
                ..Default::default()
            }),
            ..Default::default()
        };
        Pod {
            name: name.to_string(),
            qos,
            cgroup,
            config,
        }
    }

    /// What kubelet prepares on disk before it creates a pod's containers: the pod's log dir with
    /// the container's subdirectory and the files it bind-mounts (hosts, termination log, a
    /// service-account token directory).
    pub fn prepare_pod_files(&self, pod: &Pod) -> Result<PathBuf> {
        let dir = self
            .pod_root
            .join(&pod.config.metadata.as_ref().unwrap().uid);
        let log_dir = PathBuf::from(&pod.config.log_directory).join("sleep");
        let token = dir.join("token");
        for d in [&log_dir, &token] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        let hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n10.0.0.1\t{}\n",
            pod.name
        );
        for (path, body) in [
            (dir.join("etc-hosts"), hosts.as_str()),
            (dir.join("termination-log"), ""),
            (token.join("token"), "bench-token"),
            (token.join("namespace"), "crius-bench"),
        ] {
            std::fs::write(&path, body).with_context(|| format!("write {}", path.display()))?;
        }
        Ok(dir)
    }

    /// Removes what [`Self::prepare_pod_files`] made (kubelet does once the pod is gone).
    pub fn remove_pod_files(&self, pod: &Pod) {
        let uid = &pod.config.metadata.as_ref().unwrap().uid;
        let _ = std::fs::remove_dir_all(self.pod_root.join(uid));
        let _ = std::fs::remove_dir_all(&pod.config.log_directory);
    }

    /// A busybox `sleep 3600` container, configured as kubelet configures one: service
    /// environment, the hosts/termination-log/token mounts, QoS resources, the pod's user and
    /// groups, RuntimeDefault seccomp, kubelet's masked and read-only paths.
    pub fn sleeper(&self, pod: &Pod, files: &std::path::Path) -> ContainerConfig {
        let mount = |host: PathBuf, ctr: &str, readonly: bool| Mount {
            container_path: ctr.into(),
            host_path: host.to_string_lossy().into_owned(),
            readonly,
            ..Default::default()
        };
        let env = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: v.into(),
        };
        let pod_meta = pod.config.metadata.as_ref().unwrap();
        let network = pod
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map_or(NamespaceMode::Pod as i32, |n| n.network);
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
            envs: vec![
                env("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                env("KUBERNETES_SERVICE_PORT", "443"),
                env("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
                env("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
                env("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
                env("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
                env("KUBERNETES_PORT_443_TCP_PORT", "443"),
                env("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
            ],
            mounts: vec![
                mount(
                    files.join("token"),
                    "/var/run/secrets/kubernetes.io/serviceaccount",
                    true,
                ),
                mount(files.join("etc-hosts"), "/etc/hosts", false),
                mount(files.join("termination-log"), "/dev/termination-log", false),
            ],
            labels: [
                (
                    "io.kubernetes.container.name".to_string(),
                    "sleep".to_string(),
                ),
                ("io.kubernetes.pod.name".to_string(), pod_meta.name.clone()),
                (
                    "io.kubernetes.pod.namespace".to_string(),
                    pod_meta.namespace.clone(),
                ),
                ("io.kubernetes.pod.uid".to_string(), pod_meta.uid.clone()),
            ]
            .into(),
            annotations: [
                (
                    "io.kubernetes.container.restartCount".to_string(),
                    "0".to_string(),
                ),
                (
                    "io.kubernetes.container.terminationMessagePath".to_string(),
                    "/dev/termination-log".to_string(),
                ),
            ]
            .into(),
            // kubelet: <container name>/<restart count>.log under the pod's log directory.
            log_path: "sleep/0.log".into(),
            linux: Some(LinuxContainerConfig {
                resources: Some(container_resources(pod.qos)),
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    run_as_user: Some(Int64Value { value: RUN_AS_USER }),
                    supplemental_groups: vec![FS_GROUP, SUPPLEMENTAL_GROUP],
                    seccomp: seccomp_runtime_default(),
                    masked_paths: MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
                    readonly_paths: READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
                    ..Default::default()
                }),
            }),
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

    /// A streaming Exec of `cmd` with stdout and stderr, no stdin, no tty; the URL to upgrade.
    pub async fn exec_url(
        &mut self,
        container: &str,
        cmd: &[&str],
    ) -> Result<String, tonic::Status> {
        let req = ExecRequest {
            container_id: container.into(),
            cmd: cmd.iter().map(|c| c.to_string()).collect(),
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        };
        Ok(self.rt.exec(req).await?.into_inner().url)
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
