//! A private CNI bridge network per test: its own bridge name, /24 subnet, IPAM data directory
//! and, optionally, a failpoint plugin at the end of the chain to make ADD fail on demand.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{MARKER, random_hex};

/// Reservations of subnets among test processes running at once (nextest runs each test in
/// its own process). hack/ci-cleanup removes stale ones.
const SUBNET_LOCKS: &str = "/tmp/crius-test-nets";
/// Test bridges are named crt<6 hex>: short (IFNAMSIZ is 16) and recognisable by ci-cleanup.
pub const BRIDGE_PREFIX: &str = "crt";
const FAILPOINT_PLUGIN: &str = "failpoint";

pub struct TestNetwork {
    dir: PathBuf,
    name: String,
    bridge: String,
    /// Third and second octets of 10.A.B.0/24.
    subnet: (u8, u8),
    subnet_lock: PathBuf,
    failpoint: bool,
}

impl TestNetwork {
    /// A bridge network with no failpoint.
    pub fn new() -> TestNetwork {
        Self::create(false)
    }

    /// A bridge network whose chain ends with the failpoint plugin (disarmed).
    pub fn with_failpoint() -> TestNetwork {
        Self::create(true)
    }

    fn create(failpoint: bool) -> TestNetwork {
        require_cni_plugins();
        let dir = tempfile::Builder::new()
            .prefix("cn")
            .rand_bytes(8)
            .tempdir_in("/tmp")
            .expect("create the test network's temp dir")
            .keep();
        fs::write(dir.join(MARKER), b"crius integration test network\n").expect("write marker");
        let hex = random_hex(3);
        let (subnet, subnet_lock) = reserve_subnet();
        let net = TestNetwork {
            name: format!("crius-test-{hex}"),
            bridge: format!("{BRIDGE_PREFIX}{hex}"),
            dir,
            subnet,
            subnet_lock,
            failpoint,
        };
        fs::create_dir_all(net.ipam_dir()).expect("create ipam dir");
        if failpoint {
            net.write_failpoint_plugin();
        }
        net
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// "10.A.B.0/24".
    pub fn subnet(&self) -> String {
        format!("10.{}.{}.0/24", self.subnet.0, self.subnet.1)
    }

    pub fn contains(&self, ip: &str) -> bool {
        ip.parse::<Ipv4Addr>()
            .is_ok_and(|ip| ip.octets()[..3] == [10, self.subnet.0, self.subnet.1])
    }

    /// host-local's data directory; it keeps one file per allocated address under <name>/.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    /// Addresses host-local currently has allocated in this network.
    pub fn allocated_ips(&self) -> Vec<String> {
        allocated_ips(&self.ipam_dir())
    }

    /// Extra plugin directory (holds the failpoint plugin), if any.
    pub fn bin_dir(&self) -> Option<PathBuf> {
        self.failpoint.then(|| self.dir.join("bin"))
    }

    /// The .conflist the daemon should load.
    pub fn conflist(&self) -> String {
        let mut plugins = vec![serde_json::json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            // No masquerade (and no portmap): nothing in iptables to leak.
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": self.subnet() }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": self.ipam_dir(),
            },
        })];
        if self.failpoint {
            plugins.push(serde_json::json!({ "type": FAILPOINT_PLUGIN }));
        }
        serde_json::to_string_pretty(&serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": plugins,
        }))
        .expect("serialize conflist")
    }

    fn failpoint_marker(&self) -> PathBuf {
        self.dir.join("failpoint.armed")
    }

    fn failpoint_log(&self) -> PathBuf {
        self.dir.join("failpoint.log")
    }

    /// From now on every ADD through this network fails (after bridge has allocated an IP).
    pub fn arm_failpoint(&self) {
        assert!(
            self.failpoint,
            "network {} has no failpoint plugin",
            self.name
        );
        fs::write(self.failpoint_marker(), b"armed\n").expect("arm failpoint");
    }

    fn hang_marker(&self) -> PathBuf {
        self.dir.join("failpoint.hang")
    }

    /// From now on ADD through this network blocks (after bridge has allocated an IP) until
    /// [`Self::release_hang`]: a RunPodSandbox caught mid-CNI.
    pub fn arm_hang(&self) {
        assert!(
            self.failpoint,
            "network {} has no failpoint plugin",
            self.name
        );
        fs::write(self.hang_marker(), b"hang\n").expect("arm hang");
    }

    pub fn release_hang(&self) {
        let _ = fs::remove_file(self.hang_marker());
    }

    pub fn disarm_failpoint(&self) {
        let _ = fs::remove_file(self.failpoint_marker());
    }

    /// "COMMAND CONTAINERID" for every invocation of the failpoint plugin, in order.
    pub fn failpoint_calls(&self) -> Vec<String> {
        fs::read_to_string(self.failpoint_log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The plugin is a shell script: ADD fails with a CNI error while the marker exists and
    /// otherwise passes the previous plugin's result through (jq extracts it from stdin);
    /// CHECK, DEL and anything else succeed; VERSION lists what it speaks.
    fn write_failpoint_plugin(&self) {
        let bin = self.dir.join("bin");
        fs::create_dir_all(&bin).expect("create failpoint bin dir");
        assert!(
            Command::new("jq").arg("--version").output().is_ok(),
            "the failpoint CNI plugin needs jq (run hack/install-deps)"
        );
        let script = format!(
            r#"#!/bin/sh
# crius integration tests: a CNI plugin that fails ADD on demand.
echo "$CNI_COMMAND $CNI_CONTAINERID" >> '{log}'
case "$CNI_COMMAND" in
ADD)
    while [ -e '{hang}' ]; do sleep 0.1; done
    if [ -e '{marker}' ]; then
        cat >/dev/null
        printf '%s\n' '{{"cniVersion":"1.0.0","code":999,"msg":"failpoint: injected ADD failure","details":"crius test failpoint plugin is armed"}}'
        exit 1
    fi
    exec jq -c '.prevResult + {{cniVersion: .cniVersion}}'
    ;;
VERSION)
    printf '%s\n' '{{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}}'
    ;;
*)
    cat >/dev/null
    ;;
esac
exit 0
"#,
            log = self.failpoint_log().display(),
            marker = self.failpoint_marker().display(),
            hang = self.hang_marker().display(),
        );
        let path = bin.join(FAILPOINT_PLUGIN);
        fs::write(&path, script).expect("write failpoint plugin");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod failpoint");
    }

    /// Veth interfaces currently attached to the bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .expect("run ip link show master");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
}

