//! A client that stops reading must not hold its connection (and, watching live, its
//! viewer seat) for ever: [`Stalling`] fails a write that has waited [`STALLED`] for the
//! client to make room, and hyper then closes the connection. A client that vanished
//! without closing (its network gone) is noticed too: data it leaves unacknowledged for
//! [`VANISHED`] aborts the connection (`TCP_USER_TIMEOUT`; live viewers are written to at
//! least every 2 s). Reads are left alone: hyper's own header timeout bounds them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// A client that takes longer than this to take one write is dropped.
pub const STALLED: Duration = Duration::from_secs(2);

/// Data a client leaves unacknowledged this long aborts its connection (the kernel's own
/// limit, without it, is about a quarter of an hour of retransmissions).
pub const VANISHED: Duration = Duration::from_secs(10);

/// A TCP stream whose writes may not wait longer than [`STALLED`].
pub struct Stalling {
    inner: TcpStream,
    waiting: Option<Pin<Box<Sleep>>>,
}

impl Stalling {
    /// Wraps an accepted connection, and asks the kernel to abort it once data has waited
    /// [`VANISHED`] for an acknowledgement (logged once if it cannot).
    pub fn new(inner: TcpStream) -> Stalling {
        if let Err(e) = abort_unacknowledged(&inner, VANISHED) {
            static LOGGED: std::sync::Once = std::sync::Once::new();
            LOGGED.call_once(
                || tracing::warn!(error = %e, "cannot limit how long HTTP clients may leave data unacknowledged"),
            );
        }
        Stalling { inner, waiting: None }
    }

    /// Passes `r` on; a write still pending [`STALLED`] after it first was becomes an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.waiting = None;
            return r;
        }
        let waiting = self.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(STALLED)));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Sets `TCP_USER_TIMEOUT` on `stream` to `after`.
fn abort_unacknowledged(stream: &TcpStream, after: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ms = libc::c_uint::try_from(after.as_millis()).unwrap_or(libc::c_uint::MAX);
    let size = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
    // SAFETY: the descriptor is an open TCP socket `stream` owns, and the option's value
    // is a c_uint of the size given, alive for the call.
    let rc = unsafe {
        libc::setsockopt(stream.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, (&raw const ms).cast(), size)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

impl AsyncRead for Stalling {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stalling {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[tokio::test]
    async fn accepted_connections_abort_on_data_left_unacknowledged() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let wrapped = Stalling::new(accepted);
        let (mut ms, mut size) = (0 as libc::c_uint, std::mem::size_of::<libc::c_uint>() as libc::socklen_t);
        // SAFETY: an open socket; `ms` and `size` are valid for the call to fill in.
        let rc = unsafe {
            libc::getsockopt(
                wrapped.inner.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&raw mut ms).cast(),
                &raw mut size,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        assert_eq!(u128::from(ms), VANISHED.as_millis());
        drop(client);
    }
}
