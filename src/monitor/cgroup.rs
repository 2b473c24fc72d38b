//! Signalling every process of a container through its cgroup, without libcontainer: the
//! monitor finds the cgroup from init's /proc entry right after create, so it can still clean
//! up after init is gone.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup directory that lists the container's processes, and how to freeze it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCgroup {
    dir: PathBuf,
    freezer: Freezer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freezer {
    /// cgroup v1 freezer hierarchy: `freezer.state`.
    V1,
    /// cgroup v2: `cgroup.freeze`.
    V2,
    /// No freezer: signal the listed processes (a racing fork may escape one round).
    None,
}

/// A usable line of /proc/PID/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The hierarchy's directory under /sys/fs/cgroup ("" for the unified one).
    mount: String,
    /// The cgroup's path inside that hierarchy.
    path: String,
    freezer: Freezer,
}

/// The line of /proc/PID/cgroup to use: the v1 freezer hierarchy, else v1 pids, or the unified
/// line when the host runs cgroup v2 only.
fn pick(proc_cgroup: &str, unified_only: bool) -> Option<Entry> {
    let mut fallback = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if unified_only {
            if controllers.is_empty() {
                return Some(Entry {
                    mount: String::new(),
                    path: path.to_owned(),
                    freezer: Freezer::V2,
                });
            }
            continue;
        }
        let list: Vec<&str> = controllers.split(',').collect();
        let entry = |freezer| Entry {
            mount: controllers.to_owned(),
            path: path.to_owned(),
            freezer,
        };
        if list.contains(&"freezer") {
            return Some(entry(Freezer::V1));
        }
        if fallback.is_none() && list.contains(&"pids") {
            fallback = Some(entry(Freezer::None));
        }
    }
    fallback
}

