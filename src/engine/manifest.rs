//! The engine-bundle contract (`engines/<name>/manifest.toml`): which models a bundle
//! holds, how each one's inputs are built, and how its outputs are read.
//!
//! A manifest is checked on its own here (no ONNX Runtime needed), so `check-config` can
//! reject a bad bundle. The models' real tensor shapes are checked when they load.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::clef::{Fusion, Task};

/// A manifest problem, naming the file, the key and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {key}: {reason}")]
pub struct ManifestError {
    /// The manifest (or model file) at fault.
    pub path: String,
    /// Dotted key, or `-`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// Single- or multi-label, as written in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// One label per subject.
    SingleLabel,
    /// A set of labels per subject.
    MultiLabel,
}

/// `Y_e*`: one value for all labels or one per label.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum CounterfactualE {
    /// Broadcast to every label.
    Scalar(f32),
    /// One per label.
    PerLabel(Vec<f32>),
}

impl CounterfactualE {
    /// As a slice the CLEF functions accept.
    pub fn as_slice(&self) -> &[f32] {
        match self {
            CounterfactualE::Scalar(v) => std::slice::from_ref(v),
            CounterfactualE::PerLabel(v) => v,
        }
    }
}

/// Tensor memory layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Layout {
    /// Batch, channels, height, width.
    #[serde(rename = "NCHW")]
    Nchw,
    /// Batch, height, width, channels.
    #[serde(rename = "NHWC")]
    Nhwc,
}

impl Layout {
    /// The tensor shape of `n` samples of `width` × `height` pixels in `colour`.
    pub fn shape(self, n: i64, colour: Colour, width: usize, height: usize) -> [i64; 4] {
        let (c, h, w) = (colour.channels() as i64, height as i64, width as i64);
        match self {
            Layout::Nchw => [n, c, h, w],
            Layout::Nhwc => [n, h, w, c],
        }
    }
}

/// Channel order the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Colour {
    /// Red, green, blue.
    #[serde(rename = "RGB")]
    Rgb,
    /// Blue, green, red.
    #[serde(rename = "BGR")]
    Bgr,
    /// One luma channel (BT.601 weights).
    #[serde(rename = "GRAY")]
    Gray,
}

impl Colour {
    /// Number of channels.
    pub fn channels(self) -> usize {
        if self == Colour::Gray { 1 } else { 3 }
    }
}

/// What an input tensor shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The subject's face crop.
    Face,
    /// The whole frame with the subject's box set to black (CLEF's context input).
    ContextMasked,
    /// The subject's body box (derived from the face box).
    Body,
    /// The whole frame.
    Scene,
}

/// Which box `context_masked` blanks out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MaskBox {
    /// The face box.
    #[default]
    Face,
    /// The body box.
    Body,
}

/// How one input tensor is built from a frame.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Tensor name in the ONNX graph.
    pub name: String,
    /// What the tensor shows.
    pub role: Role,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Memory layout.
    #[serde(default = "default_layout")]
    pub layout: Layout,
    /// Channel order.
    #[serde(default = "default_colour")]
    pub colour: Colour,
    /// Per-channel (or one) mean subtracted from 0..255 pixel values.
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Per-channel (or one) divisor applied after the mean.
    #[serde(default)]
    pub std: Vec<f32>,
    /// Alternative to mean/std: `x·scale + offset`.
    pub scale: Option<f32>,
    /// Used with `scale`.
    pub offset: Option<f32>,
}

fn default_layout() -> Layout {
    Layout::Nchw
}
fn default_colour() -> Colour {
    Colour::Rgb
}

impl InputSpec {
    /// `(scale, bias)` per channel such that `value = pixel·scale + bias`.
    pub fn affine(&self) -> [(f32, f32); 3] {
        if let Some(scale) = self.scale {
            return [(scale, self.offset.unwrap_or(0.0)); 3];
        }
        let pick = |v: &[f32], i: usize, d: f32| v.get(i).or(v.first()).copied().unwrap_or(d);
        std::array::from_fn(|i| {
            let (m, s) = (pick(&self.mean, i, 0.0), pick(&self.std, i, 1.0));
            (1.0 / s, -m / s)
        })
    }

    /// Expected shape with the batch dimension `n`.
    pub fn shape(&self, n: i64) -> [i64; 4] {
        self.layout.shape(n, self.colour, self.width, self.height)
    }

    /// Floats per sample.
    pub fn len(&self) -> usize {
        self.width * self.height * self.colour.channels()
    }

    /// Never true for a validated spec.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A classifier: the vanilla CAER model or the context-only branch.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// ONNX file, relative to the bundle.
    pub file: PathBuf,
    /// Inputs, each bound to a role.
    pub inputs: Vec<InputSpec>,
    /// Output tensor holding K logits per sample.
    pub output: String,
}

/// The names of the fused graph's outputs, each K values per subject: what
/// `clef_kit.fuse` writes and the daemon reads instead of computing CLEF itself.
pub const FUSED_OUTPUTS: [&str; 5] = ["y_e", "y_c", "factual", "counterfactual", "tie"];

