//! What each camera sees right now, for dashboards and Home Assistant: the faces present,
//! the dominant debiased emotion over them (or `none`), and one line per track.
//!
//! Events are a stream of changes per track; a dashboard wants a state. [`CurrentView`]
//! folds the events into that state: a track is present from its `new` event until its
//! `end` event (or until it has not been heard of for the empty-after period, should an
//! `end` never come). When the last face leaves, the summary keeps the last picture for
//! the empty-after period (a face that turns away for a moment does not flicker the
//! state) and then says `none`. Pure: the caller supplies the clock and publishes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{EmotionEvent, EventType};

/// One track in a camera's summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackNow {
    /// Track id (as in the events).
    pub track_id: u64,
    /// Its decided emotion.
    pub emotion: String,
    /// The emotion's smoothed score.
    pub confidence: f32,
}

/// A camera's retained `current` message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Faces present.
    pub faces: usize,
    /// The dominant emotion over the faces present (highest summed confidence), or `none`.
    pub emotion: String,
    /// The dominant emotion's mean confidence over the faces showing it (0 for `none`).
    pub confidence: f32,
    /// How many faces show each emotion: what a person reads, and changes only when a
    /// face comes, goes or changes its decided emotion (Home Assistant's attributes).
    pub emotions: BTreeMap<String, usize>,
    /// The tracks present, by id.
    pub tracks: Vec<TrackNow>,
}

impl Summary {
    /// Nobody in view.
    pub fn empty() -> Summary {
        Summary { faces: 0, emotion: "none".into(), confidence: 0.0, emotions: BTreeMap::new(), tracks: Vec::new() }
    }

