//! Network counters of a pod, from /proc/<pid>/net/dev of any process in the pod's network
//! namespace: procfs shows the namespace of the process it describes, so no setns is needed.

use super::error::StatsError;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// When the counters were read, in Unix nanoseconds.
    pub timestamp: i64,
    /// Every interface but loopback, in the kernel's order.
    pub interfaces: Vec<InterfaceStats>,
}

/// Network counters of the network namespace `pid` is in (normally the pod's pause process).
pub fn pod_network_stats(pid: i32) -> Result<NetworkStats, StatsError> {
    pod_network_stats_in(Path::new("/"), pid)
}

/// `pod_network_stats` with procfs under `<root>/proc`, for tests.
pub fn pod_network_stats_in(root: &Path, pid: i32) -> Result<NetworkStats, StatsError> {
    let path = root.join(format!("proc/{pid}/net/dev"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        // ESRCH/ENOENT: the process is gone; the pod's network with it.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            return Err(StatsError::NotFound {
                what: "process",
                path,
            });
        }
        Err(e) => return Err(StatsError::io(&path, e)),
    };
    let interfaces = parse_net_dev(&text).map_err(|reason| StatsError::Parse {
        path: path.clone(),
        reason,
    })?;
    Ok(NetworkStats {
        timestamp: crate::util::now_nanos(),
        interfaces,
    })
}

/// Parse net/dev: two header lines, then `name: rx_bytes rx_packets rx_errs rx_drop rx_fifo
/// rx_frame rx_compressed rx_multicast tx_bytes tx_packets tx_errs ...`.
pub fn parse_net_dev(text: &str) -> Result<Vec<InterfaceStats>, String> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        let (name, counters) = line
            .split_once(':')
            .ok_or_else(|| format!("no interface name in {line:?}"))?;
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let fields = counters
            .split_whitespace()
            .map(str::parse::<u64>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("interface {name}: {e}"))?;
        if fields.len() < 16 {
            return Err(format!(
                "interface {name}: {} counters, expected 16",
                fields.len()
            ));
        }
        out.push(InterfaceStats {
            name: name.to_owned(),
            rx_bytes: fields[0],
            rx_errors: fields[2],
            tx_bytes: fields[8],
            tx_errors: fields[10],
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1234      12    0    0    0     0          0         0     1234      12    0    0    0     0       0          0
  eth0:99887766  5000    3    1    0     0          0         7 55443322    4000    4    0    0     0       0          0
veth1a2b:10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0
";

    #[test]
    fn parses_interfaces_and_skips_loopback() {
        let ifs = parse_net_dev(SAMPLE).unwrap();
        assert_eq!(ifs.len(), 2);
        assert_eq!(
            ifs[0],
            InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 99887766,
                rx_errors: 3,
                tx_bytes: 55443322,
                tx_errors: 4,
            }
        );
        assert_eq!(ifs[1].name, "veth1a2b");
        assert_eq!(ifs[1].tx_bytes, 20);
    }

    #[test]
    fn short_or_garbled_lines_are_errors() {
        let head = "h1\nh2\n";
        assert!(parse_net_dev(&format!("{head}eth0: 1 2 3\n")).is_err());
        assert!(parse_net_dev(&format!("{head}eth0 1 2 3\n")).is_err());
        assert!(parse_net_dev(&format!("{head}eth0: a b c d e f g h i j k l m n o p\n")).is_err());
        assert!(parse_net_dev(head).unwrap().is_empty());
    }

    #[test]
    fn reads_fake_proc_and_reports_missing_process() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("proc/42/net");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("dev"), SAMPLE).unwrap();
        let s = pod_network_stats_in(dir.path(), 42).unwrap();
        assert!(s.timestamp > 0);
        assert_eq!(s.interfaces.len(), 2);
        assert!(
            pod_network_stats_in(dir.path(), 43)
                .unwrap_err()
                .is_not_found()
        );
    }
}
