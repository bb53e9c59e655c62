//! Follows faces from frame to frame so each subject keeps one `track_id`.
//!
//! ByteTrack (the `trackforge` crate): a Kalman filter predicts where each face moves,
//! confident detections are matched first and weak ones are used to keep tracks alive
//! through short occlusions, so two faces crossing keep their ids. This module maps
//! ByteTrack's per-tracker ids to ids from a counter shared by all cameras of a run (never
//! reused), remembers how often each track was seen, and reports tracks that ended.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use trackforge::trackers::byte_track::{ByteTrack, ByteTrackParams};
use trackforge::trackers::common::CommonParams;

use crate::image::Rect;

/// A live track after an update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackState {
    /// Stable id.
    pub id: u64,
    /// Frames this track has been matched, including this one.
    pub hits: u32,
}

/// What one update did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// For each detection (same order as given), its track, if it has a confirmed one.
    pub assigned: Vec<Option<TrackState>>,
    /// Tracks that ended on this frame.
    pub ended: Vec<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    id: u64,
    hits: u32,
    last_frame: u64,
}

/// Per-camera tracker.
pub struct Tracker {
    inner: ByteTrack,
    ids: Arc<AtomicU64>,
    known: HashMap<u64, Known>,
    frame: u64,
    max_missed: u64,
    iou_threshold: f32,
}

/// ByteTrack's settings for our two knobs; the same after every [`Tracker::finish`].
fn byte_track_params(iou_threshold: f32, max_missed: u32) -> ByteTrackParams {
    ByteTrackParams {
        common: CommonParams { max_age: max_missed as usize, min_hits: 1 },
        track_thresh: 0.6,
        match_thresh: 1.0 - iou_threshold,
        det_thresh: 0.6,
        second_match_thresh: 0.5,
    }
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker").field("tracks", &self.known.len()).field("frame", &self.frame).finish_non_exhaustive()
    }
}

impl Tracker {
    /// A tracker matching at `iou_threshold`, keeping unseen tracks for `max_missed`
    /// frames, and drawing ids from `ids`.
    pub fn new(iou_threshold: f32, max_missed: u32, ids: Arc<AtomicU64>) -> Tracker {
        Tracker {
            inner: ByteTrack::from_params(byte_track_params(iou_threshold, max_missed)),
            ids,
            known: HashMap::new(),
            frame: 0,
            max_missed: u64::from(max_missed),
            iou_threshold,
        }
    }

    /// Associates this frame's detections (boxes and detector scores) with tracks.
    pub fn update(&mut self, detections: &[(Rect, f32)]) -> Update {
        self.frame += 1;
        let input = detections.iter().map(|(r, s)| ([r.x, r.y, r.w, r.h], *s, 0)).collect();
        let tracks = self.inner.update(input);
        let mut assigned = vec![None; detections.len()];
        for t in tracks {
            let Some(i) = t.det_ind.filter(|&i| i < detections.len() && t.frame_id as u64 == self.frame) else {
                continue;
            };
            let ids = &self.ids;
            let k = self.known.entry(t.track_id).or_insert_with(|| Known {
                id: ids.fetch_add(1, Ordering::Relaxed),
                hits: 0,
                last_frame: 0,
            });
            k.hits += 1;
            k.last_frame = self.frame;
            assigned[i] = Some(TrackState { id: k.id, hits: k.hits });
        }
        // ByteTrack drops a lost track after `max_age` frames; so do we.
        let (frame, max) = (self.frame, self.max_missed);
        let mut ended = Vec::new();
        self.known.retain(|_, k| {
            let alive = frame - k.last_frame <= max;
            if !alive {
                ended.push(k.id);
            }
            alive
        });
        ended.sort_unstable();
        Update { assigned, ended }
    }

    /// Ends every track (the stream is over); returns their ids.
    pub fn finish(&mut self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.known.drain().map(|(_, k)| k.id).collect();
        ids.sort_unstable();
        let max_missed = u32::try_from(self.max_missed).unwrap_or(u32::MAX);
        self.inner = ByteTrack::from_params(byte_track_params(self.iou_threshold, max_missed));
        self.frame = 0;
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(x: f32, y: f32) -> (Rect, f32) {
        (Rect { x, y, w: 40.0, h: 40.0 }, 0.9)
    }

    #[test]
    fn two_faces_crossing_keep_their_ids() {
        let mut t = Tracker::new(0.3, 5, Arc::default());
        let mut seen: HashMap<usize, Vec<u64>> = HashMap::new();
        for step in 0..40 {
            let a = 10.0 + step as f32 * 8.0;
            let b = 330.0 - step as f32 * 8.0;
            let u = t.update(&[r(a, 100.0), r(b, 110.0)]);
            for (face, s) in u.assigned.iter().enumerate() {
                if let Some(s) = s {
                    seen.entry(face).or_default().push(s.id);
                }
            }
        }
        for (face, ids) in &seen {
            let mut distinct = ids.clone();
            distinct.dedup();
            assert!(distinct.len() <= 2, "face {face} changed id more than once: {distinct:?}");
        }
        assert_ne!(seen[&0].first(), seen[&1].first());
    }

    #[test]
    fn lost_tracks_end_and_ids_are_never_reused() {
        let ids = Arc::new(AtomicU64::new(0));
        let mut t = Tracker::new(0.3, 2, ids.clone());
        let first = (0..3).filter_map(|_| t.update(&[r(10.0, 10.0)]).assigned[0]).last().unwrap();
        let mut ended = Vec::new();
        for _ in 0..4 {
            ended.extend(t.update(&[]).ended);
        }
        assert_eq!(ended, vec![first.id]);
        let again = (0..3).filter_map(|_| t.update(&[r(300.0, 300.0)]).assigned[0]).last().unwrap();
        assert!(again.id > first.id);
        assert_eq!(t.finish(), vec![again.id]);
    }

    /// A face that jumps so its box overlaps the last one by IoU 1/3: a new track under a
    /// strict threshold of 0.9, before and after a reset (the camera restarted).
    #[test]
    fn the_iou_threshold_still_applies_after_a_reset() {
        let mut t = Tracker::new(0.9, 5, Arc::default());
        let jump_gets_a_new_id = |t: &mut Tracker| {
            let before = (0..3).filter_map(|_| t.update(&[r(10.0, 10.0)]).assigned[0]).last().unwrap();
            let after = t.update(&[r(30.0, 10.0)]).assigned[0];
            after.is_none_or(|a| a.id != before.id)
        };
        assert!(jump_gets_a_new_id(&mut t), "IoU 1/3 < 0.9 must not match");
        t.finish();
        assert!(jump_gets_a_new_id(&mut t), "after finish() the threshold must still be 0.9");
    }
}
