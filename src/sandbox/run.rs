//! RunPodSandbox: the steps in order, each paired with its undo.
//!
//! start the monitor (it waits for the bundle) → reserve name + save record (Creating; its
//! fsync runs alongside and is awaited before CNI ADD) →
//! sandbox image → read-only overlay rootfs → resolv.conf/hostname/hosts and /dev/shm for the
//! containers → network namespace (created and pinned, loopback up) → OCI spec → bundle →
//! the monitor creates and starts the container, joining that namespace, while CNI ADD wires
//! it → record Ready.

use super::SandboxService;
use super::rollback::{Rollback, Undo};
use crate::error::{CriError, CriResult};
use crate::image::ImageRecord;
use crate::monitor::PendingCreate;
use crate::monitor::own_cgroup;
use crate::network::PodNetwork;
use crate::oci::spec::SandboxSpecInput;
use crate::store::sandbox::{RECORD_VERSION, sandbox_name};
use crate::store::{SandboxRecord, SandboxState, StoreError};
use k8s_cri::v1::{NamespaceMode, PodSandboxConfig};
use std::path::Path;

/// The default hosts file of a pod with its own network namespace.
const POD_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";

pub fn is_host_network(config: &PodSandboxConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map(|n| n.network == NamespaceMode::Node as i32)
        .unwrap_or(false)
}

