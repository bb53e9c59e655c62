//! Per-camera trackers and lifecycles on the worker's thread: finished batches come in
//! (each camera's frames in order), tracks and events go out, and the live statistics are
//! counted on the way.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::analyze::{FaceAnalysis, Hint, StageTimes};
use super::cadence::Follow;
use super::lanes::Finished;
use super::stats::{CameraSummary, RunSummary};
use super::worker::SlotCamera;
use super::{EventSink, Output};
use crate::detect::filter::FaceFilter;
use crate::events::EmotionEvent;
use crate::events::lifecycle::{FrameInfo, Lifecycle, Observation};
use crate::source::Frame;
use crate::track::Tracker;

/// One camera's tracker and lifecycle, in its hub slot.
pub(super) struct CameraTracks {
    /// The camera's name (for logs and the live view).
    pub name: String,
    pub tracker: Tracker,
    pub lifecycle: Lifecycle,
    /// The stream generation its tracks belong to (a restart starts a new one).
    pub stream: u32,
    /// The faces this camera cares about (zones, sizes, scores).
    pub filter: FaceFilter,
    /// What its cadence (`detect_every`, `classify_every`) remembers between frames.
    pub follow: Follow,
    /// Snapshots of its faces, when the worker takes them.
    pub snapshots: bool,
}

/// Makes a camera's tracker and lifecycle from its name and cadence.
pub(super) type MakeState = Box<dyn Fn(&str, super::Cadence) -> CameraTracks + Send>;

/// Per-camera trackers and lifecycles, fed finished batches in order.
pub(super) struct Tracking<S> {
    /// Per hub slot of a running camera; removed once the slot's camera has ended for
    /// good (a reload restarts a camera in a new slot), so trackers of cameras gone are
    /// not kept.
    pub states: BTreeMap<usize, CameraTracks>,
    /// The camera per hub slot: entries added when a camera starts, removed when its slot
    /// is released.
    pub registry: Arc<Mutex<BTreeMap<usize, SlotCamera>>>,
    /// A camera's tracker and lifecycle, by its name and cadence.
    pub make_state: MakeState,
    pub live: Arc<Mutex<RunSummary>>,
    pub done: Arc<AtomicU64>,
    pub sink: S,
    /// Snapshots on: the longest side of a face's picture.
    pub snapshot_px: Option<u32>,
    /// The live views (frames are copied only for cameras someone looks at).
    pub views: super::view::Views,
    /// The bundle's labels, for the live view.
    pub labels: Vec<String>,
}

impl<S: EventSink> Tracking<S> {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, RunSummary> {
        self.views.breaker().guard(&self.live, "an inference worker's statistics")
    }

    /// Makes sure `slot` has its tracker if its camera runs (cameras get theirs on first
    /// use); a slot whose camera has ended gets none.
    fn ensure(&mut self, slot: usize) {
        if self.states.contains_key(&slot) {
            return;
        }
        let camera = self.views.breaker().guard(&self.registry, "a worker's camera registry").get(&slot).cloned();
        let Some(camera) = camera else { return };
        let mut state = (self.make_state)(&camera.name, camera.cadence);
        state.filter = camera.filter;
        state.snapshots = camera.snapshots;
        state.name = camera.name;
        self.states.insert(slot, state);
        let held = self.states.len();
        self.lock().trackers = held;
    }

    /// Forgets everything about the camera of `slot` (it has ended and its slot is
    /// released): its registry entry and its live statistics.
    pub fn forget(&mut self, slot: usize) {
        self.states.remove(&slot);
        let held = self.states.len();
        self.lock().trackers = held;
        self.views.breaker().guard(&self.registry, "a worker's camera registry").remove(&slot);
        self.lock().cameras.retain(|c| c.slot != slot);
    }

    /// The hint for frame `index` of the camera in `slot`, about to be analysed.
    pub fn hint(&mut self, slot: usize, index: u64) -> Option<std::sync::Arc<Hint>> {
        self.ensure(slot);
        self.states.get_mut(&slot).and_then(|st| st.follow.hint(index))
    }

    /// Sends events on; false once the sink has closed.
    fn emit(&mut self, events: Vec<EmotionEvent>) -> bool {
        self.emit_outputs(events.into_iter().map(|e| Output::Event(Box::new(e))).collect())
    }

    /// Sends events (and snapshots) on; false once the sink has closed.
    fn emit_outputs(&mut self, outputs: Vec<Output>) -> bool {
        self.lock().events += outputs.iter().filter(|o| matches!(o, Output::Event(_))).count() as u64;
        outputs.into_iter().all(|o| self.sink.emit(o))
    }

