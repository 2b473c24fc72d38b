//! A container's cgroup v1 set up by crius instead of libcontainer, for specs simple enough to
//! allow it (the pod sandbox's: cpu shares and device rules, no cgroupfs mount). The daemon
//! creates it and writes its resources while it writes the bundle (that work then costs the
//! create nothing); the create helper joins it.
//!
//! Why: libcontainer moves its intermediate process into every hierarchy by writing the pid to
//! `cgroup.procs`. For that write the kernel takes the global `cgroup_threadgroup_rwsem` for
//! writing, which waits for a full RCU grace period unless another migration happened just
//! before: 5-15 ms on the test VM, the largest single cost of RunPodSandbox (measured with
//! `perf sched timehist`: the intermediate sleeps in `synchronize_rcu` under
//! `cgroup_procs_write_start`). A thread that moves *itself* by writing "0" to a v1
//! hierarchy's `tasks` file does not take that lock (the kernel only needs it to keep a whole
//! thread group stable), and costs microseconds. The helper is single-threaded, so it joins
//! the cgroups that way before libcontainer forks its processes, which inherit them.
//! (The daemon, which is multi-threaded, only makes directories and writes resource files.)
//!
//! libcontainer must then leave the real cgroups alone during this create. The helper enters a
//! private mount namespace and covers /sys/fs/cgroup with a small tmpfs holding a decoy tree:
//! for every hierarchy, the container's cgroup directory with an empty `cgroup.procs` file.
//! libcontainer's v1 manager still finds the hierarchies in mountinfo, writes its pid into the
//! decoy file (a plain tmpfs write) and has no resources to apply (the spec it reads has none,
//! see [`write_bundle`]; they were written by [`create`]). Nothing is unmounted: an unmount costs an expedited RCU grace
//! period of its own. Later calls (kill, delete) run from the monitor in the host's namespace
//! and find the real cgroup at the spec's `cgroupsPath` as usual, so deletion is unchanged.
//!
//! cgroup v2 hosts keep libcontainer's path (joining there without the lock needs
//! `clone3(CLONE_INTO_CGROUP)` for the helper; not done yet).

use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxDeviceCgroup, Spec};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The v1 controllers libcontainer's manager handles. Only these are joined, so that its
/// delete (which removes the cgroup in exactly these hierarchies) leaves nothing behind.
const CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// How long removing a cgroup may wait for its last processes to be gone.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum OwnCgroupError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::Error,
    },
    #[error("spec {path}: {reason}")]
    Spec { path: PathBuf, reason: String },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OwnCgroupError + use<> {
    let path = path.to_owned();
    move |source| OwnCgroupError::Io { what, path, source }
}

/// The container's cgroup: one directory per mounted hierarchy, and the resources. The daemon
/// creates it ([`create`]) while it writes the bundle, and sends it with the container's
/// configuration; the create helper joins it ([`enter`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// `<hierarchy mount>/<cgroupsPath>` for every hierarchy with a controller of
    /// [`CONTROLLERS`], deduplicated (co-mounted controllers share one).
    pub dirs: Vec<PathBuf>,
    pub cpu_shares: Option<u64>,
    /// The spec's rules, in order. (libcontainer would add mknod-anything, console and tun
    /// rules of its own; a spec simple enough for this path does not need them.)
    pub devices: Vec<LinuxDeviceCgroup>,
    /// The container's cgroup under every cgroup v1 mount point, created in the tmpfs that
    /// covers /sys/fs/cgroup (libcontainer looks there, whichever hierarchies it knows).
    pub decoys: Vec<PathBuf>,
    /// The hierarchy with the cpuset controller: its mount point and the container's dir.
    pub cpuset: Option<(PathBuf, PathBuf)>,
    /// The container's dir in the hierarchy with the cpu controller.
    pub cpu_dir: Option<PathBuf>,
    /// The container's dir in the hierarchy with the devices controller.
    pub devices_dir: Option<PathBuf>,
    /// cpuset.cpus and cpuset.mems of every level of the cpuset hierarchy down to the
    /// container's dir, as [`create`] left them: the decoy gets the same values.
    pub cpuset_files: Vec<(PathBuf, String)>,
}

