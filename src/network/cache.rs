//! On-disk record of each sandbox's network attachment: the config list actually used, the
//! invocation arguments and, once ADD finished, its result. Teardown runs from this record
//! alone, so it works after a daemon restart and after the conf dir has changed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::NetworkError;
use super::conf::NetworkConfigList;
use super::invoke::{PodArgs, RuntimeConfig};

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub format: u32,
    pub network: NetworkConfigList,
    pub pod: PodArgs,
    pub ifname: String,
    pub netns: PathBuf,
    pub runtime_config: RuntimeConfig,
    /// The final ADD result; `None` while ADD is running or if it never finished.
    #[serde(default)]
    pub result: Option<Value>,
}

impl CacheEntry {
    pub fn new(
        network: NetworkConfigList,
        pod: PodArgs,
        ifname: String,
        netns: PathBuf,
        runtime_config: RuntimeConfig,
    ) -> Self {
        CacheEntry {
            format: FORMAT_VERSION,
            network,
            pod,
            ifname,
            netns,
            runtime_config,
            result: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Self {
        Cache { dir }
    }

    fn path(&self, id: &str) -> Result<PathBuf, NetworkError> {
        // Ids become file names: keep them to one plain path component.
        if id.is_empty() || id.starts_with('.') || id.contains('/') || id.contains('\0') {
            return Err(NetworkError::InvalidId(id.to_string()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    pub fn load(&self, id: &str) -> Result<Option<CacheEntry>, NetworkError> {
        let path = self.path(id)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(NetworkError::Cache { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| NetworkError::CacheCorrupt { path, source })
    }

    pub fn store(&self, id: &str, entry: &CacheEntry) -> Result<(), NetworkError> {
        let path = self.path(id)?;
        let cache_err = |source| NetworkError::Cache {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(cache_err)?;
        let bytes = serde_json::to_vec_pretty(entry).expect("cache entries always serialize");
        crate::util::atomic_write(&path, &bytes).map_err(cache_err)
    }

    /// Remove an entry; absent is fine.
    pub fn remove(&self, id: &str) -> Result<(), NetworkError> {
        let path = self.path(id)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(NetworkError::Cache { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// Ids of all entries, e.g. to tear down attachments of sandboxes that no longer exist.
    pub fn ids(&self) -> Result<Vec<String>, NetworkError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(NetworkError::Cache {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_suffix(".json")?;
                (!id.starts_with('.')).then(|| id.to_string())
            })
            .collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_update_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path().join("cni"));
        assert!(cache.load("abc").unwrap().is_none());
        assert!(cache.ids().unwrap().is_empty());

        let network = crate::network::conf::parse(
            json!({"name":"n","cniVersion":"1.0.0","plugins":[{"type":"bridge","x":{"y":1}}]}),
            true,
        )
        .unwrap();
        let pod = PodArgs {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            sandbox_id: "abc".into(),
        };
        let mut entry = CacheEntry::new(
            network,
            pod,
            "eth0".into(),
            "/run/x".into(),
            RuntimeConfig::default(),
        );
        cache.store("abc", &entry).unwrap();
        assert_eq!(cache.load("abc").unwrap().unwrap(), entry);

        entry.result = Some(json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}));
        cache.store("abc", &entry).unwrap();
        assert_eq!(cache.load("abc").unwrap().unwrap(), entry);
        assert_eq!(cache.ids().unwrap(), vec!["abc".to_string()]);

        cache.remove("abc").unwrap();
        cache.remove("abc").unwrap();
        assert!(cache.load("abc").unwrap().is_none());
    }

    #[test]
    fn rejects_unsafe_ids_and_reports_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path().to_path_buf());
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(
                matches!(cache.load(bad), Err(NetworkError::InvalidId(_))),
                "{bad}"
            );
        }
        std::fs::write(tmp.path().join("bad.json"), "{").unwrap();
        assert!(matches!(
            cache.load("bad"),
            Err(NetworkError::CacheCorrupt { .. })
        ));
    }
}
