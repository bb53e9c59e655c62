//! Whether delivery makes progress, whatever the connection does: a broker that accepts
//! our connection and then drops it (a poison message, a quota, a flaky proxy) looks
//! "connected" half the time, so health cannot go by the connection alone. It goes by
//! acknowledgements: events waiting and none acknowledged for `stuck_after` is stuck.
//! Failed connections are counted by a short reason (a metric label) and each reason is
//! logged once until delivery recovers, so a broker that refuses us every 250 ms neither
//! floods the journal nor hides.
//!
//! An MQTT 5 broker can also take an event and refuse it (a PUBACK with a reason code: an
//! ACL that denies the topic, a quota). That is no progress either: refusals are counted
//! by reason, each reason is logged once while refusals keep coming, and a broker that
//! has refused every event for `stuck_after` makes delivery stuck like silence does.

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
    /// Events the broker refused, by reason (a fixed, small set of labels).
    refusals: BTreeMap<&'static str, u64>,
    /// Since the first refusal after the last accepted event; `None` while events get
    /// through. It counts while refusals go on, or once they have spanned `stuck_after`
    /// ([`Inner::refusing_for`]): one refusal and then a quiet night is no broker that
    /// refuses everything, two refusals an hour apart with nothing accepted are.
    refused_since: Option<Instant>,
    /// The last refusal: when, and in words.
    last_refusal: Option<(Instant, String)>,
    /// Refusal reasons logged since refusals last paused for `stuck_after`.
    refusals_logged: BTreeSet<&'static str>,
    /// Reasons the broker gave for refusing messages that are not events, logged once.
    others_logged: BTreeSet<&'static str>,
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
                refusals: BTreeMap::new(),
                refused_since: None,
                last_refusal: None,
                refusals_logged: BTreeSet::new(),
                others_logged: BTreeSet::new(),
            }),
        }
    }
}

impl Inner {
    /// How long the broker has refused every event, at `now`: counted while refusals go
    /// on (the last is younger than `stuck_after`) or once they have spanned
    /// `stuck_after` with none accepted (a quiet site whose every event is refused);
    /// `None` after a lone refusal and a pause, or once an event got through.
    fn refusing_for(&self, now: Instant) -> Option<Duration> {
        let since = self.refused_since?;
        let (at, _) = self.last_refusal.as_ref()?;
        let going_on = now.saturating_duration_since(*at) < self.stuck_after;
        let spanned = at.saturating_duration_since(since) >= self.stuck_after;
        (going_on || spanned).then(|| now.saturating_duration_since(since))
    }

