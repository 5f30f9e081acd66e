//! The PRELOGIN probe: proves that a TDS endpoint (not just a TCP listener) answers, without
//! logging in and without credentials.
//!
//! It sends one hand-encoded PRELOGIN (tds-codec) and reads the answer with tight limits:
//! a real answer is well under 100 bytes, so 4096 bytes for a packet and for the message
//! bound what a hostile or broken peer can make us read and allocate. The answer must be a
//! TABULAR_RESULT carrying a PRELOGIN with VERSION and ENCRYPTION. The connection is then
//! dropped with an RST (SO_LINGER 0, see `tcp`); SQL Server treats that as a client that
//! went away before login, which it does not log as a failed login.

use std::net::SocketAddr;

use tds_codec::io::{Limits, ReadError, read_message};
use tds_codec::packet::{DEFAULT_PACKET_LEN, encode_message};
use tds_codec::{Encryption, PacketType, Prelogin, Version};
use tokio::io::AsyncWriteExt;

use crate::Mode;
use crate::config::{ConfigProblem, ProbeConfig};
use crate::outcome::{Outcome, Phase, PhaseTimes, ProbeResult, ServerInfo, Start};

/// Bounds for reading the server's PRELOGIN answer.
pub const ANSWER_LIMITS: Limits = Limits {
    max_packet: 4096,
    max_message: 4096,
};

/// Our version in PRELOGIN: the crate's, as servers log the client version.
pub const CLIENT_VERSION: Version = Version {
    major: parse_u8(env!("CARGO_PKG_VERSION_MAJOR")),
    minor: parse_u8(env!("CARGO_PKG_VERSION_MINOR")),
    build: parse_u8(env!("CARGO_PKG_VERSION_PATCH")) as u16,
    sub_build: 0,
};

const fn parse_u8(s: &str) -> u8 {
    match u8::from_str_radix(s, 10) {
        Ok(v) => v,
        Err(_) => 0,
    }
}

/// The PRELOGIN request the probe sends: VERSION, ENCRYPTION, THREADID with length 0 (a
/// non-zero thread id trips a debug assertion in tiberius-based servers) and MARS off.
pub fn request(announce_encryption: bool) -> Vec<u8> {
    request_with(if announce_encryption {
        Encryption::On
    } else {
        Encryption::NotSupported
    })
}

/// The same request with any ENCRYPTION value (the login probe's, see `tls::session`).
pub fn request_with(encryption: Encryption) -> Vec<u8> {
    let p = Prelogin {
        version: Some(CLIENT_VERSION),
        encryption: Some(encryption),
        thread_id: Some(None),
        mars: Some(false),
        ..Default::default()
    };
    encode_message(PacketType::PreLogin, &p.encode(), DEFAULT_PACKET_LEN, 0)
}

/// Checks a server's PRELOGIN answer and extracts what the probe reports.
fn interpret(msg: &tds_codec::io::Message) -> Result<ServerInfo, Outcome> {
    let protocol = |detail: String| Outcome::ProtocolError {
        phase: Phase::Prelogin,
        detail,
    };
    if msg.ty != PacketType::TabularResult {
        return Err(protocol(format!(
            "answer has packet type {}, expected TABULAR_RESULT",
            msg.ty.name()
        )));
    }
    let p = Prelogin::decode(&msg.payload).map_err(|e| protocol(e.to_string()))?;
    let version = p
        .version
        .ok_or_else(|| protocol("PRELOGIN answer without VERSION".to_owned()))?;
    let encryption = p
        .encryption
        .ok_or_else(|| protocol("PRELOGIN answer without ENCRYPTION".to_owned()))?;
    Ok(ServerInfo {
        version: Some(version.to_string()),
        encryption: Some(encryption_name(encryption)),
        ..Default::default()
    })
}

pub(crate) fn encryption_name(e: Encryption) -> String {
    match e {
        Encryption::Other(b) => format!("other(0x{b:02x})"),
        e => e.name().to_owned(),
    }
}

/// Sends PRELOGIN, checks the answer, closes with RST.
#[derive(Debug, Clone)]
pub struct PreloginProbe {
    target: SocketAddr,
    config: ProbeConfig,
    request: Vec<u8>,
}

