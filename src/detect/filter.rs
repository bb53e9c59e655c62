//! Which detected faces a camera cares about: a stricter score threshold than the
//! bundle's, a smallest face, zones to watch and areas to ignore (a TV in the corner, a
//! poster by the door). A face whose centre falls outside every zone (when zones are
//! given) or inside an ignored area makes no track and no event. Coordinates are
//! normalised to the frame (0..1, origin top-left), so they survive a change of
//! resolution. Pure: the worker applies it to each frame's detections.

use serde::Deserialize;

use crate::image::Rect;

/// An area of the frame: a rectangle `[x, y, w, h]` or a polygon `[[x, y], ...]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Area {
    /// `[x, y, w, h]`, normalised.
    Rect([f32; 4]),
    /// Corners in order, normalised; at least three.
    Polygon(Vec<[f32; 2]>),
}

impl Area {
    /// Whether the normalised point `(x, y)` lies inside (even-odd rule for polygons).
    pub fn contains(&self, x: f32, y: f32) -> bool {
        match self {
            Area::Rect([rx, ry, w, h]) => x >= *rx && x <= rx + w && y >= *ry && y <= ry + h,
            Area::Polygon(points) => {
                let mut inside = false;
                let mut j = points.len().wrapping_sub(1);
                for (i, &[xi, yi]) in points.iter().enumerate() {
                    let [xj, yj] = points[j];
                    if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                        inside = !inside;
                    }
                    j = i;
                }
                inside
            }
        }
    }

    /// Why this area cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let in_unit = |v: f32| (0.0..=1.0).contains(&v);
        match self {
            Area::Rect(r) if !r.iter().all(|v| in_unit(*v)) || r[2] <= 0.0 || r[3] <= 0.0 => {
                Some(format!("rectangle {r:?}: x, y, w, h must be within 0..1, w and h above 0"))
            }
            Area::Rect(r) if r[0] + r[2] > 1.0 + 1e-6 || r[1] + r[3] > 1.0 + 1e-6 => {
                Some(format!("rectangle {r:?}: must lie inside the frame (x + w and y + h at most 1)"))
            }
            Area::Polygon(p) if p.len() < 3 => Some(format!("polygon {p:?}: needs at least three corners")),
            Area::Polygon(p) if !p.iter().flatten().all(|v| in_unit(*v)) => {
                Some(format!("polygon {p:?}: corners must be within 0..1 (normalised to the frame)"))
            }
            _ => None,
        }
    }
}

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

    #[test]
    fn a_polygon_is_inside_by_the_even_odd_rule() {
        // An L shape: the notch at the top right is outside.
        let l = Area::Polygon(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]);
        assert!(l.contains(0.25, 0.25));
        assert!(l.contains(0.75, 0.75));
        assert!(!l.contains(0.75, 0.25));
    }

    #[test]
    fn areas_outside_the_frame_are_refused_with_a_reason() {
        assert!(Area::Rect([0.5, 0.5, 0.6, 0.1]).problem().unwrap().contains("inside the frame"));
        assert!(Area::Rect([0.5, 0.5, 0.5, 0.1]).problem().is_none());
        assert!(Area::Rect([0.0, 0.0, 0.0, 0.5]).problem().is_some());
        assert!(Area::Rect([-0.1, 0.0, 0.5, 0.5]).problem().unwrap().contains("within 0..1"));
        assert!(Area::Polygon(vec![[0.0, 0.0], [1.0, 1.0]]).problem().unwrap().contains("three corners"));
        assert!(Area::Polygon(vec![[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]).problem().is_some());
        assert!(Area::Polygon(vec![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).problem().is_none());
    }
}