    fn of(tracks: &BTreeMap<u64, (TrackNow, Instant)>) -> Summary {
        let mut by_emotion: BTreeMap<&str, (f32, usize)> = BTreeMap::new();
        for (t, _) in tracks.values() {
            let e = by_emotion.entry(t.emotion.as_str()).or_default();
            e.0 += t.confidence;
            e.1 += 1;
        }
        let emotions = by_emotion.iter().map(|(e, (_, n))| (e.to_string(), *n)).collect();
        let Some((emotion, (sum, n))) =
            by_emotion.into_iter().max_by(|a, b| a.1.0.total_cmp(&b.1.0).then_with(|| b.0.cmp(a.0)))
        else {
            return Summary::empty();
        };
        Summary {
            faces: tracks.len(),
            emotion: emotion.to_string(),
            confidence: sum / n as f32,
            emotions,
            tracks: tracks.values().map(|(t, _)| t.clone()).collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Camera {
    tracks: BTreeMap<u64, (TrackNow, Instant)>,
    /// Set while nobody is in view but the last picture is still shown.
    empty_since: Option<Instant>,
    /// What was last handed out, so unchanged summaries are not repeated by ticks.
    shown: Option<Summary>,
}

/// Every camera's summary, updated from events and by the clock.
#[derive(Debug)]
pub struct CurrentView {
    empty_after: Duration,
    stale_after: Duration,
    cameras: BTreeMap<String, Camera>,
}

impl CurrentView {
    /// A view that says `none` after `empty_after` without faces, and takes a track for
    /// gone when it has not been heard of for `stale_after` (a few heartbeats: a track
    /// always has an event at least once per heartbeat).
    pub fn new(empty_after: Duration, stale_after: Duration) -> CurrentView {
        CurrentView { empty_after, stale_after, cameras: BTreeMap::new() }
    }

    /// Takes one event; returns the camera's new summary when it changed.
    pub fn on_event(&mut self, event: &EmotionEvent, now: Instant) -> Option<Summary> {
        let cam = self.cameras.entry(event.camera.clone()).or_default();
        match event.kind {
            EventType::End => {
                cam.tracks.remove(&event.track_id);
            }
            EventType::New | EventType::Update => {
                let t =
                    TrackNow { track_id: event.track_id, emotion: event.emotion.clone(), confidence: event.confidence };
                cam.tracks.insert(event.track_id, (t, now));
            }
        }
        if cam.tracks.is_empty() {
            // Keep showing the last picture for a while.
            cam.empty_since.get_or_insert(now);
            return None;
        }
        cam.empty_since = None;
        let summary = Summary::of(&cam.tracks);
        (cam.shown.as_ref() != Some(&summary)).then(|| {
            cam.shown = Some(summary.clone());
            summary
        })
    }

    /// Expires tracks not heard of for the empty-after period and cameras empty for that
    /// long; returns the summaries that changed.
    pub fn on_tick(&mut self, now: Instant) -> Vec<(String, Summary)> {
        let mut changed = Vec::new();
        for (name, cam) in &mut self.cameras {
            let before = cam.tracks.len();
            let mut last_heard = None;
            cam.tracks.retain(|_, (_, seen)| {
                let alive = now.duration_since(*seen) < self.stale_after;
                if !alive {
                    last_heard = last_heard.max(Some(*seen));
                }
                alive
            });
            if let (true, Some(heard)) = (cam.tracks.is_empty(), last_heard) {
                cam.empty_since.get_or_insert(heard);
            }
            let summary = match cam.empty_since {
                Some(since) if now.duration_since(since) >= self.empty_after => Summary::empty(),
                Some(_) => continue,
                None if cam.tracks.len() != before => Summary::of(&cam.tracks),
                None => continue,
            };
            if cam.shown.as_ref() != Some(&summary) {
                cam.shown = Some(summary.clone());
                changed.push((name.clone(), summary));
            }
        }
        changed
    }

    /// Forgets a camera (removed from the configuration).
    pub fn remove(&mut self, camera: &str) {
        self.cameras.remove(camera);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(camera: &str, track: u64, kind: EventType, emotion: &str, confidence: f32) -> EmotionEvent {
        EmotionEvent::for_test(camera, track, kind, emotion, confidence)
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_dominant_emotion_is_the_one_with_most_confidence_over_the_faces() {
        let mut v = CurrentView::new(5 * S, 5 * S);
        let t0 = Instant::now();
        let a = v.on_event(&ev("door", 1, EventType::New, "happy", 0.9), t0).unwrap();
        assert_eq!((a.faces, a.emotion.as_str()), (1, "happy"));
        v.on_event(&ev("door", 2, EventType::New, "sad", 0.6), t0);
        let c = v.on_event(&ev("door", 3, EventType::New, "sad", 0.5), t0).unwrap();
        assert_eq!((c.faces, c.emotion.as_str()), (3, "sad"), "two sad faces outweigh one happy");
        assert!((c.confidence - 0.55).abs() < 1e-6);
        assert_eq!(c.emotions, BTreeMap::from([("happy".to_string(), 1), ("sad".to_string(), 2)]));
        assert_eq!(c.tracks.iter().map(|t| t.track_id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(v.on_event(&ev("door", 3, EventType::Update, "sad", 0.5), t0).is_none(), "unchanged: nothing new");
    }

    #[test]
    fn an_empty_room_says_none_after_the_empty_period_unless_someone_comes_back() {
        let mut v = CurrentView::new(5 * S, 5 * S);
        let t0 = Instant::now();
        v.on_event(&ev("door", 1, EventType::New, "happy", 0.9), t0);
        assert!(v.on_event(&ev("door", 1, EventType::End, "happy", 0.9), t0 + S).is_none(), "kept for a while");
        assert!(v.on_tick(t0 + 3 * S).is_empty());
        // Back within the period: no `none` in between.
        v.on_event(&ev("door", 2, EventType::New, "happy", 0.8), t0 + 4 * S);
        assert!(v.on_tick(t0 + 7 * S).is_empty());
        v.on_event(&ev("door", 2, EventType::End, "happy", 0.8), t0 + 8 * S);
        assert!(v.on_tick(t0 + 12 * S).is_empty());
        let gone = v.on_tick(t0 + 13 * S);
        assert_eq!(gone, vec![("door".to_string(), Summary::empty())]);
        assert!(v.on_tick(t0 + 20 * S).is_empty(), "said once");
    }

    #[test]
    fn a_track_never_ended_expires_when_no_longer_heard_of() {
        let mut v = CurrentView::new(5 * S, 3 * S);
        let t0 = Instant::now();
        v.on_event(&ev("door", 1, EventType::New, "fear", 0.7), t0);
        v.on_event(&ev("yard", 9, EventType::New, "happy", 0.7), t0);
        v.on_event(&ev("yard", 9, EventType::Update, "happy", 0.8), t0 + 6 * S);
        assert!(v.on_tick(t0 + 4 * S).is_empty(), "gone from view, the picture stays for the empty period");
        let changed = v.on_tick(t0 + 6 * S);
        assert_eq!(changed, vec![("door".to_string(), Summary::empty())], "heard of last at t0: none at t0+5s");
        v.remove("yard");
        assert!(v.on_tick(t0 + 60 * S).is_empty(), "a removed camera says nothing more");
    }

    #[test]
    fn summaries_serialise_for_dashboards() {
        let s = Summary {
            faces: 1,
            emotion: "happy".into(),
            confidence: 0.5,
            emotions: BTreeMap::from([("happy".to_string(), 1)]),
            tracks: vec![TrackNow { track_id: 4, emotion: "happy".into(), confidence: 0.5 }],
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["faces"], 1);
        assert_eq!(json["emotion"], "happy");
        assert_eq!(json["tracks"][0]["track_id"], 4);
        assert_eq!(json["emotions"]["happy"], 1);
    }
}
