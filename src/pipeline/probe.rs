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
    pub(super) last: Vec<u64>,
    /// The live views of the cameras someone looks at.
    pub(super) views: super::view::Views,
}

/// A hub's identity, for [`Probe`]'s map of current slots.
pub(super) fn hub_id(hub: &Arc<FrameHub<Frame>>) -> usize {
    Arc::as_ptr(hub) as usize
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
        Probe { workers: Arc::default(), current: Arc::default(), last: Vec::new(), views: Default::default() }
    }

    fn entries(&self) -> Vec<ProbeEntry> {
        self.workers.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Whether the frame path moved since the previous call.
    pub fn progressing(&mut self) -> bool {
        let entries = self.entries();
        self.last.resize(entries.len(), 0);
        let mut ok = true;
        for (e, last) in entries.iter().zip(self.last.iter_mut()) {
            let now = e.done.load(Ordering::Relaxed);
            ok &= now > *last || e.hub.waiting() == 0;
            *last = now;
        }
        ok
    }

    /// Calls `f` with each worker's live statistics, under its lock and without copying
    /// them (a scrape reads histograms in place), and the cameras of the configuration now
    /// (their current slot) with their live drop counts.
    pub fn visit(&self, mut f: impl FnMut(&RunSummary, &[CameraView<'_>])) {
        let current = self.current.lock().map(|c| c.clone()).unwrap_or_default();
        for e in self.entries() {
            let Ok(s) = e.live.lock() else { continue };
            let id = hub_id(&e.hub);
            let cameras: Vec<CameraView<'_>> = (s.cameras.iter().enumerate())
                .filter(|(i, c)| current.get(&c.name) == Some(&(id, *i)))
                .map(|(i, c)| CameraView { summary: c, dropped: e.hub.stats(i).dropped })
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

    /// Frames analysed so far, all workers together.
    pub fn frames(&self) -> u64 {
        self.entries().iter().map(|e| e.done.load(Ordering::Relaxed)).sum()
    }
}
