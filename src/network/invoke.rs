//! Executing one CNI plugin: its environment, its stdin (the plugin's config with the list's
//! name/version, prevResult and runtimeConfig injected), its output and its errors.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_cri::v1::{DnsConfig, PortMapping, Protocol};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use super::conf::{NetworkConfigList, find_plugin};
use super::{NetworkError, PluginFailure};

/// Plugins such as bridge and portmap call iptables and friends; they get a fixed, sane PATH
/// rather than whatever the daemon was started with.
const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How much of a failing plugin's stderr goes into the error.
const STDERR_TAIL: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
        }
    }
}

/// The Kubernetes identity of a pod, passed to plugins in CNI_ARGS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodArgs {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub sandbox_id: String,
}

impl PodArgs {
    /// CNI_ARGS as kubelet-era runtimes pass it; IgnoreUnknown lets plugins that do not know a
    /// key accept the rest.
    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, self.name, self.sandbox_id, self.uid
        )
    }
}

/// Values for the well-known capabilities ("portMappings", "dns"), handed to a plugin in
/// "runtimeConfig" only if it declares the capability.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "portMappings", default)]
    pub port_mappings: Vec<PortMappingEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortMappingEntry {
    #[serde(rename = "hostPort")]
    pub host_port: i32,
    #[serde(rename = "containerPort")]
    pub container_port: i32,
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsEntry {
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub searches: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

impl RuntimeConfig {
    pub fn from_pod(ports: &[PortMapping], dns: Option<&DnsConfig>) -> Self {
        let port_mappings = ports
            .iter()
            // A mapping without a host port only documents the container port: nothing to map.
            .filter(|p| p.host_port > 0)
            .map(|p| PortMappingEntry {
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: match Protocol::try_from(p.protocol) {
                    Ok(Protocol::Udp) => "udp",
                    Ok(Protocol::Sctp) => "sctp",
                    _ => "tcp",
                }
                .to_string(),
                host_ip: p.host_ip.clone(),
            })
            .collect();
        let dns = dns.map(|d| DnsEntry {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        });
        RuntimeConfig { port_mappings, dns }
    }

    fn capability(&self, name: &str) -> Option<Value> {
        match name {
            "portMappings" => serde_json::to_value(&self.port_mappings).ok(),
            "dns" => self.dns.as_ref().and_then(|d| serde_json::to_value(d).ok()),
            _ => None,
        }
    }
}

/// The stdin of plugin `index` of `list`: its own config plus the list's "name" and
/// "cniVersion", "prevResult" when chaining, and "runtimeConfig" with exactly the declared
/// capabilities this runtime has values for.
pub fn plugin_stdin(
    list: &NetworkConfigList,
    index: usize,
    prev_result: Option<&Value>,
    runtime: &RuntimeConfig,
) -> Value {
    let mut conf: Map<String, Value> = match list.plugins.get(index) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    match prev_result {
        Some(prev) => {
            conf.insert("prevResult".into(), prev.clone());
        }
        None => {
            conf.remove("prevResult");
        }
    }
    let mut rc = Map::new();
    if let Some(Value::Object(caps)) = conf.get("capabilities") {
        for (cap, enabled) in caps {
            if enabled.as_bool() == Some(true)
                && let Some(v) = runtime.capability(cap)
            {
                rc.insert(cap.clone(), v);
            }
        }
    }
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(conf)
}

/// Everything about one invocation except the plugin's config.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub command: CniCommand,
    pub container_id: &'a str,
    /// Empty when the namespace is gone (allowed for DEL).
    pub netns: &'a str,
    pub ifname: &'a str,
    pub cni_args: &'a str,
    pub bin_dirs: &'a [PathBuf],
    pub timeout: Duration,
}

impl Invocation<'_> {
    /// The plugin's whole environment (it inherits nothing from the daemon).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let cni_path = self
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        vec![
            ("CNI_COMMAND", self.command.as_str().to_string()),
            ("CNI_CONTAINERID", self.container_id.to_string()),
            ("CNI_NETNS", self.netns.to_string()),
            ("CNI_IFNAME", self.ifname.to_string()),
            ("CNI_ARGS", self.cni_args.to_string()),
            ("CNI_PATH", cni_path),
            ("PATH", PLUGIN_PATH.to_string()),
        ]
    }
}

