//! UpdateContainerResources: new CPU, memory and hugepage limits written to the running
//! container's cgroup files (cgroupfs driver, v1 or v2) or set on its systemd scope (systemd
//! driver), then remembered in its record.
//!
//! The files are written here rather than through libcontainer: it is plain cgroupfs I/O with no
//! effect on the daemon's own process, and the monitor has no business holding resource state.

use super::ContainerService;
use crate::error::{CriError, CriResult};
use crate::stats::{CgroupLayout, Source};
use crate::store::ContainerState;
use k8s_cri::v1::LinuxContainerResources;
use oci_spec::runtime::LinuxResources;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("cgroups path {0:?} is not absolute")]
    BadPath(String),
    #[error("no {0} controller on this node")]
    NoController(&'static str),
    #[error(transparent)]
    Systemd(#[from] crate::cgroup_driver::DriverError),
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
}

impl ContainerService {
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: Option<LinuxContainerResources>,
    ) -> CriResult<()> {
        let Some(resources) = resources else {
            return Ok(());
        };
        let id = self.container(id)?.id;
        let ctx = self.clone();
        tokio::spawn(async move {
            let _op = ctx.locks.lock(&id).await;
            let record = ctx.refresh_container(ctx.container(&id)?);
            if !matches!(
                record.state,
                ContainerState::Created | ContainerState::Running
            ) {
                return Err(CriError::FailedPrecondition(format!(
                    "container {id} is not running"
                )));
            }
            let path = record.cgroups_path.clone();
            let requested = resources.clone();
            tokio::task::spawn_blocking(move || {
                let oci =
                    crate::oci::linux_resources(&requested, &crate::oci::HostFeatures::detect());
                if crate::cgroup_driver::is_scope(&path) {
                    // systemd owns a scope's cgroup: properties on the unit, or its next
                    // reload would put the old values back. The files too, as runc does: systemd
                    // has no property for some (hugetlb), and the values agree.
                    crate::cgroup_driver::update_scope(&path, &oci)?;
                    apply_to_scope(&path, &oci)
                } else {
                    apply(&path, &oci)
                }
            })
            .await
            .map_err(|e| CriError::Internal(format!("update task: {e}")))?
            .map_err(|e| CriError::internal(format!("updating resources of {id}"), e))?;
            ctx.containers
                .update(&id, |r| r.resources = Some(resources))
                .map_err(|e| CriError::internal("updating container record", e))?;
            tracing::info!(container = %id, "resources updated");
            Ok(())
        })
        .await
        .map_err(|e| CriError::Internal(format!("UpdateContainerResources task: {e}")))?
    }
}

fn write(dir: &Path, file: &str, value: impl ToString) -> Result<(), UpdateError> {
    let path = dir.join(file);
    let value = value.to_string();
    std::fs::write(&path, &value).map_err(|source| UpdateError::Write {
        path,
        value,
        source,
    })
}

/// cgroup v2's cpu.weight from v1 cpu.shares, as libcontainer converts them at create time (and
/// runc ≥ 1.3.2, crun): quadratic in log2(shares), so that the extremes map to the extremes
/// (2 → 1, 262144 → 10000) and the v1 default 1024 to the v2 default 100. The older linear
/// formula gave 1024 → 39, so an update that did not change the shares changed the weight.
fn shares_to_weight(shares: u64) -> u64 {
    const MIN_SHARES: u64 = 2;
    const MAX_SHARES: u64 = 262_144;
    const MAX_WEIGHT: u64 = 10_000;
    match shares {
        0 => 100,
        s if s <= MIN_SHARES => 1,
        s if s >= MAX_SHARES => MAX_WEIGHT,
        s => {
            let l = (s as f64).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            (10f64.powf(exponent).ceil() as u64).clamp(1, MAX_WEIGHT)
        }
    }
}

/// The unified keys libcgroups' systemd manager turns into unit properties (its
/// systemd/unified.rs); it drops every other key with only a warning.
const KEYS_SYSTEMD_HOLDS: [&str; 9] = [
    "cpu.weight",
    "cpu.max",
    "cpuset.cpus",
    "cpuset.mems",
    "memory.min",
    "memory.low",
    "memory.high",
    "memory.max",
    "pids.max",
];