impl ContainerCgroup {
    /// The cgroup of `pid`, or `None` when it cannot be told apart from the monitor's own (then
    /// signalling "the container's cgroup" would hit the monitor and its neighbours).
    pub fn of(pid: i32) -> io::Result<Option<Self>> {
        let unified_only = crate::cgroup_driver::unified_hierarchy();
        let theirs = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let ours = fs::read_to_string("/proc/self/cgroup")?;
        let Some(entry) = pick(&theirs, unified_only) else {
            return Ok(None);
        };
        if entry.path == "/" || pick(&ours, unified_only).is_some_and(|o| o.path == entry.path) {
            return Ok(None);
        }
        let dir = Path::new(ROOT)
            .join(&entry.mount)
            .join(entry.path.trim_start_matches('/'));
        Ok(Some(Self {
            dir,
            freezer: entry.freezer,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Pids listed in the cgroup; empty if the cgroup is gone.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Sends `signal` to every process in the cgroup, frozen meanwhile so none forks past us.
    /// Returns how many processes were signalled.
    pub fn kill_all(&self, signal: Signal) -> io::Result<usize> {
        let frozen = self.freeze(true);
        let mut count = 0;
        let mut result = Ok(());
        for pid in self.pids() {
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) => count += 1,
                Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => result = Err(io::Error::from(e)),
            }
        }
        if frozen {
            self.freeze(false);
        }
        result.map(|()| count)
    }

    /// Whether no live process is left (a cgroup that is gone counts as empty). v2 asks the
    /// kernel (`populated 0` in cgroup.events, which also covers child cgroups); v1 reads the
    /// pid list.
    pub fn is_empty(&self) -> bool {
        if !self.dir.exists() {
            return true;
        }
        if self.freezer == Freezer::V2 {
            return fs::read_to_string(self.dir.join("cgroup.events"))
                .map(|s| s.lines().any(|l| l.trim() == "populated 0"))
                .unwrap_or(true);
        }
        self.pids().is_empty()
    }

    /// SIGKILL everything in the cgroup and wait until it is empty, killing again now and then
    /// (a fork racing the first round), for at most `timeout`. Returns whether it emptied.
    ///
    /// Killed processes still need CPU time to exit: in a container throttled by cpu.max (say
    /// 10 ms per 100 ms) with busy children, that takes far longer than the ~100 ms for which
    /// libcontainer retries removing the directory. So on v2 the CPU limit is lifted first
    /// (nothing of the container will run any more but its exit paths), and cgroup.kill
    /// (Linux 5.14) kills the whole subtree in one write.
    pub fn kill_and_wait_empty(&self, timeout: Duration) -> bool {
        const POLL: Duration = Duration::from_millis(5);
        const RE_KILL: Duration = Duration::from_millis(250);
        if self.is_empty() {
            return true;
        }
        if self.freezer == Freezer::V2 {
            let _ = fs::write(self.dir.join("cpu.max"), "max");
        }
        let start = Instant::now();
        let mut last_kill: Option<Instant> = None;
        loop {
            if last_kill.is_none_or(|t| t.elapsed() >= RE_KILL) {
                self.kill_once();
                last_kill = Some(Instant::now());
            }
            std::thread::sleep(POLL);
            if self.is_empty() {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
        }
    }

    fn kill_once(&self) {
        if self.freezer == Freezer::V2 && fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        if let Err(e) = self.kill_all(Signal::SIGKILL) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "kill_all");
        }
    }

    /// Best effort: a cgroup that cannot be frozen is still signalled.
    fn freeze(&self, freeze: bool) -> bool {
        let (file, value, done) = match (self.freezer, freeze) {
            (Freezer::V1, true) => ("freezer.state", "FROZEN", Some("FROZEN")),
            (Freezer::V1, false) => ("freezer.state", "THAWED", None),
            (Freezer::V2, true) => ("cgroup.freeze", "1", Some("frozen 1")),
            (Freezer::V2, false) => ("cgroup.freeze", "0", None),
            (Freezer::None, _) => return false,
        };
        if fs::write(self.dir.join(file), value).is_err() {
            return false;
        }
        let Some(done) = done else { return true };
        // Freezing is asynchronous; wait briefly for it to settle.
        let check = if self.freezer == Freezer::V1 {
            "freezer.state"
        } else {
            "cgroup.events"
        };
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline {
            if fs::read_to_string(self.dir.join(check)).is_ok_and(|s| s.contains(done)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// The container's memory cgroup, where the kernel counts OOM kills: the v1 memory hierarchy's
/// directory, or the unified one on a v2-only host. `None` when it is the monitor's own
/// (its counter would not be the container's).
///
/// On v2 the counter is also watched while the container runs (memory.events raises a modify
/// event when it changes; containerd's shim watches the same file). That alone is not enough
/// with the systemd driver: systemd removes an emptied scope as soon as its last process
/// exits, and the kernel defers a memory.events notification that comes within 20 ms of the
/// previous one (the `max` events of a container at its limit come that often), so the OOM
/// kill's notification can be dropped with the removed cgroup before it is read. The parent's
/// memory.events counts its children's kills too and outlives the scope: it is watched as
/// well, and a rise of the parent's count that the container's own count did not show while it
/// could still be read is the container's (see `OomCount`).
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
    /// The parent's memory.events (v2, below the root), for the fallback.
    parent_events: Option<PathBuf>,
    watch: Option<Inotify>,
    count: OomCount,
}

/// The OOM kill counts read so far: the container's own, and the parent's at the same moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct OomCount {
    /// The highest count of the container's own cgroup read so far.
    own: Option<u64>,
    /// The parent's count read just before the last successful read of the container's own.
    parent: Option<u64>,
}

impl OomCount {
    /// Takes in one reading: the parent's count (read first) and the container's own
    /// (`None` when its cgroup is gone). While the container's cgroup exists, every rise of the
    /// parent's count it does not share is a sibling's, and moves the parent baseline.
    fn observe(&mut self, parent: Option<u64>, own: Option<u64>) {
        if own.is_some() {
            // None < Some: the highest reading, or the first.
            self.own = self.own.max(own);
            self.parent = parent;
        }
    }

    /// The container's count: its own when it was read at last; once its cgroup is gone, its
    /// last own count plus the parent's rise since then. (Reading the parent before the
    /// container keeps a kill between the two reads counted: at worst twice, never not at all.)
    /// A sibling killed in the same instant as this container's cgroup went can be counted
    /// here: the price of not losing this container's own kills.
    fn total(&self, parent_now: Option<u64>, own_now: Option<u64>) -> Option<u64> {
        if own_now.is_some() {
            return self.own.max(own_now);
        }
        match (self.parent, parent_now) {
            (Some(before), Some(now)) if now > before => {
                Some(self.own.unwrap_or(0) + (now - before))
            }
            _ => self.own,
        }
    }
}

/// The memory line of /proc/PID/cgroup: (mount dir, path).
fn pick_memory(proc_cgroup: &str, unified_only: bool) -> Option<(String, String)> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = if unified_only {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == "memory")
        };
        wanted.then(|| (controllers.to_owned(), path.to_owned()))
    })
}

