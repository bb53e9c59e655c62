//! Knowing whether frames move: what the watchdog and `/metrics` read while the pipeline
//! runs, without taking any lock the frame path holds for long.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::hub::FrameHub;
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
    /// as progress (the watchdog fires, `/healthz` fails) until clefd restarts.
    pub(super) broken: Arc<Mutex<Option<String>>>,
    /// Inference workers that ended without being told to (a panic outside the lanes,
    /// their sink or lanes gone); their cameras moved to a new worker.
    pub(super) worker_failures: Arc<AtomicU64>,
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
        Probe {
            workers: Arc::default(),
            current: Arc::default(),
            last: BTreeMap::new(),
            ended: Arc::default(),
            views: Default::default(),
            broken: Arc::default(),
            worker_failures: Arc::default(),
        }
    }

    /// Marks the pipeline broken: `what` was left inconsistent by a panic.
    pub(super) fn set_broken(&self, what: &str) {
        tracing::error!("a panic poisoned {what}: clefd reports no progress from now on, so that it is restarted");
        let mut b = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        b.get_or_insert_with(|| format!("a panic poisoned {what}; clefd must be restarted"));
    }

    /// Inference workers that ended abnormally so far (each replaced by a new one).
    pub fn worker_failures(&self) -> u64 {
        self.worker_failures.load(Ordering::Relaxed)
    }

    /// Why the pipeline cannot go on, if a panic broke it.
    pub fn broken(&self) -> Option<String> {
        self.broken.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops watching the worker of `hub` (it has ended or was replaced), keeping its
    /// frames in the total.
    pub(super) fn remove(&self, hub: &Arc<FrameHub<Frame>>) {
        let Ok(mut workers) = self.workers.lock() else { return };
        workers.retain(|e| {
            let gone = Arc::ptr_eq(&e.hub, hub);
            if gone {
                self.ended.fetch_add(e.done.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            !gone
        });
    }

    fn entries(&self) -> Vec<ProbeEntry> {
        match self.workers.lock() {
            Ok(w) => w.clone(),
            Err(p) => {
                self.set_broken("the list of inference workers");
                p.into_inner().clone()
            }
        }
    }

    /// Whether the frame path moved since the previous call.
    pub fn progressing(&mut self) -> bool {
        let entries = self.entries();
        let mut ok = self.broken().is_none();
        let mut last = BTreeMap::new();
        for e in &entries {
            let id = hub_id(&e.hub);
            let now = e.done.load(Ordering::Relaxed);
            ok &= now > self.last.get(&id).copied().unwrap_or(0) || e.hub.waiting() == 0;
            last.insert(id, now);
        }
        self.last = last;
        ok
    }

    /// Calls `f` with each worker's live statistics, under its lock and without copying
    /// them (a scrape reads histograms in place), and the cameras of the configuration now
    /// (their current slot) with their live drop counts.
    pub fn visit(&self, mut f: impl FnMut(&RunSummary, &[CameraView<'_>])) {
        let current = self.current.lock().map(|c| c.clone()).unwrap_or_default();
        for e in self.entries() {
            let s = match e.live.lock() {
                Ok(s) => s,
                Err(p) => {
                    self.set_broken("an inference worker's statistics");
                    p.into_inner()
                }
            };
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

    /// The cameras whose frames wait for inference right now: when the frame path does
    /// not move, the ones whose analysis has stopped.
    pub fn waiting_cameras(&self) -> Vec<String> {
        let current = self.current.lock().map(|c| c.clone()).unwrap_or_default();
        let mut names = Vec::new();
        for e in self.entries() {
            let id = hub_id(&e.hub);
            for slot in e.hub.waiting_slots() {
                names.extend(current.iter().filter(|(_, at)| **at == (id, slot)).map(|(name, _)| name.clone()));
            }
        }
        names
    }

    /// What the frame path holds per camera generation, all workers together: hub slots,
    /// trackers and per-camera statistics. Each is one per running camera; more would be
    /// state left behind by cameras that stopped (a leak `/metrics` makes visible).
    pub fn held(&self) -> [(&'static str, u64); 3] {
        let (mut slots, mut trackers, mut statistics) = (0, 0, 0);
        for e in self.entries() {
            slots += e.hub.slots() as u64;
            let s = e.live.lock().unwrap_or_else(|p| p.into_inner());
            trackers += s.trackers as u64;
            statistics += s.cameras.len() as u64;
        }
        [("hub_slots", slots), ("trackers", trackers), ("camera_statistics", statistics)]
    }

    /// Frames analysed so far, all workers together.
    pub fn frames(&self) -> u64 {
        // Under the lock `remove` takes, so a worker's frames are counted exactly once.
        let Ok(workers) = self.workers.lock() else { return self.ended.load(Ordering::Relaxed) };
        let live: u64 = workers.iter().map(|e| e.done.load(Ordering::Relaxed)).sum();
        live + self.ended.load(Ordering::Relaxed)
    }
}
