//! Whether delivery makes progress, whatever the connection does: a broker that accepts
//! our connection and then drops it (a poison message, a quota, a flaky proxy) looks
//! "connected" half the time, so health cannot go by the connection alone. It goes by
//! acknowledgements: events waiting and none acknowledged for `stuck_after` is stuck.
//! Failed connections are counted by a short reason (a metric label) and each reason is
//! logged once until delivery recovers, so a broker that refuses us every 250 ms neither
//! floods the journal nor hides.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long events may wait without an acknowledgement before delivery is stuck, unless
/// the configuration says otherwise (`mqtt.delivery_stuck_s`).
pub const STUCK_AFTER: Duration = Duration::from_secs(60);

/// Progress of delivery and the failures of the connection, shared with health and metrics.
#[derive(Debug)]
pub struct DeliveryWatch {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    stuck_after: Duration,
    /// Since the last acknowledgement (or since events started waiting); `None` while
    /// nothing waits.
    waiting_since: Option<Instant>,
    /// Failed connections by reason (a fixed, small set of labels).
    failures: BTreeMap<&'static str, u64>,
    /// Reasons logged since delivery last worked: not logged again until it recovers.
    logged: BTreeSet<&'static str>,
    /// The last failure, in words, until delivery recovers.
    last: Option<String>,
}

impl Default for DeliveryWatch {
    fn default() -> DeliveryWatch {
        DeliveryWatch {
            inner: Mutex::new(Inner {
                stuck_after: STUCK_AFTER,
                waiting_since: None,
                failures: BTreeMap::new(),
                logged: BTreeSet::new(),
                last: None,
            }),
        }
    }
}

impl DeliveryWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets how long events may wait unacknowledged before delivery counts as stuck.
    pub fn set_stuck_after(&self, after: Duration) {
        self.lock().stuck_after = after;
    }

    /// How many events wait now: the clock starts when the first one does and stops
    /// when none does.
    pub fn pending(&self, events: u64) {
        let mut w = self.lock();
        match (events, w.waiting_since) {
            (0, _) => w.waiting_since = None,
            (_, None) => w.waiting_since = Some(Instant::now()),
            (_, Some(_)) => {}
        }
    }

    /// The broker acknowledged an event: delivery moves.
    pub fn acked(&self) {
        self.lock().waiting_since = Some(Instant::now());
    }

    /// How long events have waited without an acknowledgement, once that is longer than
    /// allowed.
    pub fn stuck_for(&self) -> Option<Duration> {
        let w = self.lock();
        w.waiting_since.map(|t| t.elapsed()).filter(|d| *d >= w.stuck_after)
    }

    /// Counts a failed connection under `reason`; true when no failure for that reason
    /// was logged since delivery last worked (so the caller logs it).
    pub fn failed(&self, reason: &'static str, message: &str) -> bool {
        let mut w = self.lock();
        *w.failures.entry(reason).or_default() += 1;
        w.last = Some(message.to_string());
        w.logged.insert(reason)
    }

    /// Delivery works again; returns the last failure, if there was one since it last
    /// worked (the caller says it is over).
    pub fn recovered(&self) -> Option<String> {
        let mut w = self.lock();
        w.logged.clear();
        w.last.take()
    }

    /// Whether connections failed since delivery last worked.
    pub fn failing(&self) -> bool {
        self.lock().last.is_some()
    }

    /// Failed connections so far, by reason.
    pub fn failures(&self) -> Vec<(&'static str, u64)> {
        self.lock().failures.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Why delivery is stuck, in words for `/healthz`; `None` while it moves. `waiting`
    /// is the number of events in the spool.
    pub fn problem(&self, waiting: u64) -> Option<String> {
        let stuck = self.stuck_for()?;
        let last = self.lock().last.clone();
        let why = last.map(|m| format!("; last connection error: {m}")).unwrap_or_default();
        Some(format!(
            "the MQTT broker has acknowledged no event for {:.0} s while {waiting} wait in the spool{why}",
            stuck.as_secs_f64()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_without_acknowledgement_is_stuck_and_an_ack_restarts_the_clock() {
        let w = DeliveryWatch::default();
        w.set_stuck_after(Duration::ZERO);
        assert_eq!(w.problem(0), None, "nothing waits");
        w.pending(3);
        let said = w.problem(3).expect("stuck at once with a zero allowance");
        assert!(said.contains("3 wait in the spool"), "{said}");
        w.set_stuck_after(Duration::from_secs(3600));
        w.acked();
        assert_eq!(w.problem(3), None, "an acknowledgement is progress");
        w.pending(0);
        w.set_stuck_after(Duration::ZERO);
        assert_eq!(w.stuck_for(), None, "nothing waits: nothing is stuck");
    }

    #[test]
    fn the_same_failure_is_logged_once_and_every_one_counted() {
        let w = DeliveryWatch::default();
        assert!(w.failed("connection_refused", "I/O: Connection refused"));
        assert!(!w.failed("connection_refused", "I/O: Connection refused"));
        assert!(w.failed("timeout", "Network timeout"), "a new reason is logged");
        assert!(!w.failed("connection_refused", "I/O: Connection refused"), "flapping between reasons: once each");
        assert_eq!(w.failures(), vec![("connection_refused", 3), ("timeout", 1)]);
        assert!(w.failing());
        assert_eq!(w.recovered().as_deref(), Some("I/O: Connection refused"));
        assert!(!w.failing());
        assert!(w.failed("timeout", "Network timeout"), "after recovery it is news again");
    }
}
