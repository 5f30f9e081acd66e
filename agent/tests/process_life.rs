//! The agent's life as a service, with `tdsvip run` as a real process in a network namespace
//! against tds-sim: the sd_notify protocol (READY after the first probe round, WATCHDOG from
//! the control loop, STOPPING on SIGTERM) on a datagram socket this test binds, SIGHUP
//! reloads (applied, and refused with the running config kept), and a SIGKILLed agent whose
//! restart adopts the address while clients keep connecting through it.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::netns::{Lab, in_ns, within};

const PREFIX: &str = "tvl";
const NET: u8 = 41;

/// Every datagram the agent sends to `NOTIFY_SOCKET`, with when it arrived.
struct Notifications {
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
}

impl Notifications {
    fn bind(path: &std::path::Path) -> Notifications {
        let socket = UnixDatagram::bind(path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    s.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        Notifications { seen, stop }
    }

    fn count(&self, message: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|(_, m)| m == message).count()
    }

    fn first(&self, message: &str) -> Option<Instant> {
        let seen = self.seen.lock().unwrap();
        seen.iter().find(|(_, m)| m == message).map(|(t, _)| *t)
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn hup(pid: u32) {
    // SAFETY: signalling the agent this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
}

#[test]
fn notify_watchdog_reload_and_adopting_restart() {
    let mut lab = Lab::new(PREFIX, NET);
    let sim = lab.start_sim();
    let http_addr = SocketAddr::from(([127, 0, 0, 1], 19478));
    let notify_path = lab.dir.join("notify");
    let notes = Notifications::bind(&notify_path);
    let notify = notify_path.to_str().unwrap().to_owned();
    let env = [
        ("NOTIFY_SOCKET", notify.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let good = lab.agent_config(
        &sim,
        r#"listen = "127.0.0.1:19478""#,
        "[reconcile]\ninterval_ms = 200",
    );
    let started = Instant::now();
    let pid = lab.start_agent(&good, &env);

    // READY once the replica was probed: by then /status has the probe.
    assert!(
        within(Duration::from_secs(10), || notes.count("READY=1") == 1),
        "no READY=1:\n{}",
        lab.agent_log()
    );
    let ready = notes.first("READY=1").unwrap();
    let (code, body) = lab.http("GET", http_addr, "/status", None);
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["ags"]["AG1"]["last_local_probe"]["outcome"], "ok",
        "{status:#}"
    );
    assert!(ready > started);
    // WATCHDOG every 200 ms (half of WATCHDOG_USEC).
    std::thread::sleep(Duration::from_millis(1100));
    let pings = notes.count("WATCHDOG=1");
    assert!((3..=8).contains(&pings), "{pings} watchdog pings in ~1.1 s");
    assert!(
        within(Duration::from_secs(3), || lab.has_overlay()),
        "never acquired:\n{}",
        lab.agent_log()
    );

    // SIGHUP with a new probe rate (applied) and a new interface (needs a restart).
    lab.write_config(
        &good
            .replace("interval_ms = 20\n", "interval_ms = 50\n")
            .replace("\"eth0\"", "\"eth9\""),
    );
    hup(pid);
    let reloads = |result: &str| {
        let (_, m) = lab.http("GET", http_addr, "/metrics", None);
        metric(
            &m,
            &format!("tdsvip_config_reloads_total{{result=\"{result}\"}}"),
        )
    };
    assert!(
        within(Duration::from_secs(3), || reloads("applied") == Some(1.0)),
        "reload not applied:\n{}",
        lab.agent_log()
    );
    let log = lab.agent_log();
    assert!(
        log.contains("takes effect at the next restart") && log.contains("interface"),
        "{log}"
    );
    assert!(lab.has_overlay(), "a reload must not move the address");

    // A broken file is refused, naming the key, and the agent keeps running as it was.
    // Into [reconcile] itself: the bed's config ends with its own [ebpf] table.
    lab.write_config(&good.replace("[reconcile]\n", "[reconcile]\nbogus = 1\n"));
    hup(pid);
    assert!(
        within(Duration::from_secs(3), || reloads("refused") == Some(1.0)),
        "reload not refused:\n{}",
        lab.agent_log()
    );
    assert!(
        lab.agent_log().contains("reconcile.bogus: unknown key"),
        "{}",
        lab.agent_log()
    );
    let (code, _) = lab.http("GET", http_addr, "/primary", None);
    assert_eq!(code, 200);

    // SIGKILL, then restart: the address must keep serving clients throughout.
    let overlay: SocketAddr = format!("10.232.{NET}.100:{}", sim.tds.port())
        .parse()
        .unwrap();
    let failures = Arc::new(AtomicU32::new(0));
    let attempts = Arc::new(AtomicU32::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let client = {
        let (f, a, r, ns) = (
            failures.clone(),
            attempts.clone(),
            running.clone(),
            lab.client.clone(),
        );
        std::thread::spawn(move || {
            in_ns(&ns, move || {
                while r.load(Ordering::Relaxed) {
                    a.fetch_add(1, Ordering::Relaxed);
                    if TcpStream::connect_timeout(&overlay, Duration::from_millis(100)).is_err() {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut child = lab.agent.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(lab.has_overlay(), "a killed agent leaves the address");
    std::thread::sleep(Duration::from_millis(200));
    lab.start_agent(&good, &[]);
    assert!(
        lab.listening_within(http_addr, Duration::from_secs(10)),
        "restarted agent's HTTP never came up:\n{}",
        lab.agent_log()
    );
    assert!(
        within(Duration::from_secs(10), || {
            let (code, _) = lab.http("GET", http_addr, "/primary", None);
            code == 200
        }),
        "restarted agent never owned:\n{}",
        lab.agent_log()
    );
    std::thread::sleep(Duration::from_millis(200));
    running.store(false, Ordering::Relaxed);
    client.join().unwrap();
    let log = lab.agent_log();
    assert!(attempts.load(Ordering::Relaxed) > 20);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "clients failed to connect across the restart:\n{log}"
    );
    assert!(log.contains("adopted"), "{log}");

    // SIGTERM: STOPPING (from the restarted agent, which has no NOTIFY_SOCKET: restart it
    // with one first) and the address released.
    let status = lab.stop_agent(Duration::from_secs(2));
    assert!(status.is_some_and(|s| s.success()), "{}", lab.agent_log());
    assert!(!lab.has_overlay());
    lab.start_agent(&good, &env);
    assert!(within(Duration::from_secs(10), || notes.count("READY=1") == 2));
    let status = lab.stop_agent(Duration::from_secs(2));
    assert!(status.is_some_and(|s| s.success()), "{}", lab.agent_log());
    assert!(
        within(Duration::from_secs(1), || notes.count("STOPPING=1") == 1),
        "no STOPPING=1"
    );
}
