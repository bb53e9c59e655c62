//! Face detection: BlazeFace (MediaPipe) run through the engine, decoded against its SSD
//! anchors, merged with weighted NMS, and mapped back to frame pixels.

pub mod anchors;
pub mod filter;
pub mod nms;

use crate::engine::manifest::{Colour, DetectorSpec};
use crate::engine::preprocess::{Sampling, sample};
use crate::engine::runtime::{EngineError, Model};
use crate::image::{ImageView, Rect};

/// One face in frame pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Face box.
    pub rect: Rect,
    /// Detector confidence, 0..1.
    pub score: f32,
    /// Eyes, nose, mouth, ears (right eye first, as MediaPipe orders them).
    pub keypoints: [[f32; 2]; 6],
}

/// A loaded BlazeFace model with its anchors and a reusable input buffer.
#[derive(Debug)]
pub struct Detector {
    model: Model,
    spec: DetectorSpec,
    anchors: Vec<[f32; 2]>,
    sampling: Sampling,
    input: Vec<f32>,
}

impl Detector {
    /// The execution provider its model runs on.
    pub fn provider(&self) -> &str {
        self.model.provider()
    }

    /// Wraps a loaded model, checking its tensors against the manifest.
    pub fn new(model: Model, spec: DetectorSpec) -> Result<Detector, EngineError> {
        let anchors = anchors::generate(&spec.anchors, spec.input_size);
        let s = spec.input_size as i64;
        let shape = match spec.layout {
            crate::engine::manifest::Layout::Nchw => [1, 3, s, s],
            crate::engine::manifest::Layout::Nhwc => [1, s, s, 3],
        };
        model.check("input", &spec.input, &shape)?;
        let n = anchors.len() as i64;
        model.check("output", &spec.regressors, &[1, n, 16])?;
        model.check("output", &spec.scores, &[1, n, 1])?;
        let sampling = Sampling {
            width: spec.input_size,
            height: spec.input_size,
            layout: spec.layout,
            colour: Colour::Rgb,
            affine: [(1.0 / 127.5, -1.0); 3],
        };
        let input = vec![0.0; sampling.len()];
        Ok(Detector { model, spec, anchors, sampling, input })
    }

    /// Finds faces in `frame`, best first.
    pub fn detect(&mut self, frame: &ImageView<'_>) -> Result<Vec<Detection>, EngineError> {
        // Letterbox: the square that holds the whole frame, centred (aspect preserved).
        let side = frame.width().max(frame.height()) as f32;
        let region =
            Rect { x: (frame.width() as f32 - side) / 2.0, y: (frame.height() as f32 - side) / 2.0, w: side, h: side };
        sample(frame, region, None, &self.sampling, &mut self.input);
        let shape = self.sampling.layout_dims();
        let outputs =
            self.model.run(&[(&self.spec.input, &shape, &self.input)], &[&self.spec.regressors, &self.spec.scores])?;
        let (regs, scores) = (&outputs[0], &outputs[1]);
        let size = self.spec.input_size as f32;
        let to_frame = |nx: f32, ny: f32| [region.x + nx * side, region.y + ny * side];
        let mut dets = Vec::new();
        for (i, anchor) in self.anchors.iter().enumerate() {
            let score = sigmoid(scores[i].clamp(-100.0, 100.0));
            if score < self.spec.score_threshold {
                continue;
            }
            let r = &regs[i * 16..i * 16 + 16];
            let [cx, cy] = to_frame(r[0] / size + anchor[0], r[1] / size + anchor[1]);
            let (w, h) = (r[2] / size * side, r[3] / size * side);
            let keypoints =
                std::array::from_fn(|k| to_frame(r[4 + 2 * k] / size + anchor[0], r[5 + 2 * k] / size + anchor[1]));
            dets.push(Detection { rect: Rect::from_center(cx, cy, w, h), score, keypoints });
        }
        let mut faces = nms::weighted_nms(dets, self.spec.nms_iou, self.spec.max_faces);
        faces.retain(|d| d.rect.clamped(frame.width() as f32, frame.height() as f32).area() > 4.0);
        Ok(faces)
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