/// One graph holding both models and CLEF (`[fused]`, written by `clef_kit.fuse`), so
/// the subtraction runs on the accelerator beside the models and the host only reads
/// results. Its outputs are [`FUSED_OUTPUTS`]; `Y_e*` and the fusion are inside it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusedSpec {
    /// ONNX file, relative to the bundle.
    pub file: PathBuf,
    /// The union of both models' inputs, each bound to a role.
    pub inputs: Vec<InputSpec>,
}

pub use crate::detect::anchors::AnchorSpec;

/// The face detector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// Decoder: `blazeface`.
    pub kind: String,
    /// ONNX file, relative to the bundle.
    pub file: PathBuf,
    /// Input tensor name.
    pub input: String,
    /// Square input size in pixels (128 short-range, 192 full-range).
    pub input_size: usize,
    /// Memory layout of the input.
    #[serde(default = "default_layout")]
    pub layout: Layout,
    /// Box regressor output ([1, anchors, 16]).
    pub regressors: String,
    /// Score logit output ([1, anchors, 1]).
    pub scores: String,
    /// Minimum face score (after sigmoid).
    #[serde(default = "default_score")]
    pub score_threshold: f32,
    /// Overlap above which the weaker of two boxes is suppressed.
    #[serde(default = "default_nms")]
    pub nms_iou: f32,
    /// At most this many faces per frame, best first.
    #[serde(default = "default_max_faces")]
    pub max_faces: usize,
    /// Anchor grid.
    pub anchors: AnchorSpec,
}

fn default_score() -> f32 {
    0.5
}
fn default_nms() -> f32 {
    0.3
}
fn default_max_faces() -> usize {
    16
}

/// How subject boxes are derived from the face box.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubjectSpec {
    /// Face crop = face box scaled by this (margin around the face).
    pub face_scale: f32,
    /// Body box width, in face widths.
    pub body_width: f32,
    /// Body box height, in face heights, from half a face above the face box.
    pub body_height: f32,
    /// Which box `context_masked` blanks.
    pub mask: MaskBox,
    /// With `mask = "face"`: the face box scaled by this before blanking, so hair, ears
    /// and chin (outside a detector's tight box) do not leak into the context branch.
    pub mask_scale: f32,
}

impl Default for SubjectSpec {
    fn default() -> Self {
        SubjectSpec { face_scale: 1.0, body_width: 3.0, body_height: 7.0, mask: MaskBox::Face, mask_scale: 1.0 }
    }
}

/// How closely the models, on whatever provider and precision they got, must reproduce
/// the bundle's golden vectors (`[acceptance]`; see `engine::acceptance`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcceptanceSpec {
    /// Largest deviation allowed in `y_e`, `y_c`, factual and counterfactual, relative to
    /// the reference's scale: `max|got − ref| / max(1, max|ref|)` per output and vector.
    pub logits: f32,
    /// The same for the debiased output (the TIE).
    pub debiased: f32,
}

impl Default for AcceptanceSpec {
    /// Below FP16 rounding (4.9e-4 relative): the demo models in FP16 deviate by 9.7e-4 to
    /// 4.1e-3 relative, in FP32 on the CPU by at most 1.1e-7 (figures in `engines/README.md`).
    fn default() -> Self {
        AcceptanceSpec { logits: 2e-4, debiased: 2e-4 }
    }
}

/// A parsed, checked `manifest.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Bundle name (appears in events).
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// One line on what the bundle is.
    #[serde(default)]
    pub description: String,
    /// Single- or multi-label.
    pub task: TaskKind,
    /// Labels in output order.
    pub labels: Vec<String>,
    /// Fusion function φ.
    #[serde(default)]
    pub fusion: Fusion,
    /// `Y_e*`.
    #[serde(default = "zero_e")]
    pub counterfactual_e: CounterfactualE,
    /// Multi-label thresholds, one per label.
    #[serde(default)]
    pub thresholds: Vec<f32>,
    /// Face detector.
    pub detector: DetectorSpec,
    /// Subject boxes and masking.
    #[serde(default)]
    pub subject: SubjectSpec,
    /// The vanilla CAER model (`Y_e`).
    pub vanilla: ModelSpec,
    /// The context-only branch (`Y_c`); without it, debiasing is off.
    pub context_branch: Option<ModelSpec>,
    /// Both models and CLEF in one graph, when the bundle has it (needs a context branch).
    pub fused: Option<FusedSpec>,
    /// Golden-vector tolerances.
    #[serde(default)]
    pub acceptance: AcceptanceSpec,
    /// Folder the manifest was read from (not in the file).
    #[serde(skip)]
    pub dir: PathBuf,
    /// sha256 of the manifest bytes, lowercase hex (not in the file).
    #[serde(skip)]
    pub sha256: String,
}

fn zero_e() -> CounterfactualE {
    CounterfactualE::Scalar(0.0)
}

