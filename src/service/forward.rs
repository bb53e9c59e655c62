//! Where the pipeline's output goes in the daemon: straight to the publisher's channel,
//! noting on the way what the health endpoints, the `current` summaries and systemd's
//! `STATUS=` line need. It runs on the thread that emits (an inference worker or a camera's
//! supervisor), so an event crosses one channel between analysis and the MQTT session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::http::Seen;
use super::notify::Notifier;
use super::snapshots::SnapshotPlaces;
use crate::events::current::CurrentView;
use crate::mqtt::{Outgoing, PublishStats};
use crate::pipeline::{EventSink, Output};
use crate::source::CameraState;

/// The daemon's [`EventSink`]; cloned once per worker and camera.
#[derive(Clone)]
pub struct Forward {
    to: mpsc::Sender<Outgoing>,
    seen: Seen,
    notifier: Arc<Notifier>,
    current: Arc<Mutex<CurrentView>>,
    /// Cameras configured at start, for the status line until they report.
    cameras: usize,
    events: Arc<AtomicU64>,
    /// Where snapshots go, when they are on.
    snapshots: Option<Arc<SnapshotPlaces>>,
    /// The publisher's counters: why events cannot be kept or are not delivered, for the
    /// status line.
    delivery: Option<Arc<PublishStats>>,
    /// What the status line last told systemd about the disk and delivery. Held while a
    /// line is made and sent, so that two threads never send theirs out of order (the
    /// last line sent always reflects the latest states).
    told: Arc<Mutex<Problems>>,
}

/// What is wrong with keeping and delivering events, as `STATUS=` says it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Problems {
    /// Why events cannot be kept (a full or read-only state folder).
    disk: Option<String>,
    /// Why events are not delivered (the broker unreachable, stuck, refusing).
    delivery: Option<String>,
}

impl Forward {
    /// A sink sending to `to`, and the task that keeps the `current` summaries honest
    /// when nothing happens (a camera that sees no face for a while says `none`).
    pub fn new(
        to: mpsc::Sender<Outgoing>,
        seen: Seen,
        notifier: Arc<Notifier>,
        current: CurrentView,
        cameras: usize,
    ) -> Forward {
        let current = Arc::new(Mutex::new(current));
        Forward {
            to,
            seen,
            notifier,
            current,
            cameras,
            events: Arc::default(),
            snapshots: None,
            delivery: None,
            told: Arc::default(),
        }
    }

    /// Says in the status line why events cannot be kept (a full or read-only state
    /// folder) or are not delivered (the broker unreachable, stuck or refusing them), from
    /// the publisher's counters, and when that is over.
    pub fn with_delivery(self, stats: Arc<PublishStats>) -> Forward {
        Forward { delivery: Some(stats), ..self }
    }

    /// What the publisher's counters say is wrong now.
    fn problems(&self) -> Problems {
        let Some(d) = self.delivery.as_ref() else { return Problems::default() };
        Problems { disk: d.problem(), delivery: d.delivery_summary() }
    }

    /// Sends `STATUS=`: always when `changed` (a camera's state), else only when what it
    /// says about the disk or delivery changed. The line is made and sent under one lock.
    fn tell(&self, changed: bool) {
        let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
        let problems = self.problems();
        if changed || *told != problems {
            self.notifier.send(&format!("STATUS={}", self.line(&problems)));
            *told = problems;
        }
    }

    /// Tells systemd the daemon serves (`READY=1`), with the status line made and sent
    /// under the same lock as every later line, and remembered: a disk or delivery problem
    /// that appears meanwhile is then said by the next tick, never left stale.
    pub fn ready(&self) {
        let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
        let problems = self.problems();
        self.notifier.send(&format!("READY=1\nSTATUS={}", self.line(&problems)));
        *told = problems;
    }

    /// Sends snapshots to `places` and refers to them in the `new` events.
    pub fn with_snapshots(self, places: Arc<SnapshotPlaces>) -> Forward {
        Forward { snapshots: Some(places), ..self }
    }

