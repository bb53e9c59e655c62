//! BlazeFace on ONNX Runtime: the model checked against its manifest, frames letterboxed
//! into its input, and its outputs handed to the pure decoder in `detect::blazeface`.

use super::manifest::{Colour, DetectorSpec, Layout};
use super::preprocess::{Sampling, sample};
use super::runtime::{EngineError, Model};
use crate::detect::Detection;
use crate::detect::blazeface::{Decoding, decode, letterbox};
use crate::image::ImageView;

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
        let anchors = crate::detect::anchors::generate(&spec.anchors, spec.input_size);
        let s = spec.input_size as i64;
        let shape = match spec.layout {
            Layout::Nchw => [1, 3, s, s],
            Layout::Nhwc => [1, s, s, 3],
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
        let region = letterbox(frame.width(), frame.height());
        sample(frame, region, None, &self.sampling, &mut self.input);
        let shape = self.sampling.layout_dims();
        let outputs =
            self.model.run(&[(&self.spec.input, &shape, &self.input)], &[&self.spec.regressors, &self.spec.scores])?;
        let decoding = Decoding {
            input_size: self.spec.input_size,
            score_threshold: self.spec.score_threshold,
            nms_iou: self.spec.nms_iou,
            max_faces: self.spec.max_faces,
        };
        let size = (frame.width(), frame.height());
        Ok(decode(&outputs[0], &outputs[1], &self.anchors, &decoding, region, size))
    }
}
