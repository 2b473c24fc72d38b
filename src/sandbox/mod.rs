//! Pod sandbox lifecycle: one file per CRI verb, sharing the daemon's context.

pub mod list;
pub mod paths;
pub mod recover;
pub mod remove;
pub mod rollback;
pub mod run;
pub mod status;
pub mod stop;
pub mod teardown;

use crate::config::Config;
use crate::image::ImageStore;
use crate::network::Cni;
use crate::store::SandboxStore;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Everything a lifecycle verb needs. Shared by the gRPC services behind an `Arc`.
pub struct Context {
    pub config: Config,
    pub images: ImageStore,
    pub sandboxes: SandboxStore,
    pub cni: Cni,
    pub locks: OpLocks,
    /// This binary, re-executed as `crius monitor`.
    pub exe: PathBuf,
    /// The oom_score_adj the pause process gets after clamping to what the node allows.
    pub sandbox_oom_score_adj: i32,
}

/// Serialises lifecycle operations per object id (libcontainer takes no lock of its own, and a
/// Stop racing a Run must see the Run's finished record).
#[derive(Default)]
pub struct OpLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl OpLocks {
    pub async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.locks.lock().expect("op locks");
            map.entry(id.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Forget the lock of a removed object.
    pub fn forget(&self, id: &str) {
        self.locks.lock().expect("op locks").remove(id);
    }
}
