//! How long one event may be refused for a reason that may clear (a quota, "unspecified
//! error", "implementation specific error") before the publisher gives up on it. Such an
//! event stays in the spool and is sent again after a reconnect, first of everything
//! unacknowledged; a broker that refuses that one event every time (a payload its plug-in
//! rejects, a per-topic quota that never resets) would otherwise hold back every event
//! behind it until the spool overflowed. Past [`MAX_REFUSALS`] refusals in a row, or
//! [`MIN_REFUSALS_SPANNING`] or more spanning `mqtt.delivery_stuck_s`, the event is
//! dropped like one refused for good: counted by reason, logged. The time alone is not
//! enough: it includes any outage between two refusals (a link that drops for a minute
//! between a quota refusal and the next try is no refusal that lasts).

use std::time::{Duration, Instant};

/// Refusals in a row (each after a reconnect with backoff) after which an event is
/// dropped: at the default backoff (250 ms doubling, capped at `mqtt.reconnect_max_s`)
/// ten sends take over a minute, longer than `mqtt.delivery_stuck_s`'s default.
pub const MAX_REFUSALS: u32 = 10;

/// Refusals in a row that, once they span `mqtt.delivery_stuck_s`, give an event up
/// before [`MAX_REFUSALS`]: two can straddle an outage, three hardly.
pub const MIN_REFUSALS_SPANNING: u32 = 3;

/// The event refused last, and how often and since when in a row.
#[derive(Debug, Default)]
pub(super) struct Streak {
    current: Option<(u64, u32, Instant)>,
}

/// What to do with an event the broker just refused for a reason that may clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Keep it and send it again after a reconnect.
    Retry,
    /// Drop it: refused `times` in a row, over `over`.
    GiveUp {
        /// Refusals in a row, this one included.
        times: u32,
        /// From the first of them to this one.
        over: Duration,
    },
}

impl Streak {
    /// Event `seq` was refused at `now`: another in its streak (a refusal of another event
    /// starts a new one). It is given up after [`MAX_REFUSALS`] in a row, or once
    /// [`MIN_REFUSALS_SPANNING`] or more of its refusals span `stuck_after`.
    pub(super) fn refused(&mut self, seq: u64, now: Instant, stuck_after: Duration) -> Verdict {
        let (times, since) = match self.current {
            Some((s, times, since)) if s == seq => (times + 1, since),
            _ => (1, now),
        };
        let over = now.saturating_duration_since(since);
        if times >= MAX_REFUSALS || (times >= MIN_REFUSALS_SPANNING && over >= stuck_after) {
            self.current = None;
            return Verdict::GiveUp { times, over };
        }
        self.current = Some((seq, times, since));
        Verdict::Retry
    }

    /// Event `seq` was accepted: its streak, if it had one, is over.
    pub(super) fn accepted(&mut self, seq: u64) {
        if self.current.is_some_and(|(s, _, _)| s == seq) {
            self.current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_same_event_refused_max_refusals_times_in_a_row_is_given_up() {
        let mut s = Streak::default();
        let t = Instant::now();
        for i in 1..MAX_REFUSALS {
            assert_eq!(s.refused(7, t, HOUR), Verdict::Retry, "refusal {i} keeps it");
        }
        assert_eq!(s.refused(7, t, HOUR), Verdict::GiveUp { times: MAX_REFUSALS, over: Duration::ZERO });
        assert_eq!(s.refused(7, t, HOUR), Verdict::Retry, "given up: a later refusal starts afresh");
    }

    #[test]
    fn refusals_spanning_stuck_after_give_up_sooner() {
        let mut s = Streak::default();
        let t = Instant::now();
        let minute = Duration::from_secs(60);
        assert_eq!(s.refused(3, t, minute), Verdict::Retry);
        assert_eq!(s.refused(3, t + Duration::from_secs(59), minute), Verdict::Retry);
        assert_eq!(s.refused(3, t + minute, minute), Verdict::GiveUp { times: 3, over: minute });
    }

    #[test]
    fn two_refusals_around_an_outage_are_not_a_lasting_refusal() {
        // Refused once by a quota, then the link drops for longer than stuck_after, then
        // refused once more on reconnect. Before the fix that gave the event up after 2.
        let mut s = Streak::default();
        let t = Instant::now();
        let minute = Duration::from_secs(60);
        assert_eq!(s.refused(9, t, minute), Verdict::Retry);
        assert_eq!(s.refused(9, t + 3 * minute, minute), Verdict::Retry, "the outage is no refusal time");
        let third = s.refused(9, t + 3 * minute + Duration::from_secs(1), minute);
        assert_eq!(third, Verdict::GiveUp { times: 3, over: 3 * minute + Duration::from_secs(1) });
    }

    #[test]
    fn an_acceptance_or_another_event_breaks_the_streak() {
        let mut s = Streak::default();
        let t = Instant::now();
        for _ in 1..MAX_REFUSALS {
            s.refused(1, t, HOUR);
        }
        s.accepted(2);
        assert!(matches!(s.refused(1, t, HOUR), Verdict::GiveUp { .. }), "another event's acceptance is no break");
        for _ in 1..MAX_REFUSALS {
            s.refused(1, t, HOUR);
        }
        s.accepted(1);
        assert_eq!(s.refused(1, t, HOUR), Verdict::Retry, "accepted once: the streak starts over");
        for _ in 1..MAX_REFUSALS {
            s.refused(4, t, HOUR);
        }
        assert_eq!(s.refused(5, t, HOUR), Verdict::Retry, "another event refused: a new streak");
        assert_eq!(s.refused(4, t + HOUR / 2, HOUR), Verdict::Retry, "and the old one starts over");
    }
}
