//! Weighted non-maximum suppression, as MediaPipe's face detector uses: overlapping
//! boxes are merged into their score-weighted average, which keeps boxes steady from
//! frame to frame (good for tracking and for crops).

use super::Detection;

/// Merges detections whose IoU with a stronger one exceeds `iou`, best first, keeping
/// at most `max` results.
pub fn weighted_nms(mut dets: Vec<Detection>, iou: f32, max: usize) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    let mut used = vec![false; dets.len()];
    for i in 0..dets.len() {
        if used[i] || out.len() >= max {
            continue;
        }
        let mut total = 0.0;
        let mut acc = [0f32; 4];
        let mut kps = [[0f32; 2]; 6];
        for j in i..dets.len() {
            if used[j] || dets[i].rect.iou(&dets[j].rect) <= iou {
                continue;
            }
            used[j] = true;
            let (d, s) = (&dets[j], dets[j].score);
            total += s;
            for (a, v) in acc.iter_mut().zip([d.rect.x, d.rect.y, d.rect.w, d.rect.h]) {
                *a += v * s;
            }
            for (k, p) in kps.iter_mut().zip(d.keypoints) {
                k[0] += p[0] * s;
                k[1] += p[1] * s;
            }
        }
        let mut merged = dets[i];
        if total > 0.0 {
            merged.rect =
                crate::image::Rect { x: acc[0] / total, y: acc[1] / total, w: acc[2] / total, h: acc[3] / total };
            merged.keypoints = kps.map(|k| [k[0] / total, k[1] / total]);
        }
        out.push(merged);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Rect;

    fn det(x: f32, score: f32) -> Detection {
        Detection { rect: Rect { x, y: 0.0, w: 10.0, h: 10.0 }, score, keypoints: [[0.0; 2]; 6] }
    }

    #[test]
    fn merges_overlaps_and_keeps_separate_faces() {
        let out = weighted_nms(vec![det(0.0, 0.9), det(1.0, 0.6), det(50.0, 0.8)], 0.3, 10);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        assert!((out[0].rect.x - 0.6 / 1.5).abs() < 1e-5, "weighted average of x");
        assert_eq!(out[1].rect.x, 50.0);
    }

    #[test]
    fn respects_the_maximum() {
        let out = weighted_nms(vec![det(0.0, 0.9), det(50.0, 0.8), det(100.0, 0.7)], 0.3, 2);
        assert_eq!(out.len(), 2);
    }
}
