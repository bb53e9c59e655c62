//! How a camera spends less per frame (`detect_every`, `classify_every`): which frames
//! the detector runs on, what the worker remembers of the faces between them, and the
//! [`Hint`] each frame's analysis gets.
//!
//! Frames between the detector's turns cost nothing: they are neither analysed nor
//! tracked, and the tracker follows each face from one detection to the next (its motion
//! model bridges the gap), so consumers see the same tracks and the same lifecycle. On
//! the detector's turn, a face that has not moved or grown much since it was last
//! classified keeps that classification, up to `classify_every` frames.

use std::collections::VecDeque;
use std::sync::Arc;

use super::analyze::{FaceAnalysis, Hint};
use super::options::Cadence;

/// One camera's memory between frames, when its cadence is not every frame.
#[derive(Debug, Default)]
pub(super) struct Follow {
    cadence: Cadence,
    /// Frames submitted so far: the detector's turn comes every `detect_every`.
    submitted: u64,
    /// Frames submitted and not tracked yet: their index and whether they are detected.
    pending: VecDeque<(u64, bool)>,
    /// The last detected frame tracked: its index and its faces.
    previous: Option<(u64, Vec<FaceAnalysis>)>,
}

impl Follow {
    /// Memory for a camera with `cadence`.
    pub fn new(cadence: Cadence) -> Follow {
        Follow { cadence, ..Follow::default() }
    }

    /// The hint for the camera's frame `index`, about to be analysed; `None` when every
    /// frame is detected and every face classified.
    pub fn hint(&mut self, index: u64) -> Option<Arc<Hint>> {
        if self.cadence.every_frame() {
            return None;
        }
        let detect = self.submitted % u64::from(self.cadence.detect_every.max(1)) == 0;
        self.submitted += 1;
        self.pending.push_back((index, detect));
        let (step, previous) = match &self.previous {
            Some((at, faces)) if detect => (index.saturating_sub(*at).max(1), faces.clone()),
            _ => (1, Vec::new()),
        };
        Some(Arc::new(Hint {
            detect,
            previous,
            step: u32::try_from(step).unwrap_or(u32::MAX / 2),
            classify_every: self.cadence.classify_every,
        }))
    }

    /// Whether frame `index`, analysed and about to be tracked, was the detector's turn
    /// (frames between turns are not tracked).
    pub fn detected(&mut self, index: u64) -> bool {
        let mut detected = true;
        while let Some(&(i, d)) = self.pending.front() {
            if i > index {
                break;
            }
            self.pending.pop_front();
            if i == index {
                detected = d;
            }
        }
        detected
    }

    /// The faces of detected frame `index`, for the classifications the next ones may keep.
    pub fn remember(&mut self, index: u64, faces: &[FaceAnalysis]) {
        if !self.cadence.every_frame() {
            self.previous = Some((index, faces.to_vec()));
        }
    }

    /// The stream restarted: nothing seen before holds.
    pub fn reset(&mut self) {
        *self = Follow::new(self.cadence);
    }
}
