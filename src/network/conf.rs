//! Loading network configurations from the CNI conf dir.
//!
//! The directory is read again on every call: a network add-on (flannel, calico, ...) usually
//! installs its config after the runtime has started, as with kubelet and containerd.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::NetworkError;

/// CNI versions whose configurations and results this runtime understands.
const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// A network configuration list as used for one sandbox. Plugin configs stay raw JSON so that
/// fields this runtime does not know about reach the plugins untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfigList {
    pub name: String,
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "disableCheck", default)]
    pub disable_check: bool,
    pub plugins: Vec<Value>,
    /// The file it was loaded from (for messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
}

impl NetworkConfigList {
    /// The "type" of plugin `index`; validated at load time.
    pub fn plugin_type(&self, index: usize) -> &str {
        self.plugins
            .get(index)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Whether this list's version is at least `major.minor.patch` (0.4.0 brought CHECK and a
    /// prevResult on DEL).
    pub fn version_at_least(&self, want: (u32, u32, u32)) -> bool {
        parse_version(&self.cni_version).is_some_and(|v| v >= want)
    }
}

fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().unwrap_or(Some(0))?;
    let patch = parts.next().unwrap_or(Some(0))?;
    Some((major, minor, patch))
}

/// Find a plugin binary by its type in the bin dirs, first match wins.
pub fn find_plugin(plugin_type: &str, bin_dirs: &[PathBuf]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    // A type is a bare file name; anything else could escape the bin dirs.
    if plugin_type.is_empty() || plugin_type.contains('/') || plugin_type.starts_with('.') {
        return None;
    }
    bin_dirs.iter().map(|d| d.join(plugin_type)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Load the first valid network config of `dir` (lexical order of file names, among *.conflist,
/// *.conf and *.json). Invalid files are skipped with a warning; the error lists why each was
/// rejected, so that NetworkReady=false carries a useful reason.
pub fn load_first(dir: &Path, bin_dirs: &[PathBuf]) -> Result<NetworkConfigList, NetworkError> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                ) && p.is_file()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(NetworkError::InvalidConfig {
                path: dir.to_path_buf(),
                reason: format!("read directory: {e}"),
            });
        }
    };
    if files.is_empty() {
        return Err(NetworkError::NoConfig {
            dir: dir.to_path_buf(),
        });
    }
    files.sort();

    let mut reasons = Vec::new();
    for file in files {
        match load_file(&file, bin_dirs) {
            Ok(list) => return Ok(list),
            Err(e) => {
                tracing::warn!(error = %e, "skipping CNI network config");
                reasons.push(e.to_string());
            }
        }
    }
    Err(NetworkError::NoValidConfig {
        dir: dir.to_path_buf(),
        reasons,
    })
}

/// Load and validate one file; a single-plugin .conf/.json is wrapped into a list.
pub fn load_file(path: &Path, bin_dirs: &[PathBuf]) -> Result<NetworkConfigList, NetworkError> {
    let invalid = |reason: String| NetworkError::InvalidConfig {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| invalid(format!("read: {e}")))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("parse JSON: {e}")))?;
    let is_list = path.extension().and_then(|e| e.to_str()) == Some("conflist");
    let mut list = parse(value, is_list).map_err(invalid)?;
    for i in 0..list.plugins.len() {
        let ty = list.plugin_type(i);
        if find_plugin(ty, bin_dirs).is_none() {
            let dirs: Vec<String> = bin_dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(invalid(format!(
                "plugin {ty} not found in bin dirs [{}]",
                dirs.join(", ")
            )));
        }
    }
    list.source = Some(path.to_path_buf());
    Ok(list)
}

/// Validate a parsed config (no file-system checks). `is_list` selects conflist syntax;
/// otherwise the object is a single plugin's config.
pub fn parse(value: Value, is_list: bool) -> Result<NetworkConfigList, String> {
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    let name = string_field(&obj, "name")?;
    let cni_version = string_field(&obj, "cniVersion")?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(format!("unsupported cniVersion {cni_version:?}"));
    }
    let disable_check = obj
        .get("disableCheck")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let plugins = if is_list {
        match obj.get("plugins") {
            Some(Value::Array(p)) if !p.is_empty() => p.clone(),
            Some(Value::Array(_)) => return Err("\"plugins\" is empty".into()),
            _ => return Err("missing \"plugins\" list".into()),
        }
    } else {
        vec![Value::Object(obj.clone())]
    };
    for (i, plugin) in plugins.iter().enumerate() {
        let Value::Object(p) = plugin else {
            return Err(format!("plugin {i} is not a JSON object"));
        };
        match p.get("type").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => {}
            _ => return Err(format!("plugin {i} has no \"type\"")),
        }
    }
    Ok(NetworkConfigList {
        name,
        cni_version,
        disable_check,
        plugins,
        source: None,
    })
}

