//! The publisher's side of the disk: events are numbered and appended to the spool in
//! groups (one fsync each), and a disk that refuses them is reported, counted and
//! retried, never the end of the daemon.

use std::sync::atomic::Ordering;

use super::{MAX_EVENT_BYTES, Publisher};
use crate::mqtt::spool::Record;

impl Publisher {
    /// Numbers a group of events, makes the numbers durable, and spools the events. Disk
    /// errors never end the publisher: the events they hit are counted as failed,
    /// `/healthz` says why, and the next group tries again.
    pub(super) fn spool_events(&mut self, mut events: Vec<crate::events::EmotionEvent>) {
        if events.is_empty() {
            return;
        }
        for event in &mut events {
            event.seq = self.seq.reserve();
        }
        if let Err(e) = self.seq.persist() {
            self.disk_trouble(format!("cannot persist the event sequence number: {e}"), events.len() as u64);
            // Counted here: noted, so that the next start does not count them again
            // (a later group's sequence file may cover these numbers).
            if let (Some(first), Some(last)) = (events.first(), events.last()) {
                self.spool.unspooled(first.seq..last.seq + 1);
            }
            return;
        }
        let mut failed = 0;
        let mut last_error = None;
        let mut to_history = crate::history::Pending::default();
        for event in events {
            let payload = match serde_json::to_vec(&event) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(camera = %event.camera, seq = event.seq, error = %e, "cannot encode an event");
                    self.spool.unspooled(event.seq..event.seq + 1);
                    failed += 1;
                    continue;
                }
            };
            let rec = Record { seq: event.seq, topic: self.topics.emotion(&event.camera), payload };
            if rec.topic.len() + rec.payload.len() > MAX_EVENT_BYTES {
                tracing::error!(camera = %event.camera, seq = event.seq, bytes = rec.payload.len(), "an event too large to send was dropped");
                self.spool.unspooled(event.seq..event.seq + 1);
                failed += 1;
                continue;
            }
            match self.spool.append(&rec) {
                Ok(dropped) => {
                    to_history.add(&event, &rec.payload);
                    tracing::info!(
                        camera = %event.camera, track = event.track_id, seq = event.seq,
                        "{:<6} {:<10} {:.2} (debias {})",
                        event.kind.as_str(), event.emotion, event.confidence,
                        if event.debiased.is_some() { "on" } else { "off" }
                    );
                    if dropped > 0 {
                        self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
                        tracing::warn!(
                            dropped,
                            total_dropped = self.spool.dropped(),
                            "spool full: dropped the oldest events"
                        );
                    }
                }
                Err(e) => {
                    failed += 1;
                    last_error = Some(e);
                }
            }
        }
        // Events whose fsync failed were rolled back: they are lost like those the
        // disk refused, and never sent. The rest of the group stays spooled and is sent
        // (a commit file that could not be written costs re-sends, not events): the
        // history keeps those.
        let synced = self.spool.sync();
        match &synced {
            Ok(()) => to_history.hand_over(),
            Err(e) => {
                failed += e.lost;
                to_history.hand_over_except(&e.rolled_back);
            }
        }
        match (last_error, synced) {
            (Some(e), _) => self.disk_trouble(format!("cannot write to the event spool: {e}"), failed),
            (None, Err(e)) => self.disk_trouble(format!("cannot flush the event spool to disk: {e}"), failed),
            (None, Ok(())) if failed == 0 => self.disk_fine(),
            (None, Ok(())) => {
                self.stats.failed.fetch_add(failed, Ordering::Relaxed);
            }
        }
    }

    /// Counts `lost` events and records why, logging once per new reason.
    pub(super) fn disk_trouble(&self, reason: String, lost: u64) {
        let total = self.stats.failed.fetch_add(lost, Ordering::Relaxed) + lost;
        let Ok(mut problem) = self.stats.problem.lock() else { return };
        if problem.as_deref() != Some(reason.as_str()) {
            tracing::error!(lost, total_lost = total, spool = %self.spool_dir(), "{reason}; events are lost until the disk accepts writes again (analysis goes on)");
            *problem = Some(reason);
        }
    }

    /// Clears a recorded disk problem once a write went through.
    pub(super) fn disk_fine(&self) {
        if let Ok(mut problem) = self.stats.problem.lock() {
            if problem.take().is_some() {
                tracing::info!(
                    lost = self.stats.failed.load(Ordering::Relaxed),
                    "the event spool accepts writes again"
                );
            }
        }
    }

    /// Carries damage the spool met while reading into the counters.
    pub(super) fn note_spool_damage(&mut self) {
        self.stats.corrupt.store(self.spool.corrupt(), Ordering::Relaxed);
        let lost = self.spool.lost();
        if lost > self.lost_seen {
            self.stats.failed.fetch_add(lost - self.lost_seen, Ordering::Relaxed);
            self.lost_seen = lost;
        }
    }

    pub(super) fn spool_dir(&self) -> String {
        self.spool.dir().display().to_string()
    }
}
