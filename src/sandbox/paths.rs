//! Where a sandbox's files live. Kept in one place so run, stop, remove and recovery agree.

use super::Context;
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

    /// The cgroup of the sandbox: kubelet's pod cgroup when given (cgroupfs form), else ours.
    pub fn sandbox_cgroups_path(&self, cgroup_parent: &str, id: &str) -> String {
        let parent = cgroup_parent.trim_end_matches('/');
        if parent.is_empty() {
            format!("/crius/{id}")
        } else if parent.starts_with('/') {
            format!("{parent}/crius-{id}")
        } else {
            format!("/{parent}/crius-{id}")
        }
    }
}