    /// Sends the `current` summaries that went stale, twice a second, until the publisher
    /// is gone. Spawn it on the runtime.
    pub async fn tick_current(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            self.tell(false);
            let due = self.current.lock().map(|mut c| c.on_tick(Instant::now())).unwrap_or_default();
            for (camera, summary) in due {
                let payload = serde_json::to_vec(&summary).unwrap_or_default();
                if self.to.send(Outgoing::Current { camera, payload }).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Counts an event and updates its camera's summary; the summary to send, if it changed.
    fn on_event(&self, e: &crate::events::EmotionEvent) -> Option<Outgoing> {
        self.events.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut counts) = self.seen.events.lock() {
            *counts.entry((e.camera.clone(), e.kind.as_str(), e.emotion.clone())).or_default() += 1;
        }
        let summary = self.current.lock().ok()?.on_event(e, Instant::now())?;
        let payload = serde_json::to_vec(&summary).unwrap_or_default();
        Some(Outgoing::Current { camera: e.camera.clone(), payload })
    }

    /// Records a camera's state; tells systemd when a camera's state changed. Also for
    /// states the daemon itself decides (`disabled`), so that health, metrics and the
    /// status line list them as MQTT does.
    pub fn on_state(&self, st: &crate::source::CameraStatus) {
        let changed = {
            let mut states = self.seen.cameras.lock().unwrap_or_else(|p| p.into_inner());
            states.insert(st.camera.clone(), st.clone()).is_none_or(|old| old.status != st.status)
        };
        if changed {
            self.tell(true);
        }
    }

    /// systemd's one-line summary: cameras streaming out of those that should (the ones
    /// known now, disabled ones aside), failed, ended, events so far, and what keeps
    /// events from being kept or delivered.
    pub fn status_line(&self) -> String {
        self.line(&self.problems())
    }

    fn line(&self, problems: &Problems) -> String {
        let states = self.seen.cameras.lock().unwrap_or_else(|p| p.into_inner());
        let count = |s: CameraState| states.values().filter(|c| c.status == s).count();
        let active = states.len() - count(CameraState::Disabled);
        let cameras = if states.is_empty() { self.cameras } else { active };
        let (streaming, failed, ended) =
            (count(CameraState::Streaming), count(CameraState::Failed), count(CameraState::Ended));
        let events = self.events.load(Ordering::Relaxed);
        let mut line = format!("{streaming}/{cameras} cameras streaming, {failed} failed");
        if ended > 0 {
            line += &format!(", {ended} ended");
        }
        line += &format!(", {events} events");
        if let Some(problem) = &problems.disk {
            line += &format!("; events are being lost: {problem}");
        }
        if let Some(problem) = &problems.delivery {
            line += &format!("; events are not delivered: {problem}");
        }
        line
    }

    /// Forgets a camera a reload stopped or that left the configuration (even one that was
    /// disabled, which no pipeline reports): health, counts, summary.
    pub fn on_removed(&self, camera: &str) {
        let removed = self.seen.cameras.lock().unwrap_or_else(|p| p.into_inner()).remove(camera).is_some();
        if removed {
            self.tell(true);
        }
        if let Ok(mut counts) = self.seen.events.lock() {
            counts.retain(|(c, _, _), _| c != camera);
        }
        if let Ok(mut current) = self.current.lock() {
            current.remove(camera);
        }
    }
}

impl EventSink for Forward {
    fn emit(&mut self, mut output: Output) -> bool {
        match &mut output {
            Output::Snapshot(shot) => {
                let publish = self.snapshots.as_ref().is_some_and(|p| p.place(shot));
                return !publish || self.to.blocking_send(output.into()).is_ok();
            }
            Output::Event(e) if e.kind == crate::events::EventType::New => {
                e.snapshot = self.snapshots.as_ref().and_then(|p| p.take(&e.camera, e.track_id));
            }
            _ => {}
        }
        let summary = match &output {
            Output::Event(e) => self.on_event(e),
            Output::CameraState(st) => {
                self.on_state(st);
                None
            }
            Output::CameraRemoved(camera) => {
                // Its retained topics are the daemon's to clear, after `disabled` is said and
                // discovery removed: a consumer never reads an empty payload it would parse.
                self.on_removed(camera);
                return true;
            }
            Output::Snapshot(_) => None,
        };
        // The summary goes first: whoever sees the event finds `current` up to date.
        summary.is_none_or(|s| self.to.blocking_send(s).is_ok()) && self.to.blocking_send(output.into()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(stats: Arc<PublishStats>) -> Forward {
        let (to, _rx) = mpsc::channel(4);
        let current = CurrentView::new(Duration::from_secs(5), Duration::from_secs(60));
        Forward::new(to, Seen::default(), Arc::new(Notifier::from_env()), current, 1).with_delivery(stats)
    }

    #[test]
    fn the_ready_line_is_remembered_like_every_status_line() {
        // Before the fix READY's STATUS= was made outside `told` and never stored: a
        // problem it said was "news" again, and one that cleared meanwhile stayed said.
        let stats = Arc::new(PublishStats::default());
        *stats.problem.lock().unwrap() = Some("the state folder is read-only".into());
        let f = forward(stats.clone());
        f.ready();
        let told = f.told.lock().unwrap().clone();
        assert_eq!(told.disk.as_deref(), Some("the state folder is read-only"), "READY's line is what was told");
        assert_eq!(told, f.problems(), "nothing changed since: the next tick sends nothing");
        *stats.problem.lock().unwrap() = None;
        assert_ne!(*f.told.lock().unwrap(), f.problems(), "a cleared problem is news for the next tick");
    }
}