/// The plan for `spec`, or `None` when libcontainer must do the cgroup work (cgroup v2, a
/// resource this module does not write, a cgroupfs mount in the container, no cgroupsPath).
/// `mountinfo` is /proc/self/mountinfo; `legacy_layout` says /sys/fs/cgroup is a tmpfs of v1
/// hierarchies.
pub fn plan(spec: &Spec, mountinfo: &str, legacy_layout: bool) -> Option<Plan> {
    if !legacy_layout {
        return None;
    }
    let linux = spec.linux().as_ref()?;
    let cgroups_path = linux.cgroups_path().as_ref()?;
    if !cgroups_path.is_absolute()
        || cgroups_path
            .components()
            .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return None;
    }
    let mounts_cgroupfs = spec.mounts().iter().flatten().any(|m| {
        matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2"))
            || m.destination().starts_with(CGROUP_ROOT)
    });
    if mounts_cgroupfs {
        return None;
    }
    let (cpu_shares, devices) = match linux.resources() {
        None => (None, Vec::new()),
        Some(r) => simple_resources(r)?,
    };
    let relative = cgroups_path.strip_prefix("/").ok()?;
    let mut planned = Plan {
        dirs: Vec::new(),
        cpu_shares,
        devices,
        decoys: Vec::new(),
        cpuset: None,
        cpu_dir: None,
        devices_dir: None,
        cpuset_files: Vec::new(),
    };
    for (mount, controllers) in v1_mounts(mountinfo) {
        let dir = mount.join(relative);
        if !mount.starts_with(CGROUP_ROOT) {
            // A hierarchy elsewhere would escape the decoy (and libcontainer's own layout).
            return None;
        }
        let has = |name: &str| controllers.iter().any(|c| c == name);
        if CONTROLLERS.iter().any(|c| has(c)) && !planned.dirs.contains(&dir) {
            planned.dirs.push(dir.clone());
            if has("cpuset") {
                planned.cpuset = Some((mount.clone(), dir.clone()));
            }
            if has("cpu") {
                planned.cpu_dir = Some(dir.clone());
            }
            if has("devices") {
                planned.devices_dir = Some(dir.clone());
            }
        }
        if !planned.decoys.contains(&dir) {
            planned.decoys.push(dir);
        }
    }
    (!planned.dirs.is_empty()).then_some(planned)
}

/// cpu shares and device rules, or `None` if `r` asks for anything else.
fn simple_resources(
    r: &oci_spec::runtime::LinuxResources,
) -> Option<(Option<u64>, Vec<LinuxDeviceCgroup>)> {
    let mut value = serde_json::to_value(r).ok()?;
    let object = value.as_object_mut()?;
    let devices = object.remove("devices");
    let cpu = object.remove("cpu");
    if !object.is_empty() {
        return None;
    }
    let shares = match cpu {
        None => None,
        Some(serde_json::Value::Object(mut cpu)) => {
            let shares = cpu.remove("shares");
            if !cpu.is_empty() {
                return None;
            }
            shares.and_then(|s| s.as_u64())
        }
        Some(_) => return None,
    };
    let devices = match devices {
        None => Vec::new(),
        Some(d) => serde_json::from_value(d).ok()?,
    };
    Some((shares, devices))
}

/// Mount points of the v1 hierarchies, each with its super options (controllers, name=...).
fn v1_mounts(mountinfo: &str) -> Vec<(PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split(' ');
        if right.next() != Some("cgroup") {
            continue;
        }
        let super_opts = right.nth(1).unwrap_or_default();
        let options = super_opts.split(',').map(str::to_owned).collect();
        if let Some(mount_point) = left.split(' ').nth(4) {
            out.push((PathBuf::from(mount_point), options));
        }
    }
    out
}

