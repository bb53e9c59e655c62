//! The side door's connection slots. At most a fixed number of connections are served at
//! once (the process's descriptors stay bounded); when all are taken, a newcomer gets the
//! slot of the oldest connection that is answering no request (idle between keep-alive
//! requests, or still sending its head), which is closed. So clients that connect and
//! send nothing, or trickle their heads, can delay `/healthz` by an eviction at most,
//! never by their timeouts. Only when every connection is answering a request (live
//! viewers, fetches under way) does a newcomer wait for one to finish.
//!
//! "Answering no request" is a guess: hyper lets go of a response's body once its last
//! bytes are queued, before they reach a slow client. So an evicted connection gives its
//! slot back at once and, if it is still sending (`service::unsent`), may finish what it
//! is sending ([`Hold::leave`]), a bounded number at a time; one with nothing to send is
//! closed at once and holds no leave, so a flood of silent clients never uses up the
//! leaves that responses under way need.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Frame, SizeHint};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Set in a slot's count of requests once it is given away: its connection is closing.
const EVICTED: u32 = 1 << 31;
/// How often a newcomer that found every connection busy looks again for one gone idle.
const RECHECK: Duration = Duration::from_millis(100);

/// One connection's place: how many of its requests are being answered, and the signal
/// that closes it.
#[derive(Debug, Default)]
pub struct Slot {
    serving: AtomicU32,
    evict: Notify,
}

impl Slot {
    /// Counts a request as being answered until the guard is dropped (it goes with the
    /// response's body, so a live stream counts until it ends).
    pub fn serving(self: &Arc<Self>) -> Serving {
        self.serving.fetch_add(1, Ordering::SeqCst);
        Serving(self.clone())
    }

    /// Resolves once the slot was given to a newcomer: the connection must close.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Takes the slot away if its connection answers no request; whether it did.
    fn evict_if_idle(&self) -> bool {
        let idle = self.serving.compare_exchange(0, EVICTED, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        if idle {
            self.evict.notify_one();
        }
        idle
    }
}

/// A request being answered on a [`Slot`]'s connection.
#[derive(Debug)]
pub struct Serving(Arc<Slot>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connections held, oldest first.
type Held = Arc<Mutex<Vec<Arc<Slot>>>>;

/// Every slot, taken and free.
#[derive(Debug)]
pub struct Slots {
    #[cfg(test)]
    max: usize,
    free: Arc<Semaphore>,
    held: Held,
    leaving: Arc<Semaphore>,
}

/// A connection's hold on its slot; dropping it (the connection ended) frees the slot.
#[derive(Debug)]
pub struct Hold {
    slot: Arc<Slot>,
    held: Held,
    leaving: Arc<Semaphore>,
    _permit: OwnedSemaphorePermit,
}

/// An evicted connection's leave to finish sending: descriptors stay bounded (at most as
/// many leaving connections as slots), and the slot is already free for the newcomer.
#[derive(Debug)]
pub struct Leaving {
    _permit: OwnedSemaphorePermit,
}

impl Hold {
    /// The slot held.
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    /// Gives the slot back now (for the newcomer that evicted this connection, which is
    /// mid-response) and, if fewer than the slots' number of connections are already
    /// leaving, lets this one finish what it is sending while the leave is held; `None`:
    /// close it at once. A connection with nothing to send drops its hold instead.
    pub fn leave(self) -> Option<Leaving> {
        let leave = self.leaving.clone().try_acquire_owned().ok().map(|p| Leaving { _permit: p });
        drop(self);
        leave
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|s| !Arc::ptr_eq(s, &self.slot));
    }
}

impl Slots {
    /// `max` slots, all free.
    pub fn new(max: usize) -> Slots {
        Slots {
            #[cfg(test)]
            max,
            free: Arc::new(Semaphore::new(max)),
            held: Arc::default(),
            leaving: Arc::new(Semaphore::new(max)),
        }
    }

    /// Evicted connections still finishing a response now.
    #[cfg(test)]
    pub(super) fn leaving(&self) -> usize {
        self.max - self.leaving.available_permits()
    }