/// `oom_kill N` from memory.oom_control (v1) or memory.events (v2).
fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some("oom_kill"))
            .then(|| f.next()?.parse().ok())
            .flatten()
    })
}

impl MemoryCgroup {
    pub fn of(pid: i32) -> io::Result<Option<Self>> {
        let unified_only = crate::cgroup_driver::unified_hierarchy();
        let theirs = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let ours = fs::read_to_string("/proc/self/cgroup")?;
        let Some((mount, path)) = pick_memory(&theirs, unified_only) else {
            return Ok(None);
        };
        if path == "/" || pick_memory(&ours, unified_only).is_some_and(|(_, p)| p == path) {
            return Ok(None);
        }
        let dir = Path::new(ROOT)
            .join(mount)
            .join(path.trim_start_matches('/'));
        // The root cgroup has no memory.events; a parent without the memory controller has none.
        let parent_events = dir
            .parent()
            .filter(|p| unified_only && *p != Path::new(ROOT))
            .map(|p| p.join("memory.events"))
            .filter(|f| f.exists());
        let watch = if unified_only {
            let mut files = vec![dir.join("memory.events")];
            files.extend(parent_events.clone());
            watch_events(&files)
        } else {
            None
        };
        let mut cgroup = Self {
            dir,
            v2: unified_only,
            parent_events,
            watch,
            count: OomCount::default(),
        };
        cgroup.refresh();
        Ok(Some(cgroup))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The watch to poll for readability (v2 only); call `on_watch_ready` when it is.
    pub fn watch_fd(&self) -> Option<BorrowedFd<'_>> {
        self.watch.as_ref().map(|w| w.as_fd())
    }

    /// Consumes the pending change events and reads the counters while the cgroup still exists.
    pub fn on_watch_ready(&mut self) {
        self.drain_events();
        self.refresh();
    }

    /// How many processes the kernel's OOM killer killed in this cgroup: read now, or, if the
    /// cgroup is gone, what was seen plus what its parent counted since; `None` if never known
    /// (a kernel without the counter).
    pub fn oom_kills(&self) -> Option<u64> {
        self.drain_events();
        let (parent, own) = self.read();
        self.count.total(parent, own)
    }

    fn drain_events(&self) {
        if let Some(w) = &self.watch {
            while matches!(w.read_events(), Ok(events) if !events.is_empty()) {}
        }
    }

    fn refresh(&mut self) {
        let (parent, own) = self.read();
        self.count.observe(parent, own);
    }

    /// The parent's count, then the container's own.
    fn read(&self) -> (Option<u64>, Option<u64>) {
        let count = |f: &Path| fs::read_to_string(f).ok().and_then(|t| parse_oom_kills(&t));
        let parent = self.parent_events.as_deref().and_then(count);
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        (parent, count(&self.dir.join(file)))
    }
}

