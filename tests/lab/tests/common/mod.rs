//! What every lab test file does the same way: run one drill at a time with the lab kept
//! for a failure's logs, and a debug build's client deadline.

use std::sync::Mutex;

use tdsvip_lab::lab::Settings;
use tdsvip_lab::scenario::Scenario;
use tdsvip_lab::{DrillOutcome, run_drill};

/// Labs of one test binary run one at a time (cargo runs the binaries one after another), so
/// that timings are not skewed by each other.
static SERIAL: Mutex<()> = Mutex::new(());

/// The longest stretch a trial's window may go without a would-acknowledge sample: the
/// sampler reads every 10 ms, and a machine loaded by a parallel build was seen at 40 ms
/// on average; a gap past this makes "no dual primary" worth too little to pass.
#[allow(
    dead_code,
    reason = "not every test binary that shares this module checks it"
)]
pub const MAX_SAMPLE_GAP_MS: u64 = 250;

/// One trial of `scenario` with `settings`, the work dir kept (a passing test removes it).
/// A debug build spends ~10 ms on a TLS login when idle and several times that while an
/// agent (re)starts on the same 2 cores; the client's 50 ms deadline is a release-build
/// number (`./run-lab`). These tests assert behaviour (no failed attempt, no dual owner), so
/// a login that is merely slow must not count as failed: 250 ms at least in a debug build.
pub fn drill_with(scenario: Scenario, settings: Settings) -> DrillOutcome {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let client_deadline_ms = if cfg!(debug_assertions) {
        settings.client_deadline_ms.max(250)
    } else {
        settings.client_deadline_ms
    };
    let label = format!("{scenario} ({})", settings.implementation.name());
    let settings = Settings {
        keep: true,
        client_deadline_ms,
        ..settings
    };
    match run_drill(settings, scenario, 1, false) {
        Ok(out) => out,
        Err(e) => panic!("{label}: the lab failed: {e}"),
    }
}

/// What a failed assertion prints: the trial's text and where its logs are.
pub fn context(out: &DrillOutcome) -> String {
    format!("{}\nlogs: {}", out.text, out.work_dir.display())
}