/// The part of `r` that a scope's unit properties cannot hold: hugetlb limits (systemd has no
/// hugetlb controller) and the unified keys libcgroups' systemd manager does not map
/// (memory.swap.max and memory.oom.group among them). `None` when there is none.
fn beyond_systemd(r: &LinuxResources) -> Option<LinuxResources> {
    let pages = r.hugepage_limits().clone().filter(|p| !p.is_empty());
    let unified: HashMap<String, String> = r
        .unified()
        .iter()
        .flatten()
        .filter(|(key, _)| !KEYS_SYSTEMD_HOLDS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if pages.is_none() && unified.is_empty() {
        return None;
    }
    let mut rest = LinuxResources::default();
    rest.set_hugepage_limits(pages);
    rest.set_unified((!unified.is_empty()).then_some(unified));
    Some(rest)
}

/// At create, after libcontainer's systemd manager set the unit's properties: writes the part
/// of `r` it dropped into the scope's cgroup files, as runc does after systemd. Nothing (no
/// mountinfo read) when systemd holds all of it.
pub fn apply_beyond_systemd(cgroups_path: &str, r: &LinuxResources) -> Result<(), UpdateError> {
    match beyond_systemd(r) {
        Some(rest) => apply_to_scope(cgroups_path, &rest),
        None => Ok(()),
    }
}

/// [`apply`] on a systemd scope's cgroup: hugetlb enabled on the slices above it first.
fn apply_to_scope(cgroups_path: &str, r: &LinuxResources) -> Result<(), UpdateError> {
    if r.hugepage_limits().as_ref().is_some_and(|p| !p.is_empty()) {
        crate::cgroup_driver::enable_hugetlb(cgroups_path)?;
    }
    apply(cgroups_path, r)
}

/// Write `r` into the cgroup at `cgroups_path`.
pub fn apply(cgroups_path: &str, r: &LinuxResources) -> Result<(), UpdateError> {
    let rel = cgroups_path
        .strip_prefix('/')
        .ok_or_else(|| UpdateError::BadPath(cgroups_path.into()))?;
    let layout = CgroupLayout::host().map_err(|_| UpdateError::NoController("any"))?;
    let dir = |ctrl: &'static str| layout.source(ctrl, Path::new(rel));

    if let Some(cpu) = r.cpu() {
        match dir("cpu") {
            Some(Source::V1(d)) => {
                if let Some(shares) = cpu.shares() {
                    write(&d, "cpu.shares", shares)?;
                }
                // Period before quota: a quota is checked against the current period.
                if let Some(period) = cpu.period() {
                    write(&d, "cpu.cfs_period_us", period)?;
                }
                if let Some(quota) = cpu.quota() {
                    write(&d, "cpu.cfs_quota_us", quota)?;
                }
            }
            Some(Source::V2(d)) => {
                if let Some(shares) = cpu.shares() {
                    write(&d, "cpu.weight", shares_to_weight(shares))?;
                }
                if cpu.quota().is_some() || cpu.period().is_some() {
                    let quota = match cpu.quota() {
                        Some(q) if q > 0 => q.to_string(),
                        _ => "max".to_string(),
                    };
                    let period = cpu.period().unwrap_or(100_000);
                    write(&d, "cpu.max", format!("{quota} {period}"))?;
                }
            }
            None => {}
        }
        if let Some(Source::V1(d) | Source::V2(d)) = dir("cpuset") {
            if let Some(cpus) = cpu.cpus() {
                write(&d, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = cpu.mems() {
                write(&d, "cpuset.mems", mems)?;
            }
        }
    }

    if let Some(mem) = r.memory() {
        match dir("memory") {
            Some(Source::V1(d)) => {
                let limit = mem.limit();
                let swap = mem.swap();
                // memory.limit_in_bytes may never exceed memory.memsw.limit_in_bytes: raise the
                // combined limit first when growing, lower the memory limit first when shrinking.
                let first = limit.and_then(|l| write(&d, "memory.limit_in_bytes", l).err());
                if let Some(s) = swap {
                    write(&d, "memory.memsw.limit_in_bytes", s)?;
                }
                if let Some(e) = first {
                    match limit {
                        Some(l) => write(&d, "memory.limit_in_bytes", l)?,
                        None => return Err(e),
                    }
                }
            }
            Some(Source::V2(d)) => {
                if let Some(l) = mem.limit() {
                    let v = if l > 0 { l.to_string() } else { "max".into() };
                    write(&d, "memory.max", v)?;
                    if let Some(s) = mem.swap() {
                        let swap = if s > 0 {
                            (s - l).max(0).to_string()
                        } else {
                            "max".into()
                        };
                        write(&d, "memory.swap.max", swap)?;
                    }
                }
            }
            None => return Err(UpdateError::NoController("memory")),
        }
    }

    if let Some(pages) = r.hugepage_limits()
        && let Some(Source::V1(d) | Source::V2(d)) = dir("hugetlb")
    {
        let v2 = matches!(dir("hugetlb"), Some(Source::V2(_)));
        for p in pages {
            let file = if v2 {
                format!("hugetlb.{}.max", p.page_size())
            } else {
                format!("hugetlb.{}.limit_in_bytes", p.page_size())
            };
            write(&d, &file, p.limit())?;
        }
    }

    if let Some(unified) = r.unified()
        && let Some(root) = layout.unified_mount()
    {
        let d = root.join(rel);
        for (key, value) in unified {
            if key.contains('/') || key.starts_with('.') {
                return Err(UpdateError::BadPath(key.clone()));
            }
            write(&d, key, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{beyond_systemd, shares_to_weight};
    use oci_spec::runtime::{LinuxHugepageLimit, LinuxResources};
    use std::collections::HashMap;

    #[test]
    fn only_what_systemd_drops_is_left_for_the_files() {
        let mut r = LinuxResources::default();
        r.set_unified(Some(HashMap::from([
            ("memory.max".to_string(), "100".to_string()),
            ("pids.max".to_string(), "10".to_string()),
        ])));
        assert!(beyond_systemd(&r).is_none(), "systemd holds all of it");

        let mut page = LinuxHugepageLimit::default();
        page.set_page_size("2MB".into());
        page.set_limit(4 << 20);
        r.set_hugepage_limits(Some(vec![page.clone()]));
        r.set_unified(Some(HashMap::from([
            ("memory.max".to_string(), "100".to_string()),
            ("memory.swap.max".to_string(), "0".to_string()),
            ("memory.oom.group".to_string(), "1".to_string()),
        ])));
        let rest = beyond_systemd(&r).expect("hugetlb and two unified keys");
        assert_eq!(rest.hugepage_limits().as_deref(), Some(&[page][..]));
        assert_eq!(
            rest.unified().clone().unwrap(),
            HashMap::from([
                ("memory.swap.max".to_string(), "0".to_string()),
                ("memory.oom.group".to_string(), "1".to_string()),
            ])
        );
        assert!(rest.cpu().is_none() && rest.memory().is_none());
    }

    #[test]
    fn shares_map_to_weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(512), 59);
        assert_eq!(shares_to_weight(262144), 10000);
    }
}
