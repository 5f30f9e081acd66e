//! Opening a protected TDS session and the stream tiberius runs LOGIN7 and queries on.
//!
//! We send the PRELOGIN ourselves (its ENCRYPTION byte says what `encrypt` asks for), read
//! the server's answer, decide by the PRELOGIN table of MS-TDS 2.2.6.5 what to do (refuse,
//! plain text, TLS for LOGIN7 only, TLS for everything) and do the TLS handshake. tiberius,
//! built without TLS, is then given a [`SessionStream`]: it sends its own PRELOGIN, which
//! the stream keeps from the server (the server already has ours), and reads the server's
//! real answer with the ENCRYPTION option set to what tiberius must hear for it not to start
//! TLS a second time (NOT_SUP). Everything after that (LOGIN7, queries) goes to the server
//! through TLS, or, with login-only encryption, LOGIN7 through TLS and the rest in clear.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tds_codec::io::{ReadError, read_message};
use tds_codec::packet::{DEFAULT_PACKET_LEN, encode_message};
use tds_codec::{Encryption, PacketType, Prelogin};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{HandshakeFraming, TlsClient, TlsSession, describe_tls_error};
use crate::config::Encrypt;
use crate::outcome::{Outcome, Phase};
use crate::prelogin::{ANSWER_LIMITS, request_with};

/// What the PRELOGIN exchange leaves to be protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protection {
    Cleartext,
    LoginOnly,
    Full,
}

/// The ENCRYPTION byte we send for each setting. Under strict the PRELOGIN travels inside
/// TLS and the server ignores the byte (tds-sim answers REQ whatever it is); we send
/// NOT_SUP as Microsoft's tedious does, which says "no TLS to negotiate in TDS".
pub(crate) fn client_encryption(encrypt: Encrypt) -> Encryption {
    match encrypt {
        Encrypt::Strict | Encrypt::Off => Encryption::NotSupported,
        Encrypt::Mandatory => Encryption::On,
        Encrypt::Optional => Encryption::Off,
    }
}

/// The client side of MS-TDS 2.2.6.5's table: what the server's answer means for us.
pub(crate) fn decide(
    encrypt: Encrypt,
    answer: Encryption,
    allow_cleartext_login: bool,
) -> Result<Protection, String> {
    use Encryption as E;
    match (encrypt, answer) {
        (Encrypt::Strict, _) => Ok(Protection::Full),
        (_, E::Other(b)) => Err(format!("the server answered ENCRYPTION 0x{b:02x}, which TDS does not define")),
        (Encrypt::Mandatory, E::On | E::Required | E::Off) => Ok(Protection::Full),
        (Encrypt::Optional, E::On | E::Required) => Ok(Protection::Full),
        (Encrypt::Optional, E::Off) => Ok(Protection::LoginOnly),
        (Encrypt::Mandatory, E::NotSupported) => Err(
            "the server cannot encrypt (ENCRYPT_NOT_SUP: no certificate), and sql.encrypt = \"mandatory\" refuses a session in clear".to_owned(),
        ),
        (Encrypt::Optional, E::NotSupported) if !allow_cleartext_login => Err(
            "the server cannot encrypt (ENCRYPT_NOT_SUP), so the password would cross in clear: refused unless sql.allow_cleartext_login = true".to_owned(),
        ),
        (Encrypt::Optional, E::NotSupported) => Ok(Protection::Cleartext),
        (Encrypt::Off, E::Required) => Err(
            "the server requires encryption (ENCRYPT_REQ): set sql.encrypt = \"mandatory\"".to_owned(),
        ),
        (Encrypt::Off, _) => Ok(Protection::Cleartext),
    }
}

/// A session ready for tiberius, with what the operator is told about it.
pub(crate) struct Opened {
    pub(crate) stream: SessionStream,
    pub(crate) tls: Option<TlsSession>,
    /// The server's PRELOGIN ENCRYPTION answer (`ServerInfo::encryption`).
    pub(crate) server_encryption: Encryption,
}

fn login_failed(message: String) -> Outcome {
    Outcome::LoginFailed {
        code: None,
        message,
    }
}

fn tls_failed(e: &io::Error) -> Outcome {
    login_failed(format!("TLS: {}", describe_tls_error(e)))
}