impl SandboxService {
    /// Entry point: the body runs in its own task so it always finishes or rolls back, even if
    /// kubelet cancels the call.
    pub async fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
        runtime_handler: String,
    ) -> CriResult<String> {
        // Before any side effect: names, paths and ports that would reach outside our dirs.
        let node_hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::validate::pod_sandbox(
            &config,
            &crate::validate::Node {
                hostname: &node_hostname,
            },
        )?;
        if !runtime_handler.is_empty() && runtime_handler != "crius" && runtime_handler != "runc" {
            return Err(CriError::InvalidArgument(format!(
                "unknown runtime handler {runtime_handler:?}"
            )));
        }
        let ctx = self.clone();
        tokio::spawn(async move {
            let ran = ctx.run_pod_sandbox_inner(config, runtime_handler).await;
            if let Ok(id) = &ran {
                ctx.container_service.watch_sandbox(id);
            }
            ran
        })
        .await
        .map_err(|e| CriError::Internal(format!("RunPodSandbox task: {e}")))?
    }

    async fn run_pod_sandbox_inner(
        &self,
        config: PodSandboxConfig,
        runtime_handler: String,
    ) -> CriResult<String> {
        let mut timer = StepTimer::start();
        let meta = config.metadata.clone().unwrap_or_default();
        let id = crate::util::new_id();
        let _op = self.locks.lock(&id).await;
        let host_network = is_host_network(&config);
        let cgroup_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        let cgroups_path = self.sandbox_cgroups_path(&cgroup_parent, &id)?;
        let record = SandboxRecord {
            version: RECORD_VERSION,
            id: id.clone(),
            name: sandbox_name(&meta),
            config: config.clone(),
            runtime_handler,
            created_at: crate::util::now_nanos(),
            state: SandboxState::Creating,
            image_ref: self.config.sandbox_image.clone(),
            image_id: String::new(),
            host_network,
            netns_path: None,
            network: None,
            init_pid: None,
            monitor_pid: None,
            cgroups_path,
        };
        // The monitor starts now and waits for the bundle: its exec overlaps with the record,
        // rootfs and spec below. It starts the pause as soon as it is created (nothing has to
        // happen in between: the pause does not care whether CNI has finished).
        let mut monitor = self.monitor_config(&id, &self.sandbox_dir(&id));
        monitor.start = true;
        let pending = self
            .standby
            .prepare_create(&monitor)
            .map_err(|e| CriError::internal("starting the sandbox's monitor", e))?;
        timer.step("monitor-spawn");
        match self.sandboxes.create(record.clone()) {
            Ok(()) => {}
            Err(StoreError::NameReserved { name, id }) => {
                return Err(CriError::AlreadyExists(format!(
                    "pod sandbox name {name:?} is already reserved for sandbox {id}"
                )));
            }
            Err(e) => return Err(CriError::internal("saving sandbox record", e)),
        }
        let synced = self.sandboxes.sync_in_background(&id);
        timer.step("record");
        let mut rollback = Rollback::default();
        rollback.push(Undo::DeleteRecord { id: id.clone() });
        match self
            .run_steps(&record, pending, synced, &mut rollback, timer)
            .await
        {
            Ok(()) => {
                rollback.commit();
                tracing::info!(sandbox = %id, "pod sandbox ready");
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "RunPodSandbox failed; rolling back");
                rollback.run(self).await;
                Err(e)
            }
        }
    }

    /// The steps after the record exists. The record is written again only once, when the pod
    /// is Ready: everything a cleanup needs (rootfs, monitor, netns pin, CNI cache) is found
    /// from the sandbox id alone, so the intermediate states need no fsync of their own.
    async fn run_steps(
        &self,
        record: &SandboxRecord,
        mut monitor: PendingCreate,
        record_synced: crate::store::RecordSync,
        rollback: &mut Rollback,
        mut timer: StepTimer,
    ) -> CriResult<()> {
        let id = record.id.as_str();
        let config = &record.config;

        // On cgroup v1 the pod's cgroup is made on a blocking thread while the bundle is
        // prepared here; the create helper then only joins it (see `monitor::own_cgroup`).
        let cgroup_spec = crate::oci::spec::sandbox_cgroup_spec(config, &record.cgroups_path);
        let cgroup = tokio::task::spawn_blocking(move || own_cgroup::prepare(&cgroup_spec));
        let prepared = self.prepare_bundle(record, rollback, &mut timer).await;
        let plan = match cgroup.await {
            Ok(made) => made.map_err(|e| CriError::internal("creating the sandbox's cgroup", e)),
            Err(e) => Err(CriError::Internal(format!("cgroup task: {e}"))),
        };
        if let Ok(Some(_)) = &plan {
            rollback.push(Undo::RemoveOwnCgroup { id: id.into() });
        }
        let (image, netns_path, spec) = prepared?;
        if let Some(plan) = plan? {
            let dir = self.sandbox_dir(id);
            let bundle = monitor.dir().join(crate::monitor::BUNDLE_DIR);
            crate::util::blocking(|| own_cgroup::write_bundle(&spec, &dir, &bundle))
                .map_err(|e| CriError::internal("writing libcontainer's bundle", e))?;
            monitor.use_own_cgroup(plan, bundle);
        }
        timer.step("cgroup");

        crate::util::blocking(|| crate::cgroup_driver::make_cgroupfs_parents(&record.cgroups_path))
            .map_err(|e| CriError::internal("preparing the sandbox cgroup", e))?;
        rollback.push(Undo::KillContainer { id: id.into() });
        let create = async {
            monitor
                .go()
                .await
                .map_err(|e| CriError::internal("creating the sandbox container", e))
        };
        let (created, network) = match &netns_path {
            None => {
                let created = create.await?;
                // Nothing so far outlives a power loss outside our root directory.
                crate::context::wait_synced(record_synced).await?;
                (created, None)
            }
            Some(netns) => {
                // The IP the plugins allocate outlives a power loss: the record that lets a
                // later Stop release it must be on disk first.
                crate::context::wait_synced(record_synced).await?;
                // Pushed before ADD: a plugin that fails half way may already hold an IP.
                rollback.push(Undo::CniTeardown {
                    id: id.into(),
                    netns: netns.clone(),
                });
                let meta = config.metadata.clone().unwrap_or_default();
                let pod = PodNetwork {
                    id,
                    name: &meta.name,
                    namespace: &meta.namespace,
                    uid: &meta.uid,
                    netns,
                    port_mappings: &config.port_mappings,
                    dns: config.dns_config.as_ref(),
                    ifname: crate::network::DEFAULT_IFNAME,
                };
                let setup = async {
                    self.cni
                        .setup(&pod)
                        .await
                        .map_err(|e| CriError::internal("setting up the pod network", e))
                };
                // Both run to completion, so the rollback finds each side settled.
                let (created, network) = tokio::join!(create, setup);
                (created?, Some(network?))
            }
        };
        timer.step(if network.is_some() {
            "create+start+cni"
        } else {
            "create+start"
        });

        self.sandboxes
            .update(id, |r| {
                r.image_id = image.id.clone();
                r.init_pid = Some(created.init_pid);
                r.monitor_pid = Some(created.monitor_pid);
                r.netns_path = netns_path;
                r.network = network;
                r.state = SandboxState::Ready;
            })
            .map_err(|e| CriError::internal("updating sandbox record", e))?;
        timer.step("ready-record");
        tracing::debug!(sandbox = %id, steps = %timer, "RunPodSandbox step timings");
        Ok(())
    }

    /// The bundle: image, read-only rootfs, the files shared by the pod's containers, /dev/shm,
    /// the network namespace and the spec (written as `config.json`).
    async fn prepare_bundle(
        &self,
        record: &SandboxRecord,
        rollback: &mut Rollback,
        timer: &mut StepTimer,
    ) -> CriResult<(
        ImageRecord,
        Option<std::path::PathBuf>,
        oci_spec::runtime::Spec,
    )> {
        let id = record.id.as_str();
        let config = &record.config;
        let image = self.sandbox_image().await?;
        timer.step("image");

        let dir = self.sandbox_dir(id);
        rollback.push(Undo::RemoveRootfs { id: id.into() });
        let (rootfs, rootfs_mount) = self.sandbox_rootfs(&image, &dir).await?;
        timer.step("rootfs");

        // Shared by the pod's containers (the pause itself mounts none of them).
        crate::util::blocking(|| write_pod_files(&dir, config, record.host_network))
            .map_err(|e| CriError::internal("writing resolv.conf/hostname/hosts", e))?;

        // A pod with its own IPC namespace gets a host-side tmpfs for /dev/shm, shared by every
        // container of the pod (a bind from the pause's mount namespace through /proc/PID/root
        // is refused by the kernel). Removed with the rootfs.
        let namespaces = crate::oci::namespaces_for(
            config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.as_ref()),
        );
        if namespaces.ipc {
            let shm = self.sandbox_shm_dir(id);
            crate::util::blocking(|| mount_shm(&shm))
                .map_err(|e| CriError::internal("mounting the pod's /dev/shm", e))?;
        }

        // The pod's network namespace exists before its sandbox container, which joins it: CNI
        // can then wire it while the container is being created.
        let netns_path = (!record.host_network).then(|| self.netns_path(id));
        if let Some(netns) = &netns_path {
            rollback.push(Undo::Unpin {
                path: netns.clone(),
            });
            crate::network::netns::create(netns)
                .await
                .map_err(|e| CriError::internal("creating the pod network namespace", e))?;
            timer.step("netns");
        }

        let spec = crate::oci::spec::sandbox_spec(&SandboxSpecInput {
            id,
            config,
            image_config: &image.config,
            rootfs: &rootfs,
            rootfs_mount: Some(&rootfs_mount),
            netns_path: netns_path.as_deref(),
            cgroups_path: &record.cgroups_path,
            oom_score_adj: self.sandbox_oom_score_adj,
            seccomp_profile_root: &self.config.root.join("seccomp"),
            bounding_caps: crate::oci::host::own_bounding_set(),
        })
        .map_err(|e| CriError::spec("sandbox spec", e))?;
        let spec_json = serde_json::to_vec(&spec)
            .map_err(|e| CriError::Internal(format!("serializing sandbox spec: {e}")))?;
        // Not fsynced: after a crash the sandbox is torn down, never restarted from its bundle.
        crate::util::blocking(|| std::fs::write(dir.join("config.json"), &spec_json))
            .map_err(|e| CriError::internal("writing bundle config.json", e))?;
        timer.step("spec");
        Ok((image, netns_path, spec))
    }

    /// The configured sandbox image; the built-in one is imported from this binary when absent,
    /// so a node without any network can run pods. Any other is pulled on first use, with the
    /// registry configuration (mirrors, credentials), as containerd and CRI-O do: kubelet never
    /// pulls it. Concurrent first pods share one pull (the puller joins pulls of one image).
    async fn sandbox_image(&self) -> CriResult<ImageRecord> {
        let images = self.images.clone();
        let reference = self.config.sandbox_image.clone();
        let stored = tokio::task::spawn_blocking(move || -> CriResult<Option<ImageRecord>> {
            if let Some(image) = images
                .get(&reference)
                .map_err(|e| CriError::internal("looking up the sandbox image", e))?
            {
                return Ok(Some(image));
            }
            if reference == crate::config::BUILTIN_SANDBOX_IMAGE {
                return images
                    .ensure_builtin()
                    .map(Some)
                    .map_err(|e| CriError::internal("importing the built-in sandbox image", e));
            }
            Ok(None)
        })
        .await
        .map_err(|e| CriError::Internal(format!("image task: {e}")))??;
        if let Some(image) = stored {
            return Ok(image);
        }
        let reference = self.config.sandbox_image.clone();
        tracing::info!(image = %reference, "pulling the sandbox image");
        let puller = self.puller.clone();
        let opts = crate::image::PullOptions {
            credentials: None,
            pinned: true,
        };
        // On its own task: a pull cut off by a cancelled RunPodSandbox would only be redone.
        let pulled = tokio::spawn(async move { puller.pull(&reference, &opts).await })
            .await
            .map_err(|e| CriError::Internal(format!("pull task: {e}")))?;
        let reference = &self.config.sandbox_image;
        pulled.map(|report| report.image).map_err(|e| {
            let message = format!("pulling the sandbox image {reference}: {e}");
            match e.kind().grpc_code() {
                tonic::Code::Unavailable => CriError::Unavailable(message),
                tonic::Code::InvalidArgument => CriError::InvalidArgument(message),
                _ => CriError::FailedPrecondition(message),
            }
        })
    }
}

