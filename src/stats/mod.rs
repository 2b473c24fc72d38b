//! Resource usage numbers for ContainerStats, ListContainerStats, PodSandboxStats and
//! ListPodSandboxStats, read from the kernel: cgroup control files (v1, v2 or hybrid) for CPU,
//! memory and pids, /proc/<pid>/net/dev for the pod's network, a du-like walk of the writable
//! layer for disk. Pure readers with no state of their own except the CPU sampler, which
//! remembers the previous sample to turn the kernel's cumulative counter into a rate.

mod cgroup;
mod cpu;
mod cri;
mod error;
mod fs;
mod keyed;
mod layout;
mod net;
#[cfg(test)]
mod tests;

pub use cgroup::{CgroupStats, cgroup_stats, sum_cgroup_stats};
pub use cpu::CpuSampler;
pub use cri::{
    DEFAULT_INTERFACE, container_stats_cri, cpu_usage, filesystem_usage, memory_usage,
    network_usage, pod_stats_cri, swap_usage,
};
pub use error::StatsError;
pub use fs::{FsUsage, dir_usage};
pub use layout::{CgroupLayout, Source};
pub use net::{
    InterfaceStats, NetworkStats, parse_net_dev, pod_network_stats, pod_network_stats_in,
};
