//! crius: a Kubernetes CRI v1 runtime with youki's libcontainer linked in.
//!
//! The daemon (`crius daemon`) serves CRI over a unix socket; every container is created and
//! reaped by its own `crius monitor` process so that libcontainer never runs inside the
//! multi-threaded daemon and containers outlive daemon restarts.

pub(crate) mod cgroup_driver;
pub mod cli;
pub mod config;
pub(crate) mod container;
pub(crate) mod context;
pub(crate) mod error;
pub mod image;
pub mod monitor;
pub(crate) mod network;
pub(crate) mod oci;
pub(crate) mod oplocks;
pub(crate) mod sandbox;
pub mod server;
pub mod snapshot;
pub(crate) mod stats;
pub(crate) mod store;
pub(crate) mod streaming;
pub(crate) mod util;
pub(crate) mod validate;
