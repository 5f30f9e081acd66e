//! The binary's contract: bad arguments exit 2 naming the argument (before any namespace is
//! made), and Ctrl-C in the middle of a drill tears the lab down (namespaces, agents,
//! simulators) and exits 130. Run as root.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tdsvip-lab");

#[test]
fn bad_arguments_exit_2_and_name_the_argument() {
    for (args, name) in [
        (&["--scenario", "meltdown"][..], "--scenario"),
        (&["--trials", "0"][..], "--trials"),
        (&["--impl", "pacemaker"][..], "--impl"),
        (&["bench", "--trials", "0"][..], "--trials"),
        (&["--route-tables", "0", "--cloud"][..], "--route-tables"),
    ] {
        let out = Command::new(BIN)
            .args(args)
            .output()
            .expect("run tdsvip-lab");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

fn lab_namespaces(pid: u32) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("tvl{pid}x")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn sigint_tears_the_lab_down() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "run as root (network namespaces)"
    );
    let mut child = Command::new(BIN)
        .args(["--scenario", "switchover", "--trials", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tdsvip-lab");
    let pid = child.id();
    // Wait until the lab is up: its namespaces exist and processes run in a node namespace.
    let end = Instant::now() + Duration::from_secs(30);
    let node = format!("tvl{pid}x0-n1");
    loop {
        let ns = lab_namespaces(pid);
        let pids = Command::new("ip").args(["netns", "pids", &node]).output();
        let busy = pids.map(|o| !o.stdout.is_empty()).unwrap_or(false);
        if ns.len() == 5 && busy {
            break;
        }
        assert!(Instant::now() < end, "lab never came up: {ns:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let end = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < end, "tdsvip-lab did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("SIGINT"), "{err}");
    assert!(
        lab_namespaces(pid).is_empty(),
        "namespaces left: {:?}",
        lab_namespaces(pid)
    );
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("tvl{pid}x0")));
}
