//! CreateContainer: reserve the name and save the record, writable overlay rootfs on the image's
//! snapshots, OCI spec, bundle, then the monitor creates the container (not started) with its
//! stdio going to the CRI log. Each step pushes its undo.

use super::ContainerService;
use crate::error::{CriError, CriResult};
use crate::image::ImageRecord;
use crate::monitor::Stdio;
use crate::oci::{ContainerSpecInput, SandboxFiles};
use crate::store::container::{CONTAINER_RECORD_VERSION, container_name};
use crate::store::{ContainerRecord, ContainerState, SandboxRecord, StoreError};
use k8s_cri::v1::{ContainerConfig, ContainerEventType, NamespaceMode};
use std::path::{Path, PathBuf};

/// What a failed CreateContainer must undo, newest last.
#[derive(Debug, Clone, Copy)]
enum Undo {
    Record,
    Rootfs,
    Container,
}

impl ContainerService {
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
    ) -> CriResult<String> {
        // Before any side effect: names and paths that would reach outside our dirs.
        crate::validate::container(&config)?;
        if sandbox_id.is_empty() {
            return Err(CriError::InvalidArgument("pod sandbox id is empty".into()));
        }
        let sandbox_id = self
            .sandboxes
            .resolve(sandbox_id)
            .ok_or_else(|| CriError::NotFound(format!("pod sandbox {sandbox_id:?} not found")))?;
        let ctx = self.clone();
        tokio::spawn(async move {
            let created = ctx.create_in_sandbox(&sandbox_id, config).await;
            if let Ok(id) = &created {
                ctx.watch_container(id);
            }
            created
        })
        .await
        .map_err(|e| CriError::Internal(format!("CreateContainer task: {e}")))?
    }

    async fn create_in_sandbox(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
    ) -> CriResult<String> {
        super::migration_prime::start();
        // Holding the pod's lock keeps StopPodSandbox/RemovePodSandbox from racing a create.
        let _pod = self.locks.lock(sandbox_id).await;
        let sandbox = self
            .sandboxes
            .get(sandbox_id)
            .map(|s| self.refreshed(s))
            .ok_or_else(|| CriError::NotFound(format!("pod sandbox {sandbox_id} not found")))?;
        if !sandbox.is_ready() {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {sandbox_id} is not ready"
            )));
        }
        let image_name = config.image.clone().unwrap_or_default().image;
        // Held until the record below names the image: RemoveImage then sees this container
        // as a user, or it removed the image first and we fail with NotFound.
        let (image, image_use) = self.find_image(&image_name).await?;

        let id = crate::util::new_id();
        let meta = config.metadata.clone().unwrap_or_default();
        let pod_meta = sandbox.config.metadata.clone().unwrap_or_default();
        let log_path = (!config.log_path.is_empty() && !sandbox.config.log_directory.is_empty())
            .then(|| PathBuf::from(&sandbox.config.log_directory).join(&config.log_path));
        let record = ContainerRecord {
            version: CONTAINER_RECORD_VERSION,
            id: id.clone(),
            name: container_name(&meta, &pod_meta),
            sandbox_id: sandbox_id.to_string(),
            config: config.clone(),
            image_ref: image_name.clone(),
            image_id: image.id.clone(),
            repo_digest: image.repo_digests.first().cloned(),
            created_at: crate::util::now_nanos(),
            started_at: 0,
            finished_at: 0,
            state: ContainerState::Creating,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path,
            cgroups_path: container_cgroups_path(&sandbox, &id),
            init_pid: None,
            stop_signal: crate::oci::stop_signal(&image.config),
            resources: config.linux.as_ref().and_then(|l| l.resources.clone()),
            user: None,
        };
        let _op = self.locks.lock(&id).await;
        match self.containers.create(record.clone()) {
            Ok(()) => {}
            Err(StoreError::NameReserved { name, id }) => {
                return Err(CriError::AlreadyExists(format!(
                    "container name {name:?} is already reserved for container {id}"
                )));
            }
            Err(e) => return Err(CriError::internal("saving container record", e)),
        }
        drop(image_use);
        let synced = self.containers.sync_in_background(&id);
        let mut undo = vec![Undo::Record];
        match self
            .create_steps(&record, &sandbox, &image, synced, &mut undo)
            .await
        {
            Ok(()) => {
                self.emit(&id, ContainerEventType::ContainerCreatedEvent);
                tracing::info!(container = %id, sandbox = %sandbox_id, "container created");
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "CreateContainer failed; rolling back");
                self.undo_create(&id, undo, &e).await;
                Err(e)
            }
        }
    }

    /// Undo a failed create, newest step first, stopping at the first step that fails: a
    /// container that could not be killed still runs on its rootfs, so removing that (or the
    /// record) would leave a live process nothing knows about. The record is then kept in
    /// Creating (CONTAINER_UNKNOWN) with the reason, and StopContainer/RemoveContainer
    /// finish the cleanup later.
    async fn undo_create(&self, id: &str, undo: Vec<Undo>, cause: &CriError) {
        let outcome =
            crate::sandbox::rollback::undo_until_failure(undo.into_iter().rev(), |step| {
                self.undo_create_step(id, step)
            })
            .await;
        let Err((step, error)) = outcome else {
            return;
        };
        tracing::error!(
            container = %id, ?step, %error,
            "CreateContainer rollback step failed; rollback stopped, container kept as unknown"
        );
        let message = format!(
            "CreateContainer failed ({cause}) and its cleanup stopped at {step:?}: {error}; \
             RemoveContainer finishes it"
        );
        if let Err(e) = self.containers.update(id, |r| {
            r.reason = super::status::REASON_UNKNOWN.into();
            r.message = message;
        }) {
            tracing::error!(container = %id, error = %e, "recording the failed rollback");
        }
    }

    async fn undo_create_step(&self, id: &str, step: Undo) -> CriResult<()> {
        match step {
            Undo::Container => self.kill_now(id).await,
            Undo::Rootfs => self.remove_container_rootfs(id).await,
            Undo::Record => {
                self.remove_monitor_dir(id).await;
                let deleted = self
                    .containers
                    .delete(id)
                    .map_err(|e| CriError::internal("removing container record", e));
                self.layer_usage.forget(id);
                deleted
            }
        }
    }

    async fn create_steps(
        &self,
        record: &ContainerRecord,
        sandbox: &SandboxRecord,
        image: &ImageRecord,
        record_synced: crate::store::RecordSync,
        undo: &mut Vec<Undo>,
    ) -> CriResult<()> {
        let id = record.id.as_str();
        let dir = self.container_dir(id);
        let config = &record.config;

        // The monitor starts now and waits for the bundle: its exec overlaps with the rootfs
        // and spec below. Dropped on an error, it is killed before it created anything.
        let mut monitor = self.monitor_config(id, &dir);
        monitor.stdio = Stdio {
            log_path: record.log_path.clone(),
            tty: config.tty,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            attach: true,
        };
        let pending = self
            .standby
            .prepare_create(&monitor)
            .map_err(|e| CriError::internal("starting the container's monitor", e))?;

        undo.push(Undo::Rootfs);
        let rootfs = self.prepare_overlay(image, &dir).await?;

        let spec = self.container_spec(record, sandbox, image, &rootfs).await?;
        let user = spec.process().as_ref().map(|p| {
            let u = p.user();
            (
                u.uid(),
                u.gid(),
                u.additional_gids().clone().unwrap_or_default(),
            )
        });
        let spec_json = serde_json::to_vec_pretty(&spec)
            .map_err(|e| CriError::Internal(format!("serializing container spec: {e}")))?;
        crate::util::blocking(|| -> CriResult<()> {
            crate::util::replace_file(&dir.join("config.json"), &spec_json)
                .map_err(|e| CriError::internal("writing bundle config.json", e))?;
            if let Some(log) = &record.log_path
                && let Some(parent) = log.parent()
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    CriError::internal(format!("creating log directory {}", parent.display()), e)
                })?;
            }
            crate::cgroup_driver::make_cgroupfs_parents(&record.cgroups_path)
                .map_err(|e| CriError::internal("preparing the container cgroup", e))
        })?;
        undo.push(Undo::Container);
        let created = pending
            .go()
            .await
            .map_err(|e| CriError::internal("creating the container", e))?;
        if crate::cgroup_driver::is_scope(&record.cgroups_path)
            && let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().clone())
        {
            // Before StartContainer: the init still waits to exec the container's command.
            let path = record.cgroups_path.clone();
            tokio::task::spawn_blocking(move || {
                crate::container::update::apply_beyond_systemd(&path, &resources)
            })
            .await
            .map_err(|e| CriError::Internal(format!("cgroup task: {e}")))?
            .map_err(|e| CriError::internal("setting the limits systemd does not hold", e))?;
        }
        // The container process exists; the record does not say so yet.
        crate::util::failpoint("create-container:created")
            .await
            .map_err(CriError::Internal)?;
        // The first record's fsync ran alongside; it precedes any later version.
        crate::context::wait_synced(record_synced).await?;
        self.containers
            .update(id, |r| {
                r.init_pid = Some(created.init_pid);
                r.user = user;
                r.state = ContainerState::Created;
            })
            .map_err(|e| CriError::internal("updating container record", e))?;
        Ok(())
    }

    /// Everything the pure spec builder needs, gathered from the node: the image's passwd and
    /// group files, host devices, prepared mount sources, oom limits.
    async fn container_spec(
        &self,
        record: &ContainerRecord,
        sandbox: &SandboxRecord,
        image: &ImageRecord,
        rootfs: &Path,
    ) -> CriResult<oci_spec::runtime::Spec> {
        let sandbox_pid = sandbox.init_pid.ok_or_else(|| {
            CriError::FailedPrecondition(format!("pod sandbox {} has no process", sandbox.id))
        })?;
        let target_pid = self.target_pid(&record.config)?;
        let rootfs_owned = rootfs.to_path_buf();
        let mut config = record.config.clone();
        let privileged = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .map(|s| s.privileged)
            .unwrap_or(false);
        let cri_mounts = std::mem::take(&mut config.mounts);
        let cri_devices = config.devices.clone();
        let shm = self.sandbox_shm_dir(&sandbox.id);
        let shm_probe = shm.clone();
        let mut gathered = tokio::task::spawn_blocking(move || -> CriResult<Gathered> {
            let passwd = super::rootfs_files::read_in_root(&rootfs_owned, "etc/passwd")
                .map_err(|e| CriError::internal("reading the image's /etc/passwd", e))?;
            let group = super::rootfs_files::read_in_root(&rootfs_owned, "etc/group")
                .map_err(|e| CriError::internal("reading the image's /etc/group", e))?;
            let mounts = crate::oci::container_mounts::prepare_mount_sources(&cri_mounts)
                .map_err(spec_error)?;
            let devices = crate::oci::resolve_devices(&cri_devices).map_err(spec_error)?;
            let host_devices = if privileged {
                crate::oci::resolve_all_host_devices().map_err(spec_error)?
            } else {
                Vec::new()
            };
            Ok(Gathered {
                passwd,
                group,
                mounts,
                devices,
                host_devices,
                dev_shm: is_own_mount(&shm_probe),
                node_can_lower_oom: crate::oci::oom::node_can_lower(),
                own_oom_score: crate::oci::oom::own_score(),
                host: crate::oci::HostFeatures::detect(),
            })
        })
        .await
        .map_err(|e| CriError::Internal(format!("spec task: {e}")))??;
        config.mounts = std::mem::take(&mut gathered.mounts);
        let sandbox_dir = self.sandbox_dir(&sandbox.id);
        let resolv = sandbox_dir.join("resolv.conf");
        let hostname = sandbox_dir.join("hostname");
        let hosts = sandbox_dir.join("hosts");
        let node_hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::oci::container_spec(&ContainerSpecInput {
            sandbox_id: &sandbox.id,
            config: &config,
            sandbox_config: &sandbox.config,
            image_config: &image.config,
            image_name: &record.image_ref,
            rootfs,
            sandbox_pid,
            target_pid,
            sandbox_files: SandboxFiles {
                resolv_conf: Some(&resolv),
                hostname: Some(&hostname),
                hosts: Some(&hosts),
                dev_shm: gathered.dev_shm.then_some(shm.as_path()),
            },
            cgroups_path: &record.cgroups_path,
            passwd: gathered.passwd.as_deref(),
            group: gathered.group.as_deref(),
            devices: &gathered.devices,
            host_devices: &gathered.host_devices,
            seccomp_profile_root: &self.config.root.join("seccomp"),
            node_can_lower_oom: gathered.node_can_lower_oom,
            own_oom_score: gathered.own_oom_score,
            node_hostname: &node_hostname,
            host: gathered.host,
        })
        .map_err(spec_error)
    }

    /// For pid namespace mode TARGET: the init pid of the running target container.
    fn target_pid(&self, config: &ContainerConfig) -> CriResult<Option<i32>> {
        let Some(opts) = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
        else {
            return Ok(None);
        };
        if opts.pid != NamespaceMode::Target as i32 {
            return Ok(None);
        }
        let target = self.container(&opts.target_id)?;
        match (target.state, target.init_pid) {
            (ContainerState::Running, Some(pid)) => Ok(Some(pid)),
            _ => Err(CriError::FailedPrecondition(format!(
                "target container {} is not running",
                target.id
            ))),
        }
    }

    /// The image a container names, or NotFound (kubelet pulls before it creates), held in
    /// use (see [`crate::image::leases::UseLocks`]) for as long as the guard lives.
    async fn find_image(
        &self,
        reference: &str,
    ) -> CriResult<(ImageRecord, crate::image::leases::ImageUse)> {
        let found = self.lookup_image(reference).await?;
        let image_use = self.images.hold(&found.id).await;
        // Again by id under the guard: a RemoveImage that got it first has removed the image.
        let image = self.lookup_image(&found.id).await?;
        Ok((image, image_use))
    }

    async fn lookup_image(&self, reference: &str) -> CriResult<ImageRecord> {
        let images = self.images.clone();
        let r = reference.to_string();
        tokio::task::spawn_blocking(move || images.get(&r))
            .await
            .map_err(|e| CriError::Internal(format!("image task: {e}")))?
            .map_err(|e| match e {
                crate::image::ImageError::InvalidReference { .. } => {
                    CriError::InvalidArgument(e.to_string())
                }
                other => CriError::internal("looking up the image", other),
            })?
            .ok_or_else(|| CriError::NotFound(format!("image {reference:?} not found")))
    }
}

/// What the spec builder needs from the node, read on a blocking thread.
struct Gathered {
    passwd: Option<String>,
    group: Option<String>,
    mounts: Vec<k8s_cri::v1::Mount>,
    devices: Vec<crate::oci::ResolvedDevice>,
    host_devices: Vec<crate::oci::ResolvedDevice>,
    /// The pod's /dev/shm tmpfs is mounted.
    dev_shm: bool,
    node_can_lower_oom: bool,
    own_oom_score: i32,
    host: crate::oci::HostFeatures,
}

/// Whether `path` is a mount of its own filesystem (the pod's /dev/shm tmpfs): its device
/// differs from its parent's. Two stats, where reading /proc/self/mountinfo in full costs a
/// line per mount on the node on every create.
fn is_own_mount(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(own), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    own.dev() != parent.dev()
}

fn spec_error(e: crate::oci::SpecError) -> CriError {
    CriError::spec("", e)
}

/// A container's cgroup sits beside the sandbox's, under the pod's cgroup parent.
fn container_cgroups_path(sandbox: &SandboxRecord, id: &str) -> String {
    crate::cgroup_driver::container_cgroup(&sandbox.cgroups_path, id)
}
