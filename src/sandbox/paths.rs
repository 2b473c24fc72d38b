//! Where a sandbox's files live. Kept in one place so run, stop, remove and recovery agree.

use super::Context;
use crate::error::{CriError, CriResult};
use crate::monitor::MonitorConfig;
use std::path::PathBuf;

impl Context {
    /// `<root>/sandboxes/<id>`: record, bundle config.json, the rootfs mount point (the
    /// overlay itself is mounted inside the pause's mount namespace), resolv.conf, hostname,
    /// hosts and the pod's /dev/shm.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.sandboxes.dir_of(id)
    }

    /// `<state>/m/<id>`: the monitor's control socket and exit file. Short on purpose: a unix
    /// socket path must fit in 108 bytes.
    pub fn monitor_dir(&self, id: &str) -> PathBuf {
        self.config.state.join("m").join(id)
    }

    /// The host-side tmpfs that is the pod's /dev/shm (pods with their own IPC namespace).
    pub fn sandbox_shm_dir(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("shm")
    }

    /// How to launch the monitor of sandbox or container `id` with bundle `bundle`: this
    /// binary, the object's monitor dir and libcontainer's state root; stdio on /dev/null.
    pub fn monitor_config(&self, id: &str, bundle: &std::path::Path) -> MonitorConfig {
        let mut config =
            MonitorConfig::new(id, bundle, &self.monitor_dir(id), &self.runtime_root());
        config.exe = self.exe.clone();
        config
    }

    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.config.netns_dir().join(id)
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.config.runtime_dir()
    }

    /// The cgroup of the sandbox (relative to the cgroup root): in kubelet's pod cgroup when
    /// given, in the form of the configured driver. A parent the driver cannot use (a path
    /// with the systemd driver) is the caller's mistake.
    pub fn sandbox_cgroups_path(&self, cgroup_parent: &str, id: &str) -> CriResult<String> {
        let driver = self.config.cgroup_driver;
        crate::cgroup_driver::sandbox_cgroup(driver, cgroup_parent, id).map_err(|e| {
            CriError::InvalidArgument(format!(
                "linux.cgroup_parent with cgroup_driver {}: {e}",
                driver.as_str()
            ))
        })
    }
}