/// Whether /sys/fs/cgroup holds v1 hierarchies (a tmpfs), as libcontainer decides it.
fn legacy_layout() -> bool {
    nix::sys::statfs::statfs(CGROUP_ROOT)
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false)
}

/// The plan for `spec` on this host, with the cgroup created ([`create`]); `None` when
/// libcontainer does the cgroup work (cgroup v2, or a spec [`plan`] refuses).
pub fn prepare(spec: &Spec) -> Result<Option<Plan>, OwnCgroupError> {
    let Some(mut plan) = plan_here(spec)? else {
        return Ok(None);
    };
    create(&mut plan)?;
    Ok(Some(plan))
}

/// [`plan`] for this host's cgroup layout and mounts.
fn plan_here(spec: &Spec) -> Result<Option<Plan>, OwnCgroupError> {
    if !legacy_layout() {
        return Ok(None);
    }
    let mountinfo = Path::new("/proc/self/mountinfo");
    let mountinfo = std::fs::read_to_string(mountinfo).map_err(io_err("read", mountinfo))?;
    Ok(plan(spec, &mountinfo, true))
}

/// Creates the cgroup and writes its resources (in the daemon, while the bundle is written).
/// On error, what was created is removed again.
pub fn create(plan: &mut Plan) -> Result<(), OwnCgroupError> {
    let result = create_dirs(plan);
    if result.is_err() {
        let _ = remove(plan);
    }
    result
}

fn create_dirs(plan: &mut Plan) -> Result<(), OwnCgroupError> {
    for dir in &plan.dirs {
        std::fs::create_dir_all(dir).map_err(io_err("create cgroup", dir))?;
    }
    // libcontainer reads the cpuset files of every level from the hierarchy's root down before
    // it joins a cpuset cgroup (and fills empty ones): the decoy gets the real values.
    plan.cpuset_files = match &plan.cpuset {
        Some((mount, dir)) => fill_cpuset(mount, dir)?,
        None => Vec::new(),
    };
    if let (Some(dir), Some(shares)) = (&plan.cpu_dir, plan.cpu_shares) {
        write(&dir.join("cpu.shares"), &shares.to_string())?;
    }
    if let Some(dir) = &plan.devices_dir {
        for rule in &plan.devices {
            let file = if rule.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write(&dir.join(file), &rule.to_string())?;
        }
    }
    Ok(())
}

/// Moves the calling thread into the cgroup [`create`] made and covers cgroupfs with the decoy
/// tree for libcontainer. For the create helper only: it must be single-threaded, and it
/// changes its mount namespace for good.
pub fn enter(plan: &Plan) -> Result<(), OwnCgroupError> {
    for dir in &plan.dirs {
        write(&dir.join("tasks"), "0")?;
    }
    cover_cgroupfs(plan, &plan.cpuset_files)
}

/// A new v1 cpuset cgroup starts with no cpus and no memory nodes, and nothing can join it;
/// every level below the hierarchy's root inherits its parent's sets when empty. Returns the
/// resulting files of every level from the root down (path and value).
fn fill_cpuset(mount: &Path, dir: &Path) -> Result<Vec<(PathBuf, String)>, OwnCgroupError> {
    const FILES: [&str; 2] = ["cpuset.cpus", "cpuset.mems"];
    let mut parent = [read(&mount.join(FILES[0]))?, read(&mount.join(FILES[1]))?];
    let mut files: Vec<(PathBuf, String)> = FILES
        .iter()
        .zip(&parent)
        .map(|(file, value)| (mount.join(file), value.trim().to_owned()))
        .collect();
    let mut levels: Vec<&Path> = dir
        .ancestors()
        .take_while(|level| *level != mount && level.starts_with(mount))
        .collect();
    levels.reverse();
    for level in levels {
        for (file, inherited) in FILES.iter().zip(parent.iter_mut()) {
            let path = level.join(file);
            let mut value = read(&path)?;
            if value.trim().is_empty() {
                write(&path, inherited.trim())?;
                value = inherited.trim().to_owned();
            }
            files.push((path, value.trim().to_owned()));
            *inherited = value;
        }
    }
    Ok(files)
}