    /// A slot for a connection just accepted: a free one, else that of the oldest
    /// connection answering no request (closed for it), else the first to come free.
    pub async fn take(&self) -> Hold {
        let permit = loop {
            if let Ok(permit) = self.free.clone().try_acquire_owned() {
                break permit;
            }
            // The evicted connection gives its slot back at once: wait for it (evicting no
            // other meanwhile); if none was idle, look again now and then for one that has
            // finished its request.
            if self.evict_oldest_idle() {
                if let Ok(permit) = self.free.clone().acquire_owned().await {
                    break permit;
                }
            } else if let Ok(Ok(permit)) = tokio::time::timeout(RECHECK, self.free.clone().acquire_owned()).await {
                break permit;
            }
        };
        let slot = Arc::new(Slot::default());
        self.held.lock().unwrap_or_else(|p| p.into_inner()).push(slot.clone());
        Hold { slot, held: self.held.clone(), leaving: self.leaving.clone(), _permit: permit }
    }

    /// Closes the oldest connection that answers no request; whether there was one.
    fn evict_oldest_idle(&self) -> bool {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.iter().any(|s| s.evict_if_idle())
    }
}

/// A response's body that keeps its request counted as being answered until it is sent
/// (or dropped); it is the body it wraps in all else (size, end).
pub struct Counted {
    body: Body,
    _serving: Serving,
}

impl Counted {
    /// `body`, counted by `serving`.
    pub fn new(body: Body, serving: Serving) -> Counted {
        Counted { body, _serving: serving }
    }
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_newcomer_takes_the_oldest_idle_slot_and_never_a_busy_one() {
        let slots = Slots::new(3);
        let (a, b, c) = (slots.take().await, slots.take().await, slots.take().await);
        // `a` answers a request; `b` is the oldest idle one.
        let serving = a.slot().serving();
        let d = tokio::spawn(async move {
            let d = slots.take().await;
            (slots, d)
        });
        tokio::time::timeout(Duration::from_secs(30), b.slot().evicted()).await.expect("b is evicted");
        drop(b);
        let (slots, d) = d.await.unwrap();
        // `a`, still busy, was left alone; `c` is idle and goes next, then `d`.
        assert_eq!(a.slot().serving.load(Ordering::SeqCst), 1, "a is not evicted");
        assert!(slots.evict_oldest_idle());
        assert_eq!(c.slot().serving.load(Ordering::SeqCst), EVICTED);
        assert!(slots.evict_oldest_idle());
        assert_eq!(d.slot().serving.load(Ordering::SeqCst), EVICTED);
        assert!(!slots.evict_oldest_idle(), "only a busy one is left");
        // Its request answered, `a` becomes idle: evictable.
        drop(serving);
        assert!(slots.evict_oldest_idle());
        drop((a, c, d));
        assert_eq!(slots.held.lock().unwrap().len(), 0, "every hold gone");
        assert_eq!(slots.free.available_permits(), 3);
    }

    #[tokio::test]
    async fn a_newcomer_evicts_one_connection_however_slowly_it_leaves() {
        let slots = Arc::new(Slots::new(2));
        let (a, b) = (slots.take().await, slots.take().await);
        let taking = slots.clone();
        let c = tokio::spawn(async move { taking.take().await });
        tokio::time::timeout(Duration::from_secs(30), a.slot().evicted()).await.expect("a is evicted");
        // `a` takes many rechecks to give its slot back: `b` is left alone all the while.
        tokio::time::sleep(RECHECK * 10).await;
        assert_eq!(b.slot().serving.load(Ordering::SeqCst), 0, "b is not evicted for the same newcomer");
        assert!(!c.is_finished(), "c waits for a's slot");
        // `a` leaves, finishing its response: its slot is c's at once.
        let leaving = a.leave().expect("room to finish");
        let c = tokio::time::timeout(Duration::from_secs(30), c).await.expect("c gets a's slot").unwrap();
        assert_eq!(slots.leaving.available_permits(), 1, "one connection leaving");
        drop(leaving);
        // At most as many leaving at once as there are slots; past that, cut at once.
        let all: Vec<_> = (0..2).map(|_| slots.leaving.clone().try_acquire_owned().unwrap()).collect();
        assert!(b.leave().is_none(), "no room to finish: closed at once");
        assert_eq!(slots.free.available_permits(), 1, "b's slot is free all the same");
        drop((all, c));
    }
}
