//! `tdsvip generate-docs --out DIR` (hidden): writes the man pages (`tdsvip(8)` and one per
//! subcommand, `tdsvip-run(8)`, ...) and the bash, zsh and fish completions that the Debian
//! package installs, from the same clap definitions that parse the command line, so that
//! they cannot drift from it. `deploy/package.sh` runs it on the release binary it packages.
//!
//! Why a hidden subcommand of the binary rather than a `build.rs` or a second binary: the
//! definitions live in this binary crate (`main.rs` + `cli/`), which a build script cannot
//! import and a second binary would compile again; here the normal build pays for two small
//! crates (clap_mangen with roff, clap_complete) and nothing else. Section 8: `tdsvip run`
//! is a daemon and the other subcommands are root's tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

#[derive(Debug, Args)]
pub struct DocsArgs {
    /// Directory to write `man/*.8` and `completions/{tdsvip,_tdsvip,tdsvip.fish}` into
    /// (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The pages' date, YYYY-MM-DD (the package takes its commit's date).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    date: String,
}

fn parse_date(text: &str) -> Result<String, String> {
    let b = text.as_bytes();
    let shape = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if shape {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a date as YYYY-MM-DD"))
    }
}

/// The man pages' section and the manual they belong to.
const SECTION: &str = "8";
const MANUAL: &str = "System Administration";

/// Completion scripts, named as each shell's vendor directory wants them
/// (`/usr/share/bash-completion/completions/tdsvip`, `.../vendor-completions/_tdsvip`,
/// `.../vendor_completions.d/tdsvip.fish`).
const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "tdsvip"),
    (Shell::Zsh, "_tdsvip"),
    (Shell::Fish, "tdsvip.fish"),
];

pub fn run(args: DocsArgs, top: clap::Command) -> ExitCode {
    match write_all(&args.out, &args.date, top) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: --out {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}

fn write_all(out: &Path, date: &str, top: clap::Command) -> Result<Vec<PathBuf>, String> {
    // clap_complete offers hidden subcommands too: complete a copy without them.
    let mut completed = visible_only(&top);
    // Subcommands get their display names (`tdsvip-run`) and bin names when built; `help`
    // is left out of the pages as clap_mangen's own generate_to does.
    let mut top = top.disable_help_subcommand(true);
    top.build();
    let man_dir = out.join("man");
    let completion_dir = out.join("completions");
    for dir in [&man_dir, &completion_dir] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut files = vec![write_page(&man_dir, &top, date, &top_sections())?];
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        files.push(write_page(&man_dir, sub, date, &sub_sections())?);
    }
    for (shell, name) in COMPLETIONS {
        let path = completion_dir.join(name);
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut completed, "tdsvip", &mut text);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        files.push(path);
    }
    Ok(files)
}

/// `top` (not yet built) without its hidden subcommands. clap cannot remove a subcommand,
/// so this is a new `tdsvip` with the same about text, arguments and visible subcommands.
fn visible_only(top: &clap::Command) -> clap::Command {
    let mut c = clap::Command::new("tdsvip")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(top.is_subcommand_required_set())
        .args(top.get_arguments().cloned())
        .subcommands(top.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = top.get_about() {
        c = c.about(about.clone());
    }
    c
}

/// One page: clap_mangen's sections (name, synopsis, description, options, subcommands,
/// version) followed by `extra`.
fn write_page(
    dir: &Path,
    cmd: &clap::Command,
    date: &str,
    extra: &Roff,
) -> Result<PathBuf, String> {
    let man = Man::new(cmd.clone())
        .section(SECTION)
        .manual(MANUAL)
        .date(date)
        .source(concat!("tdsvip ", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut text = Vec::new();
    man.render(&mut text)
        .and_then(|()| extra.to_writer(&mut text))
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

const README: &str = "/usr/share/doc/tdsvip/README.md";

/// FILES and SEE ALSO of `tdsvip(8)`: where the package put what a DBA needs next.
fn top_sections() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/tdsvip/tdsvip.toml",
            "the configuration (root:tdsvip 0640); refused by check-config until an [[ag]] is filled in",
        ),
        (
            "/etc/tdsvip/sql-password, /etc/tdsvip/http-token",
            "the secrets (root 0600), handed to the service by systemd as credentials",
        ),
        (
            "/usr/lib/systemd/system/tdsvip.service",
            "the unit, neither enabled nor started by the package",
        ),
        (
            "/usr/share/tdsvip/",
            "the Grafana dashboard and the Prometheus alert rules",
        ),
        (
            "/sys/fs/bpf/tdsvip/",
            "the pinned eBPF guard, which outlives the agent",
        ),
    ] {
        r.control("TP", []);
        r.text([bold(path)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["SEE ALSO"]);
    r.text([
        roman("tdsvip-run(8), tdsvip-check-config(8), tdsvip-status(8), tdsvip-probe(8), tdsvip-routes(8), tdsvip-switchover(8), systemctl(1); "),
        italic(README),
        roman(" (installation step by step, metrics, troubleshooting)."),
    ]);
    r
}

fn sub_sections() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["SEE ALSO"]);
    r.text([roman("tdsvip(8); "), italic(README)]);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    #[command(name = "tdsvip", version)]
    struct Fake {
        #[command(subcommand)]
        command: super::super::Command,
    }

    #[test]
    fn dates_must_be_yyyy_mm_dd() {
        assert!(parse_date("2026-12-02").is_ok());
        for bad in ["2026-1-02", "20261202", "2026/12/02", "", "2026-12-02x"] {
            assert!(parse_date(bad).unwrap_err().contains("YYYY-MM-DD"), "{bad}");
        }
    }

    #[test]
    fn writes_one_page_per_visible_subcommand_and_three_completions() {
        let dir = std::env::temp_dir().join(format!("tdsvip-docs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = write_all(&dir, "2026-12-02", Fake::command()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for page in [
            "tdsvip.8",
            "tdsvip-run.8",
            "tdsvip-check-config.8",
            "tdsvip-probe.8",
            "tdsvip-switchover.8",
        ] {
            assert!(names.iter().any(|n| n == page), "{names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("generate") || n.contains("help")),
            "{names:?}"
        );
        assert_eq!(names.len(), 1 + 6 + 3, "{names:?}");
        let run = std::fs::read_to_string(dir.join("man/tdsvip-run.8")).unwrap();
        assert!(run.contains("\\-\\-config"), "{run}");
        assert!(run.contains(".TH tdsvip-run 8 2026-12-02"), "{run}");
        for name in ["tdsvip", "_tdsvip", "tdsvip.fish"] {
            let text = std::fs::read_to_string(dir.join("completions").join(name)).unwrap();
            assert!(text.contains("check-config"), "{name}: {text}");
            assert!(
                !text.contains("generate-docs"),
                "{name} offers the hidden command"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
