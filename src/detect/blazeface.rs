//! BlazeFace's raw outputs to faces: per anchor, a score logit and 16 regressors (box
//! centre and size, then six keypoints, in input pixels relative to the anchor). Pure: the
//! engine runs the model and hands the tensors here, so decoding is tested without ONNX
//! Runtime.

use super::Detection;
use super::nms::weighted_nms;
use crate::image::Rect;

/// How one detector's outputs are read.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoding {
    /// The model's square input side, in pixels.
    pub input_size: usize,
    /// Faces scoring below this are dropped before NMS.
    pub score_threshold: f32,
    /// Overlap above which boxes merge.
    pub nms_iou: f32,
    /// Most faces kept.
    pub max_faces: usize,
}

/// The square of the frame the detector sees: the whole frame, letterboxed and centred
/// (aspect preserved), in frame pixels.
pub fn letterbox(width: usize, height: usize) -> Rect {
    let side = width.max(height) as f32;
    Rect { x: (width as f32 - side) / 2.0, y: (height as f32 - side) / 2.0, w: side, h: side }
}

/// Faces in frame pixels, best first: `regressors` (16 per anchor) and `scores` (one logit
/// per anchor) as the model wrote them for the `region` of a `width` × `height` frame.
pub fn decode(
    regressors: &[f32],
    scores: &[f32],
    anchors: &[[f32; 2]],
    d: &Decoding,
    region: Rect,
    (width, height): (usize, usize),
) -> Vec<Detection> {
    let size = d.input_size as f32;
    let to_frame = |nx: f32, ny: f32| [region.x + nx * region.w, region.y + ny * region.h];
    let mut dets = Vec::new();
    for (i, anchor) in anchors.iter().enumerate() {
        let (Some(&logit), Some(r)) = (scores.get(i), regressors.get(i * 16..i * 16 + 16)) else { break };
        let score = crate::clef::sigmoid(f64::from(logit.clamp(-100.0, 100.0))) as f32;
        if score < d.score_threshold {
            continue;
        }
        let [cx, cy] = to_frame(r[0] / size + anchor[0], r[1] / size + anchor[1]);
        let (w, h) = (r[2] / size * region.w, r[3] / size * region.h);
        let keypoints =
            std::array::from_fn(|k| to_frame(r[4 + 2 * k] / size + anchor[0], r[5 + 2 * k] / size + anchor[1]));
        dets.push(Detection { rect: Rect::from_center(cx, cy, w, h), score, keypoints });
    }
    let mut faces = weighted_nms(dets, d.nms_iou, d.max_faces);
    faces.retain(|f| f.rect.clamped(width as f32, height as f32).area() > 4.0);
    faces
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Decoding = Decoding { input_size: 128, score_threshold: 0.5, nms_iou: 0.3, max_faces: 10 };

    /// One anchor's regressors: a `w`-sized box offset by (dx, dy) input pixels.
    fn regs(dx: f32, dy: f32, w: f32) -> [f32; 16] {
        let mut r = [0.0; 16];
        r[..4].copy_from_slice(&[dx, dy, w, w]);
        r[4] = dx - 10.0; // right eye, left of centre
        r[5] = dy;
        r
    }

    #[test]
    fn a_confident_anchor_becomes_a_face_in_frame_pixels() {
        // A 640×480 frame letterboxed into a 640×640 square starting at y = -80.
        let region = letterbox(640, 480);
        assert_eq!(region, Rect { x: 0.0, y: -80.0, w: 640.0, h: 640.0 });
        let anchors = [[0.25, 0.5], [0.75, 0.5]];
        let mut r = regs(0.0, 0.0, 32.0).to_vec();
        r.extend(regs(0.0, 0.0, 32.0));
        let faces = decode(&r, &[4.0, -4.0], &anchors, &D, region, (640, 480));
        assert_eq!(faces.len(), 1, "the second anchor scores σ(-4) < 0.5");
        let f = faces[0];
        // Centre (0.25, 0.5) of the square: x = 160, y = -80 + 320 = 240; side 32/128 of 640.
        assert!((f.rect.x + f.rect.w / 2.0 - 160.0).abs() < 1e-3 && (f.rect.y + f.rect.h / 2.0 - 240.0).abs() < 1e-3);
        assert!((f.rect.w - 160.0).abs() < 1e-3 && (f.rect.h - 160.0).abs() < 1e-3);
        assert!((f.keypoints[0][0] - (160.0 - 50.0)).abs() < 1e-3, "keypoints scale with the box");
        assert!((f.score - 0.98201376).abs() < 1e-6);
    }

    #[test]
    fn overlapping_anchors_merge_and_outside_boxes_go() {
        let region = letterbox(128, 128);
        let anchors = [[0.5, 0.5], [0.5, 0.5], [2.0, 2.0]];
        let mut r = regs(0.0, 0.0, 40.0).to_vec();
        r.extend(regs(2.0, 0.0, 40.0));
        r.extend(regs(0.0, 0.0, 20.0));
        let faces = decode(&r, &[3.0, 2.0, 5.0], &anchors, &D, region, (128, 128));
        assert_eq!(faces.len(), 1, "two overlapping boxes merge; the one outside the frame is dropped");
        assert!(faces[0].score > 0.9);
    }

    #[test]
    fn short_or_empty_outputs_give_no_face_and_no_panic() {
        let anchors = [[0.5, 0.5]; 4];
        assert!(decode(&[], &[], &anchors, &D, letterbox(64, 64), (64, 64)).is_empty());
        assert!(decode(&[0.0; 8], &[9.0; 4], &anchors, &D, letterbox(64, 64), (64, 64)).is_empty());
    }
}
