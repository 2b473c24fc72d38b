//! Application container lifecycle: one file per CRI verb, sharing the daemon's context.
//!
//! A container lives in `<root>/containers/<id>/` (record, bundle config.json, writable overlay
//! upper/work and the rootfs mount) and is run by its own `crius monitor` in `<state>/m/<id>/`,
//! which holds its stdio, writes its CRI log and records its exit.

pub mod create;
pub mod events;
pub mod exec;
pub mod list;
pub mod migration_prime;
pub mod recover;
pub mod remove;
pub mod rootfs_files;
pub mod start;
pub mod stats;
pub mod status;
pub mod stop;
pub mod update;
pub mod watch;

use crate::context::Context;
use crate::error::{CriError, CriResult};
use crate::store::ContainerRecord;
use std::path::PathBuf;
use std::sync::Arc;

/// The application container verbs and the exit watchers (of containers and sandboxes alike).
/// Cheap to clone; derefs to the shared [`Context`].
#[derive(Clone)]
pub struct ContainerService {
    ctx: Arc<Context>,
}

impl ContainerService {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }
}

impl std::ops::Deref for ContainerService {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl Context {
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers.dir_of(id)
    }

    /// The container record for a full id or unique prefix, or NotFound.
    pub fn container(&self, id: &str) -> CriResult<ContainerRecord> {
        if id.is_empty() {
            return Err(CriError::InvalidArgument("container id is empty".into()));
        }
        self.containers
            .resolve(id)
            .and_then(|id| self.containers.get(&id))
            .ok_or_else(|| CriError::NotFound(format!("container {id:?} not found")))
    }

    /// Ids of the containers of one pod.
    pub fn containers_of(&self, sandbox_id: &str) -> Vec<String> {
        self.containers
            .list()
            .into_iter()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(|c| c.id)
            .collect()
    }
}