impl Default for TestNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        // The bridge plugin creates the bridge on first ADD and never deletes it.
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
        }
        let _ = fs::remove_file(&self.subnet_lock);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Files named after an IP address under host-local's data dir (one sub-dir per network).
pub fn allocated_ips(ipam_dir: &Path) -> Vec<String> {
    let mut ips = Vec::new();
    let Ok(nets) = fs::read_dir(ipam_dir) else {
        return ips;
    };
    for net in nets.flatten() {
        let Ok(files) = fs::read_dir(net.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                ips.push(name);
            }
        }
    }
    ips
}

fn require_cni_plugins() {
    for p in ["bridge", "host-local"] {
        assert!(
            Path::new("/usr/lib/cni").join(p).exists(),
            "/usr/lib/cni/{p} is missing: these tests need root and the CNI plugins \
             (run hack/install-deps)"
        );
    }
}

/// Pick a free 10.A.B.0/24 (A in 200..=250): not routed on this host and not reserved by
/// another test. The reservation is a file created with O_EXCL.
fn reserve_subnet() -> ((u8, u8), PathBuf) {
    fs::create_dir_all(SUBNET_LOCKS).expect("create subnet lock dir");
    let routes = Command::new("ip")
        .args(["-o", "-4", "route", "show", "table", "all"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .expect("run ip route");
    for _ in 0..200 {
        let a: u8 = rand::random_range(200..=250);
        let b: u8 = rand::random();
        let prefix = format!("10.{a}.{b}.");
        if routes.contains(&prefix) {
            continue;
        }
        let lock = Path::new(SUBNET_LOCKS).join(format!("10.{a}.{b}.0"));
        if fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
            .is_ok()
        {
            return ((a, b), lock);
        }
    }
    panic!("no free 10.200-250.x.0/24 subnet found for a test network");
}