    /// Keeps a copy of the frame and its faces for the live view, when someone looks.
    fn show(&self, slot: usize, frame: &Frame, faces: &[FaceAnalysis], tracks: &[Option<u64>]) {
        let Some(name) = self.states.get(&slot).map(|st| &st.name) else { return };
        if !self.views.wanted(name, Instant::now()) {
            return;
        }
        let Some(view) = frame.view() else { return };
        let label = |scores: &[f32]| {
            let top = scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
            self.labels.get(top).cloned().unwrap_or_default()
        };
        let shown = faces
            .iter()
            .zip(tracks)
            .map(|(f, track)| super::view::ShotFace {
                rect: f.detection.rect,
                track: *track,
                label: label(&f.scores),
                factual: f.factual_scores.as_deref().map(label),
            })
            .collect();
        let (zones, ignore) = match self.states.get(&slot) {
            Some(st) => (st.filter.zones.clone(), st.filter.ignore.clone()),
            None => (Vec::new(), Vec::new()),
        };
        let shot = super::view::Shot { image: view.to_rgb(), faces: shown, zones, ignore, number: 0 };
        self.views.put(name, shot);
    }

    /// This frame's events, each `new` one after its face's snapshot when they are on.
    fn with_snapshots(&self, frame: &Frame, events: Vec<EmotionEvent>, on: bool) -> Vec<Output> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let px = self.snapshot_px.filter(|_| on);
            if let (Some(px), crate::events::EventType::New, Some(view)) = (px, e.kind, frame.view()) {
                let (w, h) = (frame.width as f32, frame.height as f32);
                let b = e.bbox;
                let face = crate::image::Rect { x: b.x * w, y: b.y * h, w: b.w * w, h: b.h * h };
                // Cropped only: the JPEG is made where the picture goes, off this thread.
                if let Some(crop) = super::snapshot::face_crop(&view, face, px) {
                    let shot = super::snapshot::Snapshot::new(e.camera.clone(), e.track_id, e.track_uid.clone(), crop);
                    out.push(Output::Snapshot(Box::new(shot)));
                }
            }
            out.push(Output::Event(Box::new(e)));
        }
        out
    }

    /// A camera's stream broke (`closed`: it ended for good): its tracks are over.
    pub fn end_tracks(&mut self, slot: usize, closed: bool) {
        self.ensure(slot);
        let Some(st) = self.states.get_mut(&slot) else { return };
        let ended = st.tracker.finish();
        let events = st.lifecycle.end(&ended);
        let name = st.name.clone();
        self.emit(events);
        if closed {
            self.forget(slot);
            tracing::info!(camera = %name, "camera ended; its tracks are closed");
        }
    }

    /// Tracks one finished batch and emits its events; false once the sink has closed.
    pub fn finish(&mut self, finished: Finished<Frame>) -> bool {
        let Finished { frames, result } = finished;
        {
            let mut summary = self.lock();
            summary.in_flight = summary.in_flight.saturating_sub(1);
        }
        for (slot, _) in &frames {
            self.ensure(*slot);
        }
        if frames.is_empty() {
            if let Err(e) = result {
                tracing::error!(error = %e, "inference failed");
            }
            return true;
        }
        let ended = self.new_streams(&frames);
        let mut outputs: Vec<Output> = ended.into_iter().map(|e| Output::Event(Box::new(e))).collect();
        let (analyses, times) = match result {
            Ok(r) => r,
            Err(e) => {
                let names: Vec<&str> =
                    frames.iter().filter_map(|(s, _)| self.states.get(s).map(|st| st.name.as_str())).collect();
                tracing::error!(cameras = ?names, error = %e, "inference failed on a batch: its frames are dropped");
                let mut summary = self.lock();
                for (slot, _) in &frames {
                    camera_entry(&mut summary, &self.states, *slot).failed += 1;
                }
                drop(summary);
                return self.emit_outputs(outputs);
            }
        };
        let t = Instant::now();
        let mut counted = Vec::with_capacity(frames.len());
        for ((slot, frame), faces) in frames.iter().zip(&analyses) {
            let Some(st) = self.states.get_mut(slot) else { continue };
            let snapshots = st.snapshots;
            let (events, tracks) = track_frame(st, frame, faces);
            if let Some(tracks) = tracks {
                self.show(*slot, frame, faces, &tracks);
            }
            outputs.extend(self.with_snapshots(frame, events, snapshots));
            counted.push((*slot, faces.len() as u64, frame.captured.elapsed()));
        }
        self.count(counted, times, t.elapsed());
        self.done.fetch_add(frames.len() as u64, std::sync::atomic::Ordering::Relaxed);
        drop(frames);
        let open = self.emit_outputs(outputs);
        if !open {
            tracing::warn!("event sink closed; stopping inference");
        }
        open
    }

    /// Ends the tracks of cameras whose frames come from a new stream (the camera
    /// restarted); frames of a camera that ended while they were analysed are skipped.
    fn new_streams(&mut self, frames: &[(usize, Frame)]) -> Vec<EmotionEvent> {
        let mut events = Vec::new();
        for (slot, frame) in frames {
            let Some(st) = self.states.get_mut(slot) else { continue };
            if st.stream != frame.stream {
                st.stream = frame.stream;
                st.follow.reset();
                let ended = st.tracker.finish();
                events.extend(st.lifecycle.end(&ended));
            }
        }
        events
    }

    /// Adds one batch to the live statistics: per camera (slot, faces, latency), the
    /// models' times and the time tracking took.
    fn count(&self, counted: Vec<(usize, u64, Duration)>, times: StageTimes, track_time: Duration) {
        let mut summary = self.lock();
        for (slot, faces, latency) in counted {
            let cam = camera_entry(&mut summary, &self.states, slot);
            cam.frames += 1;
            cam.faces += faces;
            cam.latency.record(latency);
            summary.frames += 1;
            summary.faces += faces;
        }
        summary.batches += 1;
        summary.stages.detect += times.detect;
        summary.stages.classify += times.classify;
        summary.stages.detected += times.detected;
        summary.stages.classified += times.classified;
        summary.stages.publish += track_time;
        summary.detect_batches.record(times.detect);
        summary.classify_batches.record(times.classify);
    }
}