impl Manifest {
    /// Reads and checks `dir/manifest.toml`, and that every model file it names exists.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join("manifest.toml");
        let err =
            |key: &str, reason: String| ManifestError { path: path.display().to_string(), key: key.into(), reason };
        if !dir.is_dir() {
            return Err(ManifestError {
                path: dir.display().to_string(),
                key: "-".into(),
                reason: "engine bundle folder does not exist (set engine.bundle or the camera's bundle)".into(),
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| err("-", format!("cannot read the bundle manifest: {e}")))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| err("-", "not UTF-8".into()))?;
        let mut m: Manifest =
            toml::from_str(text).map_err(|e| err("-", e.message().to_string() + &span_hint(text, e.span())))?;
        m.dir = dir.to_path_buf();
        m.sha256 = super::sha256_hex(&bytes);
        m.check().map_err(|(key, reason)| err(&key, reason))?;
        Ok(m)
    }

    fn check(&self) -> Result<(), (String, String)> {
        let k = self.labels.len();
        if k == 0 {
            return Err(("labels".into(), "at least one label is needed".into()));
        }
        for (key, v) in [
            ("subject.face_scale", self.subject.face_scale),
            ("subject.body_width", self.subject.body_width),
            ("subject.body_height", self.subject.body_height),
            ("subject.mask_scale", self.subject.mask_scale),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 20.0) {
                return Err((key.into(), format!("{v} is out of range (0, 20]")));
            }
        }
        let star = self.counterfactual_e.as_slice().len();
        if star != 1 && star != k {
            return Err(("counterfactual_e".into(), format!("has {star} values; give one or one per label ({k})")));
        }
        if self.task == TaskKind::MultiLabel && self.thresholds.len() != k {
            return Err((
                "thresholds".into(),
                format!("multi_label bundles need one threshold per label ({k}), found {}", self.thresholds.len()),
            ));
        }
        if self.detector.kind != "blazeface" {
            return Err((
                "detector.kind".into(),
                format!("unknown detector '{}': supported is blazeface", self.detector.kind),
            ));
        }
        if !(16..=2048).contains(&self.detector.input_size) {
            return Err((
                "detector.input_size".into(),
                format!("{} is out of range 16..2048", self.detector.input_size),
            ));
        }
        if self.detector.anchors.strides.is_empty() || self.detector.anchors.strides.contains(&0) {
            return Err(("detector.anchors.strides".into(), "need at least one non-zero stride".into()));
        }
        for (key, v) in
            [("detector.score_threshold", self.detector.score_threshold), ("detector.nms_iou", self.detector.nms_iou)]
        {
            if !(0.0..=1.0).contains(&v) {
                return Err((key.into(), format!("{v} is out of range 0..1")));
            }
        }
        for (key, v) in
            [("acceptance.logits", self.acceptance.logits), ("acceptance.debiased", self.acceptance.debiased)]
        {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                return Err((key.into(), format!("{v} is out of range (0, 1] (relative to the reference's scale)")));
            }
        }
        let mut files = vec![("detector.file", &self.detector.file)];
        files.push(("vanilla.file", &self.vanilla.file));
        check_inputs("vanilla", &self.vanilla.inputs)?;
        if let Some(cb) = &self.context_branch {
            check_inputs("context_branch", &cb.inputs)?;
            files.push(("context_branch.file", &cb.file));
        }
        if let Some(fused) = &self.fused {
            if self.context_branch.is_none() {
                return Err((
                    "fused".into(),
                    "a fused graph computes CLEF, which needs a [context_branch]: add it or remove [fused]".into(),
                ));
            }
            check_inputs("fused", &fused.inputs)?;
            files.push(("fused.file", &fused.file));
        }
        for (key, file) in files {
            if !self.dir.join(file).is_file() {
                return Err((key.into(), format!("model file {} does not exist", self.dir.join(file).display())));
            }
        }
        Ok(())
    }

    /// The task with its thresholds, as the CLEF module takes it.
    pub fn clef_task(&self) -> Task {
        match self.task {
            TaskKind::SingleLabel => Task::SingleLabel,
            TaskKind::MultiLabel => Task::MultiLabel { thresholds: self.thresholds.clone() },
        }
    }
}

fn check_inputs(section: &str, inputs: &[InputSpec]) -> Result<(), (String, String)> {
    if inputs.is_empty() {
        return Err((format!("{section}.inputs"), "at least one input is needed".into()));
    }
    for (i, input) in inputs.iter().enumerate() {
        let key = format!("{section}.inputs[{i}]");
        if !(8..=4096).contains(&input.width) || !(8..=4096).contains(&input.height) {
            return Err((key, format!("size {}x{} is out of range 8..4096", input.width, input.height)));
        }
        if input.std.contains(&0.0) || input.scale == Some(0.0) {
            return Err((key, "std/scale must not be zero".into()));
        }
    }
    Ok(())
}

/// A short pointer to where in the TOML the parser stopped.
fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) => format!(" (line {})", text[..s.start.min(text.len())].lines().count().max(1)),
        None => String::new(),
    }
}
