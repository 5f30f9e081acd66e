//! `deploy/tdsvip.service` checked with systemd's own tools, offline: this container has no
//! running systemd, so nothing here starts the unit. What is checked:
//! - `systemd-analyze verify` (which parses every directive and checks that ExecStart's
//!   binary exists) prints nothing for the unit, with `/usr/local/bin/tdsvip` replaced by the
//!   binary cargo just built; a typo'd key in a copy is caught, so the check can fail;
//! - `systemd-analyze security --offline=true` rates its exposure at most 4.0 (of 10);
//! - the example config with `password_file` and `token_file` pointed at the credentials that
//!   the unit's `LoadCredential=` lines provide passes `tdsvip check-config`.
//!
//! - the agent, run with setpriv as uid 65534 with only the unit's `AmbientCapabilities=`
//!   (also as bounding set), loads eBPF, acquires from a PRIMARY tds-sim in a network
//!   namespace, has exactly those four effective capabilities, and releases on SIGTERM.
//!
//! Not checked: the rest of the sandbox (ProtectSystem=, RestrictAddressFamilies=, …) with
//! the agent running under it: that needs a booted systemd, which this container lacks.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::netns::{Lab, within};

const UNIT: &str = include_str!("../../deploy/tdsvip.service");
const INSTALLED_BINARY: &str = "/usr/local/bin/tdsvip";
const CREDENTIAL_PATH: &str = "/run/credentials/tdsvip.service/sql-password";
const TOKEN_CREDENTIAL_PATH: &str = "/run/credentials/tdsvip.service/http-token";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tdsvip-deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The unit as it would be installed, but running the binary this build produced.
fn unit_here(dir: &Path, text: &str) -> PathBuf {
    assert!(
        text.contains(INSTALLED_BINARY),
        "unit does not run {INSTALLED_BINARY}"
    );
    let p = dir.join("tdsvip.service");
    std::fs::write(
        &p,
        text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_tdsvip")),
    )
    .unwrap();
    p
}

fn systemd_analyze(args: &[&str], unit: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze (Debian package systemd) not runnable: {e}"))
}

