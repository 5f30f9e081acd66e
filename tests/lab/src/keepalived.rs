//! The peer to beat: keepalived in each node namespace instead of tdsvip, configured the way
//! a user would build it and as tightly as keepalived goes.
//!
//! VRRPv3 on `eth0` with 0.01 s adverts (the floor), every node BACKUP at the same base
//! priority, and a tracker that adds weight 50 while the local replica answers a real login
//! + role query as PRIMARY with its database ONLINE. Two trackers, two implementations:
//!
//! - `keepalived` (at its best): a `track_file`, which keepalived re-reads as soon as inotify
//!   reports it replaced, fed by one `tdsvip probe --watch --track-file` per node that keeps
//!   a login session and probes at tdsvip's own interval, timeout, rise and fall. So the two
//!   learn roles by the same probe at the same rate; what differs is VRRP versus tdsvip.
//! - `keepalived-script`: the usual `vrrp_script`, run every second (keepalived's minimum),
//!   `tdsvip probe --mode login --count 1` whose exit status is 0 only on `ok`.
//!
//! Each instance has its own pid files (`-p/-r/-c`) in the work dir and logs to the node's
//! agent log; it runs in the foreground (`-n`) so the lab can kill it like the agent. The
//! watcher is the node's `helper` process: started before keepalived (so the file exists
//! with `0` when keepalived reads it first) and killed with it; it logs its changes to
//! `track{node}.log`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{self, KeepalivedTiming};
use crate::lab::{Impl, Lab};
use crate::netns::node_ip;
use crate::procs;

/// The weight a PRIMARY replica adds to the base priority 100.
const WEIGHT: u32 = 50;

/// How long a watcher may take to write its track file the first time (a debug binary on a
/// loaded machine starts in well under a second).
const WATCHER_START: Duration = Duration::from_secs(5);

/// The password file both trackers log in with.
fn password_file(lab: &Lab) -> Result<PathBuf, String> {
    let pw = lab.dir.join("sql-password");
    std::fs::write(&pw, format!("{}\n", lab.password())).map_err(|e| e.to_string())?;
    Ok(pw)
}

/// `tdsvip probe` arguments for a login + role + database check of the local replica.
fn login_check_args(lab: &Lab, pw: &Path, timeout_ms: u64) -> Vec<String> {
    let mut args: Vec<String> = ["probe", &format!("127.0.0.1:{}", config::TDS_PORT)]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (flag, value) in [
        ("--mode", "login".to_owned()),
        ("--user", config::USER.to_owned()),
        ("--password-file", pw.display().to_string()),
        ("--ag", config::AG.to_owned()),
        ("--database", config::DATABASE.to_owned()),
        ("--timeout-ms", timeout_ms.to_string()),
        ("--ca-file", lab.ca_file().display().to_string()),
    ] {
        args.push(flag.to_owned());
        args.push(value);
    }
    args
}

