//! When a tracked subject produces an event.
//!
//! Scores are smoothed per track with an exponential moving average. A track announces
//! itself (`new`) once it has been seen `min_track_age` times; it sends `update` when its
//! smoothed emotion changes by more than the hysteresis margin, or when `heartbeat`
//! passes without an event; it sends `end`, repeating its last estimate, when the
//! tracker loses it. Flicker between two close labels therefore emits nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use super::{BundleRef, Debias, EmotionEvent, EventType, FrameSize, LabelValues, NormBox, SCHEMA, rfc3339};
use crate::clef::{Decision, Task};
use crate::track::TrackState;

/// Tuning, from `[events]` in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleConfig {
    /// Sightings before `new`.
    pub min_track_age: u32,
    /// Longest silence for a live, announced track.
    pub heartbeat: Duration,
    /// EMA weight of the newest frame.
    pub smoothing: f32,
    /// Margin a new label must win by.
    pub hysteresis: f32,
}

/// Who is speaking: fixed for one camera and bundle.
#[derive(Debug, Clone)]
pub struct Source {
    /// Device id.
    pub device: String,
    /// Camera name.
    pub camera: String,
    /// Bundle labels, in order.
    pub labels: Vec<String>,
    /// Bundle identity.
    pub bundle: BundleRef,
    /// Decision rule.
    pub task: Task,
    /// Whether the bundle debiases.
    pub debias: bool,
    /// This process's run ([`super::run_id`]), for `track_uid`.
    pub run: String,
}

/// The frame an observation comes from.
#[derive(Debug, Clone, Copy)]
pub struct FrameInfo {
    /// Frame index in the stream.
    pub index: u64,
    /// Wall-clock capture time.
    pub wall: SystemTime,
    /// Monotonic capture time (for latency).
    pub captured: Instant,
    /// Frame width in pixels.
    pub width: f32,
    /// Frame height in pixels.
    pub height: f32,
    /// The stream's own size (before scaling), for `frame_size`.
    pub source_size: (u32, u32),
}

/// One tracked face on one frame, as the models and CLEF saw it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The face's track.
    pub track: TrackState,
    /// Face box in frame pixels.
    pub rect: crate::image::Rect,
    /// Detector score.
    pub detector_score: f32,
    /// Softmax/sigmoid of `Y_e`: the vanilla model alone.
    pub vanilla: &'a [f32],
    /// Softmax/sigmoid of φ(Y_c, Y_e), when debiasing.
    pub factual: Option<&'a [f32]>,
    /// Scores decisions are made on (unsmoothed).
    pub scores: &'a [f32],
    /// Raw TIE, when debiasing.
    pub tie: Option<&'a [f32]>,
    /// φ(Y_c, Y_e*), when debiasing.
    pub context_bias: Option<&'a [f32]>,
}

#[derive(Debug)]
struct TrackLife {
    /// Capture time of the track's first analysed frame (RFC 3339).
    started: String,
    smoothed: Vec<f32>,
    current: Option<usize>,
    announced: bool,
    last_emit: Instant,
    last_event: Option<EmotionEvent>,
}

/// Lifecycle of every track of one camera.
#[derive(Debug)]
pub struct Lifecycle {
    cfg: LifecycleConfig,
    source: Source,
    tracks: HashMap<u64, TrackLife>,
}

impl Lifecycle {
    /// Starts with no tracks.
    pub fn new(cfg: LifecycleConfig, source: Source) -> Lifecycle {
        Lifecycle { cfg, source, tracks: HashMap::new() }
    }

    /// Feeds one frame's observations and the tracks that ended on it; returns the
    /// events to publish, in order (with `seq` still 0: the publisher stamps it).
    pub fn on_frame(
        &mut self,
        frame: &FrameInfo,
        observations: &[Observation<'_>],
        ended: &[u64],
    ) -> Vec<EmotionEvent> {
        let mut out = Vec::new();
        let now = Instant::now();
        for obs in observations {
            let alpha = self.cfg.smoothing;
            let life = self.tracks.entry(obs.track.id).or_insert_with(|| TrackLife {
                started: rfc3339(frame.wall),
                smoothed: obs.scores.to_vec(),
                current: None,
                announced: false,
                last_emit: now,
                last_event: None,
            });
            if life.smoothed.len() == obs.scores.len() {
                for (s, &x) in life.smoothed.iter_mut().zip(obs.scores) {
                    *s = (1.0 - alpha) * *s + alpha * x;
                }
            }
            let decision = self.source.task.decide_scores(life.smoothed.clone());
            let changed = match life.current {
                None => true,
                Some(cur) => {
                    decision.top != cur && decision.scores[decision.top] >= decision.scores[cur] + self.cfg.hysteresis
                }
            };
            if changed {
                life.current = Some(decision.top);
            }
            let current = life.current.unwrap_or(decision.top);
            let kind = if !life.announced {
                (obs.track.hits >= self.cfg.min_track_age).then_some(EventType::New)
            } else if changed || now.duration_since(life.last_emit) >= self.cfg.heartbeat {
                Some(EventType::Update)
            } else {
                None
            };
            let event =
                build(&self.source, frame, obs, &life.started, current, &decision, kind.unwrap_or(EventType::Update));
            if let Some(kind) = kind {
                life.announced = true;
                life.last_emit = now;
                out.push(EmotionEvent { kind, ..event.clone() });
            }
            life.last_event = Some(event);
        }
        out.extend(self.end(ended));
        out
    }

    /// Ends the given tracks; announced ones produce an `end` event.
    pub fn end(&mut self, ids: &[u64]) -> Vec<EmotionEvent> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(life) = self.tracks.remove(id) {
                if let (true, Some(last)) = (life.announced, life.last_event) {
                    out.push(EmotionEvent { kind: EventType::End, ..last });
                }
            }
        }
        out
    }
}