fn string_field(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(format!("missing {key:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fake_bin(dir: &Path, name: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn write(dir: &Path, name: &str, v: &Value) {
        std::fs::write(dir.join(name), serde_json::to_vec(v).unwrap()).unwrap();
    }

    #[test]
    fn empty_or_missing_dir_is_no_config() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load_first(tmp.path(), &[]).unwrap_err();
        assert!(matches!(err, NetworkError::NoConfig { .. }), "{err}");
        assert!(err.to_string().starts_with("no network config found in"));
        let err = load_first(&tmp.path().join("absent"), &[]).unwrap_err();
        assert!(matches!(err, NetworkError::NoConfig { .. }));
    }

    #[test]
    fn first_valid_in_lexical_order_wins_and_invalid_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        fake_bin(&bin, "bridge");
        fake_bin(&bin, "portmap");
        let conf = tmp.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        // 00: plugin binary missing; 05: bad JSON; 07: ignored extension; 10: valid; 20: valid.
        write(
            &conf,
            "00-missing.conflist",
            &json!({"name":"a","cniVersion":"1.0.0","plugins":[{"type":"nope"}]}),
        );
        std::fs::write(conf.join("05-bad.conf"), "{").unwrap();
        write(
            &conf,
            "07-other.txt",
            &json!({"name":"x","cniVersion":"1.0.0","type":"bridge"}),
        );
        write(
            &conf,
            "10-net.conflist",
            &json!({"name":"net10","cniVersion":"1.0.0","plugins":[{"type":"bridge","bridge":"cni0"},{"type":"portmap","capabilities":{"portMappings":true}}]}),
        );
        write(
            &conf,
            "20-net.conf",
            &json!({"name":"net20","cniVersion":"0.4.0","type":"bridge"}),
        );
        let list = load_first(&conf, &[tmp.path().join("nobin"), bin.clone()]).unwrap();
        assert_eq!(list.name, "net10");
        assert_eq!(list.plugins.len(), 2);
        assert_eq!(list.plugin_type(1), "portmap");
        assert_eq!(list.plugins[0]["bridge"], "cni0", "unknown fields are kept");

        std::fs::remove_file(conf.join("10-net.conflist")).unwrap();
        let list = load_first(&conf, std::slice::from_ref(&bin)).unwrap();
        assert_eq!(list.name, "net20");
        assert_eq!(list.cni_version, "0.4.0");
        assert_eq!(list.plugins.len(), 1, ".conf is wrapped into a list");
        assert_eq!(list.plugin_type(0), "bridge");

        std::fs::remove_file(conf.join("20-net.conf")).unwrap();
        let err = load_first(&conf, &[bin]).unwrap_err().to_string();
        assert!(err.contains("plugin nope not found in bin dirs"), "{err}");
        assert!(err.contains("05-bad.conf"), "{err}");
    }

    #[test]
    fn validation() {
        assert!(
            parse(json!({"cniVersion":"1.0.0","plugins":[{"type":"x"}]}), true)
                .unwrap_err()
                .contains("name")
        );
        assert!(
            parse(json!({"name":"n","plugins":[{"type":"x"}]}), true)
                .unwrap_err()
                .contains("cniVersion")
        );
        assert!(
            parse(json!({"name":"n","cniVersion":"1.0.0","plugins":[]}), true)
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            parse(
                json!({"name":"n","cniVersion":"1.0.0","plugins":[{}]}),
                true
            )
            .unwrap_err()
            .contains("type")
        );
        assert!(
            parse(json!({"name":"n","cniVersion":"9.9.9","type":"x"}), false)
                .unwrap_err()
                .contains("unsupported")
        );
        let l = parse(
            json!({"name":"n","cniVersion":"0.3.1","disableCheck":true,"plugins":[{"type":"x"}]}),
            true,
        )
        .unwrap();
        assert!(l.disable_check);
        assert!(!l.version_at_least((0, 4, 0)));
        assert!(l.version_at_least((0, 3, 0)));
    }

    #[test]
    fn plugin_type_can_not_escape_bin_dirs() {
        assert!(find_plugin("../sh", &[PathBuf::from("/bin")]).is_none());
        assert!(find_plugin("/bin/sh", &[PathBuf::from("/")]).is_none());
        assert!(find_plugin("sh", &[PathBuf::from("/bin")]).is_some());
    }
}
