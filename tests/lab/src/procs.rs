//! Finding the binaries the lab runs and starting them inside a namespace.
//!
//! `tdsvip` and `tds-sim` are taken from the cargo target directory the lab itself was built
//! into (`target/{debug,release}/`, also from a test executable under `deps/`), or from
//! `TDSVIP_BIN` / `TDS_SIM_BIN`. Children get `PR_SET_PDEATHSIG(SIGKILL)` so that a lab that
//! dies without cleaning up does not leave agents running; the next lab removes the
//! namespaces.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The directory holding the lab's sibling binaries.
pub fn bin_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?.to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent()?.to_path_buf();
    }
    Some(dir)
}

fn profile_hint(dir: &Path) -> &'static str {
    if dir.ends_with("release") {
        " --release"
    } else {
        ""
    }
}

/// Path of `name` (`tdsvip` or `tds-sim`), or an error that says how to build it.
pub fn find(name: &str, env_var: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{env_var}={} is not a file", p.display()))
        };
    }
    let dir = bin_dir().ok_or("cannot locate the lab's own executable")?;
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: run `cargo build{} -p {}` (same CARGO_TARGET_DIR) or set {env_var}",
            p.display(),
            profile_hint(&dir),
            if name == "tds-sim" {
                "tds-sim"
            } else {
                "tdsvip"
            }
        ))
    }
}

/// The first `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|f| f.is_file())
}

/// Starts `program args` in `ns` (via `ip netns exec`, which execs, so the child's pid is
/// the program's), stdout to `stdout` (or null), stderr to `log`.
pub fn spawn_in(
    ns: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
    stdout: Option<&Path>,
) -> Result<Child, String> {
    let err = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let out = match stdout {
        Some(p) => Stdio::from(File::create(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => Stdio::null(),
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("start {} in {ns}: {e}", program.display()))
}

/// SIGKILL and reap.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM, then SIGKILL after `grace`.
pub fn terminate(child: &mut Child, grace: std::time::Duration) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let end = std::time::Instant::now() + grace;
    while std::time::Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    kill(child);
}
