//! Root integration tests against the real CNI plugins in /usr/lib/cni. Each test makes its
//! own netns, bridge (unique name) and subnet, and a guard removes them even when it fails.
//! Without root or the plugins they print why and pass.

use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::cache::Cache;
use super::{Cni, CniOptions, NetworkError, PodNetwork, netns};

const PLUGINS: &str = "/usr/lib/cni";

fn can_run() -> bool {
    let ok = nix::unistd::geteuid().is_root()
        && Path::new(PLUGINS).join("bridge").exists()
        && Path::new("/usr/sbin/ip").exists();
    if !ok {
        eprintln!("skipped: needs root, {PLUGINS}/bridge and ip(8)");
    }
    ok
}

fn rand_hex() -> String {
    hex::encode(rand::random::<[u8; 3]>())
}

fn sh(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Removes what a test created on the host, whatever happened.
#[derive(Default)]
struct Guard {
    bridges: Vec<String>,
    netns_names: Vec<String>,
    pins: Vec<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for pin in &self.pins {
            let _ = netns::unpin(pin);
        }
        for name in &self.netns_names {
            let _ = sh(&["ip", "netns", "del", name]);
        }
        for br in &self.bridges {
            let _ = sh(&["ip", "link", "del", br]);
        }
    }
}

/// A throwaway network: its own bridge, subnet, host-local data dir, conf and cache dirs.
struct TestNet {
    tmp: tempfile::TempDir,
    bridge: String,
    subnet_prefix: String,
    name: String,
}

