//! A package upgrade keeps a running owner serving (issue 15, README "Upgrades"), tested on
//! the installed Debian package: `deploy/package-test.sh` installs it and runs this test
//! with `--ignored` and `TDSVIP_PACKAGE_DEB` naming the .deb (it needs both, so a plain
//! `cargo test` skips it).
//!
//! What an upgrade does to a node: dpkg replaces /usr/bin/tdsvip under the running agent
//! (the package does not stop the unit on upgrade), then postinst's
//! `deb-systemd-invoke try-restart tdsvip.service` stops it with SIGTERM and starts the new
//! binary (ExecStartPre's check-config, then `run`). PID 1 is not systemd here, so after a
//! real `dpkg -i` of the package this test plays systemd's part with the unit's own user
//! (`tdsvip`, made by postinst) and capabilities (read from the installed unit), in a
//! network namespace against tds-sim, while a client connects through the overlay IP every
//! 10 ms:
//! - with the packaged conffile's `[shutdown] addresses = "keep"`, the old agent leaves the
//!   address serving, the new one adopts it: no failed connect, and the log says "adopted";
//! - the same restart after a SIGHUP to `addresses = "release"` makes clients fail: the
//!   client does see a gap when there is one.
//!
//! Not covered: systemd itself running the maintainer scripts' try-restart.

mod common;

use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::netns::{Lab, Sim, in_ns, within};

const PREFIX: &str = "tvu";
const NET: u8 = 47;
const BIN: &str = "/usr/bin/tdsvip";
const UNIT: &str = "/usr/lib/systemd/system/tdsvip.service";
const HTTP: &str = "127.0.0.1:19487";

