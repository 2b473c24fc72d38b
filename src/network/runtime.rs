//! The CNI runtime: attach a pod's network namespace to the configured network (ADD), check
//! it (CHECK) and detach it (DEL), with the cache that makes teardown reliable.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::{DnsConfig, PortMapping};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::NetworkError;
use super::cache::{Cache, CacheEntry};
use super::conf;
use super::invoke::{CniCommand, Invocation, PodArgs, RuntimeConfig, plugin_stdin, run_plugin};
use super::netns;
use super::result::{CniResult, primary_and_rest};

/// The interface name plugins create inside the pod unless told otherwise.
pub const DEFAULT_IFNAME: &str = "eth0";

#[derive(Debug, Clone)]
pub struct CniOptions {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    pub plugin_timeout: Duration,
}

/// What a pod contributes to a CNI invocation.
#[derive(Debug, Clone)]
pub struct PodNetwork<'a> {
    /// The sandbox id (CNI_CONTAINERID and the cache key).
    pub id: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    /// The pinned network namespace.
    pub netns: &'a Path,
    pub port_mappings: &'a [PortMapping],
    pub dns: Option<&'a DnsConfig>,
    /// Interface to create in the pod, [`DEFAULT_IFNAME`] by default.
    pub ifname: &'a str,
}

#[cfg(test)]
impl<'a> PodNetwork<'a> {
    /// A pod with no port mappings, no DNS config and the default interface name.
    pub fn new(
        id: &'a str,
        name: &'a str,
        namespace: &'a str,
        uid: &'a str,
        netns: &'a Path,
    ) -> Self {
        PodNetwork {
            id,
            name,
            namespace,
            uid,
            netns,
            port_mappings: &[],
            dns: None,
            ifname: DEFAULT_IFNAME,
        }
    }
}

/// The pod's addresses as reported by the network, kept in the sandbox record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodNetworkStatus {
    /// The first IPv4 address, else the first address.
    pub ip: Option<IpAddr>,
    pub additional_ips: Vec<IpAddr>,
    pub interface: String,
    pub network_name: String,
}

/// Cheap to clone: options are shared.
#[derive(Debug, Clone)]
pub struct Cni {
    opts: Arc<CniOptions>,
    cache: Cache,
}

impl Cni {
    pub fn new(opts: CniOptions) -> Self {
        let cache = Cache::new(opts.cache_dir.clone());
        Cni {
            opts: Arc::new(opts),
            cache,
        }
    }

    #[cfg(test)]
    pub fn options(&self) -> &CniOptions {
        &self.opts
    }

    /// The name of the network new pods would join; the error says why the network is not
    /// ready (no config yet, plugin binaries missing, ...).
    pub fn status(&self) -> Result<String, NetworkError> {
        conf::load_first(&self.opts.conf_dir, &self.opts.bin_dirs).map(|l| l.name)
    }

    /// Sandbox ids with a recorded attachment, including ones whose ADD never completed: at
    /// start-up, those without a sandbox can be passed to [`Cni::teardown`].
    pub fn cached_ids(&self) -> Result<Vec<String>, NetworkError> {
        self.cache.ids()
    }

    /// Attach the pod to the current network (ADD of every plugin, in order).
    ///
    /// The cache entry is written before the first plugin runs, so whatever a plugin allocated
    /// can be released by [`Cni::teardown`] even if this call fails half way, is cancelled
    /// (dropping the future kills the running plugin) or the daemon dies meanwhile. A failed
    /// ADD is rolled back here with DEL of every plugin in reverse order.
    pub async fn setup(&self, pod: &PodNetwork<'_>) -> Result<PodNetworkStatus, NetworkError> {
        // A leftover attachment under this id (an earlier attempt whose rollback failed) is
        // released first, so a retry never stacks a second allocation on the first.
        if self.load(pod.id).await?.is_some() {
            tracing::info!(
                id = pod.id,
                "releasing a leftover network attachment before ADD"
            );
            self.teardown(pod.id, Some(pod.netns)).await?;
        }
        let (conf_dir, bin_dirs) = (self.opts.conf_dir.clone(), self.opts.bin_dirs.clone());
        let list = blocking(move || conf::load_first(&conf_dir, &bin_dirs)).await?;
        let pod_args = PodArgs {
            namespace: pod.namespace.to_string(),
            name: pod.name.to_string(),
            uid: pod.uid.to_string(),
            sandbox_id: pod.id.to_string(),
        };
        let runtime = RuntimeConfig::from_pod(pod.port_mappings, pod.dns);
        let mut entry = CacheEntry::new(
            list,
            pod_args,
            pod.ifname.to_string(),
            pod.netns.to_path_buf(),
            runtime,
        );
        self.store(pod.id, &entry).await?;

        let cni_args = entry.pod.cni_args();
        let netns = pod.netns.to_string_lossy();
        let inv = Invocation {
            command: CniCommand::Add,
            container_id: pod.id,
            netns: &netns,
            ifname: pod.ifname,
            cni_args: &cni_args,
            bin_dirs: &self.opts.bin_dirs,
            timeout: self.opts.plugin_timeout,
        };
        let (result, parsed) = match add_all(&inv, &entry).await {
            Ok(done) => done,
            Err((err, last_result)) => {
                self.rollback(pod.id, &entry, last_result.as_ref(), &netns)
                    .await;
                return Err(err);
            }
        };

        entry.result = Some(result);
        if let Err(err) = self.store(pod.id, &entry).await {
            self.rollback(pod.id, &entry, entry.result.as_ref(), &netns)
                .await;
            return Err(err);
        }
        let (ip, additional_ips) = primary_and_rest(&parsed.sandbox_ips());
        let status = PodNetworkStatus {
            ip,
            additional_ips,
            interface: parsed.sandbox_interface().unwrap_or(pod.ifname).to_string(),
            network_name: entry.network.name.clone(),
        };
        tracing::info!(id = pod.id, network = %status.network_name, ip = ?status.ip, "pod network set up");
        Ok(status)
    }

