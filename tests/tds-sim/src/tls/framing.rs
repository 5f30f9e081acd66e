//! The byte stream under TLS on a TDS 7.x connection: during the handshake, TLS records
//! travel as the payload of TDS PRELOGIN (0x12) packets in both directions; once the
//! handshake is done, TLS records go raw on the TCP stream ([MS-TDS] 2.2.6.5, 3.2.5.1).
//!
//! A TLS library knows nothing of TDS packets, so it is given this adapter as its
//! transport: while [`Framing::wrapping`] is set, reads return only the payloads of
//! PRELOGIN packets (any other packet type, or a malformed header, is an
//! `InvalidData` error that ends the handshake) and writes are collected and sent as one
//! PRELOGIN message when the TLS library flushes (a client reads the server's flight up to
//! EOM before it answers). Afterwards it passes bytes through. Bytes read ahead from the
//! socket are kept, so nothing is lost when the mode changes or when a login-only
//! encryption hands the stream back to clear-text TDS. The same type carries clear-text
//! sessions, so a session has one transport type whatever it negotiated.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tds_codec::packet::{self, HEADER_LEN, PacketHeader, PacketType};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Read-ahead chunk size: one default-sized TDS packet.
const CHUNK: usize = packet::DEFAULT_PACKET_LEN;

pub struct Framing<S> {
    inner: S,
    wrapping: bool,
    /// Bytes read from `inner` and not yet consumed; `rpos` is where they start.
    rbuf: Vec<u8>,
    rpos: usize,
    /// While wrapping: what is left of the current PRELOGIN packet's payload.
    payload_left: usize,
    /// While wrapping: what the TLS library wrote since the last flush.
    pending: Vec<u8>,
    /// Framed bytes on their way to `inner`; `opos` is how far they got.
    out: Vec<u8>,
    opos: usize,
}

impl<S> Framing<S> {
    /// A transparent stream (clear text, or TLS records straight on TCP).
    pub fn new(inner: S) -> Self {
        Framing {
            inner,
            wrapping: false,
            rbuf: Vec::new(),
            rpos: 0,
            payload_left: 0,
            pending: Vec::new(),
            out: Vec::new(),
            opos: 0,
        }
    }

    /// Starts or ends wrapping TLS records in PRELOGIN packets. Ending it in the middle of
    /// a packet is the caller's error; the rest of that packet would be read raw.
    pub fn set_wrapping(&mut self, on: bool) {
        self.wrapping = on;
        self.payload_left = 0;
    }

