//! The inference worker: a dedicated thread per bundle that takes the newest frame of
//! each camera in turn and turns it into events.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::analyze::Analyzer;
use super::hub::{FrameHub, Next};
use super::{EventSink, Output};
use crate::config::Loaded;
use crate::events::lifecycle::{FrameInfo, Lifecycle, LifecycleConfig, Observation, Source};
use crate::events::{BundleRef, EmotionEvent};
use crate::source::Frame;
use crate::track::Tracker;

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

/// What one worker did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Bundle name.
    pub bundle: String,
    /// Frames analysed.
    pub frames: u64,
    /// Frames cameras delivered but inference skipped (latest-frame-wins).
    pub dropped: u64,
    /// Faces analysed.
    pub faces: u64,
    /// Events emitted.
    pub events: u64,
    /// From the first to the last frame.
    pub elapsed: Duration,
    /// Per-stage totals.
    pub stages: StageTotals,
}

struct CameraState {
    tracker: Tracker,
    lifecycle: Lifecycle,
    stream: u32,
}

/// Starts the worker thread.
pub(super) fn spawn<S: EventSink>(
    mut analyzer: Analyzer,
    hub: Arc<FrameHub<Frame>>,
    cameras: Vec<String>,
    loaded: &Loaded,
    lifecycle: LifecycleConfig,
    track_ids: Arc<AtomicU64>,
    mut sink: S,
) -> std::thread::JoinHandle<RunSummary> {
    let m = analyzer.manifest();
    let bundle = BundleRef {
        name: m.name.clone(),
        sha256: m.sha256.clone(),
    };
    let mut states: Vec<CameraState> = cameras
        .iter()
        .map(|camera| CameraState {
            tracker: Tracker::new(
                loaded.config.tracker.iou_threshold,
                loaded.config.tracker.max_missed,
                track_ids.clone(),
            ),
            lifecycle: Lifecycle::new(
                lifecycle.clone(),
                Source {
                    device: loaded.device_id.clone(),
                    camera: camera.clone(),
                    labels: m.labels.clone(),
                    bundle: bundle.clone(),
                    task: analyzer.task().clone(),
                    debias: analyzer.debias(),
                },
            ),
            stream: 0,
        })
        .collect();
    let name = m.name.clone();
    std::thread::Builder::new()
        .name(format!("infer-{name}"))
        .spawn(move || {
            let mut summary = RunSummary { bundle: name, ..RunSummary::default() };
            let mut first: Option<Instant> = None;
            let mut emit = |events: Vec<EmotionEvent>, summary: &mut RunSummary| {
                summary.events += events.len() as u64;
                events.into_iter().all(|e| sink.emit(Output::Event(Box::new(e))))
            };
            loop {
                match hub.next() {
                    Next::Frame(slot, frame) => {
                        first.get_or_insert_with(Instant::now);
                        let Some(view) = frame.view() else { continue };
                        if states[slot].stream != frame.stream {
                            // The camera restarted: tracks from the old stream are over.
                            let st = &mut states[slot];
                            st.stream = frame.stream;
                            let ended = st.tracker.finish();
                            let events = st.lifecycle.end(&ended);
                            emit(events, &mut summary);
                        }
                        let (faces, times) = match analyzer.analyze(&view) {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::error!(camera = %cameras[slot], error = %e, "inference failed on a frame");
                                continue;
                            }
                        };
                        let t = Instant::now();
                        let dets: Vec<_> = faces.iter().map(|f| (f.detection.rect, f.detection.score)).collect();
                        let st = &mut states[slot];
                        let update = st.tracker.update(&dets);
                        let observations: Vec<Observation<'_>> = faces
                            .iter()
                            .zip(&update.assigned)
                            .filter_map(|(f, track)| track.map(|t| (f, t)))
                            .map(|(f, track)| Observation {
                                track,
                                rect: f.detection.rect,
                                detector_score: f.detection.score,
                                factual: &f.factual_scores,
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
                        };
                        let events = st.lifecycle.on_frame(&info, &observations, &update.ended);
                        drop(frame);
                        summary.frames += 1;
                        summary.faces += faces.len() as u64;
                        let keep_going = emit(events, &mut summary);
                        summary.stages.detect += times.detect;
                        summary.stages.classify += times.classify;
                        summary.stages.publish += t.elapsed();
                        if !keep_going {
                            tracing::warn!("event sink closed; stopping inference");
                            break;
                        }
                    }
                    Next::Reset(slot) => {
                        let st = &mut states[slot];
                        let ended = st.tracker.finish();
                        emit(st.lifecycle.end(&ended), &mut summary);
                    }
                    Next::Closed(slot) => {
                        let st = &mut states[slot];
                        let ended = st.tracker.finish();
                        let events = st.lifecycle.end(&ended);
                        emit(events, &mut summary);
                        tracing::info!(camera = %cameras[slot], "camera ended; its tracks are closed");
                    }
                    Next::Done => break,
                }
            }
            summary.elapsed = first.map(|f| f.elapsed()).unwrap_or_default();
            summary.dropped = (0..cameras.len()).map(|i| hub.stats(i).dropped).sum();
            summary
        })
        .expect("spawning the inference thread")
}