/// A non-blocking inotify watch for changes of `files`; `None` (logged) if it cannot be set
/// up, then only the read at exit counts.
fn watch_events(files: &[PathBuf]) -> Option<Inotify> {
    let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).and_then(|w| {
        for f in files {
            w.add_watch(f, AddWatchFlags::IN_MODIFY)?;
        }
        Ok(w)
    });
    match watch {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(?files, error = %e, "cannot watch for OOM kills");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "9:name=systemd:/crius/abc\n8:pids:/crius/abc\n6:freezer:/crius/abc\n0::/\n";

    #[test]
    fn prefers_the_v1_freezer() {
        let e = pick(V1, false).unwrap();
        assert_eq!(
            (e.mount.as_str(), e.path.as_str()),
            ("freezer", "/crius/abc")
        );
        assert_eq!(e.freezer, Freezer::V1);
    }

    #[test]
    fn falls_back_to_pids_without_a_freezer() {
        let e = pick("8:pids:/x\n4:memory:/x\n", false).unwrap();
        assert_eq!((e.mount.as_str(), e.path.as_str()), ("pids", "/x"));
        assert_eq!(e.freezer, Freezer::None);
    }

    #[test]
    fn unified_uses_the_empty_controller_line() {
        let e = pick("0::/kubepods/x\n", true).unwrap();
        assert_eq!((e.mount.as_str(), e.path.as_str()), ("", "/kubepods/x"));
        assert_eq!(e.freezer, Freezer::V2);
        assert_eq!(pick(V1, true).unwrap().path, "/");
    }

    #[test]
    fn emptiness_from_cgroup_events_or_the_pid_list() {
        let t = tempfile::tempdir().unwrap();
        let v2 = ContainerCgroup {
            dir: t.path().to_path_buf(),
            freezer: Freezer::V2,
        };
        fs::write(t.path().join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert!(!v2.is_empty());
        assert!(
            !v2.kill_and_wait_empty(Duration::from_millis(30)),
            "never empties"
        );
        fs::write(t.path().join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
        assert!(v2.is_empty());
        assert!(v2.kill_and_wait_empty(Duration::ZERO));
        let v1 = ContainerCgroup {
            dir: t.path().to_path_buf(),
            freezer: Freezer::V1,
        };
        fs::write(t.path().join("cgroup.procs"), "").unwrap();
        assert!(v1.is_empty());
        let gone = ContainerCgroup {
            dir: t.path().join("gone"),
            freezer: Freezer::V2,
        };
        assert!(gone.is_empty());
    }

    #[test]
    fn memory_cgroup_and_oom_counter() {
        let v1 = "4:memory:/crius/abc\n6:freezer:/crius/abc\n0::/\n";
        assert_eq!(
            pick_memory(v1, false),
            Some(("memory".to_owned(), "/crius/abc".to_owned()))
        );
        assert_eq!(pick_memory("0::/k/x\n", true).unwrap().1, "/k/x");
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kills("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn a_kill_lost_with_the_cgroup_is_found_in_the_parent() {
        let mut c = OomCount::default();
        c.observe(Some(3), Some(0));
        // A sibling's kill while the container's cgroup exists moves the baseline.
        c.observe(Some(4), Some(0));
        assert_eq!(c.total(Some(4), Some(0)), Some(0));
        // Read at exit while the cgroup exists: its own count, whatever the parent says.
        assert_eq!(c.total(Some(9), Some(1)), Some(1));
        // The cgroup went before its kill was read: the parent's rise is the container's.
        assert_eq!(c.total(Some(5), None), Some(1));
        // Gone with no rise in the parent: what was seen.
        assert_eq!(c.total(Some(4), None), Some(0));
        // No parent (v1, or a child of the root): only what was seen.
        let mut v1 = OomCount::default();
        v1.observe(None, Some(2));
        v1.observe(None, None);
        assert_eq!(v1.total(None, None), Some(2));
        assert_eq!(OomCount::default().total(None, None), None);
    }
}
