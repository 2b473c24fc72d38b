//! The daemon's configuration: one TOML file with documented defaults, overridden by flags.
//!
//! Every key is listed in the README with its default. Unknown keys are refused so a typo
//! never silently falls back to a default.

use serde::Deserialize;
use std::collections::BTreeMap;
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

/// `[registry]`: where images are pulled from and how (containerd's `registry.mirrors` and
/// `registry.configs` keys, so an operator's existing config carries over).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Registry host (`docker.io`, `registry.k8s.io`, `127.0.0.1:5000`, or `*` for every
    /// host without its own entry) -> endpoints tried, in order, before the host itself.
    pub mirrors: BTreeMap<String, RegistryMirror>,
    /// Endpoint host (`mirror.example`, `127.0.0.1:5000`) -> TLS settings and credentials.
    pub configs: BTreeMap<String, RegistryHostConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryMirror {
    /// `https://host[:port][/path]` or `http://...`; an `http://` endpoint is the only way
    /// plain HTTP is ever used.
    pub endpoint: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryHostConfig {
    pub tls: Option<RegistryTls>,
    pub auth: Option<RegistryAuth>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryTls {
    /// PEM file of CA certificates trusted for this host, in addition to the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and its key, for registries that want mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. Only for test setups.
    pub insecure_skip_verify: bool,
}

/// Credentials for one endpoint host: `username` + `password`, `auth` (base64 of
/// `user:password`), or `identitytoken` (an OAuth2 refresh token).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub identitytoken: String,
}

// Hand-written so secrets never reach a log line.
impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field(
                "password",
                &(!self.password.is_empty()).then_some("<redacted>"),
            )
            .field("auth", &(!self.auth.is_empty()).then_some("<redacted>"))
            .field(
                "identitytoken",
                &(!self.identitytoken.is_empty()).then_some("<redacted>"),
            )
            .finish()
    }
}

impl RegistryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (host, mirror) in &self.mirrors {
            if host.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "registry.mirrors",
                    reason: "a mirror entry needs a registry host name".into(),
                });
            }
            for ep in &mirror.endpoint {
                let rest = ep
                    .strip_prefix("https://")
                    .or_else(|| ep.strip_prefix("http://"));
                let host_part = rest.map(|r| r.split('/').next().unwrap_or_default());
                if host_part.is_none_or(str::is_empty) {
                    return Err(ConfigError::Invalid {
                        key: "registry.mirrors",
                        reason: format!(
                            "{host:?}: endpoint {ep:?} must be http://host[:port][/path] or https://..."
                        ),
                    });
                }
            }
        }
        for (host, cfg) in &self.configs {
            if let Some(tls) = &cfg.tls
                && tls.cert_file.is_some() != tls.key_file.is_some()
            {
                return Err(ConfigError::Invalid {
                    key: "registry.configs",
                    reason: format!("{host:?}: tls.cert_file and tls.key_file go together"),
                });
            }
        }
        Ok(())
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
    /// Registry mirrors, TLS and credentials, in containerd's vocabulary.
    pub registry: RegistryConfig,
    /// Address the streaming server (Exec/Attach/PortForward URLs) listens on.
    pub stream_server_address: String,
    /// Its TCP port; 0 picks a free one (the returned URLs carry the real one). A string as
    /// in containerd (`"10010"`) or a number.
    #[serde(deserialize_with = "port_from_string_or_number")]
    pub stream_server_port: u16,
    /// A streaming connection with no frame either way for this long is closed (Go duration
    /// syntax, as containerd: "4h", "30m", "90s", "1h30m"; "0" never).
    pub stream_idle_timeout: String,
    /// Serve the streaming URLs over HTTPS.
    pub enable_tls_streaming: bool,
    /// PEM certificate (chain) and key for TLS streaming; required with `enable_tls_streaming`.
    pub x509_key_pair_streaming: StreamTlsFiles,
}

/// `[x509_key_pair_streaming]` (containerd's table name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamTlsFiles {
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

fn port_from_string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Port::deserialize(d)? {
        Port::Number(n) => Ok(n),
        Port::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a port number"))),
    }
}

