//! Checks of a config against the machine it is about to run on, made by `run` and
//! `check-config` alike (through `load_for_start`): what the file alone cannot tell.
//!
//! Each one guards the handover, the check that keeps two nodes from holding the address:
//! - peers read each other's `/status` before acquiring, so an agent with peers that listens on
//!   loopback is unreachable for them, and every peer treats it as gone;
//! - a peer URL that is this node's own would make the agent ask itself whether the address
//!   is still held elsewhere;
//! - the bearer token protects `/status` and `/events`; a token file any local user can read
//!   lets any of them forge a peer.
//!
//! The local-address test binds a UDP socket to the peer's IP (port 0): the kernel allows that
//! only for an address of this host, which needs neither a crate nor `unsafe`.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tdsvip::config::{AgentConfig, ConfigProblem};
use tdsvip::status_client::parse_url;

/// Every problem of the config on this machine, in key order.
pub fn problems(config: &AgentConfig) -> Vec<ConfigProblem> {
    let mut v = listen_problems(config);
    if let Some(path) = &config.http.token_file
        && let Some(problem) = token_file_problem(path)
    {
        v.push(problem);
    }
    v
}

fn listen_problems(config: &AgentConfig) -> Vec<ConfigProblem> {
    let listen = config.http.listen;
    let mut v = Vec::new();
    if !config.peers.is_empty() && listen.ip().is_loopback() {
        v.push(ConfigProblem::new(
            "http.listen",
            format!(
                "{listen} is a loopback address while [[peer]] are configured: the peers could \
                 not read this node's /status and would count it as gone before acquiring; \
                 listen on the address the peers use (or 0.0.0.0)"
            ),
        ));
    }
    for (i, peer) in config.peers.iter().enumerate() {
        let Ok(target) = parse_url(&peer.status_url) else {
            continue; // Named by the file's own validation.
        };
        let Ok(ip) = target.host.parse::<IpAddr>() else {
            continue; // A host name: resolved only when polled.
        };
        if is_own(SocketAddr::new(ip, target.port), listen) {
            v.push(ConfigProblem::new(
                format!("peer[{i}].status_url"),
                format!(
                    "{:?} is this node's own /status (http.listen is {listen}): list the \
                     other nodes only",
                    peer.status_url
                ),
            ));
        }
    }
    v
}

/// Whether `peer` is served by this node's own listener on `listen`.
fn is_own(peer: SocketAddr, listen: SocketAddr) -> bool {
    if peer.port() != listen.port() {
        return false;
    }
    if listen.ip().is_unspecified() {
        return peer.ip().is_loopback() || is_local(peer.ip());
    }
    peer.ip() == listen.ip()
}

fn is_local(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn token_file_problem(path: &Path) -> Option<ConfigProblem> {
    // An unreadable file is reported where the token is read, with the OS error.
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0).then(|| {
        ConfigProblem::new(
            "http.token_file",
            format!(
                "{} is readable by every user (mode {:04o}): anyone on this host could read \
                 /status and /events or pose as a peer; chmod 0600 (or 0640 for a group)",
                path.display(),
                mode & 0o7777
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn sock(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    #[test]
    fn a_peer_at_this_nodes_listen_address_is_its_own() {
        assert!(is_own(
            sock([10, 0, 1, 11], 9477),
            sock([10, 0, 1, 11], 9477)
        ));
        assert!(!is_own(
            sock([10, 0, 1, 12], 9477),
            sock([10, 0, 1, 11], 9477)
        ));
        assert!(!is_own(
            sock([10, 0, 1, 11], 9478),
            sock([10, 0, 1, 11], 9477)
        ));
        // Listening on every address: loopback and any local address are this node.
        assert!(is_own(sock([127, 0, 0, 1], 9477), sock([0, 0, 0, 0], 9477)));
        assert!(is_own(sock([127, 0, 0, 2], 9477), sock([0, 0, 0, 0], 9477)));
        // TEST-NET-1 is never configured on a test machine.
        assert!(!is_own(
            sock([192, 0, 2, 7], 9477),
            sock([0, 0, 0, 0], 9477)
        ));
    }

    const EXAMPLES: [(&str, &str); 2] = [
        ("tdsvip.toml", include_str!("../../../deploy/tdsvip.toml")),
        (
            "tdsvip-aws.toml",
            include_str!("../../../deploy/tdsvip-aws.toml"),
        ),
    ];

    #[test]
    fn the_example_configs_pass_the_deployment_checks() {
        for (name, text) in EXAMPLES {
            let config = AgentConfig::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let found = listen_problems(&config);
            assert!(found.is_empty(), "{name}: {found:?}");
        }
    }

    #[test]
    fn loopback_with_peers_and_a_peer_that_is_this_node_are_named() {
        let (_, text) = EXAMPLES[0];
        let on_loopback =
            text.replace("listen = \"10.0.1.11:9477\"", "listen = \"127.0.0.1:9477\"");
        let config = AgentConfig::parse(&on_loopback).unwrap();
        let found = listen_problems(&config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, "http.listen");
        assert!(found[0].reason.contains("loopback"), "{}", found[0].reason);

        let own = text.replace("http://10.0.1.13:9477", "http://10.0.1.11:9477");
        let config = AgentConfig::parse(&own).unwrap();
        let found = listen_problems(&config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, "peer[1].status_url");
        assert!(found[0].reason.contains("own"), "{}", found[0].reason);
    }

    #[test]
    fn loopback_is_local_and_a_documentation_address_is_not() {
        assert!(is_local(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!is_local(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))));
    }

    #[test]
    fn a_world_readable_token_file_is_named_with_its_mode() {
        let dir = std::env::temp_dir().join(format!("tdsvip-token-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "t\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let problem = token_file_problem(&file).expect("0644 is world-readable");
        assert_eq!(problem.key, "http.token_file");
        assert!(problem.reason.contains("0644"), "{}", problem.reason);
        for mode in [0o600, 0o640, 0o400] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(token_file_problem(&file).is_none(), "{mode:o}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
