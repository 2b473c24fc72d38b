//! The daemon's shared state: stores, network, locks and the event stream. The verbs are
//! methods of two services over it, [`crate::sandbox::SandboxService`] and
//! [`crate::container::ContainerService`] (the sandbox side holds the container side, never the
//! reverse). What both need (paths, record lookups, killing a monitored container, overlay
//! rootfs) is implemented on `Context` itself.

use crate::config::Config;
use crate::error::{CriError, CriResult};
use crate::image::ImageRecord;
use crate::image::ImageStore;
use crate::network::Cni;
pub use crate::oplocks::OpLocks;
use crate::stats::{CpuSampler, FsUsage, UsageCache};
use crate::store::{ContainerStore, SandboxStore};
use k8s_cri::v1::ContainerEventResponse;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything a lifecycle verb needs. Shared by the services behind an `Arc`.
pub struct Context {
    pub config: Config,
    pub images: ImageStore,
    /// Pulls for PullImage and for the configured sandbox image on first use.
    pub puller: crate::image::Puller,
    pub sandboxes: SandboxStore,
    pub containers: ContainerStore,
    pub cni: Cni,
    pub locks: OpLocks,
    /// This binary, re-executed as `crius monitor`.
    pub exe: PathBuf,
    /// A `crius monitor` ready for the next create.
    pub standby: Arc<crate::monitor::Standby>,
    /// The oom_score_adj the pause process gets after clamping to what the node allows.
    pub sandbox_oom_score_adj: i32,
    /// Container lifecycle events for GetContainerEvents subscribers (kubelet's evented PLEG).
    pub events: tokio::sync::broadcast::Sender<ContainerEventResponse>,
    /// Previous CPU samples, for usage_nano_cores between two stats calls.
    pub cpu: CpuSampler,
    /// The last walk of each container's writable layer, for the stats calls.
    pub layer_usage: Arc<UsageCache<FsUsage>>,
}

/// Waits for a new record's background fsync (see `store::records`).
pub async fn wait_synced(sync: crate::store::RecordSync) -> CriResult<()> {
    sync.await
        .map_err(|e| CriError::Internal(format!("record sync task: {e}")))?
        .map_err(|e| CriError::internal("syncing the record to disk", e))
}

impl Context {
    /// Mount a container's writable overlay rootfs for `image` under `base` (base/upper,
    /// base/work, base/rootfs) and return the rootfs path; on failure nothing is left mounted.
    pub async fn prepare_overlay(&self, image: &ImageRecord, base: &Path) -> CriResult<PathBuf> {
        let images = self.images.clone();
        let image = image.clone();
        let base = base.to_path_buf();
        tokio::task::spawn_blocking(move || -> CriResult<PathBuf> {
            let lowers = images.snapshot_dirs(&image).map_err(|e| {
                CriError::internal(format!("resolving snapshots of {}", image.id), e)
            })?;
            let dirs = crate::snapshot::prepare_rootfs(&lowers, &base)
                .map_err(|e| CriError::internal("preparing the overlay rootfs", e))?;
            Ok(dirs.merged)
        })
        .await
        .map_err(|e| CriError::Internal(format!("rootfs task: {e}")))?
    }

    /// The pod sandbox's rootfs as an overlay mount for its spec: the mount-point skeleton on
    /// top of the image's snapshots, read-only, mounted by the container's own setup inside
    /// its mount namespace (never on the host). Creates the empty base/rootfs it mounts onto.
    pub async fn sandbox_rootfs(
        &self,
        image: &ImageRecord,
        base: &Path,
    ) -> CriResult<(PathBuf, oci_spec::runtime::Mount)> {
        let images = self.images.clone();
        let image = image.clone();
        let base = base.to_path_buf();
        let skeleton = self.config.sandbox_skeleton_dir();
        tokio::task::spawn_blocking(move || {
            let mut lowers = images.snapshot_dirs(&image).map_err(|e| {
                CriError::internal(format!("resolving snapshots of {}", image.id), e)
            })?;
            lowers.insert(0, skeleton);
            let rootfs = crate::snapshot::RootfsDirs::new(&base).merged;
            std::fs::create_dir_all(&rootfs)
                .map_err(|e| CriError::internal("creating the sandbox rootfs mount point", e))?;
            let options = crate::snapshot::mount::overlay_options(&lowers, None, &rootfs)
                .map_err(|e| CriError::internal("sandbox rootfs overlay", e))?;
            let mut mount = oci_spec::runtime::Mount::default();
            mount.set_destination("/".into());
            mount.set_typ(Some("overlay".into()));
            mount.set_source(Some("overlay".into()));
            mount.set_options(Some(vec![options]));
            Ok((rootfs, mount))
        })
        .await
        .map_err(|e| CriError::Internal(format!("rootfs task: {e}")))?
    }

    /// Remove directories a crash left without a record (a create killed before its first
    /// record write holds nothing else): unmount what may be mounted, then delete.
    pub async fn remove_orphan_dirs(&self, orphans: Vec<PathBuf>) {
        for dir in orphans {
            tracing::warn!(path = %dir.display(), "removing a directory without a record");
            let d = dir.clone();
            let removed = tokio::task::spawn_blocking(move || {
                let shm = d.join("shm");
                crate::snapshot::unmount(&shm)
                    .and_then(|_| crate::snapshot::remove_rootfs(&d))
                    .map_err(|e| e.to_string())
                    .and_then(|_| std::fs::remove_dir_all(&d).map_err(|e| e.to_string()))
            })
            .await;
            if let Ok(Err(e)) = removed {
                tracing::error!(path = %dir.display(), error = %e, "cleaning orphan dir");
            }
        }
    }
}
