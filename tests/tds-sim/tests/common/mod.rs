//! Shared helpers for the integration tests: the real `tds-sim` binary behind a guard that
//! kills it on drop, a minimal HTTP client for the control API, a tiberius connector and a
//! raw TDS client built from `tds-codec`'s encoders. Every helper is bounded in time.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tds_codec::packet::{self, PacketType};
use tds_codec::{Encryption, Login7, Prelogin, Version, tds_version};

pub const USER: &str = "tdsvip";
pub const PASSWORD: &str = "s3cret!";

/// The health query exactly as the tdsvip probe builds it.
pub fn health_query(ag: &str, dbs: &[&str]) -> String {
    let mut sql = format!(
        "SELECT @@SERVERNAME AS server_name, ars.role_desc AS role_desc, ars.synchronization_health_desc AS synchronization_health_desc\n\
         FROM sys.dm_hadr_availability_replica_states AS ars\n\
         JOIN sys.availability_groups AS ag ON ag.group_id = ars.group_id\n\
         WHERE ars.is_local = 1 AND ag.name = N'{}';",
        ag.replace('\'', "''")
    );
    if !dbs.is_empty() {
        let list: Vec<String> = dbs
            .iter()
            .map(|d| format!("N'{}'", d.replace('\'', "''")))
            .collect();
        sql.push_str(&format!(
            "\nSELECT name, state_desc FROM sys.databases WHERE name IN ({});",
            list.join(", ")
        ));
    }
    sql
}

/// A running `tds-sim` process; killed (and reaped) on drop, even when a test panics.
pub struct SimProcess {
    pub child: Child,
    pub tds: SocketAddr,
    pub control: SocketAddr,
}

/// A loopback port that was free a moment ago (for endpoints partners must know first).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

impl SimProcess {
    /// Starts the binary on loopback port 0 with `extra` arguments and reads its address line.
    pub fn start(role: &str, extra: &[&str]) -> SimProcess {
        SimProcess::start_named("SQL1", role, extra)
    }

    /// As [`SimProcess::start`], with its own server (replica) name.
    pub fn start_named(name: &str, role: &str, extra: &[&str]) -> SimProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tds-sim"));
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--server-name",
            name,
            "--ag",
            "AG1",
            "--role",
            role,
            "--user",
            USER,
            "--password",
            PASSWORD,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("TDS_SIM_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().expect("spawn tds-sim");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("tds-sim printed no address line within 20 s");
            }
        };
        let (tds, control) = parse_line(&line).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("unexpected address line {line:?}")
        });
        SimProcess {
            child,
            tds,
            control,
        }
    }

    pub fn port(&self) -> u16 {
        self.tds.port()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn parse_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("tds-sim listening tds=")?;
    let (tds, control) = rest.split_once(" control=")?;
    Some((tds.parse().ok()?, control.parse().ok()?))
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to control API");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read HTTP response");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn put_state(addr: SocketAddr, json: &str) -> serde_json::Value {
    let (status, body) = http(addr, "PUT", "/state", Some(json));
    assert_eq!(status, 200, "PUT /state {json} -> {status} {body}");
    serde_json::from_str(&body).expect("state JSON")
}

