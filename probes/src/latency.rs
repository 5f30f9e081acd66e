//! Latency percentiles for reports (`tdsvip probe`, the benchmarks, later the lab).
//!
//! Nearest-rank percentiles over the raw samples: exact, no interpolation, so a p99 of 100
//! samples is the 99th smallest, a value that was actually observed.

use std::time::Duration;

use serde::Serialize;

/// Milliseconds, as fractions, for JSON and for people.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencySummary {
    /// `None` for no samples: a report says "no data" rather than a fake zero.
    pub fn from_samples(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let idx = ((p / 100.0) * ms.len() as f64).ceil() as usize;
            ms[idx.clamp(1, ms.len()) - 1]
        };
        Some(LatencySummary {
            min: ms[0],
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: ms[ms.len() - 1],
        })
    }
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "min {:.3} / p50 {:.3} / p90 {:.3} / p99 {:.3} / max {:.3} ms",
            self.min, self.p50, self.p90, self.p99, self.max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = LatencySummary::from_samples(&ms(&(1..=100).rev().collect::<Vec<_>>())).unwrap();
        assert_eq!(
            (s.min, s.p50, s.p90, s.p99, s.max),
            (1.0, 50.0, 90.0, 99.0, 100.0)
        );
        let one = LatencySummary::from_samples(&ms(&[7])).unwrap();
        assert_eq!((one.min, one.p50, one.p99, one.max), (7.0, 7.0, 7.0, 7.0));
        let two = LatencySummary::from_samples(&ms(&[1, 9])).unwrap();
        assert_eq!((two.p50, two.p90), (1.0, 9.0));
    }

    #[test]
    fn no_samples_is_no_summary() {
        assert_eq!(LatencySummary::from_samples(&[]), None);
    }
}