/// PRELOGIN on `io`, its answer decoded.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    encryption: Encryption,
) -> Result<Prelogin, Outcome> {
    let protocol = |detail: String| Outcome::ProtocolError {
        phase: Phase::Prelogin,
        detail,
    };
    io.write_all(&request_with(encryption))
        .await
        .map_err(|e| Outcome::from_io(&e, Phase::Prelogin))?;
    io.flush()
        .await
        .map_err(|e| Outcome::from_io(&e, Phase::Prelogin))?;
    let msg = match read_message(io, ANSWER_LIMITS).await {
        Ok(m) => m,
        Err(ReadError::Closed) => {
            return Err(protocol(
                "connection closed by the server without a PRELOGIN answer".to_owned(),
            ));
        }
        Err(ReadError::Io(e)) => return Err(Outcome::from_io(&e, Phase::Prelogin)),
        Err(ReadError::Codec(e)) => return Err(protocol(e.to_string())),
    };
    if msg.ty != PacketType::TabularResult {
        return Err(protocol(format!(
            "PRELOGIN answer has packet type {}, expected TABULAR_RESULT",
            msg.ty.name()
        )));
    }
    let answer = Prelogin::decode(&msg.payload).map_err(|e| protocol(e.to_string()))?;
    if answer.version.is_none() || answer.encryption.is_none() {
        return Err(protocol(
            "PRELOGIN answer without VERSION or ENCRYPTION".to_owned(),
        ));
    }
    Ok(answer)
}

/// PRELOGIN (inside TLS under strict), the decision, and the TDS 7.x handshake.
pub(crate) async fn open(tcp: TcpStream, client: &TlsClient) -> Result<Opened, Outcome> {
    let encryption = client_encryption(client.encrypt);
    if client.encrypt == Encrypt::Strict {
        let mut tls = client
            .connector()
            .connect(
                client.server_name.clone(),
                HandshakeFraming::pass_through(tcp),
            )
            .await
            .map_err(|e| tls_failed(&e))?;
        let answer = exchange(&mut tls, encryption).await?;
        let session = client.describe(tls.get_ref().1, "full");
        return Ok(Opened {
            stream: SessionStream::new(Channel::Tls(Box::new(tls)), &answer, false),
            tls: Some(session),
            server_encryption: answer.encryption.unwrap_or(Encryption::NotSupported),
        });
    }
    let mut tcp = tcp;
    let answer = exchange(&mut tcp, encryption).await?;
    let server_encryption = answer.encryption.unwrap_or(Encryption::NotSupported);
    let protection = decide(
        client.encrypt,
        server_encryption,
        client.allow_cleartext_login,
    )
    .map_err(login_failed)?;
    if protection == Protection::Cleartext {
        return Ok(Opened {
            stream: SessionStream::new(Channel::Plain(tcp), &answer, false),
            tls: None,
            server_encryption,
        });
    }
    let mut tls = client
        .connector()
        .connect(client.server_name.clone(), HandshakeFraming::framed(tcp))
        .await
        .map_err(|e| tls_failed(&e))?;
    tls.get_mut().0.end_handshake();
    let login_only = protection == Protection::LoginOnly;
    let scope = if login_only { "login_only" } else { "full" };
    let session = client.describe(tls.get_ref().1, scope);
    Ok(Opened {
        stream: SessionStream::new(Channel::Tls(Box::new(tls)), &answer, login_only),
        tls: Some(session),
        server_encryption,
    })
}

type Tls = TlsStream<HandshakeFraming<TcpStream>>;

pub(crate) enum Channel {
    Plain(TcpStream),
    Tls(Box<Tls>),
}

/// Where a TDS message written by tiberius ends: packet headers are parsed as the bytes
/// pass, whatever the chunking of the writes.
#[derive(Debug, Default, Clone)]
struct MessageEnd {
    header: [u8; 8],
    header_have: usize,
    payload_left: usize,
    last_packet: bool,
    done: bool,
}

impl MessageEnd {
    /// How many bytes of `buf` belong to the message (all of them until its end).
    fn feed(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut used = 0;
        while used < buf.len() && !self.done {
            if self.header_have < 8 {
                let take = (8 - self.header_have).min(buf.len() - used);
                self.header[self.header_have..self.header_have + take]
                    .copy_from_slice(&buf[used..used + take]);
                self.header_have += take;
                used += take;
                if self.header_have == 8 {
                    let len = usize::from(u16::from_be_bytes([self.header[2], self.header[3]]));
                    if len < 8 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "TDS packet shorter than its header",
                        ));
                    }
                    self.payload_left = len - 8;
                    self.last_packet = self.header[1] & 0x01 != 0;
                }
            } else {
                let take = self.payload_left.min(buf.len() - used);
                used += take;
                self.payload_left -= take;
            }
            if self.header_have == 8 && self.payload_left == 0 {
                self.header_have = 0;
                self.done = self.last_packet;
            }
        }
        Ok(used)
    }
}

/// The stream tiberius runs on (see the module comment).
pub(crate) struct SessionStream {
    channel: Channel,
    /// The server's PRELOGIN answer as tiberius must read it, and how much it has read.
    answer: Vec<u8>,
    answer_read: usize,
    /// tiberius's own PRELOGIN, kept from the server.
    own_prelogin: MessageEnd,
    /// Login-only encryption: LOGIN7 still to go through TLS.
    login7: Option<MessageEnd>,
    /// LOGIN7 is through: flush TLS, then talk in clear.
    clear_after_flush: bool,
    clear: bool,
}