    /// What a sandbox whose RunPodSandbox was cut off (daemon killed) holds of the network:
    /// the cached ADD result if ADD finished, else the addresses its interface carries in the
    /// namespace (a chain cut half way may have allocated and configured them). `None`
    /// without a cache entry (ADD never began) or a live namespace.
    pub async fn recovered_status(
        &self,
        id: &str,
    ) -> Result<Option<PodNetworkStatus>, NetworkError> {
        let Some(entry) = self.load(id).await? else {
            return Ok(None);
        };
        if let Some(parsed) = entry.result.as_ref().and_then(|r| CniResult::parse(r).ok()) {
            let (ip, additional_ips) = primary_and_rest(&parsed.sandbox_ips());
            return Ok(Some(PodNetworkStatus {
                ip,
                additional_ips,
                interface: parsed
                    .sandbox_interface()
                    .unwrap_or(&entry.ifname)
                    .to_string(),
                network_name: entry.network.name.clone(),
            }));
        }
        if !netns::is_pinned(&entry.netns) {
            return Ok(None);
        }
        let (path, ifname) = (entry.netns.clone(), entry.ifname.clone());
        let ips = blocking(move || netns::addresses(&path, &ifname)).await?;
        let (ip, additional_ips) = primary_and_rest(&ips);
        Ok(Some(PodNetworkStatus {
            ip,
            additional_ips,
            interface: entry.ifname.clone(),
            network_name: entry.network.name.clone(),
        }))
    }

    /// Undo a failed ADD. The cache entry goes only if every DEL succeeded; otherwise it stays
    /// so that a later teardown (or the start-up sweep) can try again.
    async fn rollback(&self, id: &str, entry: &CacheEntry, prev: Option<&Value>, netns: &str) {
        match self.del_all(id, entry, prev, netns).await {
            Ok(()) => {
                if let Err(e) = self.remove(id).await {
                    tracing::warn!(id, error = %e, "removing the CNI cache entry after a failed ADD");
                }
            }
            Err(e) => {
                tracing::warn!(id, error = %e, "rolling back a failed CNI ADD; kept the cache entry for a retry")
            }
        }
    }

