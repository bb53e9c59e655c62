//! Knowing whether frames move: what the watchdog and `/metrics` read while the pipeline
//! runs, without taking any lock the frame path holds for long.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::breaker::Breaker;
use super::hub::FrameHub;
use super::rates::{Count, Rates};
use super::{CameraSummary, RunSummary};
use crate::source::Frame;

/// Tells whether the frame path makes progress: every inference worker either analysed
/// frames since the last look or has nothing waiting. A worker stuck in inference with
/// frames piling up is not progressing (systemd's watchdog should then fire).
#[derive(Clone)]
pub struct Probe {
    pub(super) workers: Arc<Mutex<Vec<ProbeEntry>>>,
    /// Where each configured camera's frames go now: its worker's hub and slot. Slots of
    /// cameras a reload removed or restarted are left out of the summaries, so a camera's
    /// series appears once and a removed camera's not at all.
    pub(super) current: Arc<Mutex<BTreeMap<String, (usize, usize)>>>,
    /// Frames each worker (by hub) had analysed at the previous look.
    pub(super) last: BTreeMap<usize, u64>,
    /// Frames analysed by workers that have ended (so [`Probe::frames`] only grows).
    pub(super) ended: Arc<AtomicU64>,
    /// The live views of the cameras someone looks at.
    pub(super) views: super::view::Views,
    /// Set when a panic poisoned a lock the pipeline needs: from then on nothing counts
    /// as progress (the watchdog fires, `/healthz` fails) and the run ends non-zero.
    pub(super) broken: Breaker,
    /// Inference workers that ended without being told to (a panic outside the lanes,
    /// their sink or lanes gone); their cameras moved to a new worker.
    pub(super) worker_failures: Arc<AtomicU64>,
    /// Since when each worker (by hub) has not progressed, for the workers that have not
    /// at the last look: `/healthz` names only their cameras as stopped.
    pub(super) stalled: Arc<Mutex<BTreeMap<usize, Instant>>>,
    /// Each camera's analysed rate over whole health windows (updated at each look).
    pub(super) rates: Arc<Mutex<Rates>>,
}

/// How long a worker may go without analysing a frame while frames wait for it before
/// the frame path counts as stopped: longer than a slow batch on a loaded machine, and
/// judged per worker, so workers that move in turn (never all within one look) progress.
pub(super) const PROGRESS_GRACE: Duration = Duration::from_secs(5);

/// One worker as a look sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Look {
    /// Its hub's identity.
    pub worker: usize,
    /// Frames it has analysed so far.
    pub done: u64,
    /// Frames waiting for it.
    pub waiting: usize,
}

/// Judges one look at the workers against the previous one (`last`: frames each had
/// analysed; `stalled`: since when each that had not moved had not): since when each
/// worker has not moved now (it analysed nothing since `last` while frames wait), and
/// whether the frame path progresses (no worker has been stalled for longer than
/// [`PROGRESS_GRACE`]).
pub(super) fn judge(
    last: &BTreeMap<usize, u64>,
    stalled: &BTreeMap<usize, Instant>,
    looks: &[Look],
    now: Instant,
) -> (BTreeMap<usize, Instant>, bool) {
    let mut stalled_now = BTreeMap::new();
    for l in looks {
        let moved = l.done > last.get(&l.worker).copied().unwrap_or(0) || l.waiting == 0;
        if !moved {
            stalled_now.insert(l.worker, stalled.get(&l.worker).copied().unwrap_or(now));
        }
    }
    let moving = stalled_now.values().all(|since| now.saturating_duration_since(*since) <= PROGRESS_GRACE);
    (stalled_now, moving)
}

/// A hub's identity, for [`Probe`]'s map of current slots: a counter, never reused (a
/// freed hub's address could come back as another's).
pub(super) fn hub_id(hub: &Arc<FrameHub<Frame>>) -> usize {
    hub.id()
}

/// One camera's statistics as [`Probe::visit`] shows them.
pub struct CameraView<'a> {
    /// What its worker counted.
    pub summary: &'a CameraSummary,
    /// Frames dropped before inference (latest frame wins), live.
    pub dropped: u64,
}

#[derive(Clone)]
pub(super) struct ProbeEntry {
    pub(super) hub: Arc<FrameHub<Frame>>,
    pub(super) done: Arc<AtomicU64>,
    pub(super) live: Arc<Mutex<RunSummary>>,
}

impl Probe {
    /// A probe that sees no worker yet.
    pub(super) fn empty() -> Probe {
        let broken = Breaker::default();
        Probe {
            workers: Arc::default(),
            current: Arc::default(),
            last: BTreeMap::new(),
            ended: Arc::default(),
            views: super::view::Views::new(broken.clone()),
            broken,
            worker_failures: Arc::default(),
            stalled: Arc::default(),
            rates: Arc::default(),
        }
    }

