//! `tdsvip probe --watch --track-file F`: the probe as a feeder for keepalived's
//! `track_file`, so that keepalived can learn the AG role as fast as tdsvip does.
//!
//! keepalived's `vrrp_script` runs at most once a second and forks a process per check; its
//! `track_file` instead reacts as soon as inotify reports the file written (`IN_CLOSE_WRITE`)
//! or renamed into place (`IN_MOVED_TO`), and multiplies the number it reads by the
//! `weight` configured for it. So this mode keeps one login session (the login probe logs
//! in again by itself when the session breaks) and probes at the `--interval-ms` rate.
//!
//! The file holds `1` while the local replica is PRIMARY with every `--database` ONLINE, `0`
//! otherwise (secondary, resolving, unreachable, timed out, ...): `0` is also what keepalived
//! reads from a missing, empty or unparsable file and from one that is deleted, so every
//! failure before the first write says "not primary" too. Outcomes are counted as tdsvip's
//! `[probe]` counts them: `--rise` PRIMARY answers in a row before `1`; SQL Server saying
//! "not primary" or "database not online" gives `0` at once; any other failure gives `0`
//! after `--fall` in a row (one slow answer must not move the address).
//!
//! Every write goes to a temporary file in the same directory and is renamed over the
//! target, so keepalived (or anyone) never reads a half-written number. On SIGTERM or SIGINT
//! the file is set to `0` before exiting: a stopped watcher no longer vouches for the
//! replica. After SIGKILL the last value stays (keepalived has no expiry on it).

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tdsvip_probes::{AnyProbe, Mode, Outcome, ProbeResult, Schedule};
use tokio::signal::unix::{SignalKind, signal};

use super::{ModeArg, ProbeArgs, describe};

/// What the file says while the replica may own the address, and otherwise.
const PRIMARY: u8 = 1;
const NOT_PRIMARY: u8 = 0;

/// The default rate: tdsvip's own `[probe] interval_ms`.
pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_millis(20);

/// The `--watch` settings, checked before anything connects.
#[derive(Debug)]
pub(super) struct Watch {
    path: PathBuf,
    rise: u32,
    fall: u32,
}

/// The watch settings from the arguments, or the argument that is wrong and why.
pub(super) fn settings(args: &ProbeArgs) -> Result<Watch, (&'static str, String)> {
    let path = args
        .track_file
        .clone()
        .ok_or(("--track-file", "required with --watch".to_owned()))?;
    if !matches!(args.mode, ModeArg::Login) || args.ag.is_none() {
        return Err((
            "--watch",
            "needs --mode login and --ag: the file says whether the AG's local replica is PRIMARY"
                .to_owned(),
        ));
    }
    if path.file_name().is_none() || path.is_dir() {
        return Err((
            "--track-file",
            format!("{} is not a file name", path.display()),
        ));
    }
    // keepalived watches the directory, and refuses a track_file whose directory is missing.
    let dir = parent_dir(&path);
    if !dir.is_dir() {
        return Err((
            "--track-file",
            format!("directory {} does not exist", dir.display()),
        ));
    }
    Ok(Watch {
        path,
        rise: args.rise,
        fall: args.fall,
    })
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces the file's content with `value` by rename from a file in the same directory
/// (a rename is atomic within one file system; across two it would fail, not tear).
fn write_value(path: &Path, value: u8) -> io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent_dir(path).join(format!(".{name}.tdsvip-{}", std::process::id()));
    std::fs::write(&tmp, format!("{value}\n"))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Rise/fall counting of the probe outcomes into the file's value (see the module doc).
#[derive(Debug)]
struct Counter {
    rise: u32,
    fall: u32,
    ok_streak: u32,
    fail_streak: u32,
    value: u8,
}

impl Counter {
    fn new(rise: u32, fall: u32) -> Counter {
        Counter {
            rise,
            fall,
            ok_streak: 0,
            fail_streak: 0,
            value: NOT_PRIMARY,
        }
    }

    /// Counts one outcome; `true` when the value changed.
    fn observe(&mut self, outcome: &Outcome) -> bool {
        let before = self.value;
        match outcome {
            Outcome::Ok => {
                self.ok_streak = self.ok_streak.saturating_add(1);
                self.fail_streak = 0;
                if self.ok_streak >= self.rise {
                    self.value = PRIMARY;
                }
            }
            Outcome::NotPrimary { .. } | Outcome::DbNotOnline { .. } => {
                self.ok_streak = 0;
                self.fail_streak = 0;
                self.value = NOT_PRIMARY;
            }
            _ => {
                self.ok_streak = 0;
                self.fail_streak = self.fail_streak.saturating_add(1);
                if self.fail_streak >= self.fall {
                    self.value = NOT_PRIMARY;
                }
            }
        }
        self.value != before
    }
}

/// Probes until SIGTERM/SIGINT, writing the value at start, on every change and at the end.
/// Exit 0 on a signal; 1 when the file cannot be written (a watcher that cannot tell
/// keepalived anything must not look alive).
pub(super) async fn run(watch: Watch, mut probe: AnyProbe, mut schedule: Schedule) -> ExitCode {
    debug_assert_eq!(probe.mode(), Mode::Login);
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: cannot catch SIGTERM/SIGINT: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = &watch.path;
    let fail = |e: io::Error| {
        eprintln!("error: --track-file {}: {e}", path.display());
        ExitCode::FAILURE
    };
    if let Err(e) = write_value(path, NOT_PRIMARY) {
        return fail(e);
    }
    println!("{}: {NOT_PRIMARY} (start)", path.display());
    let mut counter = Counter::new(watch.rise, watch.fall);
    let mut seq = 0u64;
    let signal_name = loop {
        let result: ProbeResult = tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            r = async { schedule.tick().await; probe.probe().await } => r,
        };
        seq += 1;
        if counter.observe(&result.outcome) {
            if let Err(e) = write_value(path, counter.value) {
                return fail(e);
            }
            println!(
                "{}: {} after {}",
                path.display(),
                counter.value,
                describe(seq, &result)
            );
        }
    };
    if let Err(e) = write_value(path, NOT_PRIMARY) {
        return fail(e);
    }
    println!("{}: {NOT_PRIMARY} ({signal_name})", path.display());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_primary() -> Outcome {
        Outcome::NotPrimary {
            role: Some("SECONDARY".into()),
            detail: String::new(),
        }
    }

    fn refused() -> Outcome {
        Outcome::Refused
    }

    /// The same counting as tdsvip's `[probe]`: rise to claim, fall for silence, at once
    /// when SQL Server says no.
    #[test]
    fn rise_fall_and_refusals() {
        let mut c = Counter::new(2, 3);
        assert!(!c.observe(&Outcome::Ok));
        assert!(c.observe(&Outcome::Ok));
        assert_eq!(c.value, PRIMARY);
        assert!(!c.observe(&refused()));
        assert!(!c.observe(&refused()));
        assert!(!c.observe(&Outcome::Ok), "a success resets the fall count");
        assert!(!c.observe(&refused()));
        assert!(!c.observe(&refused()));
        assert!(c.observe(&refused()));
        assert_eq!(c.value, NOT_PRIMARY);
        c.observe(&Outcome::Ok);
        c.observe(&Outcome::Ok);
        assert!(c.observe(&not_primary()), "not_primary gives 0 at once");
        assert_eq!(c.value, NOT_PRIMARY);
    }

    #[test]
    fn writes_replace_the_file_and_leave_no_temporary() {
        let dir = std::env::temp_dir().join(format!("tdsvip-watch-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("track");
        write_value(&path, PRIMARY).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        write_value(&path, NOT_PRIMARY).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