    pub fn is_wrapping(&self) -> bool {
        self.wrapping
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes read from the socket that nobody has consumed yet.
    pub fn buffered(&self) -> usize {
        self.rbuf.len() - self.rpos
    }

    fn unread(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    fn consume(&mut self, n: usize) {
        self.rpos += n;
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
    }
}

impl<S: AsyncRead + Unpin> Framing<S> {
    /// Reads one more chunk from `inner` into the buffer; `Ok(false)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        let start = self.rbuf.len();
        self.rbuf.resize(start + CHUNK, 0);
        let mut rb = ReadBuf::new(&mut self.rbuf[start..]);
        let r = Pin::new(&mut self.inner).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        self.rbuf.truncate(start + n);
        ready!(r)?;
        Poll::Ready(Ok(n > 0))
    }

    /// While wrapping: makes sure a PRELOGIN packet's payload is being read, reading and
    /// checking the next header if needed. `Ok(false)` at a clean end of stream.
    fn poll_packet(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        while self.payload_left == 0 {
            while self.buffered() < HEADER_LEN {
                if !ready!(self.poll_fill(cx))? {
                    return Poll::Ready(if self.buffered() == 0 {
                        Ok(false)
                    } else {
                        Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the stream ended inside a TDS packet header",
                        ))
                    });
                }
            }
            let h = PacketHeader::decode(&self.unread()[..HEADER_LEN], packet::MAX_PACKET_LEN)
                .map_err(|e| invalid(format!("bad TDS header during the TLS handshake: {e}")))?;
            if h.ty != PacketType::PreLogin {
                return Poll::Ready(Err(invalid(format!(
                    "expected a PRELOGIN packet carrying TLS during the handshake, got {}",
                    h.ty.name()
                ))));
            }
            self.consume(HEADER_LEN);
            self.payload_left = h.payload_len();
        }
        Poll::Ready(Ok(true))
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<S: AsyncRead + Unpin> AsyncRead for Framing<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.wrapping {
            if !ready!(this.poll_packet(cx))? {
                return Poll::Ready(Ok(()));
            }
            if this.buffered() == 0 && !ready!(this.poll_fill(cx))? {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream ended inside a PRELOGIN packet",
                )));
            }
            let n = this.buffered().min(this.payload_left).min(buf.remaining());
            buf.put_slice(&this.unread()[..n]);
            this.consume(n);
            this.payload_left -= n;
            return Poll::Ready(Ok(()));
        }
        if this.buffered() > 0 {
            let n = this.buffered().min(buf.remaining());
            buf.put_slice(&this.unread()[..n]);
            this.consume(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> Framing<S> {
    /// Writes out what is framed already.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.opos < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.opos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.opos += n;
        }
        self.out.clear();
        self.opos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Framing<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.wrapping {
            this.pending.extend_from_slice(data);
            return Poll::Ready(Ok(data.len()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            let framed = packet::encode_message(
                PacketType::PreLogin,
                &this.pending,
                packet::DEFAULT_PACKET_LEN,
                0,
            );
            this.out.extend_from_slice(&framed);
            this.pending.clear();
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn prelogin(payload: &[u8], size: usize) -> Vec<u8> {
        packet::encode_message(PacketType::PreLogin, payload, size, 0)
    }

    #[tokio::test]
    async fn unwraps_prelogin_payloads_then_passes_raw_bytes_through() {
        let record: Vec<u8> = (0..100u8).collect();
        // The record split over three packets, an empty one between them, then raw bytes.
        let mut wire = prelogin(&record[..50], 48);
        wire.extend(prelogin(&[], 4096));
        wire.extend(prelogin(&record[50..], 4096));
        wire.extend_from_slice(b"raw tail");
        let mut f = Framing::new(wire.as_slice());
        f.set_wrapping(true);
        let mut got = vec![0u8; 100];
        f.read_exact(&mut got).await.unwrap();
        assert_eq!(got, record);
        // The raw bytes after the last packet must not be taken for a header.
        f.set_wrapping(false);
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"raw tail");
    }

    #[tokio::test]
    async fn read_ahead_survives_the_switch_to_raw() {
        let mut wire = prelogin(b"hello", 4096);
        wire.extend_from_slice(b"after");
        let mut f = Framing::new(wire.as_slice());
        f.set_wrapping(true);
        let mut got = [0u8; 5];
        f.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        assert_eq!(
            f.buffered(),
            5,
            "the raw bytes were read ahead with the packet"
        );
        f.set_wrapping(false);
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"after");
    }

    #[tokio::test]
    async fn other_packet_types_and_bad_headers_are_errors() {
        let login = packet::encode_message(PacketType::Login7, b"x", 4096, 0);
        let mut f = Framing::new(login.as_slice());
        f.set_wrapping(true);
        let e = f.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("got LOGIN7"), "{e}");

        // A raw TLS ClientHello where a PRELOGIN packet should be (type 0x16).
        let hello = [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00];
        let mut f = Framing::new(&hello[..]);
        f.set_wrapping(true);
        let e = f.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");

        // A truncated header and a truncated payload.
        let mut f = Framing::new(&[0x12u8, 0x01, 0x00][..]);
        f.set_wrapping(true);
        let e = f.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let cut = prelogin(b"abcdef", 4096);
        let mut f = Framing::new(&cut[..10]);
        f.set_wrapping(true);
        let mut all = Vec::new();
        let e = f.read_to_end(&mut all).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(all, b"ab");

        // A clean end between packets is a clean end.
        let mut f = Framing::new(&[][..]);
        f.set_wrapping(true);
        assert_eq!(f.read(&mut [0u8; 8]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn writes_become_one_prelogin_message_per_flush() {
        let mut f = Framing::new(Vec::new());
        f.set_wrapping(true);
        f.write_all(&[1u8; 3000]).await.unwrap();
        f.write_all(&[2u8; 3000]).await.unwrap();
        assert!(f.get_ref().is_empty(), "nothing is sent before the flush");
        f.flush().await.unwrap();
        f.set_wrapping(false);
        f.write_all(b"raw").await.unwrap();
        f.flush().await.unwrap();
        let wire = f.get_ref().clone();
        let mut r = wire.as_slice();
        let limits = tds_codec::io::Limits::default();
        let msg = tds_codec::io::read_message(&mut r, limits).await.unwrap();
        assert_eq!(msg.ty, PacketType::PreLogin);
        assert_eq!(msg.payload.len(), 6000);
        assert_eq!(
            wire.len(),
            6000 + 2 * HEADER_LEN + 3,
            "two packets, then raw"
        );
        assert_eq!(r, b"raw");
    }
}
