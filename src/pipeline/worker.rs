//! The inference worker: a dedicated thread per bundle that takes the newest frame of
//! each camera (several cameras at once, batched), has its lanes analyse them, and turns
//! the results into events, each camera's frames in order.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::analyze::Analyzer;
use super::hub::{FrameHub, Next};
use super::lanes::{Finished, LanePool};
use super::{EventSink, Output};
use crate::detect::filter::FaceFilter;
use crate::events::lifecycle::{FrameInfo, Lifecycle, Observation, Source};
use crate::events::{BundleRef, EmotionEvent};
use crate::source::Frame;
use crate::track::Tracker;

/// How the worker batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batching {
    /// Most frames (cameras) per batch; 1 turns batching off.
    pub max_frames: usize,
    /// How long to wait for other cameras once one frame is ready.
    pub linger: Duration,
}

/// Time spent per stage, summed over a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTotals {
    /// Detection (letterbox, model, decode, NMS).
    pub detect: Duration,
    /// Crops, classifiers and CLEF.
    pub classify: Duration,
    /// Tracking, lifecycle and hand-off to the sink (includes waiting on it).
    pub publish: Duration,
}

/// Capture-to-decision latencies in 0.1 ms buckets up to 2 s: fixed memory however long
/// the run.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    buckets: Vec<u32>,
    count: u64,
    sum: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: vec![0; 20_001], count: 0, sum: 0.0 }
    }
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let i = ((d.as_secs_f64() * 10_000.0) as usize).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += d.as_secs_f64();
    }

    /// The observations recorded after `earlier` (a snapshot of this same histogram).
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        LatencyHistogram {
            buckets: self.buckets.iter().zip(&earlier.buckets).map(|(a, b)| a.saturating_sub(*b)).collect(),
            count: self.count.saturating_sub(earlier.count),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of all observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum
    }

    /// Observations at or below `ms` milliseconds (a Prometheus `le` bucket).
    pub fn count_le(&self, ms: f64) -> u64 {
        let last = ((ms * 10.0).floor() as usize).min(self.buckets.len() - 1);
        self.buckets[..=last].iter().map(|&n| u64::from(n)).sum()
    }

    /// The `q` quantile (0..1) in milliseconds, 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let target = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= target {
                return i as f64 / 10.0;
            }
        }
        0.0
    }
}

/// One camera's share of a run.
#[derive(Debug, Clone, Default)]
pub struct CameraSummary {
    /// Camera name.
    pub name: String,
    /// Frames analysed.
    pub frames: u64,
    /// Frames skipped because a newer one arrived first (latest frame wins).
    pub dropped: u64,
    /// Faces analysed.
    pub faces: u64,
    /// Capture to decision.
    pub latency: LatencyHistogram,
}

/// What one worker did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Bundle name.
    pub bundle: String,
    /// The execution provider its models run on (`tensorrt`, `cuda`, `cpu`).
    pub provider: String,
    /// Frames analysed.
    pub frames: u64,
    /// Frames cameras delivered but inference skipped (latest-frame-wins).
    pub dropped: u64,
    /// Faces analysed.
    pub faces: u64,
    /// Events emitted.
    pub events: u64,
    /// Batches run (one per detector-and-classifier pass over one or more frames).
    pub batches: u64,
    /// Inference lanes (batches that can be in flight at once).
    pub lanes: usize,
    /// Batches in flight right now.
    pub in_flight: usize,
    /// From the first to the last frame.
    pub elapsed: Duration,
    /// Per-stage totals.
    pub stages: StageTotals,
    /// Detection time per batch.
    pub detect_batches: LatencyHistogram,
    /// Classification time per batch.
    pub classify_batches: LatencyHistogram,
    /// Per camera.
    pub cameras: Vec<CameraSummary>,
}

