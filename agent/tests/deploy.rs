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

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", complaints(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces on a veth pair, deleted on Drop (also when an assertion fails).
struct Netns {
    node: String,
    client: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.node, &self.client] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
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
/// the eBPF guard, acquires the overlay address from a PRIMARY tds-sim, runs with exactly
/// those four effective capabilities, and releases on SIGTERM within 2 s.
#[test]
fn agent_works_unprivileged_with_the_units_ambient_capabilities() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "creates network namespaces: run as root"
    );
    let name = format!("tvd{}", std::process::id());
    let lab = Netns {
        node: format!("{name}-a"),
        client: format!("{name}-c"),
    };
    let _ = Command::new("ip")
        .args(["netns", "delete", &lab.node])
        .status();
    let _ = Command::new("ip")
        .args(["netns", "delete", &lab.client])
        .status();
    sh(&["ip", "netns", "add", &lab.node]);
    sh(&["ip", "netns", "add", &lab.client]);
    sh(&[
        "ip",
        "-n",
        &lab.node,
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &lab.client,
    ]);
    for (ns, ip) in [
        (&lab.node, "10.232.11.2/24"),
        (&lab.client, "10.232.11.1/24"),
    ] {
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"]);
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
    }

    // tds-sim on a thread inside the node namespace, playing the PRIMARY.
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = lab.node.clone();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
        // SAFETY: setns with a valid namespace fd affects only this thread.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut cfg = tds_sim::SimConfig::new("NODEA", "AG1", tds_sim::Role::Primary);
            cfg.listen = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
            cfg.databases = vec![("sales".into(), tds_sim::DbState::Online)];
            let sim = tds_sim::start(cfg).await.expect("tds-sim");
            tx.send(sim.tds_addr().port()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let port = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("tds-sim start");

    // Everything the unprivileged agent reads must be reachable by uid 65534 (not /root).
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("unprivileged");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("tdsvip");
    std::fs::copy(env!("CARGO_BIN_EXE_tdsvip"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (f, text) in [
        ("pw", "secret\n"),
        ("token", "unprivileged-test-token-0123456789ab\n"),
    ] {
        let p = dir.join(f);
        std::fs::write(&p, text).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = dir.join("tdsvip.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"nodea\"\ninterface = \"eth0\"\n[sql]\nendpoint = \"127.0.0.1:{port}\"\n\
             user = \"tdsvip\"\npassword_file = \"{d}/pw\"\n[probe]\ninterval_ms = 20\n\
             timeout_ms = 200\nrise = 2\nfall = 3\n[[ag]]\nname = \"AG1\"\n\
             addresses = [\"10.232.11.100\"]\nport = {port}\ndatabases = [\"sales\"]\n\
             [http]\nlisten = \"127.0.0.1:19479\"\ntoken_file = \"{d}/token\"\n\
             [ebpf]\nenabled = true\n[reconcile]\ninterval_ms = 200\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let caps = unit_ambient_caps();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.node,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set={caps}"))
        .arg(&bin)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the agent under setpriv");
    let agent_log = || std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    let has_overlay = || {
        sh(&["ip", "-n", &lab.node, "-4", "addr", "show", "dev", "eth0"])
            .contains("10.232.11.100/32")
    };
    let within = |secs: u64, f: &dyn Fn() -> bool| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    };
    let acquired = within(5, &has_overlay);
    // setpriv and `ip netns exec` exec, so the child's pid is the agent's.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    let (uid, cap_eff) = (field("Uid:"), field("CapEff:"));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let released = within(2, &|| !has_overlay());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut exited = false;
    while std::time::Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            exited = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if !exited {
        let _ = child.kill();
    }
    let exit = child.wait().unwrap();
    assert!(
        acquired,
        "not acquired as an unprivileged user:\n{}",
        agent_log()
    );
    assert_eq!(uid, "65534", "{status}");
    // CAP_NET_ADMIN (12), CAP_NET_RAW (13), CAP_PERFMON (38), CAP_BPF (39), nothing else.
    assert_eq!(cap_eff, "000000c000003000", "{status}");
    assert!(agent_log().contains("stopped"), "{}", agent_log());
    assert!(
        released && exited && exit.success(),
        "released {released}, exited {exited} {exit:?}:\n{}",
        agent_log()
    );
    let _ = std::fs::remove_dir_all(dir);
}