/// The error object a failing plugin prints on stdout.
#[derive(Debug, Default, Deserialize)]
struct PluginErrorJson {
    #[serde(default)]
    code: Option<u64>,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// Run plugin `index` of `list` with `stdin`. Returns the parsed result for ADD, `None`
/// otherwise. The child is killed if it outlives the timeout (or if this future is dropped).
pub async fn run_plugin(
    inv: &Invocation<'_>,
    list: &NetworkConfigList,
    index: usize,
    stdin: &Value,
) -> Result<Option<Value>, NetworkError> {
    let plugin = list.plugin_type(index).to_string();
    let network = list.name.clone();
    let Some(binary) = find_plugin(&plugin, inv.bin_dirs) else {
        return Err(NetworkError::PluginExec {
            binary: PathBuf::from(&plugin),
            plugin,
            network,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "plugin not found in bin dirs",
            ),
        });
    };
    let input = serde_json::to_vec(stdin).unwrap_or_default();
    tracing::debug!(%plugin, %network, command = inv.command.as_str(), id = inv.container_id, "running CNI plugin");

    let exec_err = |source| NetworkError::PluginExec {
        plugin: plugin.clone(),
        network: network.clone(),
        binary: binary.clone(),
        source,
    };
    let mut command = tokio::process::Command::new(&binary);
    command
        .env_clear()
        .envs(inv.env())
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = spawn_retrying_busy(&mut command).await.map_err(exec_err)?;
    let mut child_stdin = child.stdin.take().expect("stdin is piped");

    let run = async move {
        // Feed stdin while collecting output, so a plugin that answers before reading all of
        // its input can not deadlock us. A plugin that exits without reading gives EPIPE, which
        // is not our error to report: its exit status says what happened.
        let feed = async move {
            let _ = child_stdin.write_all(&input).await;
            drop(child_stdin);
        };
        let (_, output) = tokio::join!(feed, child.wait_with_output());
        output
    };
    let output = match tokio::time::timeout(inv.timeout, run).await {
        Ok(out) => out.map_err(exec_err)?,
        // Dropping the future dropped the child, and kill_on_drop sent it SIGKILL.
        Err(_) => {
            return Err(NetworkError::PluginTimeout {
                plugin,
                network,
                command: inv.command.as_str(),
                timeout: inv.timeout,
            });
        }
    };

    if !output.status.success() {
        let stderr = stderr_tail(&output.stderr);
        let parsed: Option<PluginErrorJson> = serde_json::from_slice(&output.stdout).ok();
        let (code, msg, details) = match parsed {
            Some(e) if !e.msg.is_empty() || e.code.is_some() => (e.code, e.msg, e.details),
            _ => {
                let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
                let msg = if text.is_empty() {
                    format!("exited with {}", output.status)
                } else {
                    text
                };
                (None, msg, String::new())
            }
        };
        return Err(NetworkError::PluginFailed(Box::new(PluginFailure {
            plugin,
            network,
            command: inv.command.as_str(),
            code,
            msg,
            details,
            stderr,
        })));
    }

    if inv.command != CniCommand::Add {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(&output.stdout) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err(NetworkError::InvalidResult {
            plugin,
            network,
            reason: "not a JSON object".into(),
        }),
        Err(e) => Err(NetworkError::InvalidResult {
            plugin,
            network,
            reason: e.to_string(),
        }),
    }
}

/// exec(2) fails with ETXTBSY while any process (including a child forked by another thread of
/// ours, before its exec closes inherited descriptors) holds the binary open for writing, e.g.
/// while a network add-on is installing its plugins. That is transient: retry briefly.
async fn spawn_retrying_busy(
    command: &mut tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    let mut attempt = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            other => return other,
        }
    }
}

