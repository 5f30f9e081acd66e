//! What an operator sees when the HTTP listener closes connections to stay answerable
//! (`admission.rs`): one `WARN` line at once, then at most one every [`LOG_EVERY`] with the
//! counts since the previous one and the busiest source, so that a flood of a million
//! connections is a handful of lines, not a million, and still names who is flooding.
//!
//! A log line rather than a metric: the counts are for a person reading the journal after
//! "the peer said the owner was slow"; the metrics registry has no HTTP family yet.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::admission::Shed;

/// At most one line per this period (the first event of a quiet period is logged at once).
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);
/// Distinct sources counted per period; more are summed without their address, so that a
/// flood from many addresses (an IPv6 range) cannot grow this map without bound.
const MAX_SOURCES: usize = 1024;

/// Why a connection was closed by the listener, not by its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    Shed(Shed),
    /// No complete request head within the header timeout (not counted for a keep-alive
    /// connection idle after its requests: that is normal).
    HeadTimeout,
}

/// The counts since the last line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) per_source_cap: u64,
    pub(crate) table_full: u64,
    pub(crate) head_timeout: u64,
    /// The source with the most closed connections, and how many.
    pub(crate) busiest: Option<(IpAddr, u64)>,
}

#[derive(Debug, Default)]
struct Window {
    summary: Summary,
    by_source: HashMap<IpAddr, u64>,
    last_line: Option<Instant>,
}

#[derive(Debug, Default)]
pub(crate) struct ShedLog {
    window: Mutex<Window>,
}

impl ShedLog {
    /// Counts one closed connection from `peer` (by its source, as admission counts) and
    /// logs if a line is due.
    pub(crate) fn note(&self, closed: Closed, peer: IpAddr) {
        let source = super::admission::source_key(peer);
        if let Some(s) = self.record(closed, source, Instant::now()) {
            emit(&s);
        }
    }

    /// Logs what was counted since the last line, if a line is due (a periodic call, so
    /// that the end of a flood is reported too).
    pub(crate) fn flush(&self) {
        if let Some(s) = self.take_due(Instant::now()) {
            emit(&s);
        }
    }

    /// Logs what was counted since the last line, due or not (at shutdown).
    pub(crate) fn flush_now(&self) {
        let far = Instant::now() + LOG_EVERY;
        if let Some(s) = self.take_due(far) {
            emit(&s);
        }
    }

    /// Counts one closed connection; the summary to log if a line is due.
    pub(crate) fn record(&self, closed: Closed, source: IpAddr, now: Instant) -> Option<Summary> {
        {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let s = &mut w.summary;
            match closed {
                Closed::Shed(Shed::PerSource) => s.per_source_cap += 1,
                Closed::Shed(Shed::Full) => s.table_full += 1,
                Closed::HeadTimeout => s.head_timeout += 1,
            }
            let room = w.by_source.len() < MAX_SOURCES;
            let count = match w.by_source.get_mut(&source) {
                Some(n) => {
                    *n += 1;
                    Some(*n)
                }
                None if room => {
                    w.by_source.insert(source, 1);
                    Some(1)
                }
                None => None,
            };
            if let Some(n) = count
                && w.summary.busiest.is_none_or(|(_, top)| n > top)
            {
                w.summary.busiest = Some((source, n));
            }
        }
        self.take_due(now)
    }

    /// The counts so far if there are any and the last line is at least [`LOG_EVERY`] old.
    pub(crate) fn take_due(&self, now: Instant) -> Option<Summary> {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let due = w
            .last_line
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
        if !due || w.summary == Summary::default() {
            return None;
        }
        w.last_line = Some(now);
        w.by_source.clear();
        Some(std::mem::take(&mut w.summary))
    }
}

fn emit(s: &Summary) {
    let (source, count) = match s.busiest {
        Some((ip, n)) => (ip.to_string(), n),
        None => (String::from("-"), 0),
    };
    tracing::warn!(
        per_source_cap = s.per_source_cap,
        table_full = s.table_full,
        head_timeout = s.head_timeout,
        busiest_source = %source,
        busiest_source_closed = count,
        "http: closed connections that held the listener (slow or too many clients); \
         see [http] max_connections, max_connections_per_source, head_timeout_ms"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_event_is_logged_at_once_then_at_most_one_line_per_period() {
        let log = ShedLog::default();
        let t0 = Instant::now();
        let first = log
            .record(Closed::Shed(Shed::PerSource), ip("10.0.0.66"), t0)
            .expect("the first event is logged at once");
        assert_eq!(first.per_source_cap, 1);
        assert_eq!(first.busiest, Some((ip("10.0.0.66"), 1)));
        for i in 1..1000u64 {
            let at = t0 + Duration::from_millis(i);
            let src = if i % 10 == 0 { "10.0.0.7" } else { "10.0.0.66" };
            assert!(
                log.record(Closed::Shed(Shed::PerSource), ip(src), at)
                    .is_none()
            );
        }
        assert!(
            log.record(
                Closed::HeadTimeout,
                ip("10.0.0.7"),
                t0 + Duration::from_secs(2)
            )
            .is_none()
        );
        assert!(log.take_due(t0 + Duration::from_secs(9)).is_none());
        let s = log.take_due(t0 + LOG_EVERY).expect("due after the period");
        assert_eq!(
            (s.per_source_cap, s.table_full, s.head_timeout),
            (999, 0, 1)
        );
        assert_eq!(s.busiest, Some((ip("10.0.0.66"), 900)));
        // Nothing since: no line, however long it has been.
        assert!(log.take_due(t0 + LOG_EVERY * 5).is_none());
        // A quiet period ended: the next event is logged at once.
        let s = log.record(Closed::Shed(Shed::Full), ip("10.0.0.8"), t0 + LOG_EVERY * 5);
        assert_eq!(s.map(|s| s.table_full), Some(1));
    }

    #[test]
    fn many_sources_do_not_grow_the_window_without_bound() {
        let log = ShedLog::default();
        let t0 = Instant::now();
        log.record(Closed::HeadTimeout, ip("10.0.0.1"), t0);
        for i in 0..5000u32 {
            let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + i));
            log.record(Closed::Shed(Shed::Full), src, t0);
        }
        let w = log.window.lock().unwrap();
        assert_eq!(w.by_source.len(), MAX_SOURCES);
        assert_eq!(w.summary.table_full, 5000);
    }
}
