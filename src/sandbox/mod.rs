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

pub use crate::context::{Context, OpLocks};
