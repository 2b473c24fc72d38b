//! crius: a Kubernetes CRI v1 runtime with youki's libcontainer linked in.
//!
//! The daemon (`crius daemon`) serves CRI over a unix socket; every container is created and
//! reaped by its own `crius monitor` process so that libcontainer never runs inside the
//! multi-threaded daemon and containers outlive daemon restarts.

pub mod cgroup_driver;
pub mod cli;
pub mod config;
pub mod container;
pub mod context;
pub mod error;
pub mod image;
pub mod monitor;
pub mod network;
pub mod oci;
pub mod oplocks;
pub mod sandbox;
pub mod server;
pub mod snapshot;
pub mod stats;
pub mod store;
pub mod streaming;
pub mod util;
pub mod validate;