/// Parses a Go-style duration ("4h", "1h30m", "90s", "250ms", "0"). Units: h, m, s, ms.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?}: a number needs a unit (h, m, s, ms)"))?;
        if digits == 0 {
            return Err(format!("{text:?}: expected a number"));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: bad number {:?}", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            other => return Err(format!("{text:?}: unknown unit {other:?} (h, m, s, ms)")),
        };
        total += Duration::from_secs_f64(value * seconds);
        rest = &rest[unit_len..];
    }
    Ok(total)
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
            registry: RegistryConfig::default(),
            stream_server_address: "127.0.0.1".to_string(),
            stream_server_port: 0,
            stream_idle_timeout: "4h".to_string(),
            enable_tls_streaming: false,
            x509_key_pair_streaming: StreamTlsFiles::default(),
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
        // Monitor sockets under the state dir are bound and reached through a descriptor of
        // their directory when their path is long (monitor::paths::ShortPath), so only PATH_MAX
        // limits it.
        if self.sandbox_image.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "sandbox_image",
                reason: "must not be empty".into(),
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
        self.registry.validate()?;
        self.stream_server_address
            .parse::<std::net::IpAddr>()
            .map_err(|_| ConfigError::Invalid {
                key: "stream_server_address",
                reason: format!("{:?} is not an IP address", self.stream_server_address),
            })?;
        parse_go_duration(&self.stream_idle_timeout).map_err(|reason| ConfigError::Invalid {
            key: "stream_idle_timeout",
            reason,
        })?;
        let tls = &self.x509_key_pair_streaming;
        if tls.tls_cert_file.is_some() != tls.tls_key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "x509_key_pair_streaming",
                reason: "tls_cert_file and tls_key_file go together".into(),
            });
        }
        if self.enable_tls_streaming && tls.tls_cert_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "enable_tls_streaming",
                reason: "needs [x509_key_pair_streaming] tls_cert_file and tls_key_file".into(),
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

    /// The validated idle timeout (`None`: never).
    pub fn stream_idle_timeout(&self) -> Option<Duration> {
        parse_go_duration(&self.stream_idle_timeout)
            .ok()
            .filter(|d| !d.is_zero())
    }

    // Layout of the root and state directories, in one place.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    /// The read-only top layer of every sandbox rootfs (see `snapshot::skeleton`).
    pub fn sandbox_skeleton_dir(&self) -> PathBuf {
        self.root.join("sandbox-skeleton")
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
    fn streaming_keys_have_containerd_defaults_and_forms() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.stream_server_address, "127.0.0.1");
        assert_eq!(c.stream_server_port, 0);
        assert_eq!(c.stream_idle_timeout(), Some(Duration::from_secs(4 * 3600)));
        assert!(!c.enable_tls_streaming);
        let c = Config::parse("stream_server_port = \"10010\"\nstream_idle_timeout = \"1h30m\"\n")
            .unwrap();
        assert_eq!(c.stream_server_port, 10010);
        assert_eq!(c.stream_idle_timeout(), Some(Duration::from_secs(5400)));
        assert_eq!(
            Config::parse("stream_server_port = 7\n")
                .unwrap()
                .stream_server_port,
            7
        );
        assert!(Config::parse("stream_server_port = \"x\"\n").is_err());
        let c = Config::parse("stream_idle_timeout = \"0\"\n").unwrap();
        assert_eq!(c.stream_idle_timeout(), None);
        for bad in [
            "stream_idle_timeout = \"4 hours\"\n",
            "stream_server_address = \"localhost\"\n",
            "[x509_key_pair_streaming]\ntls_cert_file = \"/c.pem\"\n",
        ] {
            let e = Config::parse(bad)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains("stream") || e.contains("x509"), "{bad}: {e}");
        }
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_go_duration("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_go_duration("5").is_err());
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
        // Whether the node can run the systemd driver is the daemon's start-up check
        // (cgroup_driver::check_systemd), not the file's.
        let c = Config::parse("cgroup_driver = \"systemd\"\n").unwrap();
        c.validate().unwrap();
        let c = Config::parse("root = \"relative\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("root"));
        // Monitor sockets do not limit the state dir's length.
        let long = format!("state = \"/{}\"\n", "s".repeat(120));
        Config::parse(&long).unwrap().validate().unwrap();
        let c = Config::parse("log_level = \"[[[\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("log_level"));
    }

    const REGISTRY_EXAMPLE: &str = r#"
[registry.mirrors."registry.k8s.io"]
endpoint = ["http://127.0.0.1:5000", "https://mirror.example"]
[registry.configs."mirror.example".tls]
ca_file = "/etc/crius/certs/mirror.pem"
insecure_skip_verify = true
[registry.configs."mirror.example".auth]
username = "u"
password = "p"
"#;

    #[test]
    fn registry_section_in_containerd_vocabulary() {
        let c = Config::parse(REGISTRY_EXAMPLE).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.registry.mirrors["registry.k8s.io"].endpoint,
            vec!["http://127.0.0.1:5000", "https://mirror.example"]
        );
        let host = &c.registry.configs["mirror.example"];
        let tls = host.tls.as_ref().unwrap();
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(Path::new("/etc/crius/certs/mirror.pem"))
        );
        assert!(tls.insecure_skip_verify);
        let auth = host.auth.as_ref().unwrap();
        assert_eq!((auth.username.as_str(), auth.password.as_str()), ("u", "p"));
        assert!(!format!("{auth:?}").contains("\"p\""), "{auth:?}");
        assert_eq!(
            Config::parse("").unwrap().registry,
            RegistryConfig::default()
        );
    }

    #[test]
    fn registry_unknown_keys_and_bad_endpoints_are_named() {
        for (text, word) in [
            ("[registry]\nmirror = 1\n", "mirror"),
            ("[registry.mirrors.\"a\"]\nendpoints = []\n", "endpoints"),
            ("[registry.configs.\"a\".tls]\nca = \"/x\"\n", "ca"),
            ("[registry.configs.\"a\".auth]\nuser = \"x\"\n", "user"),
            ("[registry.configs.\"a\"]\nheaders = 1\n", "headers"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(word), "{text}: {e}");
        }
        let c = Config::parse("[registry.mirrors.\"a\"]\nendpoint = [\"ftp://x\"]\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("registry.mirrors") && e.contains("ftp://x"),
            "{e}"
        );
        let c = Config::parse("[registry.configs.\"a\".tls]\ncert_file = \"/c\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("key_file"));
    }
}