fn build(
    src: &Source,
    frame: &FrameInfo,
    obs: &Observation<'_>,
    started: &str,
    current: usize,
    decision: &Decision,
    kind: EventType,
) -> EmotionEvent {
    let (scores, active) = (&decision.scores, &decision.active);
    let r = obs.rect.clamped(frame.width, frame.height);
    let labels = &src.labels;
    EmotionEvent {
        schema: SCHEMA,
        kind,
        device: src.device.clone(),
        camera: src.camera.clone(),
        track_id: obs.track.id,
        track_uid: format!("{}-{}-{}", src.run, src.camera, obs.track.id),
        track_started: started.to_string(),
        seq: 0,
        ts: rfc3339(frame.wall),
        frame: frame.index,
        frame_size: FrameSize { width: frame.source_size.0, height: frame.source_size.1 },
        bbox: NormBox { x: r.x / frame.width, y: r.y / frame.height, w: r.w / frame.width, h: r.h / frame.height },
        detector_score: obs.detector_score.clamp(0.0, 1.0),
        emotion: labels.get(current).cloned().unwrap_or_default(),
        confidence: scores.get(current).copied().unwrap_or(0.0).clamp(0.0, 1.0),
        active: matches!(src.task, Task::MultiLabel { .. })
            .then(|| active.iter().filter_map(|&i| labels.get(i).cloned()).collect()),
        scores: LabelValues::new(labels, scores),
        vanilla: LabelValues::new(labels, obs.vanilla),
        factual: obs.factual.map(|f| LabelValues::new(labels, f)),
        debias: if src.debias { Debias::On } else { Debias::Off },
        debiased: obs.tie.map(|t| LabelValues::new(labels, t)),
        context_bias: obs.context_bias.map(|c| LabelValues::new(labels, c)),
        bundle: src.bundle.clone(),
        latency_ms: frame.captured.elapsed().as_secs_f64() * 1000.0,
        snapshot: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Rect;

    fn setup(min_age: u32, hysteresis: f32) -> Lifecycle {
        let cfg = LifecycleConfig {
            min_track_age: min_age,
            heartbeat: Duration::from_secs(3600),
            smoothing: 1.0,
            hysteresis,
        };
        let source = Source {
            device: "d".into(),
            camera: "c".into(),
            labels: vec!["a".into(), "b".into()],
            bundle: BundleRef { name: "t".into(), sha256: "0".repeat(64) },
            task: Task::SingleLabel,
            debias: false,
            run: "run".into(),
        };
        Lifecycle::new(cfg, source)
    }

    fn frame() -> FrameInfo {
        FrameInfo {
            index: 0,
            wall: SystemTime::now(),
            captured: Instant::now(),
            width: 100.0,
            height: 100.0,
            source_size: (1920, 1080),
        }
    }

    fn obs<'a>(hits: u32, scores: &'a [f32]) -> Observation<'a> {
        Observation {
            track: TrackState { id: 7, hits },
            rect: Rect { x: 10.0, y: 10.0, w: 20.0, h: 20.0 },
            detector_score: 0.9,
            vanilla: scores,
            factual: None,
            scores,
            tie: None,
            context_bias: None,
        }
    }

    #[test]
    fn new_after_min_age_then_update_on_change_then_end() {
        let mut l = setup(2, 0.1);
        assert!(l.on_frame(&frame(), &[obs(1, &[0.9, 0.1])], &[]).is_empty());
        let e = l.on_frame(&frame(), &[obs(2, &[0.9, 0.1])], &[]);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].kind, e[0].emotion.as_str()), (EventType::New, "a"));
        assert!(l.on_frame(&frame(), &[obs(3, &[0.52, 0.48])], &[]).is_empty(), "no change");
        assert!(l.on_frame(&frame(), &[obs(4, &[0.48, 0.52])], &[]).is_empty(), "within hysteresis");
        let e = l.on_frame(&frame(), &[obs(5, &[0.2, 0.8])], &[]);
        assert_eq!((e[0].kind, e[0].emotion.as_str()), (EventType::Update, "b"));
        let e = l.on_frame(&frame(), &[], &[7]);
        assert_eq!((e[0].kind, e[0].emotion.as_str()), (EventType::End, "b"));
        assert_eq!(e[0].bbox, NormBox { x: 0.1, y: 0.1, w: 0.2, h: 0.2 });
        assert_eq!(e[0].frame_size, FrameSize { width: 1920, height: 1080 });
        assert_eq!(e[0].track_uid, "run-c-7");
    }

    #[test]
    fn unannounced_tracks_end_silently() {
        let mut l = setup(5, 0.1);
        l.on_frame(&frame(), &[obs(1, &[0.9, 0.1])], &[]);
        assert!(l.end(&[7]).is_empty());
    }
}
