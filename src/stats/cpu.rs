//! CPU usage rate ("nano cores") from two samples of a cumulative usage counter, as kubelet and
//! containerd compute it: the CRI reports a rate, but the kernel only gives a running total, so
//! the previous sample of every container and pod is remembered between stats calls.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy)]
struct Sample {
    timestamp: i64,
    usage_ns: u64,
    /// The rate computed when this sample was stored, returned again for a repeated or stale
    /// sample so that two quick callers both see a number.
    rate: Option<u64>,
}

/// Previous CPU samples by container or pod id. Shared by all stats handlers.
#[derive(Debug, Default)]
pub struct CpuSampler {
    samples: Mutex<HashMap<String, Sample>>,
}

impl CpuSampler {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a sample (`timestamp` in Unix nanoseconds, `usage_ns` the cumulative CPU time)
    /// and return the usage rate since the previous one, in nanoseconds of CPU per second
    /// (1e9 = one full core). None for the first sample of an id, or after the counter went
    /// backwards (a new cgroup under a reused id).
    pub fn usage_nano_cores(&self, id: &str, timestamp: i64, usage_ns: u64) -> Option<u64> {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let prev = samples.get(id).copied();
        let rate = match prev {
            // Older or same-instant sample (concurrent callers): keep the newer one we have.
            Some(p) if timestamp <= p.timestamp => return p.rate,
            Some(p) if usage_ns >= p.usage_ns => {
                let dt = (timestamp - p.timestamp) as u128;
                let du = u128::from(usage_ns - p.usage_ns);
                Some(u64::try_from(du * 1_000_000_000 / dt).unwrap_or(u64::MAX))
            }
            _ => None,
        };
        samples.insert(
            id.to_owned(),
            Sample {
                timestamp,
                usage_ns,
                rate,
            },
        );
        rate
    }

    /// Drop the remembered sample of a removed container or pod.
    pub fn forget(&self, id: &str) {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    #[test]
    fn first_sample_is_none_then_rate() {
        let s = CpuSampler::new();
        assert_eq!(s.usage_nano_cores("a", 10 * SEC, 1_000), None);
        // Half a core over two seconds.
        assert_eq!(
            s.usage_nano_cores("a", 12 * SEC, 1_000 + SEC as u64),
            Some(500_000_000)
        );
        // Two full cores over half a second.
        assert_eq!(
            s.usage_nano_cores("a", 12 * SEC + SEC / 2, 1_000 + 2 * SEC as u64),
            Some(2_000_000_000)
        );
    }

    #[test]
    fn ids_are_independent_and_forget_resets() {
        let s = CpuSampler::new();
        assert_eq!(s.usage_nano_cores("a", SEC, 0), None);
        assert_eq!(s.usage_nano_cores("b", SEC, 0), None);
        assert_eq!(s.usage_nano_cores("a", 2 * SEC, 100), Some(100));
        s.forget("a");
        assert_eq!(s.usage_nano_cores("a", 3 * SEC, 200), None);
        assert_eq!(s.usage_nano_cores("b", 3 * SEC, 400), Some(200));
    }

    #[test]
    fn stale_sample_returns_last_rate_and_keeps_newer() {
        let s = CpuSampler::new();
        s.usage_nano_cores("a", 10 * SEC, 0);
        assert_eq!(s.usage_nano_cores("a", 11 * SEC, 300), Some(300));
        // Same instant again, then an older one: both answered from the stored rate.
        assert_eq!(s.usage_nano_cores("a", 11 * SEC, 300), Some(300));
        assert_eq!(s.usage_nano_cores("a", 10 * SEC + 1, 250), Some(300));
        // The newer sample was kept as the base.
        assert_eq!(s.usage_nano_cores("a", 12 * SEC, 400), Some(100));
    }

    #[test]
    fn counter_going_backwards_restarts() {
        let s = CpuSampler::new();
        s.usage_nano_cores("a", SEC, 5_000);
        assert_eq!(s.usage_nano_cores("a", 2 * SEC, 10), None);
        assert_eq!(s.usage_nano_cores("a", 3 * SEC, 20), Some(10));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let s = CpuSampler::new();
        s.usage_nano_cores("a", 0, 0);
        assert_eq!(s.usage_nano_cores("a", 1, u64::MAX), Some(u64::MAX));
    }
}
