//! Resource usage numbers for ContainerStats, ListContainerStats, PodSandboxStats and
//! ListPodSandboxStats, read from the kernel: cgroup control files (v1, v2 or hybrid) for CPU,
//! memory and pids, /proc/<pid>/net/dev for the pod's network, a du-like walk of the writable
//! layer for disk. Pure readers with no state of their own except the CPU sampler, which
//! remembers the previous sample to turn the kernel's cumulative counter into a rate, and the
//! usage cache, which keeps the last walk of each writable layer.

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
mod usage_cache;

pub use cgroup::{CgroupStats, cgroup_stats, sum_cgroup_stats};
pub use cpu::CpuSampler;
pub use cri::{container_stats_cri, pod_stats_cri};
pub use fs::{FsUsage, dir_usage};
pub use layout::{CgroupLayout, Source};
pub use net::pod_network_stats;
pub use usage_cache::{USAGE_MAX_AGE, UsageCache};