impl RunSummary {
    /// A copy of everything but the per-camera statistics.
    pub fn clone_without_cameras(&self) -> RunSummary {
        RunSummary {
            bundle: self.bundle.clone(),
            provider: self.provider.clone(),
            detect_batches: self.detect_batches.clone(),
            classify_batches: self.classify_batches.clone(),
            cameras: Vec::new(),
            ..*self
        }
    }
}

struct CameraState {
    tracker: Tracker,
    lifecycle: Lifecycle,
    stream: u32,
    /// The faces this camera cares about (zones, sizes, scores).
    filter: FaceFilter,
}

/// The camera in one hub slot, as the worker needs it.
#[derive(Debug, Clone)]
pub(super) struct SlotCamera {
    /// Camera name.
    pub name: String,
    /// The faces it cares about.
    pub filter: FaceFilter,
}

/// Everything a worker needs besides its analyzer.
pub(super) struct WorkerSetup<S> {
    pub done: Arc<AtomicU64>,
    pub hub: Arc<FrameHub<Frame>>,
    /// The camera per hub slot; grows when a reload adds cameras.
    pub cameras: Arc<Mutex<Vec<SlotCamera>>>,
    /// Lifecycle, tracker, batching, device id.
    pub options: super::WorkerOptions,
    pub track_ids: Arc<AtomicU64>,
    pub sink: S,
}

/// Starts the worker thread (and its lanes); returns it and its live statistics.
pub(super) fn spawn<S: EventSink>(
    analyzers: Vec<Analyzer>,
    setup: WorkerSetup<S>,
) -> std::io::Result<(std::thread::JoinHandle<RunSummary>, Arc<Mutex<RunSummary>>)> {
    let WorkerSetup { done, hub, cameras, options, track_ids, sink } = setup;
    let super::WorkerOptions { device_id, lifecycle, tracker: tracker_cfg, batching, .. } = options;
    // Test hook: makes inference artificially slow (watchdog and back-pressure tests).
    let test_delay = std::env::var("CLEFD_TEST_INFERENCE_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let analyzer = analyzers.first().ok_or_else(|| std::io::Error::other("a worker needs at least one lane"))?;
    let m = analyzer.manifest();
    let name = m.name.clone();
    let provider = analyzer.provider().to_string();
    let source = Source {
        device: device_id,
        camera: String::new(),
        labels: m.labels.clone(),
        bundle: BundleRef { name: m.name.clone(), sha256: m.sha256.clone() },
        task: analyzer.task().clone(),
        debias: analyzer.debias(),
        run: crate::events::run_id().to_string(),
    };
    let ring = hub.clone();
    let mut pool: LanePool<Frame> =
        LanePool::start(&format!("infer-{name}"), analyzers, batching.max_frames, Arc::new(move || ring.ring()))?;
    let live = setup_live(&name, &[]);
    if let Ok(mut l) = live.lock() {
        l.lanes = pool.lanes();
        l.provider = provider;
    }
    let mut tracking = Tracking {
        states: Vec::new(),
        registry: cameras,
        names: Vec::new(),
        make_state: Box::new(move |camera: &str| CameraState {
            tracker: Tracker::new(tracker_cfg.iou_threshold, tracker_cfg.max_missed, track_ids.clone()),
            lifecycle: Lifecycle::new(lifecycle.clone(), Source { camera: camera.to_string(), ..source.clone() }),
            stream: 0,
            filter: FaceFilter::default(),
        }),
        live: live.clone(),
        done,
        sink,
    };
    std::thread::Builder::new()
        .name(format!("worker-{name}"))
        .spawn(move || {
            let mut first: Option<Instant> = None;
            'run: loop {
                while let Some(finished) = pool.try_finished() {
                    if !tracking.finish(finished) {
                        break 'run;
                    }
                }
                let free = pool.has_free_lane();
                if !free && !pool.has_room_to_queue() {
                    if !pool.wait_any() {
                        tracing::error!("the inference lanes have stopped");
                        break 'run;
                    }
                    continue;
                }
                // With a lane to spare, a frame starts at once: under load frames queue in
                // the hub while the lanes are busy and the next free lane takes them as one
                // batch anyway. Only a single lane (a GPU) waits for other cameras. With
                // every lane busy, one whole batch (a frame from each camera) may queue for
                // the next lane to finish; a ring from a finishing lane ends the wait.
                let linger = if pool.lanes() > 1 { Duration::ZERO } else { batching.linger };
                let next =
                    if free { hub.next(batching.max_frames, linger) } else { hub.next_full(batching.max_frames) };
                match next {
                    Next::Frames(frames) => {
                        if let Some(d) = test_delay {
                            std::thread::sleep(d);
                        }
                        first.get_or_insert_with(Instant::now);
                        let frames: Vec<(usize, Frame)> =
                            frames.into_iter().filter(|(_, f)| f.view().is_some()).collect();
                        if !frames.is_empty() {
                            pool.submit(frames);
                            tracking.lock().in_flight = pool.in_flight();
                        }
                    }
                    Next::Rung => {}
                    next @ (Next::Reset(_) | Next::Closed(_) | Next::Done) => {
                        // Frames in flight came before this: track them first.
                        while let Some(finished) = pool.wait_finished() {
                            if !tracking.finish(finished) {
                                break 'run;
                            }
                        }
                        match next {
                            Next::Reset(slot) => tracking.end_tracks(slot, false),
                            Next::Closed(slot) => tracking.end_tracks(slot, true),
                            _ => break 'run,
                        }
                    }
                }
            }
            drop(pool);
            let mut summary = tracking.lock();
            summary.elapsed = first.map(|f| f.elapsed()).unwrap_or_default();
            for (i, cam) in summary.cameras.iter_mut().enumerate() {
                cam.dropped = hub.stats(i).dropped;
            }
            summary.dropped = summary.cameras.iter().map(|c| c.dropped).sum();
            summary.clone()
        })
        .map(|handle| (handle, live))
}