/// Wall time of each step of a request, for the debug log: where a slow RunPodSandbox spends
/// its time, without a profiler.
struct StepTimer {
    last: std::time::Instant,
    steps: Vec<(&'static str, std::time::Duration)>,
}

impl StepTimer {
    fn start() -> Self {
        StepTimer {
            last: std::time::Instant::now(),
            steps: Vec::new(),
        }
    }

    fn step(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.steps.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for StepTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={:.1}ms", d.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

/// Size of a pod's /dev/shm, as containerd and Docker default to.
const SHM_SIZE: &str = "size=65536k";

fn mount_shm(path: &Path) -> nix::Result<()> {
    use nix::mount::{MsFlags, mount};
    std::fs::create_dir_all(path)
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,{SHM_SIZE}").as_str()),
    )
}

pub struct PodFiles {
    pub resolv_conf: std::path::PathBuf,
    pub hostname: std::path::PathBuf,
    pub hosts: std::path::PathBuf,
}

/// resolv.conf from the pod's DnsConfig (the node's own when kubelet sends none), and the
/// hostname and hosts files that the pod's containers will share.
fn write_pod_files(
    dir: &Path,
    config: &PodSandboxConfig,
    host_network: bool,
) -> std::io::Result<PodFiles> {
    let files = PodFiles {
        resolv_conf: dir.join("resolv.conf"),
        hostname: dir.join("hostname"),
        hosts: dir.join("hosts"),
    };
    let resolv = match &config.dns_config {
        Some(dns) => crate::oci::dns::resolv_conf(dns),
        None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    std::fs::write(&files.resolv_conf, resolv)?;
    let hostname = if host_network || config.hostname.is_empty() {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        config.hostname.clone()
    };
    std::fs::write(&files.hostname, format!("{hostname}\n"))?;
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| POD_HOSTS.to_string())
    } else {
        POD_HOSTS.to_string()
    };
    std::fs::write(&files.hosts, hosts)?;
    Ok(files)
}
