//! Reading /proc: which processes exist, what they run, which namespaces and cgroups they are
//! in, and what their mount tables show. Every read tolerates the process exiting meanwhile.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// A live process's resident set size (VmRSS), in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Every pid currently listed in /proc.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The command line with NULs turned into spaces ("" for kernel threads and zombies).
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .replace('\0', " ")
        })
        .unwrap_or_default()
}

/// The target of /proc/PID/ns/KIND, e.g. "net:[4026531840]".
pub fn ns_link(pid: i32, kind: &str) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Our own namespace of KIND.
pub fn self_ns(kind: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{kind}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| panic!("readlink /proc/self/ns/{kind}: {e}"))
}

pub fn mountinfo(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default()
}

pub fn cgroups(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

/// Parent pid and start time (clock ticks since boot) from /proc/PID/stat; the start time tells
/// a process from a later one that reused its pid.
pub fn stat(pid: i32) -> Option<(i32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, starttime field 22.
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// True while the process exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Processes that belong to the test root whose unique directory name is `token`: those whose
/// command line names it (daemon, monitors) and those in another mount namespace whose mount
/// table names it (pod processes: their rootfs and bind mounts come from under the root).
/// A tmpfs /tmp shows paths relative to its own root, so match the base name, not the path.
pub fn processes_of_root(token: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let my_mnt = self_ns("mnt");
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            cmdline(pid).contains(token)
                || (ns_link(pid, "mnt").is_some_and(|ns| ns != my_mnt)
                    && mountinfo(pid).contains(token))
        })
        .collect()
}

/// Processes whose cgroup membership names `id` (a pod id or its short form).
pub fn processes_in_cgroup_named(id: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| cgroups(pid).contains(id))
        .collect()
}

/// Wait until `pid` is gone (or a zombie); false on timeout.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !is_alive(pid)
}

pub fn sigkill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Contents of a file inside the process's root filesystem.
pub fn read_in_root(pid: i32, path: &str) -> std::io::Result<String> {
    let p = Path::new("/proc")
        .join(pid.to_string())
        .join("root")
        .join(path.trim_start_matches('/'));
    fs::read_to_string(p)
}