/// Per-camera trackers and lifecycles, fed finished batches in order.
struct Tracking<S> {
    /// Per hub slot; `None` once the slot's camera has ended for good (a reload restarts
    /// a camera in a new slot), so trackers of cameras gone are not kept.
    states: Vec<Option<CameraState>>,
    /// The camera per hub slot; grows when a reload adds cameras.
    registry: Arc<Mutex<Vec<SlotCamera>>>,
    /// Camera name per slot that has a state (copied from the registry once).
    names: Vec<String>,
    make_state: Box<dyn Fn(&str) -> CameraState + Send>,
    live: Arc<Mutex<RunSummary>>,
    done: Arc<AtomicU64>,
    sink: S,
}

impl<S: EventSink> Tracking<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, RunSummary> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure slots up to `upto` have their tracker (cameras added by a reload get
    /// theirs on first use).
    fn ensure(&mut self, upto: usize) {
        if self.states.len() > upto {
            return;
        }
        let Ok(registry) = self.registry.lock() else { return };
        while self.states.len() <= upto && self.states.len() < registry.len() {
            let camera = &registry[self.states.len()];
            let mut state = (self.make_state)(&camera.name);
            state.filter = camera.filter.clone();
            self.states.push(Some(state));
            self.names.push(camera.name.clone());
        }
    }

    /// Sends events on; false once the sink has closed.
    fn emit(&mut self, events: Vec<EmotionEvent>) -> bool {
        self.lock().events += events.len() as u64;
        events.into_iter().all(|e| self.sink.emit(Output::Event(Box::new(e))))
    }

    /// A camera's stream broke (`closed`: it ended for good): its tracks are over.
    fn end_tracks(&mut self, slot: usize, closed: bool) {
        self.ensure(slot);
        let Some(st) = self.states.get_mut(slot).and_then(Option::as_mut) else { return };
        let ended = st.tracker.finish();
        let events = st.lifecycle.end(&ended);
        self.emit(events);
        if closed {
            self.states[slot] = None;
            let name = self.names.get(slot).map_or("?", String::as_str);
            tracing::info!(camera = %name, "camera ended; its tracks are closed");
        }
    }

    /// Tracks one finished batch and emits its events; false once the sink has closed.
    fn finish(&mut self, finished: Finished<Frame>) -> bool {
        let Finished { frames, result } = finished;
        {
            let mut summary = self.lock();
            summary.in_flight = summary.in_flight.saturating_sub(1);
        }
        let max_slot = frames.iter().map(|(s, _)| *s).max().unwrap_or(0);
        self.ensure(max_slot);
        if frames.is_empty() || self.states.len() <= max_slot {
            if let Err(e) = result {
                tracing::error!(error = %e, "inference failed");
            }
            return true;
        }
        let mut events = Vec::new();
        // Frames of a camera that ended while they were analysed are not tracked.
        for (slot, frame) in &frames {
            let Some(st) = self.states[*slot].as_mut() else { continue };
            if st.stream != frame.stream {
                // The camera restarted: tracks from the old stream are over.
                st.stream = frame.stream;
                let ended = st.tracker.finish();
                events.extend(st.lifecycle.end(&ended));
            }
        }
        let (analyses, times) = match result {
            Ok(r) => r,
            Err(e) => {
                let names: Vec<&str> = frames.iter().map(|(s, _)| self.names[*s].as_str()).collect();
                tracing::error!(cameras = ?names, error = %e, "inference failed on a batch");
                return self.emit(events);
            }
        };
        let t = Instant::now();
        let mut latencies = Vec::with_capacity(frames.len());
        for ((slot, frame), faces) in frames.iter().zip(&analyses) {
            let Some(st) = self.states[*slot].as_mut() else { continue };
            let (w, h) = (frame.width as f32, frame.height as f32);
            let kept: Vec<_> =
                faces.iter().filter(|f| st.filter.keeps(&f.detection.rect, f.detection.score, w, h)).collect();
            let dets: Vec<_> = kept.iter().map(|f| (f.detection.rect, f.detection.score)).collect();
            let update = st.tracker.update(&dets);
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
                width: frame.width as f32,
                height: frame.height as f32,
                source_size: frame.source_size,
            };
            events.extend(st.lifecycle.on_frame(&info, &observations, &update.ended));
            latencies.push((*slot, faces.len() as u64, frame.captured.elapsed()));
        }
        let track_time = t.elapsed();
        {
            let states = self.states.len();
            let mut summary = self.lock();
            while summary.cameras.len() < states {
                let name = self.names.get(summary.cameras.len()).cloned().unwrap_or_default();
                summary.cameras.push(CameraSummary { name, ..CameraSummary::default() });
            }
            for (slot, faces, latency) in latencies {
                let cam = &mut summary.cameras[slot];
                cam.frames += 1;
                cam.faces += faces;
                cam.latency.record(latency);
                summary.frames += 1;
                summary.faces += faces;
            }
            summary.batches += 1;
            summary.stages.detect += times.detect;
            summary.stages.classify += times.classify;
            summary.stages.publish += track_time;
            summary.detect_batches.record(times.detect);
            summary.classify_batches.record(times.classify);
        }
        self.done.fetch_add(frames.len() as u64, std::sync::atomic::Ordering::Relaxed);
        drop(frames);
        let open = self.emit(events);
        if !open {
            tracing::warn!("event sink closed; stopping inference");
        }
        open
    }
}

fn setup_live(bundle: &str, cameras: &[String]) -> Arc<Mutex<RunSummary>> {
    Arc::new(Mutex::new(RunSummary {
        bundle: bundle.to_string(),
        cameras: cameras.iter().map(|c| CameraSummary { name: c.clone(), ..CameraSummary::default() }).collect(),
        ..RunSummary::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.quantile_ms(0.5), 50.0);
        assert_eq!(h.quantile_ms(0.99), 99.0);
        h.record(Duration::from_secs(10));
        assert_eq!(h.quantile_ms(1.0), 2000.0, "overflow lands in the last bucket");
    }
}
