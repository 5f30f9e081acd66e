//! The lab's one clock: every event, sample and client attempt is stamped in milliseconds
//! since the lab started, from the same monotonic `Instant`, so that they can be compared.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    t0: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { t0: Instant::now() }
    }

    pub fn ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64() * 1000.0
    }

    pub fn now(&self) -> f64 {
        self.ms(Instant::now())
    }

    /// The `Instant` of a lab time (for schedules).
    pub fn instant(&self, ms: f64) -> Instant {
        self.t0 + std::time::Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Something recorded at a lab time (a sample, a client attempt).
pub trait Stamped {
    /// Lab milliseconds (see [`Clock::ms`]).
    fn stamp(&self) -> f64;
}

/// The records of `log` stamped in `[from, to)`, oldest first; none if a recording thread
/// panicked while holding the lock (its records are then not trustworthy either).
pub fn between<T: Stamped + Clone>(log: &Mutex<Vec<T>>, from: f64, to: f64) -> Vec<T> {
    log.lock()
        .map(|v| {
            v.iter()
                .filter(|r| (from..to).contains(&r.stamp()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct At(f64);

    impl Stamped for At {
        fn stamp(&self) -> f64 {
            self.0
        }
    }

    #[test]
    fn between_is_half_open() {
        let log = Mutex::new(vec![At(1.0), At(2.0), At(3.0)]);
        assert_eq!(between(&log, 2.0, 3.0), vec![At(2.0)]);
        assert_eq!(between(&log, 0.0, 10.0).len(), 3);
        assert!(between(&log, 3.5, 10.0).is_empty());
    }
}