fn complaints(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn unit_verifies_without_a_single_warning() {
    let dir = scratch("verify");
    let out = systemd_analyze(&["verify"], &unit_here(&dir, UNIT));
    let said = complaints(&out);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "{:?}: {said}",
        out.status
    );

    // verify exits 0 on unknown keys and bad values, only warning: the check above relies
    // on the output being empty, and this copy proves such a warning would be seen.
    let bad = UNIT.replace("NoNewPrivileges=yes", "NoNewPrivilegs=yes");
    assert_ne!(bad, UNIT);
    let out = systemd_analyze(&["verify"], &unit_here(&scratch("verify-bad"), &bad));
    assert!(
        complaints(&out).contains("Unknown key 'NoNewPrivilegs'"),
        "{}",
        complaints(&out)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unit_exposure_is_low() {
    let dir = scratch("security");
    let unit = unit_here(&dir, UNIT);
    // --threshold is the exposure × 10; exit status 1 above it.
    let out = systemd_analyze(&["security", "--offline=true", "--threshold=40"], &unit);
    assert!(out.status.success(), "{}", complaints(&out));
    // The same unit without its sandbox is above the threshold: the check can fail.
    let bare: String = UNIT
        .lines()
        .filter(|l| {
            !l.starts_with("Protect")
                && !l.starts_with("Private")
                && !l.starts_with("Restrict")
                && !l.starts_with("CapabilityBoundingSet")
                && !l.starts_with("AmbientCapabilities")
                && !l.starts_with("NoNewPrivileges")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let out = systemd_analyze(
        &["security", "--offline=true", "--threshold=40"],
        &unit_here(&scratch("security-bare"), &bare),
    );
    assert!(!out.status.success(), "{}", complaints(&out));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unit_sandbox_directives_are_present() {
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=5s",
        "Restart=always",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "User=tdsvip",
        "LoadCredential=sql-password:/etc/tdsvip/sql-password",
        "LoadCredential=http-token:/etc/tdsvip/http-token",
        "ExecStart=/usr/local/bin/tdsvip run --config /etc/tdsvip/tdsvip.toml",
    ] {
        assert!(
            UNIT.lines().any(|l| l == line),
            "deploy/tdsvip.service lacks {line:?}"
        );
    }
    assert!(UNIT.contains(CREDENTIAL_PATH));
    assert!(UNIT.contains(TOKEN_CREDENTIAL_PATH));
}

#[test]
fn config_reading_the_credential_passes_check_config() {
    let example = include_str!("../../deploy/tdsvip.toml");
    let old = "password_file = \"/etc/tdsvip/sql-password\"";
    let old_token = "token_file = \"/etc/tdsvip/http-token\"";
    assert!(example.contains(old) && example.contains(old_token));
    let dir = scratch("config");
    let cfg = dir.join("tdsvip.toml");
    std::fs::write(
        &cfg,
        example
            .replace(old, &format!("password_file = \"{CREDENTIAL_PATH}\""))
            .replace(
                old_token,
                &format!("token_file = \"{TOKEN_CREDENTIAL_PATH}\""),
            ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tdsvip"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    // check-config reads the password as `run` does: outside systemd the credential is not
    // there, and that must be the one and only complaint, naming the unit's path.
    let complaints = complaints(&out);
    assert_eq!(out.status.code(), Some(2), "{complaints}");
    let lines: Vec<&str> = complaints.lines().collect();
    assert_eq!(lines.len(), 1, "{complaints}");
    assert!(
        lines[0].starts_with("sql.password_file:") && lines[0].contains(CREDENTIAL_PATH),
        "{complaints}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The unit's `AmbientCapabilities=` as setpriv wants them: `-all,+net_admin,...`.
fn unit_ambient_caps() -> String {
    let line = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("no AmbientCapabilities= in the unit");
    let mut s = String::from("-all");
    for cap in line.split_whitespace() {
        s.push_str(",+");
        s.push_str(&cap.trim_start_matches("CAP_").to_lowercase());
    }
    s
}

/// `User=tdsvip` with only the unit's ambient capabilities is enough: as uid 65534 (setpriv
/// with the unit's capability list as ambient, inheritable and bounding set) the agent loads
/// the eBPF guard, pins it in a directory it owns (as the unit's `ExecStartPre` makes it),
/// acquires the overlay address from a PRIMARY tds-sim, runs with exactly those four
/// effective capabilities, and releases on SIGTERM within 2 s.
#[test]
fn agent_works_unprivileged_with_the_units_ambient_capabilities() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    let mut lab = Lab::new("tvd", 11);
    // tds-sim inside the node namespace, playing the PRIMARY.
    let sim = lab.start_sim();

    // Everything the unprivileged agent reads must be reachable by uid 65534 (not /root).
    let dir = lab.dir.clone();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("tdsvip");
    std::fs::copy(env!("CARGO_BIN_EXE_tdsvip"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "unprivileged-test-token-0123456789ab\n").unwrap();
    // Writes the password file `pw` too.
    let config = lab.write_config(&lab.agent_config(
        &sim,
        &format!(
            "listen = \"127.0.0.1:19479\"\ntoken_file = \"{}\"",
            token.display()
        ),
        "[ebpf]\nenabled = true\n[reconcile]\ninterval_ms = 200",
    ));
    for p in [dir.join("pw"), token] {
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The pin directory as the unit's `ExecStartPre=+install -d -o tdsvip -m 0700` leaves it.
    std::os::unix::fs::chown(lab.pin_dir(), Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(lab.pin_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let caps = unit_ambient_caps();
    let argv: Vec<OsString> = vec![
        "setpriv".into(),
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        format!("--inh-caps={caps}").into(),
        format!("--ambient-caps={caps}").into(),
        format!("--bounding-set={caps}").into(),
        bin.into(),
        "run".into(),
        "--config".into(),
        config.into(),
    ];
    // setpriv and `ip netns exec` exec, so the child's pid is the agent's.
    let pid = lab.spawn_in_node(&argv, &[]);
    let acquired = within(Duration::from_secs(5), || lab.has_overlay());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    let (uid, cap_eff) = (field("Uid:"), field("CapEff:"));
    // SIGTERM: the agent releases and exits within 2 s.
    let exit = lab.stop_agent(Duration::from_secs(2));
    let exited = exit.is_some();
    let released = !lab.has_overlay();
    assert!(
        acquired,
        "not acquired as an unprivileged user:\n{}",
        lab.agent_log()
    );
    assert_eq!(uid, "65534", "{status}");
    // CAP_NET_ADMIN (12), CAP_NET_RAW (13), CAP_PERFMON (38), CAP_BPF (39), nothing else.
    assert_eq!(cap_eff, "000000c000003000", "{status}");
    assert!(lab.agent_log().contains("stopped"), "{}", lab.agent_log());
    assert!(
        released && exited && exit.is_some_and(|e| e.success()),
        "released {released}, exited {exited} {exit:?}:\n{}",
        lab.agent_log()
    );
}
