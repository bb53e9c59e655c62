//! How fast each camera is analysed, judged as health judges a camera's delivered rate:
//! over whole windows of [`HEALTH_WINDOW`] while frames arrive. A camera can deliver its
//! 12 fps while inference takes only 4 of them (latest frame wins drops the rest): the
//! delivered rate alone would call that healthy. A camera counts as slow only after two
//! consecutive slow windows: one slow window (a model warming up, a load spike) is no
//! verdict.

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
    /// The rates over the last two whole windows (the latest first), as they pass.
    fps: [Option<f64>; 2],
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
            let fresh = || Window { at: c.at, start: (now, c.analysed), received: (c.received, now), fps: [None; 2] };
            let w = self.windows.entry(name).or_insert_with(fresh);
            if w.at != c.at {
                *w = fresh();
                continue;
            }
            if c.received > w.received.0 {
                w.received = (c.received, now);
            }
            if now.duration_since(w.received.1) > FED_GAP {
                (w.start, w.fps) = ((now, c.analysed), [None; 2]);
                continue;
            }
            let secs = now.duration_since(w.start.0);
            if secs >= HEALTH_WINDOW {
                let fps = c.analysed.saturating_sub(w.start.1) as f64 / secs.as_secs_f64();
                w.fps = [Some(fps), w.fps[0]];
                w.start = (now, c.analysed);
            }
        }
    }

    /// Each camera's analysed rate over its last two consecutive whole windows, the better
    /// of the two (so a camera is slow only when both were), for those with two.
    pub(super) fn fps(&self) -> BTreeMap<String, f64> {
        let both = |w: &Window| Some(w.fps[0]?.max(w.fps[1]?));
        self.windows.iter().filter_map(|(n, w)| both(w).map(|f| (n.clone(), f))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One slow window (a warm-up) between good ones is no verdict; two slow ones are.
    #[test]
    fn one_slow_window_is_no_verdict_two_are() {
        let (t0, mut rates) = (Instant::now(), Rates::default());
        let tick = |s: u64| t0 + Duration::from_millis(500 * s);
        // 10 fps arrive throughout; analysed at 10 fps, then 1 fps for one window (ticks
        // 20-40), then 10 fps again, then 1 fps for two windows (ticks 60-100).
        let rate = |s: u64| if (20..40).contains(&s) || s >= 60 { 1 } else { 10 };
        let mut analysed = 0;
        for s in 0..=100u64 {
            rates.look(tick(s), count((1, 0), analysed, 5 * s));
            let fps = rates.fps().get("a").copied();
            match s {
                40 | 60 => assert_eq!(fps, Some(10.0), "tick {s}: the better window counts"),
                80 => assert_eq!(fps, Some(10.0), "tick {s}: one slow window is no verdict"),
                100 => assert_eq!(fps, Some(1.0), "tick {s}: two slow windows are"),
                _ => {}
            }
            // Frames analysed in this 500 ms tick.
            analysed += if rate(s) == 10 { 5 } else { u64::from(s % 2 == 0) };
        }
    }

    fn count(at: (usize, usize), analysed: u64, received: u64) -> BTreeMap<String, Count> {
        [("a".to_string(), Count { at, analysed, received })].into_iter().collect()
    }

    #[test]
    fn two_whole_windows_of_frames_give_the_analysed_rate() {
        let (t0, mut rates) = (Instant::now(), Rates::default());
        let tick = |s: u64| t0 + Duration::from_millis(500 * s);
        // 12 frames a second arrive, 4 are analysed: 20 ticks of 500 ms make a window,
        // and two windows make a verdict.
        for s in 0..=40 {
            rates.look(tick(s), count((1, 0), 2 * s, 6 * s));
            assert_eq!(rates.fps().contains_key("a"), s == 40, "tick {s}: {:?}", rates.fps());
        }
        assert_eq!(rates.fps().get("a").copied(), Some(4.0));
        // A new generation (slot) starts a new window: no evidence yet.
        rates.look(tick(41), count((1, 1), 0, 0));
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
        assert_eq!(rates.fps().get("a"), None, "one window since the gap is no verdict");
        rates.look(tick(52), count((1, 0), 52, 52));
        assert!(rates.fps().get("a").is_some_and(|f| *f > 1.9), "{:?}", rates.fps());
        // A camera that left the configuration is forgotten.
        rates.look(tick(53), BTreeMap::new());
        assert!(rates.fps().is_empty());
    }
}
