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
//! by reason, each reason is logged once per topic while refusals keep coming, and a topic
//! (a camera) whose every event the broker has refused for `stuck_after` makes delivery
//! stuck like silence does, named, even while other cameras' events get through
//! ([`super::refusals`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::refusals::{Refusals, Stuck};

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
    /// Refusals by topic, each with its clock: one refusal and then a quiet night is no
    /// broker that refuses a camera's events, two refusals an hour apart with nothing
    /// accepted on that camera's topic are.
    refused: Refusals,
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
                refused: Refusals::default(),
                others_logged: BTreeSet::new(),
            }),
        }
    }
}

impl Inner {
    /// How long delivery has been stuck at `now`, once that is longer than allowed: events
    /// waiting with none acknowledged, or a topic whose every event was refused.
    fn stuck_at(&self, now: Instant) -> Option<Duration> {
        let waited = self.waiting_since.map(|t| now.saturating_duration_since(t));
        waited.max(self.refused.longest(now, self.stuck_after)).filter(|d| *d >= self.stuck_after)
    }

    /// The topics refused for too long, as `"{topic} ({reason})"`, joined.
    fn stuck_topics(&self, now: Instant) -> Option<(Duration, String)> {
        let stuck = self.refused.stuck(now, self.stuck_after);
        let longest = stuck.iter().map(|s| s.refusing).max()?;
        let named: Vec<String> =
            stuck.iter().map(|Stuck { topic, reason, .. }| format!("{topic} ({reason})")).collect();
        Some((longest, named.join(", ")))
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

    /// The broker accepted an event on `topic`: delivery moves, on that topic too.
    /// (`None`: its topic is unknown; only delivery as a whole moves.)
    pub fn acked(&self, topic: Option<&str>) {
        let mut w = self.lock();
        w.waiting_since = Some(Instant::now());
        if let Some(topic) = topic {
            w.refused.accepted(topic);
        }
    }

    /// The broker refused an event on `topic` (`reason`, a metric label): counted, and no
    /// progress for that topic. True when the reason was not logged for the topic since
    /// its refusals last paused for `stuck_after` (so the caller logs it: once, not once
    /// per event). With no topic (`None`: unknown) it is only counted.
    pub fn refused(&self, reason: &'static str, topic: Option<&str>) -> bool {
        match topic {
            Some(topic) => self.refused_at(reason, topic, Instant::now()),
            None => {
                *self.lock().refusals.entry(reason).or_default() += 1;
                false
            }
        }
    }

    fn refused_at(&self, reason: &'static str, topic: &str, now: Instant) -> bool {
        let mut w = self.lock();
        *w.refusals.entry(reason).or_default() += 1;
        let stuck_after = w.stuck_after;
        w.refused.refused(topic, reason, now, stuck_after)
    }

    /// Forgets every topic's refusals: the publisher moved to another broker or prefix,
    /// where the old refusals say nothing (and the old topics get no event any more).
    pub fn forget_all(&self) {
        self.lock().refused = Refusals::default();
    }

    /// Forgets the refusals of `topic`: its camera left the configuration, and it must not
    /// stay named in `/healthz` for events nobody makes any more.
    pub fn forget(&self, topic: &str) {
        self.lock().refused.forget(topic);
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
        if let Some((_, topics)) = w.stuck_topics(now) {
            return Some(format!("the MQTT broker refuses every event on {topics}"));
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
            (w.stuck_at(now)?, w.last.clone(), w.stuck_topics(now))
        };
        if let Some((refusing, topics)) = refused {
            return Some(format!(
                "the MQTT broker has refused every event on {topics} for {:.0} s; refused events are lost, counted in clefd_mqtt_events_refused_total",
                refusing.as_secs_f64()
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
        w.acked(Some("t"));
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

    const CAM: &str = "clefd/d/c/emotion";

    #[test]
    fn refusals_are_no_progress_and_are_logged_once_while_they_last() {
        let w = DeliveryWatch::default();
        let after = Duration::from_secs(60);
        w.set_stuck_after(after);
        w.pending(1);
        w.acked(Some(CAM));
        let t = Instant::now();
        let s = |secs: u64| t + Duration::from_secs(secs);
        assert!(w.refused_at("not_authorized", CAM, s(0)), "the first is logged");
        assert!(!w.refused_at("not_authorized", CAM, s(30)), "the next are not");
        assert!(w.refused_at("quota_exceeded", CAM, s(59)), "a new reason is");
        // Refused events leave the spool: nothing waits, and yet delivery is stuck.
        w.pending(0);
        assert_eq!(w.problem_at(0, s(59)), None, "not yet: refused for 59 s of 60");
        let said = w.problem_at(0, s(61)).expect("refused with none accepted for 61 s is stuck");
        assert!(said.contains("refused every event on clefd/d/c/emotion (quota_exceeded) for 61 s"), "{said}");
        assert_eq!(
            w.summary_at(s(61)).as_deref(),
            Some("the MQTT broker refuses every event on clefd/d/c/emotion (quota_exceeded)")
        );
        assert_eq!(w.refusals(), vec![("not_authorized", 2), ("quota_exceeded", 1)]);
        assert!(!w.refused_at("not_authorized", CAM, s(100)), "41 s after the last: they go on, not news");
        assert!(w.refused_at("not_authorized", CAM, s(160)), "after a pause of stuck_after it is news again");
        assert!(w.problem_at(0, s(161)).is_some(), "refused from 0 s to 160 s with none accepted: still stuck");
        w.acked(Some(CAM));
        w.pending(0);
        assert_eq!(w.problem(0), None, "an accepted event is progress");
        assert_eq!(w.summary(), None);
    }

    #[test]
    fn a_camera_whose_every_event_is_refused_is_named_while_another_delivers() {
        // Before the fix any accepted event stopped the one refusal clock: cam1's events
        // got through, and cam0, whose every event the ACL refused, never made health fail.
        let w = DeliveryWatch::default();
        w.set_stuck_after(Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..=90 {
            w.refused_at("not_authorized", "clefd/d/cam0/emotion", t + Duration::from_secs(i));
            w.acked(Some("clefd/d/cam1/emotion"));
        }
        w.pending(0);
        let at = t + Duration::from_secs(90);
        let said = w.problem_at(0, at).expect("cam0 refused throughout");
        assert!(said.contains("every event on clefd/d/cam0/emotion (not_authorized) for 90 s"), "{said}");
        assert!(!said.contains("cam1"), "{said}");
        assert_eq!(
            w.summary_at(at).as_deref(),
            Some("the MQTT broker refuses every event on clefd/d/cam0/emotion (not_authorized)")
        );
        w.forget("clefd/d/cam0/emotion");
        assert_eq!(w.problem_at(0, at), None, "a removed camera is no longer named");
    }

    #[test]
    fn one_refusal_then_a_quiet_pause_is_not_stuck() {
        // One refused event, then no event at all (no faces overnight). Before the fix
        // the refusal kept delivery "stuck" until the next accepted event.
        let w = DeliveryWatch::default();
        w.set_stuck_after(Duration::from_secs(60));
        let t = Instant::now();
        assert!(w.refused_at("not_authorized", CAM, t));
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
        w.refused_at("not_authorized", CAM, t);
        w.pending(0);
        let later = t + Duration::from_secs(90);
        w.refused_at("not_authorized", CAM, later);
        let said = w.problem_at(0, later).expect("every event refused for 90 s is stuck");
        assert!(said.contains("refused every event"), "{said}");
        let night = later + Duration::from_secs(8 * 3600);
        assert!(w.problem_at(0, night).is_some(), "and stays stuck until an event is accepted");
        w.acked(Some(CAM));
        w.pending(0);
        assert_eq!(w.problem_at(0, night), None, "an accepted event is progress");
    }
}
