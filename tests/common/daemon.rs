//! One `crius daemon` per test, on its own temp root, socket and CNI config directory.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxStatusRequest,
    PodSandboxStatusResponse, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
    VersionRequest,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::network::TestNetwork;
use super::{MARKER, cgroups, mounts, procs};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Long enough for a debug build creating many pods at once on 2 cores, short enough that a
/// hung call fails the test instead of the CI run.
const RPC_TIMEOUT: Duration = Duration::from_secs(90);
/// What the daemon log's tail shows when a test fails.
const LOG_TAIL_LINES: usize = 200;

pub type Runtime = RuntimeServiceClient<Channel>;
pub type Images = ImageServiceClient<Channel>;

/// What a test wants from its daemon beyond the defaults.
#[derive(Default, Clone)]
pub struct DaemonOpts {
    /// --sandbox-image (default: the daemon's built-in pause image).
    pub sandbox_image: Option<String>,
    /// A network whose conflist is in the conf dir before the daemon starts.
    pub network: Option<NetInfo>,
    /// Extra --cni-bin-dir entries after /usr/lib/cni.
    pub extra_cni_bin_dirs: Vec<PathBuf>,
    /// Image archives loaded with `crius image import` before the daemon starts.
    pub imports: Vec<PathBuf>,
    /// --log-level (default "debug").
    pub log_level: Option<String>,
    /// The state dir's name under the daemon's temp dir (default "state").
    pub state_dir_name: Option<String>,
    /// Put --root and --state on one tmpfs of this size (mount's `size=`, e.g. "32m"): a disk
    /// a container can fill.
    pub disk_size: Option<String>,
    /// The crius binary to run (default: this build's); measurements compare two builds.
    pub binary: Option<PathBuf>,
    /// --cgroup-driver (default "cgroupfs").
    pub cgroup_driver: Option<String>,
    /// TOML for the --config file (default: empty, flags set everything).
    pub config: Option<String>,
}

impl DaemonOpts {
    pub fn network(mut self, net: &TestNetwork) -> Self {
        self.extra_cni_bin_dirs.extend(net.bin_dir());
        self.network = Some(NetInfo::of(net));
        self
    }

    pub fn sandbox_image(mut self, image: &str) -> Self {
        self.sandbox_image = Some(image.to_string());
        self
    }

    pub fn import(mut self, archive: &Path) -> Self {
        self.imports.push(archive.to_path_buf());
        self
    }

    /// --root and --state on a tmpfs of `size` (see [`DaemonOpts::disk_size`]).
    pub fn small_disk(mut self, size: &str) -> Self {
        self.disk_size = Some(size.to_string());
        self
    }
}

/// What the harness needs to know about a test network to check for leaks.
#[derive(Clone)]
pub struct NetInfo {
    pub conflist: String,
    pub ipam_dir: PathBuf,
    pub bridge: String,
}

impl NetInfo {
    fn of(net: &TestNetwork) -> NetInfo {
        NetInfo {
            conflist: net.conflist(),
            ipam_dir: net.ipam_dir(),
            bridge: net.bridge().to_string(),
        }
    }
}

pub struct TestDaemon {
    dir: PathBuf,
    opts: DaemonOpts,
    child: Mutex<Option<Child>>,
    channel: Mutex<Option<Channel>>,
    network: Mutex<Option<NetInfo>>,
    /// Every pod id the test has seen, for leak checks and the cleanup sweep.
    pods: Mutex<BTreeSet<String>>,
    /// CRIUS_FAILPOINT for the next (re)start of the daemon.
    failpoint: Mutex<Option<String>>,
}