    /// Takes a lock the pipeline's watchers share (the cameras' states, the workers'
    /// statistics…); a poisoned one marks the pipeline broken (what it guards may be
    /// half-updated: the run ends non-zero) and is used as it is, so a report still
    /// comes out.
    pub fn guard<'a, T>(&self, lock: &'a Mutex<T>, what: &str) -> MutexGuard<'a, T> {
        self.broken.guard(lock, what)
    }

    /// Marks the pipeline broken: `what` was left inconsistent by a panic.
    pub(super) fn set_broken(&self, what: &str) {
        self.broken.set(what);
    }

    /// Inference workers that ended abnormally so far (each replaced by a new one).
    pub fn worker_failures(&self) -> u64 {
        self.worker_failures.load(Ordering::Relaxed)
    }

    /// Why the pipeline cannot go on, if a panic broke it.
    pub fn broken(&self) -> Option<String> {
        self.broken.reason()
    }

    /// Stops watching the worker of `hub` (it has ended or was replaced), keeping its
    /// frames in the total.
    pub(super) fn remove(&self, hub: &Arc<FrameHub<Frame>>) {
        let mut workers = self.guard(&self.workers, "the list of inference workers");
        workers.retain(|e| {
            let gone = Arc::ptr_eq(&e.hub, hub);
            if gone {
                self.ended.fetch_add(e.done.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            !gone
        });
    }

    fn entries(&self) -> Vec<ProbeEntry> {
        self.guard(&self.workers, "the list of inference workers").clone()
    }

    /// The cameras of the configuration now, and their current slot.
    fn current(&self) -> BTreeMap<String, (usize, usize)> {
        self.guard(&self.current, "the map of the cameras' slots").clone()
    }

    /// Whether the frame path progresses: no worker has gone longer than
    /// [`PROGRESS_GRACE`] without analysing a frame while frames wait for it (see
    /// [`judge`]). Also notes which workers did not move since the previous call (see
    /// [`Probe::stopped_cameras`]) and each camera's analysed rate (see
    /// [`Probe::analysed_fps`]). For one caller (the watchdog monitor), at least every
    /// few seconds.
    pub fn progressing(&mut self) -> bool {
        let (entries, current, now) = (self.entries(), self.current(), Instant::now());
        let (mut seen, mut counts) = (Vec::new(), BTreeMap::new());
        for e in &entries {
            let id = hub_id(&e.hub);
            seen.push(Look { worker: id, done: e.done.load(Ordering::Relaxed), waiting: e.hub.waiting() });
            let s = self.guard(&e.live, "an inference worker's statistics");
            for c in s.cameras.iter().filter(|c| current.get(&c.name) == Some(&(id, c.slot))) {
                let received = e.hub.stats(c.slot).received;
                counts.insert(c.name.clone(), Count { at: (id, c.slot), analysed: c.frames, received });
            }
        }
        let stalled = self.guard(&self.stalled, "the workers' progress").clone();
        let (stalled_now, moving) = judge(&self.last, &stalled, &seen, now);
        self.last = seen.iter().map(|l| (l.worker, l.done)).collect();
        *self.guard(&self.stalled, "the workers' progress") = stalled_now;
        self.guard(&self.rates, "the cameras' analysed rates").look(now, counts);
        self.broken().is_none() && moving
    }

    /// The cameras whose worker has not progressed for at least `after` (frames wait and
    /// none is analysed), by name: the ones whose analysis has stopped, and only those.
    pub fn stopped_cameras(&self, after: Duration) -> Vec<String> {
        let stalled = self.guard(&self.stalled, "the workers' progress").clone();
        let stuck = |id: &usize| stalled.get(id).is_some_and(|since| since.elapsed() >= after);
        self.current().into_iter().filter(|(_, (id, _))| stuck(id)).map(|(name, _)| name).collect()
    }

    /// Each camera's analysed frames per second over its last whole health window
    /// (cameras without one yet are left out).
    pub fn analysed_fps(&self) -> BTreeMap<String, f64> {
        self.guard(&self.rates, "the cameras' analysed rates").fps()
    }

    /// Calls `f` with each worker's live statistics, under its lock and without copying
    /// them (a scrape reads histograms in place), and the cameras of the configuration now
    /// (their current slot) with their live drop counts.
    pub fn visit(&self, mut f: impl FnMut(&RunSummary, &[CameraView<'_>])) {
        let current = self.current();
        for e in self.entries() {
            let s = self.guard(&e.live, "an inference worker's statistics");
            let id = hub_id(&e.hub);
            let cameras: Vec<CameraView<'_>> = (s.cameras.iter())
                .filter(|c| current.get(&c.name) == Some(&(id, c.slot)))
                .map(|c| CameraView { summary: c, dropped: e.hub.stats(c.slot).dropped })
                .collect();
            f(&s, &cameras);
        }
    }

    /// A copy of every worker's statistics so far (see [`Probe::visit`]), drop counts
    /// filled in: for reports, not for every scrape.
    pub fn summaries(&self) -> Vec<RunSummary> {
        let mut out = Vec::new();
        self.visit(|s, cameras| {
            let cameras: Vec<CameraSummary> =
                cameras.iter().map(|c| CameraSummary { dropped: c.dropped, ..c.summary.clone() }).collect();
            let dropped = cameras.iter().map(|c| c.dropped).sum();
            out.push(RunSummary { cameras, dropped, ..s.clone_without_cameras() });
        });
        out
    }

    /// The live views: who looks at which camera, and the last frame each was shown.
    pub fn views(&self) -> &super::view::Views {
        &self.views
    }

    /// What the frame path holds per camera generation, all workers together: hub slots,
    /// trackers and per-camera statistics. Each is one per running camera; more would be
    /// state left behind by cameras that stopped (a leak `/metrics` makes visible).
    pub fn held(&self) -> [(&'static str, u64); 3] {
        let (mut slots, mut trackers, mut statistics) = (0, 0, 0);
        for e in self.entries() {
            slots += e.hub.slots() as u64;
            let s = self.guard(&e.live, "an inference worker's statistics");
            trackers += s.trackers as u64;
            statistics += s.cameras.len() as u64;
        }
        [("hub_slots", slots), ("trackers", trackers), ("camera_statistics", statistics)]
    }

    /// Frames analysed so far, all workers together.
    pub fn frames(&self) -> u64 {
        // Under the lock `remove` takes, so a worker's frames are counted exactly once.
        let workers = self.guard(&self.workers, "the list of inference workers");
        let live: u64 = workers.iter().map(|e| e.done.load(Ordering::Relaxed)).sum();
        live + self.ended.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two workers, each taking 1.5 s per batch with frames always waiting, offset by
    /// 0.5 s: they never both move within one 500 ms look, yet both progress.
    #[test]
    fn workers_moving_in_turn_progress() {
        let t0 = Instant::now();
        let (mut last, mut stalled) = (BTreeMap::new(), BTreeMap::new());
        let done = |worker: u64, tick: u64| (tick + worker) / 3;
        for tick in 0..100u64 {
            let looks: Vec<Look> =
                (0..2).map(|w| Look { worker: w as usize, done: done(w, tick), waiting: 1 }).collect();
            let both_moved = looks.iter().all(|l| l.done > last.get(&l.worker).copied().unwrap_or(0));
            assert!(tick < 3 || !both_moved, "the workers are meant to move in turn (tick {tick})");
            let (now_stalled, moving) = judge(&last, &stalled, &looks, t0 + Duration::from_millis(500 * tick));
            assert!(moving, "tick {tick}: two slow workers moving in turn are progressing");
            (last, stalled) = (looks.iter().map(|l| (l.worker, l.done)).collect(), now_stalled);
        }
    }

    /// A worker that takes no frame while frames wait stops the frame path once the grace
    /// has passed (whatever the other worker does), and is the one noted as stalled.
    #[test]
    fn a_worker_stuck_with_frames_waiting_stops_progress_after_the_grace() {
        let t0 = Instant::now();
        let (mut last, mut stalled) = (BTreeMap::new(), BTreeMap::new());
        let mut first_stop = None;
        for tick in 1..40u64 {
            let looks = [Look { worker: 0, done: tick, waiting: 1 }, Look { worker: 1, done: 7, waiting: 3 }];
            let now = t0 + Duration::from_millis(500 * tick);
            let (now_stalled, moving) = judge(&last, &stalled, &looks, now);
            if tick > 1 {
                assert_eq!(now_stalled.keys().copied().collect::<Vec<_>>(), vec![1], "tick {tick}");
            }
            if !moving && first_stop.is_none() {
                first_stop = Some(tick);
            }
            (last, stalled) = (looks.iter().map(|l| (l.worker, l.done)).collect(), now_stalled);
        }
        // Stalled from tick 2 (1 s); the grace (5 s) has passed after tick 12.
        assert_eq!(first_stop, Some(13));
        // Nothing waiting is no stall.
        let idle = [Look { worker: 1, done: 7, waiting: 0 }];
        assert!(judge(&last, &stalled, &idle, t0 + Duration::from_secs(60)).1);
    }
}
