//! Pod sandbox lifecycle: one file per CRI verb, as methods of [`SandboxService`] over the
//! daemon's shared [`Context`]. Stopping and removing a pod stops and removes its containers
//! through the [`ContainerService`] it holds; the container side never calls back.

pub mod list;
pub mod paths;
pub mod recover;
pub mod remove;
pub mod rollback;
pub mod run;
pub mod status;
pub mod stop;
pub mod teardown;

use crate::container::ContainerService;
pub use crate::context::{Context, OpLocks};
use std::sync::Arc;

/// The pod sandbox verbs. Cheap to clone (two `Arc`s); derefs to the shared [`Context`].
#[derive(Clone)]
pub struct SandboxService {
    ctx: Arc<Context>,
    pub(crate) container_service: ContainerService,
}

impl SandboxService {
    pub fn new(ctx: Arc<Context>, container_service: ContainerService) -> Self {
        Self {
            ctx,
            container_service,
        }
    }
}

impl std::ops::Deref for SandboxService {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}
