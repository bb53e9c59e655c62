//! Which detected faces a camera cares about: a stricter score threshold than the
//! bundle's, a smallest face, zones to watch and areas to ignore (a TV in the corner, a
//! poster by the door). A face whose centre falls outside every zone (when zones are
//! given) or inside an ignored area makes no track and no event. Coordinates are
//! normalised to the frame (0..1, origin top-left), so they survive a change of
//! resolution. Pure: the worker applies it to each frame's detections.

use crate::image::Rect;

pub use crate::config::Area;

/// One camera's choice of faces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaceFilter {
    /// Faces scoring below this are ignored (on top of the bundle's own threshold).
    pub score_threshold: Option<f32>,
    /// Faces whose box is smaller than this many pixels (its shorter side, in the
    /// analysed frame) are ignored.
    pub min_face_px: Option<f32>,
    /// When not empty, only faces centred inside one of these count.
    pub zones: Vec<Area>,
    /// Faces centred inside one of these never count.
    pub ignore: Vec<Area>,
}

impl FaceFilter {
    /// Whether a face with box `rect` (pixels) and detector `score`, in a frame of
    /// `width` × `height` pixels, counts.
    pub fn keeps(&self, rect: &Rect, score: f32, width: f32, height: f32) -> bool {
        if self.score_threshold.is_some_and(|t| score < t) {
            return false;
        }
        if self.min_face_px.is_some_and(|m| rect.w.min(rect.h) < m) {
            return false;
        }
        let (cx, cy) = ((rect.x + rect.w / 2.0) / width.max(1.0), (rect.y + rect.h / 2.0) / height.max(1.0));
        if !self.zones.is_empty() && !self.zones.iter().any(|z| z.contains(cx, cy)) {
            return false;
        }
        !self.ignore.iter().any(|a| a.contains(cx, cy))
    }

    /// Whether it lets every face through (nothing to check per frame).
    pub fn is_open(&self) -> bool {
        *self == FaceFilter::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, y: f32, side: f32) -> Rect {
        Rect { x, y, w: side, h: side }
    }

    #[test]
    fn zones_ignored_areas_sizes_and_scores() {
        let left_half = Area::Rect([0.0, 0.0, 0.5, 1.0]);
        let tv = Area::Polygon(vec![[0.8, 0.0], [1.0, 0.0], [1.0, 0.3], [0.8, 0.3]]);
        let f = FaceFilter {
            score_threshold: Some(0.7),
            min_face_px: Some(40.0),
            zones: vec![left_half, tv.clone()],
            ignore: vec![tv],
        };
        let (w, h) = (640.0, 480.0);
        assert!(f.keeps(&face(100.0, 100.0, 60.0), 0.9, w, h), "in the left zone");
        assert!(!f.keeps(&face(400.0, 100.0, 60.0), 0.9, w, h), "centre outside every zone");
        assert!(!f.keeps(&face(560.0, 20.0, 60.0), 0.9, w, h), "inside the TV: ignored even though a zone");
        assert!(!f.keeps(&face(100.0, 100.0, 30.0), 0.9, w, h), "smaller than min_face_px");
        assert!(!f.keeps(&face(100.0, 100.0, 60.0), 0.6, w, h), "below the camera's score threshold");
        assert!(FaceFilter::default().keeps(&face(600.0, 400.0, 5.0), 0.1, w, h));
        assert!(FaceFilter::default().is_open() && !f.is_open());
    }
}