    /// Detach a sandbox using what was recorded at setup (not the current conf dir, which may
    /// have changed). Nothing recorded means nothing to do. On failure the record is kept, so
    /// the caller can retry.
    pub async fn teardown(&self, id: &str, netns: Option<&Path>) -> Result<(), NetworkError> {
        let Some(entry) = self.load(id).await? else {
            return Ok(());
        };
        // DEL must work without a namespace (the spec requires plugins to accept an empty
        // CNI_NETNS); pass one only while it is still a live pin.
        let candidate = netns.unwrap_or(&entry.netns);
        let netns_arg = if netns::is_pinned(candidate) {
            candidate.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        self.del_all(id, &entry, entry.result.as_ref(), &netns_arg)
            .await?;
        self.remove(id).await?;
        tracing::info!(id, network = %entry.network.name, "pod network torn down");
        Ok(())
    }

    /// DEL of every plugin in reverse order. All are attempted even after a failure (DEL is
    /// idempotent by spec, and every plugin that runs frees what it can); the first error is
    /// returned.
    async fn del_all(
        &self,
        id: &str,
        entry: &CacheEntry,
        prev: Option<&Value>,
        netns: &str,
    ) -> Result<(), NetworkError> {
        let network = &entry.network;
        // DEL with prevResult arrived in 0.4.0; older plugins would reject it.
        let prev = prev.filter(|_| network.version_at_least((0, 4, 0)));
        let cni_args = entry.pod.cni_args();
        let inv = Invocation {
            command: CniCommand::Del,
            container_id: id,
            netns,
            ifname: &entry.ifname,
            cni_args: &cni_args,
            bin_dirs: &self.opts.bin_dirs,
            timeout: self.opts.plugin_timeout,
        };
        let mut first_error = None;
        for index in (0..network.plugins.len()).rev() {
            let stdin = plugin_stdin(network, index, prev, &entry.runtime_config);
            if let Err(e) = run_plugin(&inv, network, index, &stdin).await {
                tracing::warn!(id, error = %e, "CNI DEL failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn load(&self, id: &str) -> Result<Option<CacheEntry>, NetworkError> {
        let (cache, id) = (self.cache.clone(), id.to_string());
        blocking(move || cache.load(&id)).await
    }

    async fn store(&self, id: &str, entry: &CacheEntry) -> Result<(), NetworkError> {
        let (cache, id, entry) = (self.cache.clone(), id.to_string(), entry.clone());
        blocking(move || cache.store(&id, &entry)).await
    }

    async fn remove(&self, id: &str) -> Result<(), NetworkError> {
        let (cache, id) = (self.cache.clone(), id.to_string());
        blocking(move || cache.remove(&id)).await
    }
}

/// ADD of every plugin in order, each getting the previous one's result. On failure, returns
/// the error with the last result obtained (what the rollback's DEL gets as prevResult).
async fn add_all(
    inv: &Invocation<'_>,
    entry: &CacheEntry,
) -> Result<(Value, CniResult), (NetworkError, Option<Value>)> {
    let network = &entry.network;
    let mut prev: Option<Value> = None;
    let mut last_plugin = "";
    for index in 0..network.plugins.len() {
        last_plugin = network.plugin_type(index);
        let stdin = plugin_stdin(network, index, prev.as_ref(), &entry.runtime_config);
        match run_plugin(inv, network, index, &stdin).await {
            Ok(Some(result)) => prev = Some(result),
            Ok(None) => break,
            Err(e) => return Err((e, prev)),
        }
    }
    let invalid = |reason: String| NetworkError::InvalidResult {
        plugin: last_plugin.to_string(),
        network: network.name.clone(),
        reason,
    };
    let Some(result) = prev else {
        return Err((invalid("no result".into()), None));
    };
    match CniResult::parse(&result) {
        Ok(parsed) => Ok((result, parsed)),
        Err(reason) => Err((invalid(reason), Some(result))),
    }
}

/// Run file-system work (fsync in particular) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(NetworkError::Cache {
            path: PathBuf::new(),
            source: std::io::Error::other(format!("blocking task failed: {e}")),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    /// A plugin that logs "COMMAND <stdin>" per call and answers ADD with a fixed 0.3.1 or
    /// 1.0.0 result, so the chaining logic is testable without root.
    fn setup_dir(version: &str, fail_type: Option<&str>) -> (tempfile::TempDir, Cni) {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let log = tmp.path().join("calls.log");
        let result = json!({
            "cniVersion": version,
            "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"version": "6", "address": "fd00::2/64", "interface": 0},
                    {"version": "4", "address": "10.0.0.2/24", "interface": 0}]
        });
        for ty in ["one", "two"] {
            let body = if Some(ty) == fail_type {
                format!(
                    "in=$(cat); echo \"$CNI_COMMAND {ty} $in\" >> {log}\n\
                     [ \"$CNI_COMMAND\" = DEL ] && exit 0\n\
                     echo '{{\"code\":100,\"msg\":\"boom\"}}'; exit 1",
                    log = log.display()
                )
            } else {
                format!(
                    "in=$(cat); echo \"$CNI_COMMAND {ty} $in\" >> {log}\n\
                     [ \"$CNI_COMMAND\" = ADD ] && echo '{result}'\nexit 0",
                    log = log.display()
                )
            };
            let p = bin.join(ty);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let conf = tmp.path().join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        let list = json!({"cniVersion": version, "name": "fake",
                          "plugins": [{"type": "one"}, {"type": "two", "capabilities": {"dns": true}}]});
        std::fs::write(conf.join("1.conflist"), list.to_string()).unwrap();
        let cni = Cni::new(CniOptions {
            conf_dir: conf,
            bin_dirs: vec![bin],
            cache_dir: tmp.path().join("cache"),
            plugin_timeout: Duration::from_secs(10),
        });
        (tmp, cni)
    }

    /// (command, plugin, stdin) of each call so far.
    fn calls(tmp: &tempfile::TempDir) -> Vec<(String, String, Value)> {
        std::fs::read_to_string(tmp.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut parts = l.splitn(3, ' ');
                let cmd = parts.next().unwrap().to_string();
                let ty = parts.next().unwrap().to_string();
                (
                    cmd,
                    ty,
                    serde_json::from_str(parts.next().unwrap()).unwrap(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn chaining_status_and_del_with_cached_result() {
        let (tmp, cni) = setup_dir("1.0.0", None);
        let dns = DnsConfig {
            servers: vec!["1.1.1.1".into()],
            ..Default::default()
        };
        let mut pod = PodNetwork::new("sb1", "p", "ns", "u", Path::new("/nonexistent/ns"));
        pod.dns = Some(&dns);
        let status = cni.setup(&pod).await.unwrap();
        assert_eq!(status.ip, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(
            status.additional_ips,
            vec!["fd00::2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(status.network_name, "fake");
        let c = calls(&tmp);
        assert_eq!((c[0].0.as_str(), c[0].1.as_str()), ("ADD", "one"));
        assert!(c[0].2.get("prevResult").is_none());
        assert!(c[0].2.get("runtimeConfig").is_none());
        assert_eq!(c[1].2["prevResult"]["ips"][1]["address"], "10.0.0.2/24");
        assert_eq!(
            c[1].2["runtimeConfig"],
            json!({"dns": {"servers": ["1.1.1.1"], "searches": [], "options": []}})
        );

        cni.teardown("sb1", None).await.unwrap();
        let c = calls(&tmp);
        let dels: Vec<_> = c.iter().filter(|c| c.0 == "DEL").collect();
        assert_eq!(
            dels.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(),
            ["two", "one"]
        );
        assert!(
            dels.iter()
                .all(|c| c.2["prevResult"]["cniVersion"] == "1.0.0")
        );
        assert_eq!(
            dels[0].2["runtimeConfig"]["dns"]["servers"][0], "1.1.1.1",
            "DEL gets the cached runtimeConfig"
        );
    }

    #[tokio::test]
    async fn old_lists_get_no_prev_result_on_del() {
        let (tmp, cni) = setup_dir("0.3.1", None);
        let pod = PodNetwork::new("sb2", "p", "ns", "u", Path::new("/nonexistent/ns"));
        cni.setup(&pod).await.unwrap();
        cni.teardown("sb2", None).await.unwrap();
        let c = calls(&tmp);
        assert!(
            c.iter()
                .filter(|c| c.0 == "DEL")
                .all(|c| c.2.get("prevResult").is_none())
        );
    }

    #[tokio::test]
    async fn failed_first_plugin_is_rolled_back_and_a_retry_releases_leftovers() {
        let (tmp, cni) = setup_dir("1.0.0", Some("one"));
        let pod = PodNetwork::new("sb3", "p", "ns", "u", Path::new("/nonexistent/ns"));
        let err = cni.setup(&pod).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        let c = calls(&tmp);
        let seq: Vec<_> = c.iter().map(|c| format!("{} {}", c.0, c.1)).collect();
        assert_eq!(seq, ["ADD one", "DEL two", "DEL one"]);
        assert!(cni.cached_ids().unwrap().is_empty());

        // A leftover entry (as after a crash mid-ADD) is DELeted before a new ADD.
        let (tmp, cni) = setup_dir("1.0.0", None);
        let list = conf::load_first(&cni.options().conf_dir, &cni.options().bin_dirs).unwrap();
        let args = PodArgs {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            sandbox_id: "sb4".into(),
        };
        let entry = CacheEntry::new(
            list,
            args,
            "eth0".into(),
            "/gone".into(),
            RuntimeConfig::default(),
        );
        Cache::new(cni.options().cache_dir.clone())
            .store("sb4", &entry)
            .unwrap();
        let pod = PodNetwork::new("sb4", "p", "ns", "u", Path::new("/nonexistent/ns"));
        cni.setup(&pod).await.unwrap();
        let seq: Vec<_> = calls(&tmp)
            .iter()
            .map(|c| format!("{} {}", c.0, c.1))
            .collect();
        assert_eq!(seq, ["DEL two", "DEL one", "ADD one", "ADD two"]);
        assert_eq!(cni.cached_ids().unwrap(), ["sb4"]);
    }
}