fn stderr_tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&stderr[start..]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(plugins: Vec<Value>) -> NetworkConfigList {
        NetworkConfigList {
            name: "pods".into(),
            cni_version: "1.0.0".into(),
            disable_check: false,
            plugins,
            source: None,
        }
    }

    #[test]
    fn cni_args_format() {
        let a = PodArgs {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u-1".into(),
            sandbox_id: "abc".into(),
        };
        assert_eq!(
            a.cni_args(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
        );
    }

    #[test]
    fn runtime_config_from_pod() {
        let ports = vec![
            PortMapping {
                protocol: Protocol::Tcp as i32,
                container_port: 80,
                host_port: 8080,
                host_ip: String::new(),
            },
            PortMapping {
                protocol: Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            },
            PortMapping {
                protocol: Protocol::Sctp as i32,
                container_port: 9,
                host_port: 9009,
                host_ip: String::new(),
            },
            PortMapping {
                protocol: Protocol::Tcp as i32,
                container_port: 443,
                host_port: 0,
                host_ip: String::new(),
            },
        ];
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["svc.local".into()],
            options: vec!["ndots:5".into()],
        };
        let rc = RuntimeConfig::from_pod(&ports, Some(&dns));
        assert_eq!(
            serde_json::to_value(&rc).unwrap(),
            json!({
                "portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                    {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
                    {"hostPort": 9009, "containerPort": 9, "protocol": "sctp"}
                ],
                "dns": {"servers": ["10.96.0.10"], "searches": ["svc.local"], "options": ["ndots:5"]}
            })
        );
    }

    #[test]
    fn stdin_injects_name_version_prev_result_and_declared_capabilities_only() {
        let l = list(vec![
            json!({"type": "bridge", "bridge": "cni0", "name": "ignored", "cniVersion": "0.1.0"}),
            json!({"type": "portmap", "capabilities": {"portMappings": true, "dns": false, "bandwidth": true},
                   "runtimeConfig": {"stale": 1}}),
        ]);
        let rc = RuntimeConfig {
            port_mappings: vec![PortMappingEntry {
                host_port: 1,
                container_port: 2,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            dns: Some(DnsEntry::default()),
        };
        let first = plugin_stdin(&l, 0, None, &rc);
        assert_eq!(
            first,
            json!({"type":"bridge","bridge":"cni0","name":"pods","cniVersion":"1.0.0"})
        );

        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]});
        let second = plugin_stdin(&l, 1, Some(&prev), &rc);
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["name"], "pods");
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}]}),
            "dns is disabled and bandwidth has no value: neither is passed"
        );
    }

    #[test]
    fn env_is_exactly_the_cni_variables() {
        let bins = vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")];
        let inv = Invocation {
            command: CniCommand::Del,
            container_id: "abc",
            netns: "",
            ifname: "eth0",
            cni_args: "IgnoreUnknown=1",
            bin_dirs: &bins,
            timeout: Duration::from_secs(1),
        };
        let env: std::collections::HashMap<_, _> = inv.env().into_iter().collect();
        assert_eq!(env.len(), 7);
        assert_eq!(env["CNI_COMMAND"], "DEL");
        assert_eq!(env["CNI_NETNS"], "");
        assert_eq!(env["CNI_PATH"], "/opt/cni/bin:/usr/lib/cni");
        assert!(env["PATH"].contains("/usr/sbin"));
    }

    fn script(dir: &std::path::Path, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn inv<'a>(cmd: CniCommand, bins: &'a [PathBuf], timeout: Duration) -> Invocation<'a> {
        Invocation {
            command: cmd,
            container_id: "c1",
            netns: "/x",
            ifname: "eth0",
            cni_args: "A=1",
            bin_dirs: bins,
            timeout,
        }
    }

    #[tokio::test]
    async fn runs_plugin_with_stdin_and_env_and_reports_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let bins = vec![tmp.path().to_path_buf()];
        // Echo back the environment and stdin as a "result" to check what the plugin saw.
        script(
            tmp.path(),
            "echo",
            r#"in=$(cat); printf '{"cniVersion":"1.0.0","cmd":"%s","id":"%s","home":"%s","in":%s}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$HOME" "$in""#,
        );
        script(
            tmp.path(),
            "fail",
            r#"cat >/dev/null; echo 'bad things' >&2; echo '{"cniVersion":"1.0.0","code":7,"msg":"no luck","details":"really"}'; exit 1"#,
        );
        script(tmp.path(), "garbage", "echo not-json");
        script(tmp.path(), "slow", "exec sleep 30");
        let l = list(vec![
            json!({"type":"echo"}),
            json!({"type":"fail"}),
            json!({"type":"garbage"}),
            json!({"type":"slow"}),
        ]);
        let t = Duration::from_secs(10);

        let stdin = plugin_stdin(&l, 0, None, &RuntimeConfig::default());
        let out = run_plugin(&inv(CniCommand::Add, &bins, t), &l, 0, &stdin)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out["cmd"], "ADD");
        assert_eq!(out["id"], "c1");
        assert_eq!(out["home"], "", "the daemon's environment is not inherited");
        assert_eq!(out["in"]["name"], "pods");
        // DEL output is not a result.
        assert!(
            run_plugin(&inv(CniCommand::Del, &bins, t), &l, 0, &stdin)
                .await
                .unwrap()
                .is_none()
        );

        let err = run_plugin(&inv(CniCommand::Add, &bins, t), &l, 1, &stdin)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, NetworkError::PluginFailed(f) if f.code == Some(7)),
            "{text}"
        );
        for want in ["fail", "pods", "ADD", "no luck", "really", "bad things"] {
            assert!(text.contains(want), "{want} missing in {text}");
        }

        let err = run_plugin(&inv(CniCommand::Add, &bins, t), &l, 2, &stdin)
            .await
            .unwrap_err();
        assert!(matches!(err, NetworkError::InvalidResult { .. }), "{err}");

        let started = std::time::Instant::now();
        let err = run_plugin(
            &inv(CniCommand::Add, &bins, Duration::from_millis(300)),
            &l,
            3,
            &stdin,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, NetworkError::PluginTimeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
