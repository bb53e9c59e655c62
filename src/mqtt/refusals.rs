//! Which topics the broker refuses, one by one. An MQTT 5 broker can take an event and
//! refuse it (a PUBACK with a reason code): its ACL may deny one camera's topic and allow
//! the others, so "some event got through" says nothing about the camera whose every
//! event is refused. Each topic keeps its own clock: since its first refusal after its
//! last accepted event. A topic refused with none accepted for `stuck_after` is stuck and
//! named, while other topics' deliveries go on. At most [`MAX_TOPICS`] topics are kept
//! (cameras are bounded by the configuration; a removed camera's topic is forgotten).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Most topics remembered; past it the one refused longest ago is forgotten.
pub const MAX_TOPICS: usize = 1024;

/// The refusals of one topic.
#[derive(Debug)]
struct Topic {
    /// Since the first refusal after its last accepted event; `None` once one got through.
    since: Option<Instant>,
    /// The last refusal: when, and the reason (a metric label).
    last: (Instant, &'static str),
    /// Reasons logged since its refusals last paused for `stuck_after`.
    logged: BTreeSet<&'static str>,
}

impl Topic {
    /// How long the broker has refused every event on this topic, at `now`: counted while
    /// refusals go on (the last is younger than `stuck_after`) or once they have spanned
    /// `stuck_after` with none accepted (a quiet camera whose every event is refused);
    /// `None` after a lone refusal and a pause, or once an event got through.
    fn refusing_for(&self, now: Instant, stuck_after: Duration) -> Option<Duration> {
        let since = self.since?;
        let at = self.last.0;
        let going_on = now.saturating_duration_since(at) < stuck_after;
        let spanned = at.saturating_duration_since(since) >= stuck_after;
        (going_on || spanned).then(|| now.saturating_duration_since(since))
    }
}

/// Refusals by topic, with a clock each.
#[derive(Debug, Default)]
pub struct Refusals {
    topics: BTreeMap<String, Topic>,
}

/// A topic the broker has refused every event on for too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The topic (it names the camera).
    pub topic: String,
    /// The last reason, a metric label.
    pub reason: &'static str,
    /// For how long.
    pub refusing: Duration,
}

impl Refusals {
    /// The broker refused an event on `topic` for `reason` at `now`. True when that reason
    /// was not logged for the topic since its refusals last paused for `stuck_after` (so
    /// the caller logs it: once, not once per event).
    pub fn refused(&mut self, topic: &str, reason: &'static str, now: Instant, stuck_after: Duration) -> bool {
        if !self.topics.contains_key(topic) && self.topics.len() >= MAX_TOPICS {
            let oldest = self.topics.iter().min_by_key(|(_, t)| t.last.0).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.topics.remove(&oldest);
            }
        }
        let t = self.topics.entry(topic.to_string()).or_insert_with(|| Topic {
            since: None,
            last: (now, reason),
            logged: BTreeSet::new(),
        });
        if now.saturating_duration_since(t.last.0) >= stuck_after {
            // After a pause this long a refusal is news again (logged afresh); the clock
            // still runs from the first refusal since an event was last accepted.
            t.logged.clear();
        }
        t.since.get_or_insert(now);
        t.last = (now, reason);
        t.logged.insert(reason)
    }

    /// The broker accepted an event on `topic`: its clock stops (what was logged stays
    /// logged until a pause, so a topic whose events alternate is not logged each time).
    pub fn accepted(&mut self, topic: &str) {
        if let Some(t) = self.topics.get_mut(topic) {
            t.since = None;
        }
    }

    /// Forgets `topic` (its camera left the configuration).
    pub fn forget(&mut self, topic: &str) {
        self.topics.remove(topic);
    }

    /// The longest any topic has had every event refused, at `now` (`None`: none has).
    pub fn longest(&self, now: Instant, stuck_after: Duration) -> Option<Duration> {
        self.topics.values().filter_map(|t| t.refusing_for(now, stuck_after)).max()
    }

    /// The topics refused with none accepted for `stuck_after` or longer, at `now`, in
    /// topic order.
    pub fn stuck(&self, now: Instant, stuck_after: Duration) -> Vec<Stuck> {
        self.topics
            .iter()
            .filter_map(|(topic, t)| {
                let refusing = t.refusing_for(now, stuck_after).filter(|d| *d >= stuck_after)?;
                Some(Stuck { topic: topic.clone(), reason: t.last.1, refusing })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_topic_refused_throughout_is_stuck_while_another_is_accepted() {
        // Before the fix one clock served every topic: cam1's accepted events reset it,
        // and cam0, whose every event was refused, was never named.
        let mut r = Refusals::default();
        let t = Instant::now();
        let s = |secs: u64| t + Duration::from_secs(secs);
        for i in 0..=70 {
            r.refused("c/d/cam0/emotion", "not_authorized", s(i), MINUTE);
            r.accepted("c/d/cam1/emotion");
        }
        let stuck = r.stuck(s(70), MINUTE);
        assert_eq!(
            stuck,
            [Stuck { topic: "c/d/cam0/emotion".into(), reason: "not_authorized", refusing: Duration::from_secs(70) }]
        );
        r.accepted("c/d/cam0/emotion");
        assert_eq!(r.stuck(s(70), MINUTE), [], "an accepted event is progress for its topic");
        assert_eq!(r.longest(s(70), MINUTE), None);
    }

    #[test]
    fn each_topic_logs_each_reason_once_while_its_refusals_go_on() {
        let mut r = Refusals::default();
        let t = Instant::now();
        let s = |secs: u64| t + Duration::from_secs(secs);
        assert!(r.refused("a", "not_authorized", s(0), MINUTE));
        assert!(!r.refused("a", "not_authorized", s(30), MINUTE));
        r.accepted("a");
        assert!(!r.refused("a", "not_authorized", s(40), MINUTE), "alternating with acceptances: not news");
        assert!(r.refused("b", "not_authorized", s(40), MINUTE), "another camera's topic is");
        assert!(r.refused("a", "not_authorized", s(100), MINUTE), "after a pause of stuck_after it is news again");
    }

    #[test]
    fn a_lone_refusal_then_a_pause_is_not_stuck_and_a_removed_camera_is_forgotten() {
        let mut r = Refusals::default();
        let t = Instant::now();
        r.refused("a", "quota_exceeded", t, MINUTE);
        assert_eq!(r.longest(t + 8 * 60 * MINUTE, MINUTE), None, "one refusal and a quiet night");
        r.refused("b", "not_authorized", t, MINUTE);
        r.refused("b", "not_authorized", t + 2 * MINUTE, MINUTE);
        assert_eq!(r.stuck(t + 60 * MINUTE, MINUTE).len(), 1, "refusals that spanned stuck_after stay stuck");
        r.forget("b");
        assert_eq!(r.stuck(t + 60 * MINUTE, MINUTE), []);
    }

    #[test]
    fn the_topics_kept_are_bounded() {
        let mut r = Refusals::default();
        let t = Instant::now();
        for i in 0..MAX_TOPICS + 10 {
            r.refused(&format!("t{i}"), "not_authorized", t + Duration::from_millis(i as u64), MINUTE);
        }
        assert_eq!(r.topics.len(), MAX_TOPICS);
        assert!(!r.topics.contains_key("t0"), "the one refused longest ago went");
        assert!(r.topics.contains_key(&format!("t{}", MAX_TOPICS + 9)));
    }
}
