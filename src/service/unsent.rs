//! Whether a connection still holds response bytes its client has not taken. hyper lets
//! go of a response's body once its last bytes are queued, long before a slow client has
//! them all, so a connection can look idle to `service::slots` while it is still sending.
//! An evicted connection with nothing left to send (silent, trickling a head, idle between
//! requests) is closed at once; only one still sending may go on to finish it.
//!
//! hyper writes what it holds until the socket takes no more (a write returns pending),
//! and flushes the socket only once it holds nothing: so "a write is waiting" from a
//! pending write until the next flush that completes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};

/// A connection's I/O that notes when hyper holds bytes the client has not made room for.
#[derive(Debug)]
pub struct Watched<I> {
    inner: I,
    behind: Arc<AtomicBool>,
}

/// What a [`Watched`] connection notes, for whoever decides how to close it.
#[derive(Debug, Clone)]
pub struct Unsent(Arc<AtomicBool>);

impl Unsent {
    /// Whether bytes of a response wait for the client (the connection is mid-response).
    pub fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `io`, watched, and what it notes.
pub fn watch<I>(io: I) -> (Watched<I>, Unsent) {
    let behind = Arc::new(AtomicBool::new(false));
    (Watched { inner: io, behind: behind.clone() }, Unsent(behind))
}

impl<I> Watched<I> {
    /// Passes a write's result on, noting one that waits for the client.
    fn note<T>(&self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_pending() {
            self.behind.store(true, Ordering::SeqCst);
        }
        r
    }
}

impl<I: Read + Unpin> Read for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: Write + Unpin> Write for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        // hyper flushes the socket only once it holds nothing more to write.
        if matches!(r, Poll::Ready(Ok(()))) {
            this.behind.store(false, Ordering::SeqCst);
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
