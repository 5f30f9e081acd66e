//! The peer to beat: keepalived in each node namespace instead of tdsvip, configured the way
//! a user would build it and as tightly as keepalived goes.
//!
//! VRRPv3 on `eth0` with 0.01 s adverts (the floor), every node BACKUP at the same base
//! priority, and a `vrrp_script` run every second (keepalived's minimum) that adds weight
//! while the local replica answers a real login + role query as PRIMARY: the script is
//! `tdsvip probe --mode login --count 1`, which exits 0 only on `ok` (PRIMARY, database
//! ONLINE). So keepalived learns roles exactly as a user's script would, and the lab's
//! client measures it the same way as tdsvip.
//!
//! Each instance has its own pid files (`-p/-r/-c`) in the work dir and logs to the node's
//! agent log; it runs in the foreground (`-n`) so the lab can kill it like the agent.

use crate::config::{self, KeepalivedTiming};
use crate::lab::Lab;
use crate::netns::node_ip;

fn check_script(lab: &Lab, i: usize) -> Result<std::path::PathBuf, String> {
    let pw = lab.dir.join("sql-password");
    std::fs::write(&pw, format!("{}\n", lab.password())).map_err(|e| e.to_string())?;
    let path = lab.dir.join(format!("check-primary{}.sh", i + 1));
    let t: KeepalivedTiming = lab.settings.keepalived;
    let script = format!(
        "#!/bin/sh\n# vrrp_script of node {node}: exit 0 only when the local replica answers a login +\n# role query as PRIMARY with its database ONLINE (tdsvip probe's exit status).\nexec {bin} probe 127.0.0.1:{port} --mode login --user {user} --password-file {pw} --ag {ag} --database {db} --count 1 --timeout-ms {timeout} --ca-file {ca} >/dev/null 2>&1\n",
        node = i + 1,
        bin = lab.tdsvip_bin().display(),
        port = config::TDS_PORT,
        user = config::USER,
        pw = pw.display(),
        ag = config::AG,
        db = config::DATABASE,
        timeout = t.check_timeout_ms,
        ca = lab.ca_file().display(),
    );
    std::fs::write(&path, script).map_err(|e| format!("{}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(path)
}

/// Starts keepalived on node `i`.
pub fn start(lab: &mut Lab, i: usize) -> Result<(), String> {
    let bin = ["/usr/sbin/keepalived", "/sbin/keepalived"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("keepalived not installed: run `deploy/setup.sh lab` (apt keepalived)")?;
    let script = check_script(lab, i)?;
    let peers: Vec<_> = (0..lab.nodes.len())
        .filter(|&j| j != i)
        .map(node_ip)
        .collect();
    let conf = config::keepalived_conf(i, lab.settings.keepalived, &script, &peers);
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
/// VIP stays on the interface, as after a real crash of keepalived.
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
