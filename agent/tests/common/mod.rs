//! Helpers shared by the tests that run the `tdsvip` binary.
#![allow(dead_code)] // each test binary uses its own part

pub mod etcd;
pub mod netns;
pub mod pki;

use std::process::Output;

use serde_json::Value;

/// Parses the binary's stdout as JSON, or fails with what it printed instead.
pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The body of one `GET path` (with the bearer token, when given) read with plain std I/O;
/// the answer must be 200.
#[allow(dead_code)]
pub fn raw_get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}