fn check_script(lab: &Lab, i: usize) -> Result<PathBuf, String> {
    let pw = password_file(lab)?;
    let path = lab.dir.join(format!("check-primary{}.sh", i + 1));
    let t: KeepalivedTiming = lab.settings.keepalived;
    let args = login_check_args(lab, &pw, t.check_timeout_ms).join(" ");
    let script = format!(
        "#!/bin/sh\n# vrrp_script of node {node}: exit 0 only when the local replica answers a login +\n# role query as PRIMARY with its database ONLINE (tdsvip probe's exit status).\nexec {bin} {args} --count 1 >/dev/null 2>&1\n",
        node = i + 1,
        bin = lab.tdsvip_bin().display(),
    );
    std::fs::write(&path, script).map_err(|e| format!("{}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(path)
}

/// The `vrrp_script` tracker: its declaration and the instance's block naming it.
fn script_tracker(lab: &Lab, i: usize) -> Result<(String, String), String> {
    let script = check_script(lab, i)?;
    let t = lab.settings.keepalived;
    let tracker = format!(
        "vrrp_script chk_primary {{\n    script \"{}\"\n    interval {}\n    timeout {}\n    fall {}\n    rise {}\n    weight {WEIGHT}\n}}\n",
        script.display(),
        t.script_interval,
        t.script_timeout,
        t.script_fall,
        t.script_rise,
    );
    Ok((
        tracker,
        "    track_script {\n        chk_primary\n    }\n".into(),
    ))
}

/// Node `i`'s track file: in the work dir, which exists before keepalived starts (keepalived
/// drops a track_file whose directory is missing).
pub fn track_file(lab: &Lab, i: usize) -> PathBuf {
    lab.dir.join(format!("primary{}.track", i + 1))
}

/// Starts node `i`'s `tdsvip probe --watch` at tdsvip's probe settings, as its helper.
fn start_watcher(lab: &mut Lab, i: usize) -> Result<(String, String), String> {
    let pw = password_file(lab)?;
    let a = lab.settings.agent;
    let file = track_file(lab, i);
    let mut args = login_check_args(lab, &pw, a.timeout_ms);
    for (flag, value) in [
        ("--interval-ms", a.interval_ms.to_string()),
        ("--rise", a.rise.to_string()),
        ("--fall", a.fall.to_string()),
        ("--track-file", file.display().to_string()),
    ] {
        args.push(flag.to_owned());
        args.push(value);
    }
    args.push("--watch".to_owned());
    // A file left by a killed watcher must not pass for this one's first write.
    let _ = std::fs::remove_file(&file);
    let log = lab.dir.join(format!("track{}.log", i + 1));
    let child = procs::spawn_in(
        &lab.nodes[i].ns,
        lab.tdsvip_bin(),
        &args,
        &[],
        &log,
        Some(&log.with_extension("out.log")),
    )?;
    lab.nodes[i].helper = Some(child);
    wait_for_track_file(lab, i, &file, &log)?;
    let tracker = format!(
        "track_file primary_file {{\n    file \"{}\"\n    weight {WEIGHT}\n}}\n",
        file.display()
    );
    Ok((
        tracker,
        "    track_file {\n        primary_file\n    }\n".into(),
    ))
}

/// Waits until node `i`'s watcher has written its track file (it writes `0` before its first
/// probe), so that keepalived never starts on a missing file; a watcher that exits or stays
/// silent fails the lab start naming it, with the end of its log.
fn wait_for_track_file(lab: &mut Lab, i: usize, file: &Path, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + WATCHER_START;
    let tail = || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    };
    loop {
        if file.exists() {
            return Ok(());
        }
        let status = match lab.nodes[i]
            .helper
            .as_mut()
            .map(std::process::Child::try_wait)
        {
            Some(Ok(None)) => None,
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            None => Some("not running".to_owned()),
        };
        if let Some(status) = status {
            return Err(format!(
                "node {}'s track-file watcher stopped ({status}) before writing {}:\n{}",
                i + 1,
                file.display(),
                tail()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "node {}'s track-file watcher wrote no {} within {WATCHER_START:?}:\n{}",
                i + 1,
                file.display(),
                tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts keepalived on node `i` (and, for `keepalived`, its track file's watcher first).
pub fn start(lab: &mut Lab, i: usize) -> Result<(), String> {
    let bin = ["/usr/sbin/keepalived", "/sbin/keepalived"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("keepalived not installed: run `deploy/setup.sh lab` (apt keepalived)")?;
    let (tracker, track) = match lab.settings.implementation {
        Impl::KeepalivedScript => script_tracker(lab, i)?,
        _ => start_watcher(lab, i)?,
    };
    let peers: Vec<_> = (0..lab.nodes.len())
        .filter(|&j| j != i)
        .map(node_ip)
        .collect();
    let conf = config::keepalived_conf(i, lab.settings.keepalived, &tracker, &track, &peers);
    let conf_path = lab.dir.join(format!("keepalived{}.conf", i + 1));
    std::fs::write(&conf_path, conf).map_err(|e| format!("{}: {e}", conf_path.display()))?;
    let pid = |what: &str| {
        lab.dir
            .join(format!("keepalived{}.{what}.pid", i + 1))
            .display()
            .to_string()
    };
    let args: Vec<String> = vec![
        "--dont-fork".into(),
        "--log-console".into(),
        "--log-detail".into(),
        "--no-syslog".into(),
        "--vrrp".into(),
        "--use-file".into(),
        conf_path.display().to_string(),
        "--pid".into(),
        pid("main"),
        "--vrrp_pid".into(),
        pid("vrrp"),
        "--checkers_pid".into(),
        pid("checkers"),
    ];
    lab.spawn_agent_process(i, &bin, &args)
}

/// After SIGKILL of keepalived's parent, its VRRP child may linger (it notices the parent's
/// death itself, but not at once): kill it by its pid file so a restart starts clean. The
/// VIP stays on the interface, as after a real crash of keepalived. The watcher was killed
/// with keepalived: the track file keeps its last value, as after a real crash.
pub fn cleanup_after_kill(lab: &Lab, i: usize) {
    let path = lab.dir.join(format!("keepalived{}.vrrp.pid", i + 1));
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(pid) = text.trim().parse::<i32>()
    {
        // SAFETY: kill(2) on the pid keepalived wrote for its VRRP child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = std::fs::remove_file(path);
}
