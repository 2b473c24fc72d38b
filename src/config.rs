//! The daemon's configuration: one TOML file with documented defaults, overridden by flags.
//!
//! Every key is listed in the README with its default. Unknown keys are refused so a typo
//! never silently falls back to a default.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The image the daemon imports from its own binary when it is configured and absent, so a
/// node with no network can run pods.
pub const BUILTIN_SANDBOX_IMAGE: &str = "localhost/crius/pause:builtin";
pub const DEFAULT_CONFIG_PATH: &str = "/etc/crius/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("config: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        }
    }
}

impl std::str::FromStr for CgroupDriver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cgroupfs" => Ok(CgroupDriver::Cgroupfs),
            "systemd" => Ok(CgroupDriver::Systemd),
            other => Err(format!(
                "unknown cgroup driver {other:?} (cgroupfs or systemd)"
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CniConfig {
    /// Directory searched for the first valid .conflist/.conf/.json network config.
    pub conf_dir: PathBuf,
    /// Directories searched, in order, for plugin binaries.
    pub bin_dirs: Vec<PathBuf>,
    /// Longest a single plugin invocation may run.
    pub plugin_timeout_seconds: u64,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            plugin_timeout_seconds: 60,
        }
    }
}

impl CniConfig {
    pub fn plugin_timeout(&self) -> Duration {
        Duration::from_secs(self.plugin_timeout_seconds)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent data: image store, snapshots, records.
    pub root: PathBuf,
    /// Runtime state that does not survive a reboot: sockets, netns pins, monitor dirs.
    pub state: PathBuf,
    /// The CRI socket.
    pub socket: PathBuf,
    /// The image every pod sandbox runs.
    pub sandbox_image: String,
    pub cgroup_driver: CgroupDriver,
    /// tracing filter, e.g. "info" or "crius=debug".
    pub log_level: String,
    pub cni: CniConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/crius"),
            state: PathBuf::from("/run/crius"),
            socket: PathBuf::from("/run/crius/crius.sock"),
            sandbox_image: BUILTIN_SANDBOX_IMAGE.to_string(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            log_level: "info".to_string(),
            cni: CniConfig::default(),
        }
    }
}

impl Config {
    /// Load `path`. A missing file at the default location means "all defaults"; a missing
    /// file the operator named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::new(),
            source,
        })?;
        Ok(cfg)
    }

    /// Checks that need the whole config (after flags are applied).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, p) in [
            ("root", &self.root),
            ("state", &self.state),
            ("socket", &self.socket),
        ] {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("{} must be an absolute path", p.display()),
                });
            }
        }
        if self.sandbox_image.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "sandbox_image",
                reason: "must not be empty".into(),
            });
        }
        if self.cgroup_driver == CgroupDriver::Systemd {
            return Err(ConfigError::Invalid {
                key: "cgroup_driver",
                reason: "the systemd cgroup driver is not supported yet; use \"cgroupfs\"".into(),
            });
        }
        if self.cni.bin_dirs.is_empty() {
            return Err(ConfigError::Invalid {
                key: "cni.bin_dirs",
                reason: "must list at least one directory".into(),
            });
        }
        if self.cni.plugin_timeout_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "cni.plugin_timeout_seconds",
                reason: "must be greater than 0".into(),
            });
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| {
            ConfigError::Invalid {
                key: "log_level",
                reason: e.to_string(),
            }
        })?;
        Ok(())
    }

    // Layout of the root and state directories, in one place.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub fn cni_cache_dir(&self) -> PathBuf {
        self.root.join("cni")
    }
    pub fn netns_dir(&self) -> PathBuf {
        self.state.join("netns")
    }
    pub fn monitors_dir(&self) -> PathBuf {
        self.state.join("monitors")
    }
    /// libcontainer's own state root (state.json per container).
    pub fn runtime_dir(&self) -> PathBuf {
        self.state.join("runtime")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.root, PathBuf::from("/var/lib/crius"));
        assert_eq!(c.cni.bin_dirs.len(), 2);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("rooot = \"/x\"\n").unwrap_err().to_string();
        assert!(e.contains("rooot"), "{e}");
        let e = Config::parse("[cni]\nbin_dir = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bin_dir"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::parse("cgroup_driver = \"foo\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cgroup_driver") || e.contains("foo"), "{e}");
        let c = Config::parse("cgroup_driver = \"systemd\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("cgroup_driver"), "{e}");
        let c = Config::parse("root = \"relative\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("root"));
        let c = Config::parse("log_level = \"[[[\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("log_level"));
    }
}
