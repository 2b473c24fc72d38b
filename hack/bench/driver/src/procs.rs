//! Memory of processes from /proc: RSS from status, PSS from smaps_rollup, and finding a runtime's
//! per-pod helper processes by a marker in their environment.

use std::fs;
use std::path::Path;

/// Value in KiB of `key:` in a /proc `status` or `smaps_rollup` text.
pub fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resident set size of a process in KiB (None when it is gone).
pub fn rss_kib(pid: u32) -> Option<u64> {
    field_kib(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS",
    )
}

/// Proportional set size in KiB: shared pages are split among the processes that map them, so the
/// sum over many helpers of the same binary is what they cost together.
pub fn pss_kib(pid: u32) -> Option<u64> {
    field_kib(
        &fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?,
        "Pss",
    )
}

fn nul_separated(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Whether a process matches: its environment holds `marker` (KEY=VALUE) and its command line
/// contains every one of `tokens`. The marker keeps other people's daemons on the same machine out.
pub fn matches(environ: &[String], cmdline: &[String], marker: &str, tokens: &[String]) -> bool {
    let joined = cmdline.join(" ");
    environ.iter().any(|e| e == marker) && tokens.iter().all(|t| joined.contains(t.as_str()))
}

/// Helper processes (crius monitors, containerd shims) that carry our marker.
pub fn find_helpers(marker: &str, tokens: &[String]) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let base = Path::new("/proc").join(pid.to_string());
            let (Ok(env), Ok(cmd)) = (
                fs::read(base.join("environ")),
                fs::read(base.join("cmdline")),
            ) else {
                return false;
            };
            matches(&nul_separated(&env), &nul_separated(&cmd), marker, tokens)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Summed memory of a set of processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupMemory {
    pub count: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

pub fn group_memory(pids: &[u32]) -> GroupMemory {
    let mut m = GroupMemory::default();
    for pid in pids {
        // A helper that exits between listing and reading simply does not count.
        if let (Some(rss), Some(pss)) = (rss_kib(*pid), pss_kib(*pid)) {
            m.count += 1;
            m.rss_kib += rss;
            m.pss_kib += pss;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_smaps_fields() {
        let status = "Name:\tcrius\nVmPeak:\t  9000 kB\nVmRSS:\t    4242 kB\n";
        assert_eq!(field_kib(status, "VmRSS"), Some(4242));
        assert_eq!(field_kib(status, "VmSwap"), None);
        let rollup = "00400000-7fff [rollup]\nRss:                1000 kB\nPss:                 310 kB\nPss_Anon:  10 kB\n";
        assert_eq!(field_kib(rollup, "Pss"), Some(310));
    }

    #[test]
    fn matching_needs_marker_and_all_tokens() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let env = s(&["PATH=/bin", "CRIUS_BENCH=abc"]);
        let cmd = s(&["/usr/bin/crius", "monitor", "--dir", "/x"]);
        assert!(matches(
            &env,
            &cmd,
            "CRIUS_BENCH=abc",
            &s(&["crius", "monitor"])
        ));
        assert!(!matches(&env, &cmd, "CRIUS_BENCH=abd", &s(&["monitor"])));
        assert!(!matches(
            &env,
            &cmd,
            "CRIUS_BENCH=abc",
            &s(&["containerd-shim"])
        ));
        assert_eq!(nul_separated(b"a\0b c\0\0"), s(&["a", "b c"]));
    }

    #[test]
    fn own_process_has_memory() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(pss_kib(me).unwrap() > 0);
        assert_eq!(group_memory(&[me]).count, 1);
    }
}
