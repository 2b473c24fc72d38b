//! Order statistics over latency samples. Pure, so it is unit-tested.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Percentiles of one batch of samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted samples; None when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the smallest value with at least p% of the samples at or below it.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Percentiles {
    pub fn of(samples: &[Duration]) -> Option<Self> {
        let mut ms: Vec<f64> = samples.iter().copied().map(millis).collect();
        ms.sort_by(f64::total_cmp);
        Some(Self {
            n: ms.len(),
            p50: percentile(&ms, 50.0)?,
            p95: percentile(&ms, 95.0)?,
            p99: percentile(&ms, 99.0)?,
            max: *ms.last()?,
        })
    }
}

/// The median of repeated runs together with their spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    /// None when no run produced a value (the measurement was not available).
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[v.len() - 1],
            runs: v.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        let small = [1.0, 2.0, 3.0];
        assert_eq!(percentile(&small, 50.0), Some(2.0));
        assert_eq!(percentile(&small, 0.0), Some(1.0));
    }

    #[test]
    fn percentiles_of_durations_are_milliseconds() {
        let d: Vec<Duration> = [3, 1, 2]
            .iter()
            .map(|m| Duration::from_millis(*m))
            .collect();
        let p = Percentiles::of(&d).unwrap();
        assert_eq!((p.n, p.p50, p.max), (3, 2.0, 3.0));
        assert!(Percentiles::of(&[]).is_none());
    }

    #[test]
    fn spread_median_odd_even_and_empty() {
        let s = Spread::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (3.0, 1.0, 5.0, 3));
        assert_eq!(Spread::of(&[1.0, 3.0]).unwrap().median, 2.0);
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[f64::NAN]).is_none());
    }
}
