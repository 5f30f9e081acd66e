//! The binary's command line: the address line, exit status 2 naming a bad argument, clean
//! exit on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::SimProcess;

fn run_with(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tds-sim"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run tds-sim");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BASE: &[&str] = &[
    "--listen",
    "127.0.0.1:0",
    "--control",
    "127.0.0.1:0",
    "--server-name",
    "S",
    "--ag",
    "AG1",
    "--user",
    "u",
    "--password",
    "p",
];

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    let mut args = BASE.to_vec();
    args.extend(["--role", "BOSS"]);
    let (code, err) = run_with(&args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--role") && err.contains("BOSS"), "{err}");

    let mut args = BASE.to_vec();
    args.extend(["--role", "PRIMARY", "--database", "db1=SLEEPING"]);
    let (code, err) = run_with(&args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--database"), "{err}");

    let (code, err) = run_with(&["--listen", "nowhere", "--role", "PRIMARY"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--listen"), "{err}");

    let mut args = BASE.to_vec();
    args.retain(|a| *a != "--ag" && *a != "AG1");
    args.extend(["--role", "PRIMARY"]);
    let (code, err) = run_with(&args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--ag"), "{err}");

    let mut args = BASE.to_vec();
    args.extend(["--role", "PRIMARY", "--login", "watcher"]);
    let (code, err) = run_with(&args);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--login") && err.contains("NAME:PASSWORD"),
        "{err}"
    );
}

#[test]
fn a_login_named_twice_is_refused_at_start() {
    let mut args = BASE.to_vec();
    args.extend(["--role", "PRIMARY", "--login", "w:1", "--login", "U:2"]);
    let (code, err) = run_with(&args);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("logins: The server principal 'U' already exists."),
        "{err}"
    );
}

#[test]
fn prints_one_address_line_and_stops_on_sigterm() {
    let mut sim = SimProcess::start(
        "PRIMARY",
        &["--database", "db1", "--database", "db2=RESTORING"],
    );
    assert_ne!(sim.tds.port(), 0);
    assert_ne!(sim.control.port(), 0);
    let state = common::get_state(sim.control);
    assert_eq!(state["databases"]["db2"], "RESTORING");
    assert_eq!(state["role"], "PRIMARY");
    let pid = sim.child.id().to_string();
    let st = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = sim.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tds-sim did not exit within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
