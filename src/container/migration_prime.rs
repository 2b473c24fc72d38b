//! Starting the kernel's cgroup-migration grace period before libcontainer needs it.
//!
//! libcontainer moves every new container's intermediate process into its cgroup by writing to
//! `cgroup.procs`. For that write the kernel takes `cgroup_threadgroup_rwsem` for writing, and
//! entering it waits for a full RCU grace period unless a migration happened within about the
//! last grace period (the rwsem's rcu_sync is then still in its "passed" state): 5-15 ms on the
//! test VM, measured with `perf sched timehist`. A create has several milliseconds of work
//! before libcontainer gets there (rootfs, spec, monitor start-up), so the daemon starts a
//! migration of its own at the beginning: it writes its own pid into the `cgroup.procs` of the
//! cgroup it already is in. That is a no-op move, but it opens the grace period early, and
//! libcontainer's write then shares it or finds it passed.
//!
//! Pod sandboxes on cgroup v1 do not need this: their monitor joins the cgroup without the
//! rwsem (see `monitor::own_cgroup`).

use std::path::PathBuf;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The `cgroup.procs` of this process's own cgroup: in the first v1 hierarchy that lists a
/// controller, or in the unified hierarchy on a cgroup v2 host.
pub fn own_procs_file(proc_self_cgroup: &str) -> Option<PathBuf> {
    let mut unified = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let relative = path.trim_start_matches('/');
        if controllers.is_empty() {
            unified = Some(
                PathBuf::from(CGROUP_ROOT)
                    .join(relative)
                    .join("cgroup.procs"),
            );
        } else if !controllers.starts_with("name=") {
            let file = PathBuf::from(CGROUP_ROOT)
                .join(controllers)
                .join(relative)
                .join("cgroup.procs");
            if file.exists() {
                return Some(file);
            }
        }
    }
    unified.filter(|f| f.exists())
}

/// Starts the no-op migration on a blocking thread and returns at once. Failures only cost
/// the head start, so they are logged at debug level and otherwise ignored.
pub fn start() {
    tokio::task::spawn_blocking(|| {
        let file = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| own_procs_file(&text));
        let Some(file) = file else {
            return;
        };
        if let Err(e) = std::fs::write(&file, std::process::id().to_string()) {
            tracing::debug!(file = %file.display(), error = %e, "cgroup migration prime");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_a_v1_controller_hierarchy_or_the_unified_one() {
        // This VM: cgroup v1 with a unified mount; the daemon runs in the root cgroups.
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let file = own_procs_file(&text).expect("some cgroup.procs of our own");
        assert!(file.ends_with("cgroup.procs") && file.exists());
        let procs = std::fs::read_to_string(&file).unwrap();
        let me = std::process::id().to_string();
        assert!(
            procs.lines().any(|l| l == me),
            "we are in {}",
            file.display()
        );

        assert_eq!(own_procs_file("12:name=systemd:/x\n"), None);
        assert_eq!(own_procs_file(""), None);
    }
}
