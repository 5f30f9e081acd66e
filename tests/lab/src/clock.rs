//! The lab's one clock: every event, sample and client attempt is stamped in milliseconds
//! since the lab started, from the same monotonic `Instant`, so that they can be compared.

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
