//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats: numbers read from
//! the kernel (cgroups, /proc/<pid>/net/dev) and the writable layer on disk (cached). All of
//! them read files: call them from a blocking thread (the server does).

use super::ContainerService;
use crate::error::CriResult;
use crate::stats::{self, CgroupStats};
use crate::store::{ContainerRecord, ContainerState, SandboxRecord};
use crate::util::{id_matches, labels_match};
use k8s_cri::v1 as cri;

impl ContainerService {
    /// The writable layer's usage from the cache (see `stats::UsageCache`); a container never
    /// walked before is walked now, on the caller's (blocking) thread.
    fn layer_usage_of(&self, id: &str) -> Option<stats::FsUsage> {
        let upper = self.container_dir(id).join("upper");
        let containers = self.containers.clone();
        self.layer_usage.get(
            id,
            move || stats::dir_usage(&upper).ok(),
            || containers.get(id).is_some(),
        )
    }

    fn cgroup_sample(&self, id: &str, cgroups_path: &str) -> (Option<CgroupStats>, Option<u64>) {
        match stats::cgroup_stats(cgroups_path) {
            Ok(cg) => {
                let nano = cg
                    .cpu_usage_ns
                    .and_then(|ns| self.cpu.usage_nano_cores(id, cg.timestamp, ns));
                (Some(cg), nano)
            }
            Err(e) => {
                if !e.is_not_found() {
                    tracing::debug!(id, error = %e, "cgroup stats");
                }
                (None, None)
            }
        }
    }

    fn stats_of(&self, r: &ContainerRecord) -> cri::ContainerStats {
        let running = r.state == ContainerState::Running;
        let (cg, nano) = if running {
            self.cgroup_sample(&r.id, &r.cgroups_path)
        } else {
            (None, None)
        };
        let fs = self.layer_usage_of(&r.id);
        stats::container_stats_cri(
            cri::ContainerAttributes {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
            },
            cg.as_ref(),
            nano,
            fs.as_ref(),
            &self.config.root.to_string_lossy(),
        )
    }

    pub fn container_stats(&self, id: &str) -> CriResult<cri::ContainerStats> {
        let record = self.refresh_container(self.container(id)?);
        Ok(self.stats_of(&record))
    }

    pub fn list_container_stats(
        &self,
        filter: Option<&cri::ContainerStatsFilter>,
    ) -> Vec<cri::ContainerStats> {
        self.containers
            .list()
            .into_iter()
            .map(|r| self.refresh_container(r))
            .filter(|r| {
                let Some(f) = filter else { return true };
                id_matches(&f.id, &r.id)
                    && id_matches(&f.pod_sandbox_id, &r.sandbox_id)
                    && labels_match(&f.label_selector, &r.config.labels)
            })
            .map(|r| self.stats_of(&r))
            .collect()
    }

    fn pod_stats_of(&self, s: &SandboxRecord) -> cri::PodSandboxStats {
        let containers: Vec<ContainerRecord> = self
            .containers
            .list()
            .into_iter()
            .filter(|c| c.sandbox_id == s.id)
            .map(|c| self.refresh_container(c))
            .collect();
        // kubelet's pod cgroup counts the pause and every container (even removed ones); with
        // no pod cgroup, the sum of the pause's and the running containers'.
        // The pod's cgroup is the directory of the pause's (a slice's path with the systemd
        // driver, the cgroup parent itself with cgroupfs).
        let has_parent = s
            .config
            .linux
            .as_ref()
            .is_some_and(|l| !l.cgroup_parent.trim_end_matches('/').is_empty());
        let parent = match s.cgroups_path.rsplit_once('/') {
            Some((dir, _)) if has_parent => dir.to_string(),
            _ => String::new(),
        };
        let (cg, nano) = if !s.is_ready() {
            (None, None)
        } else if !parent.is_empty() {
            self.cgroup_sample(&s.id, &parent)
        } else {
            let mut samples: Vec<CgroupStats> = stats::cgroup_stats(&s.cgroups_path)
                .ok()
                .into_iter()
                .collect();
            samples.extend(
                containers
                    .iter()
                    .filter(|c| c.state == ContainerState::Running)
                    .filter_map(|c| stats::cgroup_stats(&c.cgroups_path).ok()),
            );
            match stats::sum_cgroup_stats(&samples) {
                Some(sum) => {
                    let nano = sum
                        .cpu_usage_ns
                        .and_then(|ns| self.cpu.usage_nano_cores(&s.id, sum.timestamp, ns));
                    (Some(sum), nano)
                }
                None => (None, None),
            }
        };
        let net = match (s.is_ready(), s.host_network, s.init_pid) {
            (true, false, Some(pid)) => stats::pod_network_stats(pid).ok(),
            _ => None,
        };
        let process_count = cg.as_ref().and_then(|c| c.pids);
        stats::pod_stats_cri(
            cri::PodSandboxAttributes {
                id: s.id.clone(),
                metadata: s.config.metadata.clone(),
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
            },
            cg.as_ref(),
            nano,
            net.as_ref(),
            containers.iter().map(|c| self.stats_of(c)).collect(),
            process_count,
        )
    }

    pub fn pod_sandbox_stats(&self, id: &str) -> CriResult<cri::PodSandboxStats> {
        let record = self.sandbox(id)?;
        Ok(self.pod_stats_of(&self.refreshed(record)))
    }

    pub fn list_pod_sandbox_stats(
        &self,
        filter: Option<&cri::PodSandboxStatsFilter>,
    ) -> Vec<cri::PodSandboxStats> {
        self.sandboxes
            .list()
            .into_iter()
            .map(|s| self.refreshed(s))
            .filter(|s| {
                let Some(f) = filter else { return true };
                id_matches(&f.id, &s.id) && labels_match(&f.label_selector, &s.config.labels)
            })
            .map(|s| self.pod_stats_of(&s))
            .collect()
    }
}
