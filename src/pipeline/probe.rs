//! Knowing whether frames move: what the watchdog and `/metrics` read while the pipeline
//! runs, without taking any lock the frame path holds for long.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::RunSummary;
use super::hub::FrameHub;
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
}

/// A hub's identity, for [`Probe`]'s map of current slots.
pub(super) fn hub_id(hub: &Arc<FrameHub<Frame>>) -> usize {
    Arc::as_ptr(hub) as usize
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
        Probe { workers: Arc::default(), current: Arc::default(), last: Vec::new() }
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

    /// A snapshot of every worker's statistics so far, with live drop counts: one entry
    /// per camera in the configuration now (its current slot).
    pub fn summaries(&self) -> Vec<RunSummary> {
        let current = self.current.lock().map(|c| c.clone()).unwrap_or_default();
        self.entries()
            .iter()
            .map(|e| {
                let mut s = e.live.lock().map(|s| s.clone()).unwrap_or_default();
                for (i, cam) in s.cameras.iter_mut().enumerate() {
                    cam.dropped = e.hub.stats(i).dropped;
                }
                s.dropped = s.cameras.iter().map(|c| c.dropped).sum();
                let id = hub_id(&e.hub);
                let mut slot = 0;
                s.cameras.retain(|c| {
                    slot += 1;
                    current.get(&c.name) == Some(&(id, slot - 1))
                });
                s
            })
            .collect()
    }

    /// Frames analysed so far, all workers together.
    pub fn frames(&self) -> u64 {
        self.entries().iter().map(|e| e.done.load(Ordering::Relaxed)).sum()
    }
}
