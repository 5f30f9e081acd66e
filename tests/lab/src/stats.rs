//! Percentiles of the lab's measurements, as a pure module so the arithmetic is tested
//! without namespaces.
//!
//! Nearest-rank percentiles (the value at rank ⌈p/100 · n⌉ of the sorted samples): every
//! reported number is a measured sample, never an interpolation. Some measurements may be
//! missing in a trial (an idle session that was never reset within the window); those count
//! as "later than everything", so a percentile that lands on one is `null` rather than a
//! flattering number taken from the sessions that were reset.

use serde::Serialize;

/// `p50`, `p90`, `p99` and `max` of one measurement, in milliseconds; `None` (JSON `null`)
/// when there was no sample or the rank lands on a missing one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// Nearest-rank percentile of `sorted` (ascending); `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Summary of samples that are all present (NaN samples are dropped).
pub fn summarize(values: &[f64]) -> Summary {
    let opt: Vec<Option<f64>> = values.iter().copied().map(Some).collect();
    summarize_optional(&opt)
}

/// Summary where `None` means "did not happen within the window" and sorts after every
/// present value.
pub fn summarize_optional(values: &[Option<f64>]) -> Summary {
    let mut v: Vec<f64> = values
        .iter()
        .filter_map(|x| match x {
            Some(f) if f.is_nan() => None,
            Some(f) => Some(*f),
            None => Some(f64::INFINITY),
        })
        .collect();
    v.sort_by(f64::total_cmp);
    let at = |p: f64| percentile(&v, p).filter(|x| x.is_finite()).map(round);
    Summary {
        p50: at(50.0),
        p90: at(90.0),
        p99: at(99.0),
        max: at(100.0),
    }
}

/// `numerator / denominator` rounded to two decimals, when both exist and the
/// denominator is positive.
pub fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b * 100.0).round() / 100.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_known_lists() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[7.0], 0.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        // Five samples: p50 is the 3rd, p90 and p99 the 5th.
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 90.0), Some(5.0));
        assert_eq!(percentile(&v, 20.0), Some(1.0));
        assert_eq!(percentile(&v, 21.0), Some(2.0));
    }

    #[test]
    fn summarize_sorts_and_rounds() {
        let s = summarize(&[30.04, 10.0, 20.06]);
        assert_eq!(s.p50, Some(20.1));
        assert_eq!(s.max, Some(30.0));
        assert_eq!(summarize(&[]), Summary::default());
        assert_eq!(summarize(&[f64::NAN]), Summary::default());
    }

    #[test]
    fn missing_samples_sort_last_and_become_null() {
        // Two of four sessions never reset: p50 is the 2nd (present), p90 lands on a missing one.
        let s = summarize_optional(&[Some(5.0), None, Some(1.0), None]);
        assert_eq!(s.p50, Some(5.0));
        assert_eq!(s.p90, None);
        assert_eq!(s.max, None);
        let s = summarize_optional(&[None]);
        assert_eq!(s, Summary::default());
        // Negative values (reset before the takeover) stay as measured.
        let s = summarize_optional(&[Some(-3.0), Some(2.0)]);
        assert_eq!(s.p50, Some(-3.0));
        assert_eq!(s.max, Some(2.0));
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(500.0), Some(50.0)), Some(10.0));
        assert_eq!(ratio(Some(1.0), Some(3.0)), Some(0.33));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }
}
