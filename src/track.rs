//! Follows faces from frame to frame so each subject keeps one `track_id`.
//!
//! A greedy IoU tracker: each frame, the best-overlapping (track, detection) pairs above
//! the threshold are matched first; unmatched detections start tracks; tracks unseen for
//! more than `max_missed` frames end. Ids come from a counter that may be shared by all
//! cameras of a run, so an id is never reused within the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// For each detection (same order as given), its track.
    pub assigned: Vec<TrackState>,
    /// Tracks that ended on this frame.
    pub ended: Vec<u64>,
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    rect: Rect,
    hits: u32,
    missed: u32,
}

/// Per-camera IoU tracker.
#[derive(Debug, Clone)]
pub struct Tracker {
    iou_threshold: f32,
    max_missed: u32,
    ids: Arc<AtomicU64>,
    tracks: Vec<Track>,
}

impl Tracker {
    /// A tracker drawing ids from `ids`.
    pub fn new(iou_threshold: f32, max_missed: u32, ids: Arc<AtomicU64>) -> Tracker {
        Tracker {
            iou_threshold,
            max_missed,
            ids,
            tracks: Vec::new(),
        }
    }

    /// Associates this frame's detections with tracks.
    pub fn update(&mut self, detections: &[Rect]) -> Update {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (t, track) in self.tracks.iter().enumerate() {
            for (d, det) in detections.iter().enumerate() {
                let iou = track.rect.iou(det);
                if iou >= self.iou_threshold {
                    pairs.push((iou, t, d));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_used = vec![false; self.tracks.len()];
        let mut det_track: Vec<Option<usize>> = vec![None; detections.len()];
        for (_, t, d) in pairs {
            if !track_used[t] && det_track[d].is_none() {
                track_used[t] = true;
                det_track[d] = Some(t);
            }
        }
        for (t, used) in track_used.iter().enumerate() {
            if !used {
                self.tracks[t].missed += 1;
            }
        }
        let mut assigned = Vec::with_capacity(detections.len());
        for (d, det) in detections.iter().enumerate() {
            let t = match det_track[d] {
                Some(t) => t,
                None => {
                    let id = self.ids.fetch_add(1, Ordering::Relaxed);
                    self.tracks.push(Track {
                        id,
                        rect: *det,
                        hits: 0,
                        missed: 0,
                    });
                    self.tracks.len() - 1
                }
            };
            let track = &mut self.tracks[t];
            track.rect = *det;
            track.hits += 1;
            track.missed = 0;
            assigned.push(TrackState {
                id: track.id,
                hits: track.hits,
            });
        }
        let max_missed = self.max_missed;
        let ended = self
            .tracks
            .iter()
            .filter(|t| t.missed > max_missed)
            .map(|t| t.id)
            .collect();
        self.tracks.retain(|t| t.missed <= max_missed);
        Update { assigned, ended }
    }

    /// Ends every track (the stream is over); returns their ids.
    pub fn finish(&mut self) -> Vec<u64> {
        self.tracks.drain(..).map(|t| t.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(x: f32) -> Rect {
        Rect {
            x,
            y: 0.0,
            w: 10.0,
            h: 10.0,
        }
    }

    #[test]
    fn keeps_ids_for_moving_boxes_and_ends_lost_ones() {
        let mut t = Tracker::new(0.3, 1, Arc::default());
        let a = t.update(&[r(0.0), r(100.0)]);
        assert_eq!(
            a.assigned.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let b = t.update(&[r(102.0), r(2.0)]);
        assert_eq!(
            b.assigned.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![1, 0]
        );
        assert_eq!(b.assigned[0].hits, 2);
        assert!(
            t.update(&[r(4.0)]).ended.is_empty(),
            "one miss is tolerated"
        );
        assert_eq!(t.update(&[r(6.0)]).ended, vec![1]);
        let c = t.update(&[r(300.0)]);
        assert_eq!(c.assigned[0].id, 2, "ids are never reused");
        assert_eq!(t.finish(), vec![0, 2]);
    }
}