impl TestDaemon {
    pub async fn start(opts: DaemonOpts) -> TestDaemon {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("ct")
            .rand_bytes(8)
            .tempdir_in("/tmp")
            .expect("create test root")
            // Removal is ours: only after everything under it is unmounted.
            .keep();
        fs::write(dir.join(MARKER), b"crius integration test root\n").expect("write marker");
        let d = TestDaemon {
            network: Mutex::new(opts.network.clone()),
            opts,
            dir,
            child: Mutex::new(None),
            channel: Mutex::new(None),
            pods: Mutex::new(BTreeSet::new()),
            failpoint: Mutex::new(None),
        };
        if let Some(size) = &d.opts.disk_size {
            let disk = d.disk().expect("disk dir");
            fs::create_dir_all(&disk).expect("create disk dir");
            nix::mount::mount(
                Some("tmpfs"),
                &disk,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some(format!("size={size}").as_str()),
            )
            .unwrap_or_else(|e| panic!("mount a {size} tmpfs on {}: {e}", disk.display()));
        }
        for p in [d.root(), d.state(), d.cni_conf_dir(), d.dir.join("logs")] {
            fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        }
        let config = d.opts.config.as_deref().unwrap_or("");
        fs::write(
            d.config_file(),
            format!("# crius integration test: flags set the rest\n{config}"),
        )
        .expect("write config");
        if let Some(net) = &d.opts.network {
            d.write_conflist(net);
        }
        for archive in d.opts.imports.clone() {
            d.import_image(&archive);
        }
        d.spawn().await;
        d
    }

    // --- layout -------------------------------------------------------------------------

    /// The temp dir everything of this daemon lives under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Unique base name of the temp dir: how processes and mounts are attributed to us.
    pub fn token(&self) -> String {
        self.dir
            .file_name()
            .expect("temp dir name")
            .to_string_lossy()
            .into_owned()
    }
    /// The tmpfs --root and --state live on, with [`DaemonOpts::small_disk`].
    pub fn disk(&self) -> Option<PathBuf> {
        self.opts.disk_size.as_ref().map(|_| self.dir.join("disk"))
    }
    fn data_dir(&self) -> PathBuf {
        self.disk().unwrap_or_else(|| self.dir.clone())
    }
    pub fn root(&self) -> PathBuf {
        self.data_dir().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.data_dir()
            .join(self.opts.state_dir_name.as_deref().unwrap_or("state"))
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("crius.sock")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }
    fn config_file(&self) -> PathBuf {
        self.dir.join("crius.toml")
    }
    /// A cgroup parent unique to this daemon, for pods whose cgroups a test must find even
    /// without knowing the pod id (e.g. a RunPodSandbox that failed).
    pub fn cgroup_parent(&self) -> String {
        format!("/crius-test-{}", self.token())
    }

    // --- process control ----------------------------------------------------------------

    async fn spawn(&self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("open daemon log");
        let mut cmd = Command::new(self.binary());
        cmd.arg("daemon")
            .arg("--config")
            .arg(self.config_file())
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--socket")
            .arg(self.socket())
            .arg("--cni-conf-dir")
            .arg(self.cni_conf_dir())
            .arg("--cni-bin-dir")
            .arg("/usr/lib/cni")
            .arg("--cgroup-driver")
            .arg(self.opts.cgroup_driver.as_deref().unwrap_or("cgroupfs"))
            .arg("--log-level")
            .arg(self.opts.log_level.as_deref().unwrap_or("debug"));
        for d in &self.opts.extra_cni_bin_dirs {
            cmd.arg("--cni-bin-dir").arg(d);
        }
        if let Some(image) = &self.opts.sandbox_image {
            cmd.arg("--sandbox-image").arg(image);
        }
        match self.failpoint.lock().unwrap().as_deref() {
            Some(name) => cmd.env("CRIUS_FAILPOINT", name),
            None => cmd.env_remove("CRIUS_FAILPOINT"),
        };
        cmd.env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        let child = cmd.spawn().expect("spawn crius daemon");
        *self.child.lock().unwrap() = Some(child);
        self.wait_ready().await;
    }

