//! Exponential backoff, the one implementation tdsvip uses: the controller's pause before
//! acquiring again after a failed acquire and between cloud claims (deterministic, so that a
//! decision can say exactly when the retry runs: one node retries per AG, there is no herd),
//! and the cloud executor's pause between EC2 calls ("equal jitter", so that nodes retrying
//! together spread out).
//!
//! It is its own crate because both the controller (which must depend on nothing that does
//! I/O) and the cloud crate use it.

#![forbid(unsafe_code)]

use std::time::Duration;

/// Doubling from `base` up to `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap }
    }

    /// The pause after the `failures`-th failure in a row (1 = the first): `base`, twice
    /// that, … up to `cap`.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }

    /// "Equal jitter": half of [`Backoff::delay`] plus a random part of the other half
    /// (`unit` in [0, 1]), so every retry still waits a little.
    pub fn jittered(&self, failures: u32, unit: f64) -> Duration {
        let half = self.delay(failures) / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff::new(ms(100), ms(1000));
        let delays: Vec<u128> = (1..=6).map(|f| b.delay(f).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(0), ms(100), "no failure yet counts as the first");
        assert_eq!(b.delay(1000), ms(1000), "no overflow far past the cap");
        let huge = Backoff::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        assert_eq!(
            huge.delay(40),
            Duration::MAX,
            "saturates instead of overflowing"
        );
    }

    #[test]
    fn jitter_stays_between_half_and_the_whole_delay() {
        let b = Backoff::new(ms(100), ms(1000));
        assert_eq!(b.jittered(3, 0.0), ms(200));
        assert_eq!(b.jittered(3, 1.0), ms(400));
        assert_eq!(b.jittered(3, 0.5), ms(300));
        assert_eq!(b.jittered(3, -5.0), ms(200));
        assert_eq!(b.jittered(3, f64::NAN.max(2.0)), ms(400));
    }
}
