//! `oom_score_adj` for containers.
//!
//! Lowering a process's `oom_score_adj` below its parent's needs `CAP_SYS_RESOURCE`; without it the
//! runtime's write fails (EACCES) and container creation fails. So, like containerd's
//! `restrict_oom_score_adj`, a node without that capability never asks for less than the
//! runtime's own score.

/// The score kubelet's sandboxes get in containerd and dockershim (kubernetes#47938): the pause
/// process is nearly the last thing the OOM killer picks.
pub const SANDBOX_OOM_SCORE_ADJ: i32 = -998;

const MIN: i32 = -1000;
const MAX: i32 = 1000;

/// Clamp a requested score into the kernel's range and, when this process cannot lower scores
/// (`can_lower == false`), to no less than `own_score`.
pub fn clamp(requested: i32, own_score: i32, can_lower: bool) -> i32 {
    let wanted = requested.clamp(MIN, MAX);
    if can_lower {
        wanted
    } else {
        wanted.max(own_score.clamp(MIN, MAX))
    }
}

/// Whether this process holds `CAP_SYS_RESOURCE` (bit 24 of `CapEff` in /proc/self/status).
/// Unreadable or unparsable status is treated as "cannot lower": the safe answer.
pub fn node_can_lower() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| cap_eff_has(&s, CAP_SYS_RESOURCE))
        .unwrap_or(false)
}

/// This process's own /proc/self/oom_score_adj (0 if it cannot be read).
pub fn own_score() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            tracing::warn!("cannot read /proc/self/oom_score_adj; assuming 0");
            0
        })
}

const CAP_SYS_RESOURCE: u32 = 24;

fn cap_eff_has(status: &str, bit: u32) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let mask = u64::from_str_radix(hex, 16).ok()?;
    Some(mask & (1u64 << bit) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_table() {
        // (requested, own, can_lower, expected)
        let table = [
            (-998, 0, true, -998),
            (-998, 0, false, 0),
            (-998, -500, false, -500),
            (-998, -999, false, -998),
            (500, 0, false, 500),
            (500, 800, false, 800),
            (1000, 0, false, 1000),
            (2000, 0, true, 1000),
            (-5000, 0, true, -1000),
            (-5000, -1000, false, -1000),
            (0, 0, false, 0),
            (-1, 0, false, 0),
            (-1, 0, true, -1),
        ];
        for (req, own, can, want) in table {
            assert_eq!(clamp(req, own, can), want, "clamp({req}, {own}, {can})");
        }
    }

    #[test]
    fn cap_eff_parsing() {
        let with = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let without = "CapEff:\t000001fffeffffff\n";
        assert_eq!(cap_eff_has(with, CAP_SYS_RESOURCE), Some(true));
        assert_eq!(cap_eff_has(without, CAP_SYS_RESOURCE), Some(false));
        assert_eq!(cap_eff_has("Name: x\n", CAP_SYS_RESOURCE), None);
        assert_eq!(cap_eff_has("CapEff:\tzz\n", CAP_SYS_RESOURCE), None);
    }

    #[test]
    fn live_readers_do_not_panic() {
        let own = own_score();
        assert!((MIN..=MAX).contains(&own));
        let _ = node_can_lower();
    }
}