impl SessionStream {
    fn new(channel: Channel, server_answer: &Prelogin, login_only: bool) -> Self {
        let for_tiberius = Prelogin {
            encryption: Some(Encryption::NotSupported),
            ..server_answer.clone()
        };
        SessionStream {
            channel,
            answer: encode_message(
                PacketType::TabularResult,
                &for_tiberius.encode(),
                DEFAULT_PACKET_LEN,
                0,
            ),
            answer_read: 0,
            own_prelogin: MessageEnd::default(),
            login7: login_only.then(MessageEnd::default),
            clear_after_flush: false,
            clear: false,
        }
    }

    fn write_channel(&mut self) -> Pin<&mut (dyn AsyncWriteRead + Unpin)> {
        let clear = self.clear;
        match &mut self.channel {
            Channel::Plain(tcp) => Pin::new(tcp),
            Channel::Tls(tls) => {
                if clear {
                    Pin::new(tls.get_mut().0)
                } else {
                    Pin::new(&mut **tls)
                }
            }
        }
    }
}

/// Both halves, so one accessor serves reads and writes.
trait AsyncWriteRead: AsyncRead + AsyncWrite {}
impl<T: AsyncRead + AsyncWrite> AsyncWriteRead for T {}

impl AsyncRead for SessionStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.answer_read < this.answer.len() {
            let n = buf.remaining().min(this.answer.len() - this.answer_read);
            buf.put_slice(&this.answer[this.answer_read..this.answer_read + n]);
            this.answer_read += n;
            return Poll::Ready(Ok(()));
        }
        this.write_channel().poll_read(cx, buf)
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.own_prelogin.done {
            return Poll::Ready(this.own_prelogin.feed(buf));
        }
        if this.clear_after_flush && !this.clear {
            ready!(this.write_channel().poll_flush(cx))?;
            this.clear = true;
        }
        let Some(pending) = this.login7.as_ref().filter(|m| !m.done).cloned() else {
            return this.write_channel().poll_write(cx, buf);
        };
        // Only LOGIN7's own bytes go through TLS.
        let upto = pending.clone().feed(buf)?;
        let n = ready!(this.write_channel().poll_write(cx, &buf[..upto]))?;
        if let Some(login7) = this.login7.as_mut() {
            login7.feed(&buf[..n])?;
            this.clear_after_flush = login7.done;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.write_channel().poll_flush(cx))?;
        if this.clear_after_flush {
            this.clear = true;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().write_channel().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_side_of_the_prelogin_table() {
        use Encryption as E;
        use Protection as P;
        let ok = |e, a, allow| decide(e, a, allow).unwrap();
        let refused = |e, a, allow| decide(e, a, allow).unwrap_err();
        for a in [E::Off, E::On, E::Required, E::NotSupported] {
            assert_eq!(ok(Encrypt::Strict, a, false), P::Full);
        }
        assert_eq!(ok(Encrypt::Mandatory, E::On, false), P::Full);
        assert_eq!(ok(Encrypt::Mandatory, E::Required, false), P::Full);
        assert!(refused(Encrypt::Mandatory, E::NotSupported, true).contains("mandatory"));
        assert_eq!(ok(Encrypt::Optional, E::Off, false), P::LoginOnly);
        assert_eq!(ok(Encrypt::Optional, E::Required, false), P::Full);
        assert!(
            refused(Encrypt::Optional, E::NotSupported, false).contains("allow_cleartext_login")
        );
        assert_eq!(ok(Encrypt::Optional, E::NotSupported, true), P::Cleartext);
        assert_eq!(ok(Encrypt::Off, E::NotSupported, true), P::Cleartext);
        assert!(refused(Encrypt::Off, E::Required, true).contains("ENCRYPT_REQ"));
        assert!(refused(Encrypt::Mandatory, E::Other(9), true).contains("0x09"));
        assert_eq!(client_encryption(Encrypt::Mandatory), E::On);
        assert_eq!(client_encryption(Encrypt::Optional), E::Off);
        assert_eq!(client_encryption(Encrypt::Off), E::NotSupported);
    }

    #[test]
    fn message_end_follows_packets_across_any_chunking() {
        // Two packets: 8+3 (not last), 8+2 (last), then bytes of the next message.
        let mut bytes = vec![0x10, 0x00, 0, 11, 0, 0, 1, 0, 1, 2, 3];
        bytes.extend([0x10, 0x01, 0, 10, 0, 0, 2, 0, 4, 5]);
        bytes.extend([0x01, 0x01, 0, 9]);
        for chunk in 1..bytes.len() {
            let mut m = MessageEnd::default();
            let mut used = 0;
            for part in bytes.chunks(chunk) {
                used += m.feed(part).unwrap();
                if m.done {
                    break;
                }
            }
            assert!(m.done, "chunk {chunk}");
            assert_eq!(used, 21, "chunk {chunk}");
        }
        let mut m = MessageEnd::default();
        assert!(m.feed(&[0x10, 0x01, 0, 7, 0, 0, 1, 0]).is_err());
    }
}
