//! A classifier of the bundle (the vanilla CAER model or the context-only branch):
//! builds every input of every subject into one batch, runs it, and returns K logits
//! per subject.

use crate::engine::manifest::{InputSpec, MaskBox, ModelSpec, Role, SubjectSpec};
use crate::engine::preprocess::{Sampling, sample};
use crate::engine::runtime::{BatchDim, EngineError, Model};
use crate::image::{ImageView, Rect};

/// The boxes one subject contributes to the model inputs, in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubjectBoxes {
    /// The face crop (face box with the bundle's margin).
    pub face: Rect,
    /// The body box, derived from the face.
    pub body: Rect,
    /// What `context_masked` blanks out.
    pub mask: Rect,
}

impl SubjectBoxes {
    /// Derives a subject's boxes from its detected face box.
    pub fn from_face(face: Rect, spec: &SubjectSpec) -> SubjectBoxes {
        let crop = face.scaled(spec.face_scale, spec.face_scale);
        let body_w = face.w * spec.body_width;
        let body = Rect {
            x: face.x + face.w / 2.0 - body_w / 2.0,
            y: face.y - face.h / 2.0,
            w: body_w,
            h: face.h * spec.body_height,
        };
        let mask = match spec.mask {
            MaskBox::Face => face.scaled(spec.mask_scale, spec.mask_scale),
            MaskBox::Body => body,
        };
        SubjectBoxes { face: crop, body, mask }
    }
}

/// One subject to classify: the frame it is in and its boxes.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The frame.
    pub frame: &'a ImageView<'a>,
    /// The subject's boxes in that frame.
    pub boxes: SubjectBoxes,
}

struct BoundInput {
    name: String,
    role: Role,
    sampling: Sampling,
    buffer: Vec<f32>,
}

/// A loaded classifier with reusable input buffers: the vanilla model or the context
/// branch (one output), or the fused graph (both models and CLEF: five outputs).
pub struct Classifier {
    model: Model,
    inputs: Vec<BoundInput>,
    outputs: Vec<String>,
    labels: usize,
    batch: BatchDim,
    /// The largest batch run so far.
    largest_run: usize,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier").field("model", &self.model).field("batch", &self.batch).finish_non_exhaustive()
    }
}

impl Classifier {
    /// The execution provider its model runs on.
    pub fn provider(&self) -> &str {
        self.model.provider()
    }

    /// Wraps `model`, checking each input and the output against the manifest.
    pub fn new(model: Model, spec: &ModelSpec, labels: usize) -> Result<Classifier, EngineError> {
        Classifier::with_outputs(model, &spec.inputs, &[spec.output.as_str()], labels)
    }

    /// Wraps `model` whose every output in `outputs` holds K values per subject.
    pub fn with_outputs(
        model: Model,
        specs: &[InputSpec],
        outputs: &[&str],
        labels: usize,
    ) -> Result<Classifier, EngineError> {
        let mut batch = BatchDim::Dynamic;
        let mut inputs = Vec::new();
        for input in specs {
            if let BatchDim::Fixed(n) = model.check("input", &input.name, &input.shape(-1))? {
                batch = BatchDim::Fixed(n);
            }
            inputs.push(BoundInput {
                name: input.name.clone(),
                role: input.role,
                sampling: Sampling::for_input(input),
                buffer: Vec::new(),
            });
        }
        for output in outputs {
            model.check("output", output, &[-1, labels as i64])?;
        }
        let outputs = outputs.iter().map(|o| o.to_string()).collect();
        Ok(Classifier { model, inputs, outputs, labels, batch, largest_run: 0 })
    }

    /// The largest batch this classifier has run (engine acceptance shows that it stays
    /// within `engine.batch_max`).
    pub fn largest_batch(&self) -> usize {
        self.largest_run
    }

    /// Whether the graph takes any batch size.
    pub fn batch(&self) -> BatchDim {
        self.batch
    }