    /// Wait until the socket answers Version; fail with the log if the daemon exits first.
    async fn wait_ready(&self) {
        let ready_timeout = super::scaled(READY_TIMEOUT);
        let deadline = Instant::now() + ready_timeout;
        let mut last_err = String::from("socket not created yet");
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                // Drop prints the log tail for every failing test.
                panic!("crius daemon exited before it was ready ({status})");
            }
            if self.socket().exists() {
                match connect(&self.socket()).await {
                    Ok(ch) => {
                        let mut rt = RuntimeServiceClient::new(ch.clone());
                        match rt.version(VersionRequest::default()).await {
                            Ok(_) => {
                                *self.channel.lock().unwrap() = Some(ch);
                                return;
                            }
                            Err(e) => last_err = format!("Version: {e}"),
                        }
                    }
                    Err(e) => last_err = format!("connect: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("crius daemon not ready after {ready_timeout:?}: {last_err}");
    }

    fn try_wait(&self) -> Option<ExitStatus> {
        let mut guard = self.child.lock().unwrap();
        let child = guard.as_mut()?;
        child.try_wait().expect("wait for daemon")
    }

    /// True while the daemon process we started has not exited.
    pub fn is_running(&self) -> bool {
        self.child.lock().unwrap().is_some() && self.try_wait().is_none()
    }

    /// The daemon's pid (panics if it is not running).
    pub fn pid(&self) -> i32 {
        self.child
            .lock()
            .unwrap()
            .as_ref()
            .expect("daemon is not running")
            .id() as i32
    }

    /// SIGKILL the daemon (its pods and monitors must survive) and reap it.
    pub fn kill9(&self) {
        *self.channel.lock().unwrap() = None;
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the daemon and wait for it to exit; returns its exit status.
    pub async fn terminate(&self) -> ExitStatus {
        *self.channel.lock().unwrap() = None;
        let mut child = self
            .child
            .lock()
            .unwrap()
            .take()
            .expect("daemon is not running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM to daemon");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait for daemon") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("crius daemon ignored SIGTERM for 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// From the next (re)start on, requests reaching the daemon's failpoint `name` hang there
    /// (see `crius::util::failpoint`); `None` clears it.
    pub fn set_failpoint(&self, name: Option<&str>) {
        *self.failpoint.lock().unwrap() = name.map(str::to_string);
    }

    /// Wait until the daemon log says a request reached failpoint `name`.
    pub async fn wait_failpoint(&self, name: &str) {
        let deadline = Instant::now() + super::scaled(Duration::from_secs(60));
        while !fs::read_to_string(self.log_file())
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("failpoint reached") && l.contains(name))
        {
            assert!(Instant::now() < deadline, "failpoint {name} never reached");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start the daemon again on the same directories (after kill9 or terminate).
    pub async fn restart(&self) {
        if self.child.lock().unwrap().is_some() {
            self.kill9();
        }
        // The old socket file may still be there; the daemon must cope, but make sure we wait
        // for the new one answering, not the stale path.
        self.spawn().await;
    }

    fn binary(&self) -> PathBuf {
        self.opts
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_crius")))
    }

    /// A daemon started with `opts` whose registry.k8s.io is the plain-HTTP registry at
    /// `mirror` (`127.0.0.1:<port>`).
    pub async fn start_mirrored(opts: DaemonOpts, mirror: &str) -> TestDaemon {
        let d = TestDaemon::start(opts).await;
        std::fs::write(
            d.dir().join("crius.toml"),
            format!("[registry.mirrors.\"registry.k8s.io\"]\nendpoint = [\"http://{mirror}\"]\n"),
        )
        .unwrap();
        d.restart().await;
        d
    }

    // --- clients ------------------------------------------------------------------------

    fn channel(&self) -> Channel {
        self.channel
            .lock()
            .unwrap()
            .clone()
            .expect("daemon is not running")
    }

    pub fn runtime(&self) -> Runtime {
        RuntimeServiceClient::new(self.channel())
    }

    pub fn image(&self) -> Images {
        ImageServiceClient::new(self.channel())
    }

    // --- network ------------------------------------------------------------------------

    fn write_conflist(&self, net: &NetInfo) {
        let path = self.cni_conf_dir().join("10-crius-test.conflist");
        // Write then rename: a daemon watching the directory never sees half a file.
        let tmp = self.cni_conf_dir().join(".10-crius-test.conflist.tmp");
        fs::write(&tmp, &net.conflist).expect("write conflist");
        fs::rename(&tmp, &path).expect("install conflist");
    }

    /// Put `net`'s conflist into the running daemon's conf dir.
    pub fn install_network(&self, net: &TestNetwork) {
        let info = NetInfo::of(net);
        self.write_conflist(&info);
        *self.network.lock().unwrap() = Some(info);
    }

    pub fn network_info(&self) -> Option<NetInfo> {
        self.network.lock().unwrap().clone()
    }

    // --- images -------------------------------------------------------------------------

    /// `crius image import --root <root> <archive>` (works with the daemon running or not).
    pub fn import_image(&self, archive: &Path) {
        let out = Command::new(self.binary())
            .args(["image", "import", "--root"])
            .arg(self.root())
            .arg(archive)
            .output()
            .expect("run crius image import");
        assert!(
            out.status.success(),
            "crius image import {} failed ({}):\n{}{}",
            archive.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // --- pod helpers --------------------------------------------------------------------

    /// Remember a pod id for leak checks and the final sweep.
    pub fn track(&self, id: &str) {
        self.pods.lock().unwrap().insert(id.to_string());
    }

    pub fn tracked_pods(&self) -> Vec<String> {
        self.pods.lock().unwrap().iter().cloned().collect()
    }

    /// A kubelet-like config whose log directory lives under this daemon's temp dir.
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let mut c = super::pods::pod_config(name, &super::random_hex(8), "crius-test");
        c.log_directory = self.pod_log_dir(&c);
        c
    }

    /// Like pod_config, with the host's network namespace.
    pub fn host_network_pod_config(&self, name: &str) -> PodSandboxConfig {
        let mut c = super::pods::host_network_pod_config(name, &super::random_hex(8), "crius-test");
        c.log_directory = self.pod_log_dir(&c);
        c
    }

    fn pod_log_dir(&self, c: &PodSandboxConfig) -> String {
        let m = c.metadata.as_ref().expect("metadata");
        self.dir
            .join("logs")
            .join(format!("{}_{}_{}", m.namespace, m.name, m.uid))
            .to_string_lossy()
            .into_owned()
    }

    /// RunPodSandbox that must succeed; returns (and tracks) the id.
    pub async fn run_pod(&self, config: PodSandboxConfig) -> String {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let resp = self
            .runtime()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}"));
        let id = resp.into_inner().pod_sandbox_id;
        assert!(!id.is_empty(), "RunPodSandbox {name} returned an empty id");
        self.track(&id);
        id
    }

    /// Verbose PodSandboxStatus that must succeed.
    pub async fn status(&self, id: &str) -> PodSandboxStatusResponse {
        self.runtime()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e}"))
            .into_inner()
    }

    pub async fn stop_pod(&self, id: &str) {
        self.runtime()
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}"));
    }

    pub async fn remove_pod(&self, id: &str) {
        self.runtime()
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}"));
    }

    pub async fn stop_and_remove(&self, id: &str) {
        self.stop_pod(id).await;
        self.remove_pod(id).await;
    }

    pub async fn list_pods(&self, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
        self.runtime()
            .list_pod_sandbox(ListPodSandboxRequest { filter })
            .await
            .unwrap_or_else(|e| panic!("ListPodSandbox: {e}"))
            .into_inner()
            .items
    }

    /// The pid of the pod's pause (init) process. Tries the verbose status info first (a
    /// "pid" key, as containerd reports it), then /proc: a process in another mount
    /// namespace whose mount table names this test root and whose cgroup or mount table
    /// names the pod.
    pub async fn pause_pid(&self, id: &str) -> i32 {
        let status = self.status(id).await;
        if let Some(pid) = super::pods::pid_from_info(&status.info)
            && procs::is_alive(pid)
        {
            return pid;
        }
        let short = &id[..id.len().min(12)];
        let token = self.token();
        let my_mnt = procs::self_ns("mnt");
        let candidates: Vec<i32> = procs::all_pids()
            .into_iter()
            .filter(|&p| procs::ns_link(p, "mnt").is_some_and(|ns| ns != my_mnt))
            .filter(|&p| {
                let mi = procs::mountinfo(p);
                mi.contains(&token) && (mi.contains(short) || procs::cgroups(p).contains(short))
            })
            .collect();
        // The init is the one whose parent is not itself a pod process.
        let inits: Vec<i32> = candidates
            .iter()
            .copied()
            .filter(|&p| procs::stat(p).is_none_or(|(ppid, _)| !candidates.contains(&ppid)))
            .collect();
        match inits.as_slice() {
            [pid] => *pid,
            [] => panic!(
                "no pause process found for pod {id} (status info: {:?})",
                status.info
            ),
            many => panic!("several candidate pause processes for pod {id}: {many:?}"),
        }
    }

    // --- diagnostics and cleanup --------------------------------------------------------

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!(
            "---- crius daemon log {} (last {} lines) ----\n{}\n---- end of daemon log ----",
            self.log_file().display(),
            lines.len() - start,
            lines[start..].join("\n")
        )
    }

    /// Ids the daemon's own directories know about (records, runtime state, monitors).
    pub fn ids_on_disk(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        for dir in [
            self.root().join("sandboxes"),
            self.root().join("containers"),
            self.state().join("runtime"),
            self.state().join("monitors"),
            self.state().join("m"),
        ] {
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.len() >= 12 && name.chars().all(|c| c.is_ascii_hexdigit()) {
                        ids.insert(name);
                    }
                }
            }
        }
        ids
    }

    /// Kill and remove everything this daemon and its pods left: processes, mounts, cgroups,
    /// then the temp dir (kept, with a warning, if something is still mounted under it).
    fn sweep(&mut self) {
        self.kill9();
        let token = self.token();
        let mut ids: BTreeSet<String> = self.pods.lock().unwrap().clone();
        ids.extend(self.ids_on_disk());
        for _ in 0..20 {
            let mut pids = procs::processes_of_root(&token);
            for id in &ids {
                pids.extend(procs::processes_in_cgroup_named(&id[..12.min(id.len())]));
            }
            for cg in cgroups::dirs_at(&self.cgroup_parent()) {
                for child in cgroups::children(&cg).into_iter().chain([cg.clone()]) {
                    pids.extend(cgroups::procs(&child));
                }
            }
            pids.retain(|&p| procs::is_alive(p));
            if pids.is_empty() {
                break;
            }
            for p in pids {
                procs::sigkill(p);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let stuck = mounts::unmount_all_under(&self.dir);
        let mut cg_dirs: Vec<PathBuf> = cgroups::dirs_at(&self.cgroup_parent());
        for id in &ids {
            cg_dirs.extend(cgroups::dirs_named(&id[..12.min(id.len())]));
        }
        for _ in 0..20 {
            let left: Vec<PathBuf> = cg_dirs
                .iter()
                .flat_map(|d| cgroups::remove_tree(d))
                .collect();
            if left.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if stuck.is_empty() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("warning: removing {}: {e}", self.dir.display());
            }
        } else {
            eprintln!(
                "warning: keeping {}: still mounted: {stuck:?} (hack/ci-cleanup removes it)",
                self.dir.display()
            );
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        self.sweep();
    }
}

/// A tonic channel over the daemon's unix socket.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    // The URI is required by the API but unused: the connector always dials the socket.
    Endpoint::from_static("http://[::]:50051")
        .connect_timeout(Duration::from_secs(5))
        .timeout(super::scaled(RPC_TIMEOUT))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "crius integration tests need root (run them as root, as hack/test does in CI)"
    );
}