impl PreloginProbe {
    pub fn new(target: SocketAddr, config: ProbeConfig) -> Result<Self, ConfigProblem> {
        config.validate()?;
        let request = request(config.announce_encryption);
        Ok(PreloginProbe {
            target,
            config,
            request,
        })
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub async fn probe(&self) -> ProbeResult {
        let start = Start::now();
        let deadline = start.mono + self.config.timeout;
        let mut phases = PhaseTimes::default();
        let (outcome, server) = match self.exchange(deadline, start, &mut phases).await {
            Ok(info) => (Outcome::Ok, info),
            Err(o) => (o, ServerInfo::default()),
        };
        start.finish(self.target, Mode::Prelogin, outcome, phases, server)
    }

    async fn exchange(
        &self,
        deadline: tokio::time::Instant,
        start: Start,
        phases: &mut PhaseTimes,
    ) -> Result<ServerInfo, Outcome> {
        let connect_result = crate::tcp::connect(self.target, deadline).await;
        phases.connect = Some(start.mono.elapsed());
        let mut stream = connect_result?;
        let sent = tokio::time::Instant::now();
        let answer = tokio::time::timeout_at(deadline, async {
            stream
                .write_all(&self.request)
                .await
                .map_err(ReadError::Io)?;
            read_message(&mut stream, ANSWER_LIMITS).await
        })
        .await;
        phases.prelogin = Some(sent.elapsed());
        let msg = match answer {
            Err(_) => {
                return Err(Outcome::Timeout {
                    phase: Phase::Prelogin,
                });
            }
            Ok(Err(ReadError::Closed)) => {
                return Err(Outcome::ProtocolError {
                    phase: Phase::Prelogin,
                    detail: "connection closed by the server without an answer".to_owned(),
                });
            }
            Ok(Err(ReadError::Io(e))) => return Err(Outcome::from_io(&e, Phase::Prelogin)),
            Ok(Err(ReadError::Codec(e))) => {
                return Err(Outcome::ProtocolError {
                    phase: Phase::Prelogin,
                    detail: e.to_string(),
                });
            }
            Ok(Ok(msg)) => msg,
        };
        interpret(&msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tds_codec::io::Message;

    #[test]
    fn request_has_the_four_options_and_an_empty_thread_id() {
        let bytes = request(false);
        let h = tds_codec::PacketHeader::decode(&bytes[..8], 4096).unwrap();
        assert_eq!(h.ty, PacketType::PreLogin);
        assert!(h.is_eom());
        assert_eq!(h.length as usize, bytes.len());
        let p = Prelogin::decode(&bytes[8..]).unwrap();
        assert_eq!(p.version, Some(CLIENT_VERSION));
        assert_eq!(p.encryption, Some(Encryption::NotSupported));
        assert_eq!(p.thread_id, Some(None));
        assert_eq!(p.mars, Some(false));
        assert_eq!(p.instance, None);
        let p = Prelogin::decode(&request(true)[8..]).unwrap();
        assert_eq!(p.encryption, Some(Encryption::On));
    }

    fn answer(p: &Prelogin, ty: PacketType) -> Message {
        Message {
            ty,
            status: 1,
            payload: p.encode(),
        }
    }

    #[test]
    fn answers_are_checked() {
        let good = Prelogin {
            version: Some(Version {
                major: 16,
                minor: 0,
                build: 1000,
                sub_build: 6,
            }),
            encryption: Some(Encryption::NotSupported),
            ..Default::default()
        };
        let info = interpret(&answer(&good, PacketType::TabularResult)).unwrap();
        assert_eq!(info.version.as_deref(), Some("16.0.1000.6"));
        assert_eq!(info.encryption.as_deref(), Some("not_supported"));

        let e = interpret(&answer(&good, PacketType::PreLogin)).unwrap_err();
        assert_eq!(e.name(), "protocol_error");
        let no_version = Prelogin {
            version: None,
            ..good.clone()
        };
        let e = interpret(&answer(&no_version, PacketType::TabularResult)).unwrap_err();
        assert!(e.to_string().contains("VERSION"), "{e}");
        let no_enc = Prelogin {
            encryption: None,
            ..good.clone()
        };
        let e = interpret(&answer(&no_enc, PacketType::TabularResult)).unwrap_err();
        assert!(e.to_string().contains("ENCRYPTION"), "{e}");
        let odd = Prelogin {
            encryption: Some(Encryption::Other(0x21)),
            ..good
        };
        let info = interpret(&answer(&odd, PacketType::TabularResult)).unwrap();
        assert_eq!(info.encryption.as_deref(), Some("other(0x21)"));
    }
}
