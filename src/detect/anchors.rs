//! SSD anchors as MediaPipe's `SsdAnchorsCalculator` generates them for BlazeFace
//! (fixed anchor size, so only the centres matter).

use serde::Deserialize;

/// SSD anchor settings, as MediaPipe's anchor calculator takes them (fixed anchor size).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorSpec {
    /// One stride per layer; consecutive layers with equal strides share a grid.
    pub strides: Vec<usize>,
    /// Anchor centre offset within a cell.
    #[serde(default = "half")]
    pub offset: f32,
    /// One anchor per aspect ratio per layer.
    #[serde(default = "one_ratio")]
    pub aspect_ratios: Vec<f32>,
    /// When > 0, one more anchor per layer.
    #[serde(default)]
    pub interpolated_scale_aspect_ratio: f32,
}

fn half() -> f32 {
    0.5
}
fn one_ratio() -> Vec<f32> {
    vec![1.0]
}

/// Anchor centres, normalised to the detector input (0..1), in the order the model's
/// outputs use.
pub fn generate(spec: &AnchorSpec, input_size: usize) -> Vec<[f32; 2]> {
    let strides = &spec.strides;
    let mut anchors = Vec::new();
    let mut layer = 0;
    while layer < strides.len() {
        // Consecutive layers with the same stride share one grid.
        let mut per_cell = 0;
        let mut last = layer;
        while last < strides.len() && strides[last] == strides[layer] {
            per_cell += spec.aspect_ratios.len();
            if spec.interpolated_scale_aspect_ratio > 0.0 {
                per_cell += 1;
            }
            last += 1;
        }
        let cells = input_size.div_ceil(strides[layer]);
        for y in 0..cells {
            for x in 0..cells {
                let centre = [(x as f32 + spec.offset) / cells as f32, (y as f32 + spec.offset) / cells as f32];
                anchors.extend(std::iter::repeat_n(centre, per_cell));
            }
        }
        layer = last;
    }
    anchors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_full_range_counts_match_mediapipe() {
        let short = AnchorSpec {
            strides: vec![8, 16, 16, 16],
            offset: 0.5,
            aspect_ratios: vec![1.0],
            interpolated_scale_aspect_ratio: 1.0,
        };
        let a = generate(&short, 128);
        assert_eq!(a.len(), 896);
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[1], a[0], "two anchors per cell on the stride-8 layer");
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0], "the stride-16 grid starts after 16x16x2");
        let full = AnchorSpec {
            strides: vec![4],
            offset: 0.5,
            aspect_ratios: vec![1.0],
            interpolated_scale_aspect_ratio: 0.0,
        };
        let b = generate(&full, 192);
        assert_eq!(b.len(), 2304);
        assert_eq!(b[48], [0.5 / 48.0, 1.5 / 48.0]);
    }
}