impl TestNet {
    fn new(guard: &mut Guard, extra_plugins: &[serde_json::Value]) -> TestNet {
        let tmp = tempfile::tempdir().unwrap();
        let tag = rand_hex();
        let bridge = format!("cnt{tag}");
        guard.bridges.push(bridge.clone());
        let octets: [u8; 2] = rand::random();
        let subnet_prefix = format!("10.{}.{}.", 200 + octets[0] % 50, octets[1]);
        let name = format!("crius-test-{tag}");
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": bridge,
            "isGateway": false,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("{subnet_prefix}0/24")}]],
                "dataDir": tmp.path().join("ipam"),
            }
        })];
        plugins.extend(extra_plugins.iter().cloned());
        let conf = json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
        std::fs::create_dir_all(tmp.path().join("conf")).unwrap();
        std::fs::write(tmp.path().join("conf/10-test.conflist"), conf.to_string()).unwrap();
        std::fs::create_dir_all(tmp.path().join("bin")).unwrap();
        TestNet {
            tmp,
            bridge,
            subnet_prefix,
            name,
        }
    }

    fn cni(&self) -> Cni {
        Cni::new(CniOptions {
            conf_dir: self.tmp.path().join("conf"),
            bin_dirs: vec![self.tmp.path().join("bin"), PathBuf::from(PLUGINS)],
            cache_dir: self.tmp.path().join("cache"),
            plugin_timeout: Duration::from_secs(30),
        })
    }

    /// Addresses host-local has handed out and not released.
    fn allocated_ips(&self) -> Vec<String> {
        let dir = self.tmp.path().join("ipam").join(&self.name);
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.parse::<IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn veths_on_bridge(&self) -> usize {
        let (_, out) = sh(&["ip", "-o", "link", "show", "master", &self.bridge]);
        out.lines().filter(|l| l.contains("veth")).count()
    }

    fn add_plugin(&self, name: &str, body: &str) {
        let p = self.tmp.path().join("bin").join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn new_netns(guard: &mut Guard) -> (String, PathBuf) {
    let name = format!("crius-t-{}", rand_hex());
    let (ok, out) = sh(&["ip", "netns", "add", &name]);
    assert!(ok, "ip netns add: {out}");
    guard.netns_names.push(name.clone());
    let path = PathBuf::from("/run/netns").join(&name);
    (name, path)
}

#[tokio::test]
async fn bridge_setup_check_and_teardown_after_restart() {
    if !can_run() {
        return;
    }
    let mut guard = Guard::default();
    let net = TestNet::new(&mut guard, &[]);
    let (ns_name, ns_path) = new_netns(&mut guard);
    let id = format!("sb{}", rand_hex());
    let cni = net.cni();
    assert_eq!(cni.status().unwrap(), net.name);

    let pod = PodNetwork::new(&id, "web", "default", "uid-1", &ns_path);
    let status = cni.setup(&pod).await.unwrap();
    let ip = status.ip.expect("an IPv4 address").to_string();
    assert!(
        ip.starts_with(&net.subnet_prefix),
        "{ip} not in {}0/24",
        net.subnet_prefix
    );
    assert!(status.additional_ips.is_empty());
    assert_eq!(status.interface, "eth0");
    assert_eq!(status.network_name, net.name);
    assert_eq!(net.allocated_ips(), vec![ip.clone()]);
    assert_eq!(net.veths_on_bridge(), 1);
    let (ok, out) = sh(&[
        "ip", "netns", "exec", &ns_name, "ip", "-o", "-4", "addr", "show", "dev", "eth0",
    ]);
    assert!(ok && out.contains(&format!("{ip}/24")), "{out}");
    let cached = Cache::new(net.tmp.path().join("cache"))
        .load(&id)
        .unwrap()
        .unwrap();
    assert!(cached.result.is_some());
    assert_eq!(cni.cached_ids().unwrap(), vec![id.clone()]);

    // The conf dir changing after setup must not matter: teardown uses the cached list.
    std::fs::remove_file(net.tmp.path().join("conf/10-test.conflist")).unwrap();
    assert!(matches!(cni.status(), Err(NetworkError::NoConfig { .. })));

    // A "restarted" daemon: a new instance over the same cache dir.
    drop(cni);
    let cni = net.cni();
    cni.teardown(&id, Some(&ns_path)).await.unwrap();
    assert!(
        net.allocated_ips().is_empty(),
        "leaked {:?}",
        net.allocated_ips()
    );
    assert_eq!(net.veths_on_bridge(), 0);
    let (_, out) = sh(&["ip", "netns", "exec", &ns_name, "ip", "-o", "link", "show"]);
    assert!(!out.contains("eth0"), "{out}");
    assert!(cni.cached_ids().unwrap().is_empty());
    // Idempotent.
    cni.teardown(&id, Some(&ns_path)).await.unwrap();
}

#[tokio::test]
async fn teardown_when_the_netns_is_gone_releases_the_ip() {
    if !can_run() {
        return;
    }
    let mut guard = Guard::default();
    let net = TestNet::new(&mut guard, &[]);
    let (ns_name, ns_path) = new_netns(&mut guard);
    let id = format!("sb{}", rand_hex());
    let cni = net.cni();
    cni.setup(&PodNetwork::new(&id, "p", "default", "u", &ns_path))
        .await
        .unwrap();
    assert_eq!(net.allocated_ips().len(), 1);

    // Deleting the namespace destroys the pod's veth end and with it the host end.
    let (ok, out) = sh(&["ip", "netns", "del", &ns_name]);
    assert!(ok, "{out}");
    cni.teardown(&id, None).await.unwrap();
    assert!(
        net.allocated_ips().is_empty(),
        "leaked {:?}",
        net.allocated_ips()
    );
    assert!(cni.cached_ids().unwrap().is_empty());
}

#[tokio::test]
async fn failing_plugin_in_chain_is_rolled_back_without_leaks() {
    if !can_run() {
        return;
    }
    let mut guard = Guard::default();
    let net = TestNet::new(&mut guard, &[json!({"type": "failpoint"})]);
    let marker = net.tmp.path().join("failpoint.log");
    net.add_plugin(
        "failpoint",
        &format!(
            r#"cat >/dev/null
echo "$CNI_COMMAND" >> {marker}
if [ "$CNI_COMMAND" = ADD ]; then
  echo 'injected failure' >&2
  echo '{{"cniVersion":"1.0.0","code":11,"msg":"failpoint hit","details":"on purpose"}}'
  exit 1
fi
exit 0"#,
            marker = marker.display()
        ),
    );
    let (_, ns_path) = new_netns(&mut guard);
    let id = format!("sb{}", rand_hex());
    let cni = net.cni();

    let err = cni
        .setup(&PodNetwork::new(&id, "p", "default", "u", &ns_path))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, NetworkError::PluginFailed(f) if f.code == Some(11) && f.plugin == "failpoint"),
        "{text}"
    );
    for want in [
        "failpoint",
        &net.name,
        "failpoint hit",
        "on purpose",
        "injected failure",
    ] {
        assert!(text.contains(want), "{want:?} missing in {text}");
    }
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "ADD\nDEL\n",
        "the failing plugin gets DEL too"
    );
    assert!(
        net.allocated_ips().is_empty(),
        "leaked {:?}",
        net.allocated_ips()
    );
    assert_eq!(net.veths_on_bridge(), 0);
    assert!(cni.cached_ids().unwrap().is_empty());
}

#[tokio::test]
async fn create_pins_a_fresh_netns_with_lo_up() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pins/pod");
    netns::create(&path).await.unwrap();
    struct Unpin<'a>(&'a Path);
    impl Drop for Unpin<'_> {
        fn drop(&mut self) {
            let _ = netns::unpin(self.0);
        }
    }
    let _g = Unpin(&path);
    assert!(netns::is_pinned(&path));
    let host = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_ne!(
        std::fs::metadata(&path).unwrap().ino(),
        host,
        "a new namespace"
    );
    let net = format!("--net={}", path.display());
    let (ok, out) = sh(&["nsenter", &net, "ip", "-o", "link", "show"]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 1, "only lo: {out}");
    let flags = out.split(['<', '>']).nth(1).unwrap_or_default();
    assert!(flags.split(',').any(|f| f == "UP"), "lo is up: {out}");
    // This thread never left the host namespace.
    let (_, host_ns) = sh(&["readlink", "/proc/self/ns/net"]);
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net")
            .unwrap()
            .to_string_lossy(),
        host_ns.trim()
    );
    assert!(
        netns::create(&path).await.is_err(),
        "creating over a live pin is refused"
    );
    assert!(netns::is_pinned(&path), "and leaves it alone");
    netns::unpin(&path).unwrap();
    assert!(!path.exists());
    assert!(!netns::is_pinned(&path));
    netns::unpin(&path).unwrap();
    assert!(!netns::is_pinned(Path::new("/etc/hostname")));
}