    /// How long delivery has been stuck at `now`, once that is longer than allowed.
    fn stuck_at(&self, now: Instant) -> Option<Duration> {
        let waited = self.waiting_since.map(|t| now.saturating_duration_since(t));
        waited.max(self.refusing_for(now)).filter(|d| *d >= self.stuck_after)
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

    /// How long events may wait unacknowledged (or be refused) before delivery is stuck.
    pub fn stuck_after(&self) -> Duration {
        self.lock().stuck_after
    }

    /// The broker accepted an event: delivery moves.
    pub fn acked(&self) {
        let mut w = self.lock();
        w.waiting_since = Some(Instant::now());
        w.refused_since = None;
    }

    /// The broker refused an event (`reason`, a metric label; `message` in words): counted,
    /// and no progress. True when the reason was not logged since refusals last paused
    /// for `stuck_after` (so the caller logs it: once, not once per event).
    pub fn refused(&self, reason: &'static str, message: &str) -> bool {
        self.refused_at(reason, message, Instant::now())
    }

    fn refused_at(&self, reason: &'static str, message: &str, now: Instant) -> bool {
        let mut w = self.lock();
        *w.refusals.entry(reason).or_default() += 1;
        if w.last_refusal.as_ref().is_none_or(|(at, _)| now.saturating_duration_since(*at) >= w.stuck_after) {
            // After a pause this long a refusal is news again (logged afresh); the clock
            // still runs from the first refusal since an event was last accepted.
            w.refusals_logged.clear();
        }
        w.refused_since.get_or_insert(now);
        w.last_refusal = Some((now, message.to_string()));
        w.refusals_logged.insert(reason)
    }

    /// The broker refused a message that is no event (a retained state, discovery): true
    /// the first time for `reason` (so the caller logs it once). Not delivery progress
    /// either way; events decide that.
    pub fn refused_other(&self, reason: &'static str) -> bool {
        self.lock().others_logged.insert(reason)
    }

    /// Events the broker refused so far, by reason.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        self.lock().refusals.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// How long events have waited without an acknowledgement, or been refused with none
    /// accepted, once that is longer than allowed.
    pub fn stuck_for(&self) -> Option<Duration> {
        self.lock().stuck_at(Instant::now())
    }

    /// Why delivery is stuck in a line that stays the same while the cause does (no
    /// running clock or count), for systemd's `STATUS=`; `None` while delivery moves.
    pub fn summary(&self) -> Option<String> {
        self.summary_at(Instant::now())
    }

    fn summary_at(&self, now: Instant) -> Option<String> {
        let w = self.lock();
        w.stuck_at(now)?;
        if w.refusing_for(now).is_some() {
            let why = w.last_refusal.as_ref().map(|(_, m)| m.as_str()).unwrap_or("refused");
            return Some(format!("the MQTT broker refuses every event ({why})"));
        }
        let why = w.last.as_ref().map(|m| format!(" (last error: {m})")).unwrap_or_default();
        Some(format!("the MQTT broker acknowledges no event{why}"))
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

    /// The last connection failure, in words, while delivery has not worked since.
    pub fn last_failure(&self) -> Option<String> {
        self.lock().last.clone()
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
        self.problem_at(waiting, Instant::now())
    }

    fn problem_at(&self, waiting: u64, now: Instant) -> Option<String> {
        let (stuck, last, refused) = {
            let w = self.lock();
            let refusal = w.refusing_for(now).and(w.last_refusal.as_ref().map(|(_, m)| m.clone()));
            (w.stuck_at(now)?, w.last.clone(), refusal)
        };
        if let Some(refusal) = refused {
            return Some(format!(
                "the MQTT broker has refused every event for {:.0} s ({refusal}); refused events are lost, counted in clefd_mqtt_events_refused_total",
                stuck.as_secs_f64()
            ));
        }
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

    #[test]
    fn refusals_are_no_progress_and_are_logged_once_while_they_last() {
        let w = DeliveryWatch::default();
        let after = Duration::from_secs(60);
        w.set_stuck_after(after);
        w.pending(1);
        w.acked();
        let t = Instant::now();
        let s = |secs: u64| t + Duration::from_secs(secs);
        assert!(w.refused_at("not_authorized", "not_authorized on clefd/d/c/emotion", s(0)), "the first is logged");
        assert!(!w.refused_at("not_authorized", "not_authorized on clefd/d/c/emotion", s(30)), "the next are not");
        assert!(w.refused_at("quota_exceeded", "quota_exceeded on clefd/d/c/emotion", s(59)), "a new reason is");
        // Refused events leave the spool: nothing waits, and yet delivery is stuck.
        w.pending(0);
        assert_eq!(w.problem_at(0, s(59)), None, "not yet: refused for 59 s of 60");
        let said = w.problem_at(0, s(61)).expect("refused with none accepted for 61 s is stuck");
        assert!(said.contains("refused every event") && said.contains("quota_exceeded"), "{said}");
        assert_eq!(
            w.summary_at(s(61)).as_deref(),
            Some("the MQTT broker refuses every event (quota_exceeded on clefd/d/c/emotion)")
        );
        assert_eq!(w.refusals(), vec![("not_authorized", 2), ("quota_exceeded", 1)]);
        assert!(!w.refused_at("not_authorized", "again", s(100)), "41 s after the last: they go on, not news");
        assert!(w.refused_at("not_authorized", "again", s(160)), "after a pause of stuck_after it is news again");
        assert!(w.problem_at(0, s(161)).is_some(), "refused from 0 s to 160 s with none accepted: still stuck");
        w.acked();
        w.pending(0);
        assert_eq!(w.problem(0), None, "an accepted event is progress");
        assert_eq!(w.summary(), None);
    }

    #[test]
    fn one_refusal_then_a_quiet_pause_is_not_stuck() {
        // One refused event, then no event at all (no faces overnight). Before the fix
        // the refusal kept delivery "stuck" until the next accepted event.
        let w = DeliveryWatch::default();
        w.set_stuck_after(Duration::from_secs(60));
        let t = Instant::now();
        assert!(w.refused_at("not_authorized", "not_authorized on clefd/d/c/emotion", t));
        w.pending(0);
        let night = t + Duration::from_secs(8 * 3600);
        assert_eq!(w.lock().stuck_at(night), None, "no refusal for stuck_after: nothing is stuck");
        assert_eq!(w.problem_at(0, night), None);
        assert_eq!(w.summary_at(night), None);
    }

    #[test]
    fn refusals_further_apart_than_stuck_after_with_none_accepted_are_stuck() {
        // A quiet site (a face every 90 s) whose every event an ACL refuses: each refusal
        // comes after a pause longer than stuck_after, and still nothing gets through.
        let w = DeliveryWatch::default();
        w.set_stuck_after(Duration::from_secs(60));
        let t = Instant::now();
        w.refused_at("not_authorized", "not_authorized on clefd/d/c/emotion", t);
        w.pending(0);
        let later = t + Duration::from_secs(90);
        w.refused_at("not_authorized", "not_authorized on clefd/d/c/emotion", later);
        let said = w.problem_at(0, later).expect("every event refused for 90 s is stuck");
        assert!(said.contains("refused every event"), "{said}");
        let night = later + Duration::from_secs(8 * 3600);
        assert!(w.problem_at(0, night).is_some(), "and stays stuck until an event is accepted");
        w.acked();
        w.pending(0);
        assert_eq!(w.problem_at(0, night), None, "an accepted event is progress");
    }
}