pub fn get_state(addr: SocketAddr) -> serde_json::Value {
    let (status, body) = http(addr, "GET", "/state", None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("state JSON")
}

pub type Tiberius = tiberius::Client<tokio_util::compat::Compat<tokio::net::TcpStream>>;

/// Connects and logs in with tiberius (plain text), bounded by `timeout`.
pub async fn tiberius(
    addr: SocketAddr,
    password: &str,
    timeout: Duration,
) -> Result<Tiberius, String> {
    tiberius_as(addr, USER, password, timeout).await
}

/// As [`tiberius`], logging in as `user`.
pub async fn tiberius_as(
    addr: SocketAddr,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<Tiberius, String> {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let mut cfg = tiberius::Config::new();
    cfg.host(addr.ip());
    cfg.port(addr.port());
    cfg.authentication(tiberius::AuthMethod::sql_server(user, password));
    cfg.encryption(tiberius::EncryptionLevel::NotSupported);
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).ok();
        tiberius::Client::connect(cfg, tcp.compat_write())
            .await
            .map_err(|e| format!("login: {e}"))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

/// Runs a batch with tiberius and returns every result set as strings (ints formatted).
pub async fn query(
    c: &mut Tiberius,
    sql: &str,
    timeout: Duration,
) -> Result<Vec<Vec<Vec<String>>>, String> {
    let fut = async {
        let sets = c
            .simple_query(sql)
            .await
            .map_err(|e| e.to_string())?
            .into_results()
            .await
            .map_err(|e| e.to_string())?;
        Ok(sets
            .iter()
            .map(|rows| rows.iter().map(row_strings).collect())
            .collect())
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

pub fn row_strings(r: &tiberius::Row) -> Vec<String> {
    (0..r.len())
        .map(|i| {
            if let Ok(Some(s)) = r.try_get::<&str, _>(i) {
                s.to_string()
            } else if let Ok(Some(n)) = r.try_get::<i64, _>(i) {
                n.to_string()
            } else if let Ok(Some(n)) = r.try_get::<i32, _>(i) {
                n.to_string()
            } else if let Ok(Some(n)) = r.try_get::<i16, _>(i) {
                n.to_string()
            } else if let Ok(Some(n)) = r.try_get::<u8, _>(i) {
                n.to_string()
            } else {
                "NULL".into()
            }
        })
        .collect()
}

/// A raw TDS client for the fault tests: PRELOGIN and LOGIN7 from `tds-codec`'s encoders.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Raw> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(Raw { stream })
    }

    pub fn send(&mut self, ty: PacketType, payload: &[u8]) -> std::io::Result<()> {
        self.stream
            .write_all(&packet::encode_message(ty, payload, 4096, 0))
    }

    pub fn prelogin(&mut self) -> std::io::Result<()> {
        let p = Prelogin {
            version: Some(Version {
                major: 1,
                minor: 0,
                build: 0,
                sub_build: 0,
            }),
            encryption: Some(Encryption::NotSupported),
            ..Default::default()
        };
        self.send(PacketType::PreLogin, &p.encode())
    }

    pub fn login(&mut self, version: u32, password: &str) -> std::io::Result<()> {
        let l = Login7 {
            tds_version: version,
            packet_size: 4096,
            username: USER.into(),
            password: password.into(),
            app_name: "raw-test".into(),
            ..Default::default()
        };
        self.send(PacketType::Login7, &l.encode())
    }

    /// Reads one whole message (blocking, bounded by the socket's read timeout).
    pub fn read_message(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let mut payload = Vec::new();
        loop {
            let mut h = [0u8; 8];
            self.stream.read_exact(&mut h)?;
            let len = u16::from_be_bytes([h[2], h[3]]) as usize;
            let mut body = vec![0u8; len.saturating_sub(8)];
            self.stream.read_exact(&mut body)?;
            payload.extend_from_slice(&body);
            if h[1] & 1 == 1 {
                return Ok((h[0], payload));
            }
        }
    }

    /// PRELOGIN and LOGIN7 (TDS 7.4) with the right password, checking both answers.
    pub fn logged_in(addr: SocketAddr) -> Raw {
        let mut r = Raw::connect(addr).expect("connect");
        r.prelogin().unwrap();
        r.read_message().expect("PRELOGIN answer");
        r.login(tds_version::V7_4, PASSWORD).unwrap();
        let (_, toks) = r.read_message().expect("login answer");
        assert!(toks.contains(&0xAD), "no LOGINACK in {toks:02x?}");
        r
    }
}

/// Runs FreeTDS `tsql` as `user` with `input` on stdin; returns (exit code, stdout +
/// stderr). Killed after 20 s; panics (the test fails, never skips) when `tsql` is missing.
pub fn tsql_as(version: &str, port: u16, user: &str, password: &str, input: &str) -> (i32, String) {
    let mut cmd = Command::new("tsql");
    cmd.args([
        "-H",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        user,
        "-P",
        password,
    ])
    .env("TDSVER", version);
    let what = format!("tsql TDSVER={version} (freetds-bin)");
    let (code, stdout, stderr) = run_child(cmd, &what, Some(input), Duration::from_secs(20));
    (code.unwrap_or(-1), stdout + &stderr)
}

/// Runs `cmd`, killed after 60 s; returns (success, stdout, stderr).
pub fn run(cmd: Command, what: &str) -> (bool, String, String) {
    let (code, stdout, stderr) = run_child(cmd, what, None, Duration::from_secs(60));
    (code == Some(0), stdout, stderr)
}

/// The one child-with-a-deadline runner: `stdin` written and closed, both outputs read
/// to the end on a thread, the child killed and the test failed after `limit`, and a
/// missing program a failure too (these tests never skip). Returns (exit code, stdout,
/// stderr); no code when a signal ended it.
fn run_child(
    mut cmd: Command,
    what: &str,
    stdin: Option<&str>,
    limit: Duration,
) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}); deploy/setup.sh installs it"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        let _ = tx.send((s, e));
    });
    let Ok((stdout, stderr)) = rx.recv_timeout(limit) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not finish within {limit:?}");
    };
    let code = child.wait().ok().and_then(|s| s.code());
    (code, stdout, stderr)
}

/// Runs `python3 SCRIPT ARGS…` (a path relative to the package root, where `cargo test` runs
/// tests) through [`run`], panicking on a failure with its output; returns its stdout and
/// stderr.
#[allow(dead_code)]
pub fn python(script: &str, args: &[&str]) -> (String, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(args);
    let (ok, stdout, stderr) = run(cmd, "python3 with python-tds");
    assert!(ok, "{script} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}
