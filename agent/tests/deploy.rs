//! `deploy/tdsvip.service` checked with systemd's own tools, offline: this container has no
//! running systemd, so nothing here starts the unit. What is checked:
//! - `systemd-analyze verify` (which parses every directive and checks that ExecStart's
//!   binary exists) prints nothing for the unit, with `/usr/local/bin/tdsvip` replaced by the
//!   binary cargo just built; a typo'd key in a copy is caught, so the check can fail;
//! - `systemd-analyze security --offline=true` rates its exposure at most 4.0 (of 10);
//! - the example config with `password_file` and `token_file` pointed at the credentials that
//!   the unit's `LoadCredential=` lines provide passes `tdsvip check-config`.
//!
//! Not checked: that the sandbox lets the agent really acquire (that needs a booted systemd);
//! running as an unprivileged user with only the unit's four ambient capabilities was checked
//! by hand with setpriv (see the unit's comment), not by a test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
        "Type=exec",
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
    assert!(out.status.success(), "{}", complaints(&out));
    let _ = std::fs::remove_dir_all(dir);
}
