//! TDS 7.x carries the TLS handshake inside PRELOGIN (0x12) packets (MS-TDS 2.2.6.5); once
//! the handshake is done, TLS records travel bare on the TCP stream. This adapter sits
//! under rustls: while `framing` is on it wraps every write in a PRELOGIN packet and strips
//! the packet headers from what the server sends; afterwards it passes bytes through.
//! TDS 8 strict never frames (it starts in pass-through).
//!
//! A hostile server cannot make it allocate: a packet header claiming more than 32 KiB or
//! less than its own 8 bytes is an error, and payload is copied through a fixed buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tds_codec::packet::{self, HEADER_LEN, PacketHeader, PacketType};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The packet size before LOGIN7 has negotiated one (MS-TDS: 4096).
const PACKET_LEN: usize = packet::DEFAULT_PACKET_LEN;

pub(crate) struct HandshakeFraming<S> {
    inner: S,
    framing: bool,
    /// Framed bytes not yet accepted by `inner`.
    out: Vec<u8>,
    out_pos: usize,
    packet_id: u8,
    /// Header of the server packet being read, and how much of its payload is left.
    header: [u8; HEADER_LEN],
    header_have: usize,
    payload_left: usize,
}

impl<S> HandshakeFraming<S> {
    /// TDS 7.x: frames until [`Self::end_handshake`].
    pub(crate) fn framed(inner: S) -> Self {
        Self::with(inner, true)
    }

    /// TDS 8 strict: TLS records straight on the stream.
    pub(crate) fn pass_through(inner: S) -> Self {
        Self::with(inner, false)
    }

    fn with(inner: S, framing: bool) -> Self {
        HandshakeFraming {
            inner,
            framing,
            out: Vec::new(),
            out_pos: 0,
            packet_id: 1,
            header: [0; HEADER_LEN],
            header_have: 0,
            payload_left: 0,
        }
    }

    /// The handshake is over: TLS records (or, after a login-only encryption, plain TDS)
    /// now travel bare.
    pub(crate) fn end_handshake(&mut self) {
        self.framing = false;
    }
}

impl<S: AsyncWrite + Unpin> HandshakeFraming<S> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> HandshakeFraming<S> {
    /// Reads the next packet header; `Ok(false)` at end of stream.
    fn poll_header(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        while self.header_have < HEADER_LEN {
            let mut rb = ReadBuf::new(&mut self.header[self.header_have..]);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
            let got = rb.filled().len();
            if got == 0 {
                return Poll::Ready(Ok(false));
            }
            self.header_have += got;
        }
        let header = PacketHeader::decode(&self.header, packet::MAX_PACKET_LEN).map_err(|e| {
            invalid(format!(
                "the server sent a bad TDS header during the TLS handshake: {e}"
            ))
        })?;
        if !matches!(header.ty, PacketType::PreLogin | PacketType::TabularResult) {
            return Poll::Ready(Err(invalid(format!(
                "the server sent a {} packet during the TLS handshake, expected PRELOGIN (0x12)",
                header.ty.name()
            ))));
        }
        self.header_have = 0;
        self.payload_left = header.payload_len();
        Poll::Ready(Ok(true))
    }
}

fn invalid(detail: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail)
}

impl<S: AsyncRead + Unpin> AsyncRead for HandshakeFraming<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.framing {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        while this.payload_left == 0 {
            if !ready!(this.poll_header(cx))? {
                return Poll::Ready(Ok(()));
            }
        }
        let mut scratch = [0u8; PACKET_LEN];
        let want = this.payload_left.min(buf.remaining()).min(scratch.len());
        let mut rb = ReadBuf::new(&mut scratch[..want]);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
        let got = rb.filled().len();
        buf.put_slice(rb.filled());
        this.payload_left -= got;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HandshakeFraming<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        if !this.framing {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        let n = buf.len().min(PACKET_LEN - HEADER_LEN);
        let header = PacketHeader {
            ty: PacketType::PreLogin,
            status: packet::status::EOM,
            // n + 8 ≤ PACKET_LEN (4096) fits in u16.
            length: (n + HEADER_LEN) as u16,
            spid: 0,
            packet_id: this.packet_id,
            window: 0,
        };
        this.out.extend_from_slice(&header.encode());
        this.out.extend_from_slice(&buf[..n]);
        this.packet_id = this.packet_id.wrapping_add(1);
        // The bytes are ours now; a pending inner write finishes in the next call or flush.
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_are_framed_and_reads_unframed_until_the_handshake_ends() {
        let (a, mut b) = tokio::io::duplex(65536);
        let mut f = HandshakeFraming::framed(a);
        f.write_all(b"hello").await.unwrap();
        f.flush().await.unwrap();
        let mut got = [0u8; 13];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..8], &[0x12, 0x01, 0, 13, 0, 0, 1, 0]);
        assert_eq!(&got[8..], b"hello");
        // Two server packets, the first split: the payloads come out joined.
        b.write_all(&[0x12, 0x00, 0, 11, 0, 0, 1, 0, b'a', b'b', b'c'])
            .await
            .unwrap();
        b.write_all(&[0x12, 0x01, 0, 10, 0, 0, 2, 0, b'd', b'e'])
            .await
            .unwrap();
        let mut five = [0u8; 5];
        f.read_exact(&mut five).await.unwrap();
        assert_eq!(&five, b"abcde");
        f.end_handshake();
        f.write_all(b"raw").await.unwrap();
        f.flush().await.unwrap();
        let mut raw = [0u8; 3];
        b.read_exact(&mut raw).await.unwrap();
        assert_eq!(&raw, b"raw");
    }

    #[tokio::test]
    async fn bad_headers_are_errors_not_allocations() {
        for header in [
            [0x12u8, 0x01, 0, 4, 0, 0, 1, 0],     // shorter than a header
            [0x12, 0x01, 0xff, 0xff, 0, 0, 1, 0], // above 32 KiB
            [0x01, 0x01, 0, 9, 0, 0, 1, 0],       // SQL batch in a handshake
        ] {
            let (a, mut b) = tokio::io::duplex(1024);
            let mut f = HandshakeFraming::framed(a);
            b.write_all(&header).await.unwrap();
            let mut one = [0u8; 1];
            let e = f.read_exact(&mut one).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{header:?}");
        }
    }
}