    /// For every subject, in order, its K values of each output, output after output
    /// (K long for a one-output model). Subjects may come from different frames
    /// (cameras): they are run as one batch, split only where the graph has a fixed batch
    /// size or the batch would exceed `max_batch`.
    pub fn classify(&mut self, subjects: &[Subject<'_>], max_batch: usize) -> Result<Vec<Vec<f32>>, EngineError> {
        let chunk = match self.batch {
            BatchDim::Dynamic => max_batch.max(1),
            BatchDim::Fixed(n) => n,
        };
        let mut out = Vec::with_capacity(subjects.len());
        for group in subjects.chunks(chunk) {
            out.extend(self.run_batch(group, chunk)?);
        }
        Ok(out)
    }

    fn run_batch(&mut self, group: &[Subject<'_>], batch: usize) -> Result<Vec<Vec<f32>>, EngineError> {
        let n = match self.batch {
            BatchDim::Dynamic => group.len(),
            BatchDim::Fixed(_) => batch,
        };
        for input in &mut self.inputs {
            let per = input.sampling.len();
            input.buffer.clear();
            input.buffer.resize(per * n, 0.0);
            for (i, s) in group.iter().enumerate() {
                let whole = Rect { x: 0.0, y: 0.0, w: s.frame.width() as f32, h: s.frame.height() as f32 };
                let (region, mask) = match input.role {
                    Role::Face => (s.boxes.face, None),
                    Role::Body => (s.boxes.body, None),
                    Role::Scene => (whole, None),
                    Role::ContextMasked => (whole, Some(s.boxes.mask)),
                };
                sample(s.frame, region, mask, &input.sampling, &mut input.buffer[i * per..(i + 1) * per]);
            }
        }
        self.run_filled(n, group.len())
    }

    /// For each of `n` samples of ready-made input tensors (by input name, every sample's
    /// values in turn), what [`Classifier::classify`] returns: how engine acceptance feeds
    /// a model the golden tensors exactly as they were made, preprocessing aside; in
    /// batches of at most `max_batch` where the graph's batch is dynamic.
    pub fn classify_tensors(
        &mut self,
        tensors: &[(String, Vec<f32>)],
        n: usize,
        max_batch: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let chunk = match self.batch {
            BatchDim::Dynamic => n.min(max_batch).max(1),
            BatchDim::Fixed(b) => b,
        };
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(chunk.max(1)) {
            let m = chunk.min(n - start);
            let batch = if matches!(self.batch, BatchDim::Fixed(_)) { chunk } else { m };
            for input in &mut self.inputs {
                let per = input.sampling.len();
                let given = tensors.iter().find(|(name, _)| *name == input.name).map(|(_, v)| v);
                let Some(values) = given.filter(|v| v.len() == per * n) else {
                    return Err(EngineError::Run {
                        model: self.model.name().into(),
                        reason: format!("no {per} values per sample given for input '{}'", input.name),
                    });
                };
                input.buffer.clear();
                input.buffer.extend_from_slice(&values[start * per..(start + m) * per]);
                input.buffer.resize(per * batch, 0.0);
            }
            out.extend(self.run_filled(batch, m)?);
        }
        Ok(out)
    }

    /// Runs the filled input buffers (`n` samples, the first `used` wanted).
    fn run_filled(&mut self, n: usize, used: usize) -> Result<Vec<Vec<f32>>, EngineError> {
        self.largest_run = self.largest_run.max(n);
        let shapes: Vec<[i64; 4]> = self
            .inputs
            .iter()
            .map(|i| {
                let mut d = i.sampling.layout_dims();
                d[0] = n as i64;
                d
            })
            .collect();
        let feeds: Vec<(&str, &[i64], &[f32])> =
            self.inputs.iter().zip(&shapes).map(|(i, s)| (i.name.as_str(), &s[..], &i.buffer[..])).collect();
        let names: Vec<&str> = self.outputs.iter().map(String::as_str).collect();
        let results = self.model.run(&feeds, &names)?;
        let k = self.labels;
        for (name, values) in self.outputs.iter().zip(&results) {
            if values.len() < used * k {
                return Err(EngineError::Run {
                    model: self.model.name().into(),
                    reason: format!("output '{name}' has {} values, expected {}", values.len(), n * k),
                });
            }
        }
        Ok((0..used)
            .map(|i| results.iter().flat_map(|values| &values[i * k..(i + 1) * k]).copied().collect())
            .collect())
    }
}