/// The live statistics of the camera in `slot`, added on its first frame.
fn camera_entry<'a>(
    summary: &'a mut RunSummary,
    states: &BTreeMap<usize, CameraTracks>,
    slot: usize,
) -> &'a mut CameraSummary {
    let at = match summary.cameras.iter().position(|c| c.slot == slot) {
        Some(at) => at,
        None => {
            let name = states.get(&slot).map(|st| st.name.clone()).unwrap_or_default();
            summary.cameras.push(CameraSummary { name, slot, ..CameraSummary::default() });
            summary.cameras.len() - 1
        }
    };
    &mut summary.cameras[at]
}

/// One frame's faces through the camera's filter, tracker and lifecycle: its events.
///
/// Also the track of each face (`None` for a face the filter left out), or `None` for a
/// frame that was not the detector's turn (`detect_every`).
fn track_frame(
    st: &mut CameraTracks,
    frame: &Frame,
    faces: &[FaceAnalysis],
) -> (Vec<EmotionEvent>, Option<Vec<Option<u64>>>) {
    if !st.follow.detected(frame.index) {
        return (Vec::new(), None);
    }
    st.follow.remember(frame.index, faces);
    let (w, h) = (frame.width as f32, frame.height as f32);
    let keeps: Vec<bool> = faces.iter().map(|f| st.filter.keeps(&f.detection.rect, f.detection.score, w, h)).collect();
    let kept: Vec<_> = faces.iter().zip(&keeps).filter(|(_, k)| **k).map(|(f, _)| f).collect();
    let dets: Vec<_> = kept.iter().map(|f| (f.detection.rect, f.detection.score)).collect();
    let update = st.tracker.update(&dets);
    let mut assigned = update.assigned.iter();
    let tracks =
        keeps.iter().map(|k| if *k { assigned.next().copied().flatten().map(|t| t.id) } else { None }).collect();
    let observations: Vec<Observation<'_>> = kept
        .iter()
        .zip(&update.assigned)
        .filter_map(|(f, track)| track.map(|t| (f, t)))
        .map(|(f, track)| Observation {
            track,
            rect: f.detection.rect,
            detector_score: f.detection.score,
            vanilla: &f.vanilla_scores,
            factual: f.factual_scores.as_deref(),
            scores: &f.scores,
            tie: f.effects.as_ref().map(|e| e.tie.as_slice()),
            context_bias: f.effects.as_ref().map(|e| e.counterfactual.as_slice()),
        })
        .collect();
    let info = FrameInfo {
        index: frame.index,
        wall: frame.wall,
        captured: frame.captured,
        width: w,
        height: h,
        source_size: frame.source_size,
    };
    (st.lifecycle.on_frame(&info, &observations, &update.ended), Some(tracks))
}
