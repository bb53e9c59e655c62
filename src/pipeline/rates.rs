//! How fast each camera is analysed, judged as health judges a camera's delivered rate:
//! over whole windows of [`HEALTH_WINDOW`] while frames arrive. A camera can deliver its
//! 12 fps while inference takes only 4 of them (latest frame wins drops the rest): the
//! delivered rate alone would call that healthy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::source::HEALTH_WINDOW;

/// A window restarts when no frame arrived for this long (the source paused, reconnects
/// or stalled): time without frames is no evidence against inference.
const FED_GAP: Duration = Duration::from_secs(2);

/// One camera generation's window.
#[derive(Debug, Clone)]
struct Window {
    /// Which generation: its hub and slot.
    at: (usize, usize),
    /// When the window began, and frames analysed then.
    start: (Instant, u64),
    /// Frames handed in so far, and when that last grew.
    received: (u64, Instant),
    /// The rate over the last whole window, if one has passed.
    fps: Option<f64>,
}

/// Analysed rates of the cameras now configured, one window each (bounded by the cameras).
#[derive(Debug, Default)]
pub(super) struct Rates {
    windows: BTreeMap<String, Window>,
}

/// What a camera generation counted at one look.
pub(super) struct Count {
    /// Its hub and slot.
    pub at: (usize, usize),
    /// Frames analysed.
    pub analysed: u64,
    /// Frames handed in to its hub.
    pub received: u64,
}

impl Rates {
    /// Takes one look at every camera now configured (`counts`, by name); cameras not in it
    /// are forgotten.
    pub(super) fn look(&mut self, now: Instant, counts: BTreeMap<String, Count>) {
        self.windows.retain(|name, _| counts.contains_key(name));
        for (name, c) in counts {
            let fresh = || Window { at: c.at, start: (now, c.analysed), received: (c.received, now), fps: None };
            let w = self.windows.entry(name).or_insert_with(fresh);
            if w.at != c.at {
                *w = fresh();
                continue;
            }
            if c.received > w.received.0 {
                w.received = (c.received, now);
            }
            if now.duration_since(w.received.1) > FED_GAP {
                (w.start, w.fps) = ((now, c.analysed), None);
                continue;
            }
            let secs = now.duration_since(w.start.0);
            if secs >= HEALTH_WINDOW {
                w.fps = Some(c.analysed.saturating_sub(w.start.1) as f64 / secs.as_secs_f64());
                w.start = (now, c.analysed);
            }
        }
    }

    /// Each camera's analysed rate over its last whole window (those with one).
    pub(super) fn fps(&self) -> BTreeMap<String, f64> {
        self.windows.iter().filter_map(|(n, w)| w.fps.map(|f| (n.clone(), f))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(at: (usize, usize), analysed: u64, received: u64) -> BTreeMap<String, Count> {
        [("a".to_string(), Count { at, analysed, received })].into_iter().collect()
    }

    #[test]
    fn a_whole_window_of_frames_gives_the_analysed_rate() {
        let (t0, mut rates) = (Instant::now(), Rates::default());
        let tick = |s: u64| t0 + Duration::from_millis(500 * s);
        // 12 frames a second arrive, 4 are analysed: 20 ticks of 500 ms make the window.
        for s in 0..=20 {
            rates.look(tick(s), count((1, 0), 2 * s, 6 * s));
            assert_eq!(rates.fps().contains_key("a"), s == 20, "tick {s}: {:?}", rates.fps());
        }
        assert_eq!(rates.fps().get("a").copied(), Some(4.0));
        // A new generation (slot) starts a new window: no evidence yet.
        rates.look(tick(21), count((1, 1), 0, 0));
        assert_eq!(rates.fps().get("a"), None);
    }

    #[test]
    fn time_without_frames_arriving_is_no_evidence() {
        let (t0, mut rates) = (Instant::now(), Rates::default());
        let tick = |s: u64| t0 + Duration::from_millis(500 * s);
        // Frames stop arriving at tick 4 (a reconnect) and come back at tick 12.
        for s in 0..=24 {
            let received = if s < 4 {
                s
            } else if s < 12 {
                4
            } else {
                s
            };
            rates.look(tick(s), count((1, 0), received, received));
            assert_eq!(rates.fps().get("a"), None, "tick {s}: the gap restarted the window");
        }
        rates.look(tick(32), count((1, 0), 32, 32));
        assert!(rates.fps().get("a").is_some_and(|f| *f > 1.9), "{:?}", rates.fps());
        // A camera that left the configuration is forgotten.
        rates.look(tick(33), BTreeMap::new());
        assert!(rates.fps().is_empty());
    }
}