/// Connects to `target` from the client namespace every 10 ms (100 ms deadline) until
/// dropped; counts attempts and failures.
struct Client {
    attempts: Arc<AtomicU32>,
    failures: Arc<AtomicU32>,
    running: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(ns: &str, target: SocketAddr) -> Client {
        let (attempts, failures) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let running = Arc::new(AtomicBool::new(true));
        let (a, f, r, ns) = (
            attempts.clone(),
            failures.clone(),
            running.clone(),
            ns.to_owned(),
        );
        let thread = std::thread::spawn(move || {
            in_ns(&ns, move || {
                while r.load(Ordering::Relaxed) {
                    a.fetch_add(1, Ordering::Relaxed);
                    if TcpStream::connect_timeout(&target, Duration::from_millis(100)).is_err() {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        });
        Client {
            attempts,
            failures,
            running,
            thread: Some(thread),
        }
    }

    /// Stops the client: (attempts, failures).
    fn stop(mut self) -> (u32, u32) {
        self.running.store(false, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (
            self.attempts.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// The unit's `AmbientCapabilities=` as setpriv wants them: `-all,+net_admin,...`.
fn unit_caps() -> String {
    let unit = std::fs::read_to_string(UNIT).unwrap_or_else(|e| panic!("{UNIT}: {e}"));
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("no AmbientCapabilities= in the installed unit");
    let mut s = String::from("-all");
    for cap in line.split_whitespace() {
        s.push_str(",+");
        s.push_str(&cap.trim_start_matches("CAP_").to_lowercase());
    }
    s
}

/// `args` of the installed binary as the unit runs it: user and group tdsvip, only the
/// unit's capabilities.
fn as_unit(args: &[&str]) -> Vec<OsString> {
    let caps = unit_caps();
    let mut argv: Vec<OsString> = [
        "setpriv",
        "--reuid=tdsvip",
        "--regid=tdsvip",
        "--clear-groups",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        &format!("--bounding-set={caps}"),
        BIN,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    argv.extend(args.iter().map(OsString::from));
    argv
}

/// What the unit's start does: ExecStartPre's check-config (must pass), then `run`.
fn start_as_unit(lab: &mut Lab, config: &Path) -> u32 {
    let config = config.to_str().unwrap();
    let check = Command::new("ip")
        .args(["netns", "exec", &lab.node])
        .args(as_unit(&["check-config", "--config", config]))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "ExecStartPre's check-config failed: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    lab.spawn_in_node(&as_unit(&["run", "--config", config]), &[])
}

/// The lab's config with the packaged conffile's `[shutdown]`, files readable by the
/// `tdsvip` user as the package and the unit arrange them.
fn write_config(lab: &Lab, sim: &Sim, addresses: &str) -> std::path::PathBuf {
    let text = lab.agent_config(
        sim,
        &format!("listen = \"{HTTP}\""),
        &format!("[shutdown]\naddresses = \"{addresses}\"\n[reconcile]\ninterval_ms = 200"),
    );
    let config = lab.write_config(&text);
    let (uid, gid) = tdsvip_ids();
    std::fs::set_permissions(&lab.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (p, mode) in [(lab.dir.join("pw"), 0o600), (lab.pin_dir(), 0o700)] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    config
}

fn tdsvip_ids() -> (u32, u32) {
    let out = Command::new("getent")
        .args(["passwd", "tdsvip"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let fields: Vec<&str> = line.trim().split(':').collect();
    assert!(
        fields.len() > 3,
        "no tdsvip user (postinst makes it): {line:?}"
    );
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

fn owns(lab: &Lab) -> bool {
    let addr: SocketAddr = HTTP.parse().unwrap();
    lab.listening_within(addr, Duration::from_millis(200))
        && lab.http("GET", addr, "/primary", None).0 == 200
}

/// systemd's try-restart: SIGTERM, wait for the exit (TimeoutStopSec=10s), start again.
fn restart_as_systemd(lab: &mut Lab, config: &Path) {
    let exit = lab.stop_agent(Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| s.success()),
        "the old agent did not exit cleanly on SIGTERM ({exit:?}):\n{}",
        lab.agent_log()
    );
    start_as_unit(lab, config);
}

#[test]
#[ignore = "needs the installed package: run by deploy/package-test.sh"]
fn upgrade_restart_keeps_the_owner_serving() {
    let deb = std::env::var("TDSVIP_PACKAGE_DEB")
        .expect("TDSVIP_PACKAGE_DEB must name the .deb to upgrade to (deploy/package-test.sh)");
    assert!(
        Path::new(BIN).is_file(),
        "{BIN} missing: install the package first"
    );
    let mut lab = Lab::new(PREFIX, NET);
    let sim = lab.start_sim();
    let keep = write_config(&lab, &sim, "keep");
    let old_pid = start_as_unit(&mut lab, &keep);
    assert!(
        within(Duration::from_secs(10), || owns(&lab)),
        "the packaged agent never owned the address:\n{}",
        lab.agent_log()
    );
    let overlay: SocketAddr = format!("{}:{}", lab.overlay(), sim.tds.port())
        .parse()
        .unwrap();

    // The upgrade: dpkg replaces the binary under the running agent and leaves it running.
    let client = Client::start(&lab.client, overlay);
    std::thread::sleep(Duration::from_millis(300));
    let inode_before = std::fs::metadata(BIN).unwrap().ino();
    let dpkg = Command::new("dpkg").args(["-i", &deb]).output().unwrap();
    assert!(
        dpkg.status.success(),
        "dpkg -i {deb}: {}",
        String::from_utf8_lossy(&dpkg.stderr)
    );
    assert_ne!(
        std::fs::metadata(BIN).unwrap().ino(),
        inode_before,
        "{BIN} not replaced"
    );
    assert_eq!(lab.agent_pid(), Some(old_pid));
    assert!(
        Path::new(&format!("/proc/{old_pid}")).exists(),
        "the upgrade stopped the agent"
    );
    let restart = std::time::Instant::now();
    restart_as_systemd(&mut lab, &keep);
    assert!(
        within(Duration::from_secs(10), || owns(&lab)),
        "the upgraded agent never owned the address:\n{}",
        lab.agent_log()
    );
    eprintln!(
        "keep: SIGTERM to the new agent owning (GET /primary 200): {} ms",
        restart.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_millis(300));
    let (attempts, failures) = client.stop();
    let log = lab.agent_log();
    eprintln!("keep: {failures} of {attempts} connects failed across dpkg -i and the restart");
    assert!(attempts > 30, "{attempts} attempts");
    assert_eq!(
        failures, 0,
        "clients failed across the upgrade's restart:\n{log}"
    );
    assert!(
        log.contains("adopted"),
        "the new agent did not adopt:\n{log}"
    );

    // Control: with "release" (SIGHUP applies [shutdown] at once) the same restart is a gap.
    let release = write_config(&lab, &sim, "release");
    let pid = lab.agent_pid().unwrap();
    // SAFETY: signalling the agent this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    assert!(
        within(Duration::from_secs(3), || lab
            .agent_log()
            .contains("configuration reloaded")),
        "no reload logged:\n{}",
        lab.agent_log()
    );
    let client = Client::start(&lab.client, overlay);
    std::thread::sleep(Duration::from_millis(300));
    restart_as_systemd(&mut lab, &release);
    assert!(
        within(Duration::from_secs(10), || owns(&lab)),
        "{}",
        lab.agent_log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let (attempts, failures) = client.stop();
    eprintln!("release (control): {failures} of {attempts} connects failed across the restart");
    assert!(
        failures > 0,
        "releasing on SIGTERM showed no gap: the client cannot see one"
    );
    let exit = lab.stop_agent(Duration::from_secs(10));
    assert!(exit.is_some_and(|s| s.success()), "{}", lab.agent_log());
}
