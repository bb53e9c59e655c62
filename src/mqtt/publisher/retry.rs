//! When the publisher reconnects after a lost connection. The wait doubles from
//! [`BACKOFF_START`] up to `mqtt.reconnect_max_s` and starts over once delivery works. A
//! connection dropped over a refusal that may clear (a quota) is different: the broker
//! accepted the connection, so "connected" proves nothing, and a partial quota accepts a
//! few events on every connection before refusing the next. Starting over on those would
//! bring back reconnects every 250 ms for as long as the quota lasts. So after such a
//! refusal the wait starts over only once the broker accepts an event at least as new as
//! the newest one spooled when it refused (the backlog of then is through): a lasting
//! quota, partial or not, is retried at most once per `mqtt.reconnect_max_s`. "The spool
//! empty" would not do: on a busy site an event is nearly always in flight, and the hold
//! would never be released.

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;

/// The first wait after a lost connection.
pub(super) const BACKOFF_START: Duration = Duration::from_millis(250);

/// When to reconnect after a lost connection.
pub(super) struct Retry {
    pub(super) backoff: Backoff,
    /// Failures in a row (logged with each new reason).
    pub(super) failures: u32,
    /// When the next attempt starts; `None` while connected or connecting.
    pub(super) at: Option<Instant>,
    /// The last connection was dropped over a refusal that may clear while events up to
    /// this seq were spooled: the backoff goes on growing across connections until the
    /// broker accepts one at least this new.
    held: Option<u64>,
}

impl Retry {
    /// Waits from [`BACKOFF_START`] up to `max`, drawn with `salt`'s jitter.
    pub(super) fn new(max: Duration, salt: u64) -> Retry {
        Retry { backoff: Backoff::new(BACKOFF_START, max, salt), failures: 0, at: None, held: None }
    }

    /// A connection is up: the wait starts over, unless a refusal holds it.
    pub(super) fn connected(&mut self) {
        if self.held.is_none() {
            self.start_over();
        }
    }

    /// The connection is dropped over a refusal that may clear, while the newest event
    /// spooled is `newest`. A later refusal raises the mark.
    pub(super) fn refused(&mut self, newest: u64) {
        self.held = Some(self.held.map_or(newest, |h| h.max(newest)));
    }

    /// The broker accepted event `seq`: once it is at least as new as the newest spooled
    /// at the last refusal, delivery works again and the refusal no longer holds the wait.
    pub(super) fn accepted(&mut self, seq: u64) {
        if self.held.is_some_and(|newest| seq >= newest) {
            self.held = None;
            self.start_over();
        }
    }

    fn start_over(&mut self) {
        self.backoff.reset();
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_quota_never_brings_back_the_shortest_wait() {
        // A broker that accepts a few events per connection, then refuses one with a
        // quota. Before the fix the first accepted event started the wait over: 250 ms
        // reconnects for as long as the quota lasted.
        let cap = Duration::from_secs(8);
        let mut r = Retry::new(cap, 1);
        r.connected();
        let mut steps = Vec::new();
        for i in 0..6 {
            r.refused(100);
            steps.push(r.backoff.step());
            r.backoff.next_delay();
            r.connected();
            r.accepted(10 * i);
            r.accepted(10 * i + 1);
        }
        let ms = Duration::from_millis;
        assert_eq!(steps, [ms(250), ms(500), ms(1000), ms(2000), ms(4000), cap], "growing to the cap");
        r.accepted(100);
        assert_eq!(r.backoff.step(), BACKOFF_START, "the backlog delivered: the next loss waits little");
        assert_eq!(r.failures, 0);
    }

    #[test]
    fn on_a_busy_site_the_hold_ends_once_the_backlog_of_the_refusal_is_through() {
        // New events keep arriving, so one is nearly always in flight: before the fix the
        // hold waited for an empty spool and never ended, so every later ordinary
        // disconnect waited up to the cap.
        let mut r = Retry::new(Duration::from_secs(8), 1);
        r.refused(50);
        r.backoff.next_delay();
        r.backoff.next_delay();
        r.connected();
        r.accepted(49);
        assert!(r.backoff.step() > BACKOFF_START, "the refusal's backlog is not through yet");
        r.accepted(50);
        assert_eq!((r.backoff.step(), r.failures), (BACKOFF_START, 0), "through, with newer events waiting");
        r.backoff.next_delay();
        r.connected();
        assert_eq!(r.backoff.step(), BACKOFF_START, "no longer held: a connection starts the wait over");
    }

    #[test]
    fn without_a_refusal_a_connection_starts_the_wait_over() {
        let mut r = Retry::new(Duration::from_secs(8), 1);
        r.backoff.next_delay();
        r.backoff.next_delay();
        r.failures = 2;
        r.connected();
        assert_eq!((r.backoff.step(), r.failures), (BACKOFF_START, 0));
    }
}
