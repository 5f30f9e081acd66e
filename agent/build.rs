//! Records the git commit the agent is built from, for `tdsvip --version` (issue 15): a DBA
//! reading it on a node, or in a bug report, can tell which build runs. Outside a git
//! checkout (a source tarball) or without `git`, the commit is "unknown"; that never fails
//! the build.
//!
//! Why a build script and not a variable set by `deploy/package.sh`: every build then says
//! where it came from, `cargo build` and the package alike. Its cost: the script re-runs only
//! when HEAD moves (the files watched below), and then the `tdsvip` crate is recompiled (its
//! dependencies are not); a tree with uncommitted changes reports HEAD's commit, because
//! watching the working tree would rebuild the agent on every edit anywhere in the checkout.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `git -C dir ARGS` trimmed, or `None` when git is missing, fails or prints nothing.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The files whose change means HEAD may point elsewhere: HEAD itself, the branch it names
/// (or, while that branch is packed, the directory a new loose ref would appear in) and
/// `packed-refs`. Only existing paths: cargo re-runs a script on every build while a
/// watched path is missing.
fn watched(dir: &Path) -> Vec<PathBuf> {
    let path_of = |name: &str| git(dir, &["rev-parse", "--git-path", name]).map(|p| dir.join(p));
    let mut paths: Vec<PathBuf> = ["HEAD", "packed-refs"]
        .iter()
        .filter_map(|name| path_of(name))
        .collect();
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"])
        && let Some(file) = path_of(&branch)
    {
        let parent = file.parent().map(Path::to_path_buf);
        paths.push(if file.exists() {
            file
        } else {
            parent.unwrap_or(file)
        });
    }
    paths.retain(|p| p.exists());
    paths
}

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = git(&dir, &["rev-parse", "--short=12", "HEAD"]);
    let paths = if commit.is_some() {
        watched(&dir)
    } else {
        Vec::new()
    };
    if paths.is_empty() {
        // Nothing to watch: re-run only when this script changes.
        println!("cargo::rerun-if-changed=build.rs");
    }
    for p in paths {
        println!("cargo::rerun-if-changed={}", p.display());
    }
    println!(
        "cargo::rustc-env=TDSVIP_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
