//! Refuses an HTTP/2 client whose connection preface diverges after `PRI * HTTP/2.0`
//! with GOAWAY(PROTOCOL_ERROR), rather than an HTTP/1.1 400 it cannot read.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of its request line, "PRI * HTTP/2.0": no HTTP/1 request names HTTP/2.0.
const H2_REQUEST_LINE: usize = 14;
/// GOAWAY on stream 0: last stream 0, error PROTOCOL_ERROR, no debug data.
const GOAWAY_PROTOCOL_ERROR: [u8; 17] = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// hyper-util's auto builder serves anything but the whole 24-byte HTTP/2 preface as
/// HTTP/1, so a client that opens with `PRI * HTTP/2.0` and then diverges would get an
/// HTTP/1.1 400 it cannot read. This watches the first 24 bytes read: on such a
/// divergence it writes GOAWAY(PROTOCOL_ERROR) and fails the read, which ends the
/// connection. Everything else, and every later read, passes straight through.
pub(super) struct PrefaceGuard<T> {
    io: T,
    state: Preface,
}

impl<T> PrefaceGuard<T> {
    pub(super) fn new(io: T) -> Self {
        PrefaceGuard {
            io,
            state: Preface::Reading(0),
        }
    }
}

enum Preface {
    /// This many bytes of the preface seen so far.
    Reading(usize),
    Passed,
    /// Refused; this many bytes of the GOAWAY written.
    Refusing(usize),
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for PrefaceGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.state {
                Preface::Passed => return Pin::new(&mut this.io).poll_read(cx, buf),
                Preface::Reading(seen) => {
                    let before = buf.filled().len();
                    ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                    let new = &buf.filled()[before..];
                    let expected = &H2_PREFACE[seen..];
                    let same = new.iter().zip(expected).take_while(|(a, b)| a == b).count();
                    let at = seen + same;
                    this.state = if new.is_empty() || at == H2_PREFACE.len() {
                        Preface::Passed
                    } else if same == new.len() {
                        Preface::Reading(at)
                    } else if at >= H2_REQUEST_LINE {
                        // Diverged after "PRI * HTTP/2.0": an HTTP/2 client, bad preface.
                        Preface::Refusing(0)
                    } else {
                        Preface::Passed
                    };
                    if !matches!(this.state, Preface::Refusing(_)) {
                        return Poll::Ready(Ok(()));
                    }
                }
                Preface::Refusing(written) if written < GOAWAY_PROTOCOL_ERROR.len() => {
                    let frame = &GOAWAY_PROTOCOL_ERROR[written..];
                    match ready!(Pin::new(&mut this.io).poll_write(cx, frame))? {
                        0 => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                        n => this.state = Preface::Refusing(written + n),
                    }
                }
                Preface::Refusing(_) => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "invalid HTTP/2 connection preface (sent GOAWAY)",
                    )));
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefaceGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