/// A private mount namespace where /sys/fs/cgroup is a tmpfs with the decoy tree.
/// `files` are written into the decoy (paths as seen before covering).
fn cover_cgroupfs(plan: &Plan, files: &[(PathBuf, String)]) -> Result<(), OwnCgroupError> {
    let sys = |what| move |source| OwnCgroupError::Sys { what, source };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(sys("unshare(NEWNS)"))?;
    // The tmpfs must not propagate to the host's /sys/fs/cgroup.
    nix::mount::mount(
        None::<&str>,
        CGROUP_ROOT,
        None::<&str>,
        MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(sys("make /sys/fs/cgroup a slave"))?;
    nix::mount::mount(
        Some("tmpfs"),
        CGROUP_ROOT,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        // A size limit only bounds what may be written, nothing is reserved: every written
        // file takes a page (each hierarchy's cgroup.procs, libcontainer's pid in it, and the
        // cpuset files of every level), so a deep cgroup parent such as kubelet's
        // kubepods/besteffort/pod<uid> needs dozens. 64 KiB (16 pages) failed with ENOSPC.
        Some("size=4m,mode=755"),
    )
    .map_err(sys("mount a tmpfs on /sys/fs/cgroup"))?;
    for dir in &plan.decoys {
        std::fs::create_dir_all(dir).map_err(io_err("create decoy cgroup", dir))?;
        let procs = dir.join("cgroup.procs");
        std::fs::File::create(&procs).map_err(io_err("create", &procs))?;
    }
    for (path, value) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("create decoy cgroup", parent))?;
        }
        write(path, value)?;
    }
    Ok(())
}

/// Removes what is left of the cgroup [`prepare`] would make for `spec` (an interrupted
/// create's, found later by the sandbox's removal); nothing to do is success.
pub fn remove_for(spec: &Spec) -> Result<(), OwnCgroupError> {
    match plan_here(spec)? {
        Some(plan) => remove(&plan),
        None => Ok(()),
    }
}

/// Removes the cgroup after a failed create (libcontainer's cleanup cannot see it then).
/// Waits briefly for killed processes to leave; missing directories are fine.
pub fn remove(plan: &Plan) -> Result<(), OwnCgroupError> {
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    for dir in &plan.dirs {
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(io_err("remove cgroup", dir)(e)),
            }
        }
    }
    Ok(())
}

/// The spec libcontainer gets when the cgroup is ours: everything but `resources`.
pub fn without_resources(mut spec: Spec) -> Spec {
    if let Some(linux) = spec.linux_mut() {
        linux.set_resources(None);
    }
    spec
}

/// Writes the bundle libcontainer reads when the cgroup is ours: `spec` without `resources`,
/// its rootfs path made absolute (relative to `bundle`), as `<dir>/config.json`.
pub fn write_bundle(spec: &Spec, bundle: &Path, dir: &Path) -> Result<(), OwnCgroupError> {
    let mut spec = without_resources(spec.clone());
    if let Some(root) = spec.root_mut()
        && root.path().is_relative()
    {
        let absolute = bundle.join(root.path());
        root.set_path(absolute);
    }
    let config = dir.join("config.json");
    let spec_error = |reason: String| OwnCgroupError::Spec {
        path: config.clone(),
        reason,
    };
    let json = serde_json::to_vec(&spec).map_err(|e| spec_error(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    std::fs::write(&config, json).map_err(io_err("write", &config))
}

fn read(path: &Path) -> Result<String, OwnCgroupError> {
    std::fs::read_to_string(path).map_err(io_err("read", path))
}

fn write(path: &Path, value: &str) -> Result<(), OwnCgroupError> {
    std::fs::write(path, value).map_err(io_err("write", path))
}

#[cfg(test)]
mod tests;
