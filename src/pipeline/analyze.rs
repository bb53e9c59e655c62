//! Frames through a bundle: detect faces, classify every subject with the vanilla model
//! and the context branch (batched across all given frames), and apply CLEF. Shared by
//! `run`, `explain` and `bench`, so every path makes the same decision on the same pixels.

use std::time::{Duration, Instant};

use crate::clef::{self, Effects, Task};
use crate::detect::Detection;
use crate::engine::classifier::{Subject, SubjectBoxes};
use crate::engine::runtime::EngineError;
use crate::engine::{Bundle, Classifiers};
use crate::image::{ImageView, Rect};

/// Everything the models and CLEF say about one face.
#[derive(Debug, Clone)]
pub struct FaceAnalysis {
    /// Where the face is.
    pub detection: Detection,
    /// Vanilla CAER logits.
    pub y_e: Vec<f32>,
    /// Context-branch logits, when the bundle has a branch.
    pub y_c: Option<Vec<f32>>,
    /// Factual, counterfactual and TIE, when debiasing is on.
    pub effects: Option<Effects>,
    /// What the vanilla model alone says (softmax or sigmoid of `Y_e`).
    pub vanilla_scores: Vec<f32>,
    /// What the context-aware ensemble says, bias included (softmax or sigmoid of
    /// φ(Y_c, Y_e)), when debiasing is on.
    pub factual_scores: Option<Vec<f32>>,
    /// The scores decisions are made on: of the TIE (debias on) or of `Y_e` (off).
    pub scores: Vec<f32>,
    /// Frames since the face was classified: 0 when it was on this frame, more when its
    /// classification was kept from an earlier one (`classify_every`).
    pub age: u32,
}

/// What the worker knows of a camera before one of its frames is analysed, so that the
/// analysis may skip work (`detect_every`, `classify_every`).
#[derive(Debug, Clone, Default)]
pub struct Hint {
    /// The detector's turn; if not, the frame is skipped (no face is looked for).
    pub detect: bool,
    /// The camera's faces on its last detected frame.
    pub previous: Vec<FaceAnalysis>,
    /// Frames from that one to this one.
    pub step: u32,
    /// A face's classification is kept for fewer than this many frames (1: never).
    pub classify_every: u32,
}

/// A face whose centre moved by more than this share of its size is classified again.
const MOVED: f32 = 0.15;
/// A face whose width changed by more than this factor is classified again.
const GREW: f32 = 1.2;

impl Hint {
    /// The earlier face `detection` continues, when its classification may be kept: it
    /// has not moved or grown much, and was classified fewer than `classify_every` frames ago.
    fn reusable(&self, detection: &Detection) -> Option<&FaceAnalysis> {
        let (b, size) = (detection.rect, detection.rect.w.max(detection.rect.h).max(1.0));
        self.previous.iter().filter(|p| p.age + self.step < self.classify_every).find(|p| {
            let a = p.detection.rect;
            let shift =
                ((a.x + a.w / 2.0 - b.x - b.w / 2.0).powi(2) + (a.y + a.h / 2.0 - b.y - b.h / 2.0).powi(2)).sqrt();
            let ratio = b.w / a.w.max(1e-3);
            shift <= MOVED * size && (1.0 / GREW..=GREW).contains(&ratio)
        })
    }
}

/// Time spent per stage on one call.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// Letterbox + detector + decode.
    pub detect: Duration,
    /// Crops + classifiers + CLEF.
    pub classify: Duration,
    /// Frames the detector ran on.
    pub detected: u64,
    /// Faces the classifiers ran on (the rest kept an earlier classification).
    pub classified: u64,
}

/// A bundle ready to analyse frames.
#[derive(Debug)]
pub struct Analyzer {
    bundle: Bundle,
    task: Task,
    max_batch: usize,
}

impl Analyzer {
    /// Wraps a loaded bundle; classifier batches hold at most `max_batch` faces.
    pub fn new(bundle: Bundle, max_batch: usize) -> Analyzer {
        let task = bundle.manifest.clef_task();
        Analyzer { bundle, task, max_batch: max_batch.max(1) }
    }

    /// The bundle's manifest (labels, name, digest).
    pub fn manifest(&self) -> &crate::engine::manifest::Manifest {
        &self.bundle.manifest
    }

    /// The decision rule of the bundle.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The execution provider the bundle's classifier runs on: where most of its time goes.
    pub fn provider(&self) -> &str {
        self.bundle.provider()
    }

    /// Whether CLEF is computed inside the engine (the bundle's fused graph).
    pub fn fused(&self) -> bool {
        self.bundle.fused()
    }

    /// Whether events will carry a TIE.
    pub fn debias(&self) -> bool {
        self.bundle.debias()
    }

    /// Analyses one frame.
    pub fn analyze(&mut self, frame: &ImageView<'_>) -> Result<(Vec<FaceAnalysis>, StageTimes), EngineError> {
        let (mut all, times) = self.analyze_batch(std::slice::from_ref(frame))?;
        Ok((all.pop().unwrap_or_default(), times))
    }

    /// Analyses several frames (e.g. one per camera): detection per frame, then one
    /// classifier batch for all their faces. Returns the faces of each frame, in order.
    pub fn analyze_batch(
        &mut self,
        frames: &[ImageView<'_>],
    ) -> Result<(Vec<Vec<FaceAnalysis>>, StageTimes), EngineError> {
        self.analyze_hinted(frames, &[])
    }

    /// Like [`Analyzer::analyze_batch`], skipping what each frame's [`Hint`] allows: the
    /// detector on frames that are not its turn, the classifiers for faces that keep
    /// their classification.
    pub fn analyze_hinted(
        &mut self,
        frames: &[ImageView<'_>],
        hints: &[Option<&Hint>],
    ) -> Result<(Vec<Vec<FaceAnalysis>>, StageTimes), EngineError> {
        let t0 = Instant::now();
        let mut detections = Vec::with_capacity(frames.len());
        let mut detected = 0;
        for (i, f) in frames.iter().enumerate() {
            match hints.get(i).copied().flatten() {
                Some(hint) if !hint.detect => detections.push(Vec::new()),
                _ => {
                    detections.push(self.bundle.detector.detect(f)?);
                    detected += 1;
                }
            }
        }
        let t1 = Instant::now();
        let out = self.classify(frames, detections, hints)?;
        let classified = out.iter().flatten().filter(|f| f.age == 0).count() as u64;
        Ok((out, StageTimes { detect: t1 - t0, classify: t1.elapsed(), detected, classified }))
    }

    /// Analyses faces whose boxes are already known (a labelled dataset, `clefd eval`):
    /// the same crops, models and CLEF as for detected faces, without the detector.
    pub fn analyze_boxes(&mut self, frame: &ImageView<'_>, faces: &[Rect]) -> Result<Vec<FaceAnalysis>, EngineError> {
        let given = faces.iter().map(|&rect| Detection { rect, score: 1.0, keypoints: [[0.0; 2]; 6] }).collect();
        Ok(self.classify(std::slice::from_ref(frame), vec![given], &[])?.pop().unwrap_or_default())
    }

    /// Classifies every face of every frame that keeps no earlier classification (see
    /// [`Hint`]), in one batch per model, and applies CLEF.
    fn classify(
        &mut self,
        frames: &[ImageView<'_>],
        detections: Vec<Vec<Detection>>,
        hints: &[Option<&Hint>],
    ) -> Result<Vec<Vec<FaceAnalysis>>, EngineError> {
        let kept: Vec<Vec<Option<(&FaceAnalysis, u32)>>> = detections
            .iter()
            .enumerate()
            .map(|(i, dets)| {
                let hint = hints.get(i).copied().flatten();
                dets.iter().map(|d| hint.and_then(|h| Some((h.reusable(d)?, h.step)))).collect()
            })
            .collect();
        let spec = &self.bundle.manifest.subject;
        let subjects: Vec<Subject<'_>> = frames
            .iter()
            .zip(detections.iter().zip(&kept))
            .flat_map(|(frame, (dets, kept))| dets.iter().zip(kept).map(move |(d, k)| (frame, d, k)))
            .filter(|(_, _, kept)| kept.is_none())
            .map(|(frame, d, _)| Subject { frame, boxes: SubjectBoxes::from_face(d.rect, spec) })
            .collect();
        let mut heads = if subjects.is_empty() { Vec::new() } else { self.heads(&subjects)? }.into_iter();
        let mut out = Vec::with_capacity(frames.len());
        for (dets, kept) in detections.into_iter().zip(kept) {
            let mut faces = Vec::with_capacity(dets.len());
            for (detection, kept) in dets.into_iter().zip(kept) {
                if let Some((earlier, step)) = kept {
                    faces.push(FaceAnalysis { detection, age: earlier.age + step, ..earlier.clone() });
                    continue;
                }
                let Some(Heads { y_e, y_c, effects }) = heads.next() else {
                    break;
                };
                let vanilla_scores = self.task.scores(&y_e);
                let factual_scores = effects.as_ref().map(|e| self.task.scores(&e.factual));
                let scores = match &effects {
                    Some(e) => self.task.scores(&e.tie),
                    None => vanilla_scores.clone(),
                };
                faces.push(FaceAnalysis {
                    detection,
                    y_e,
                    y_c,
                    effects,
                    vanilla_scores,
                    factual_scores,
                    scores,
                    age: 0,
                });
            }
            out.push(faces);
        }
        Ok(out)
    }

    /// The models' logits and CLEF's effects for every subject, in order: read from the
    /// fused graph, or computed here from the two models' logits.
    fn heads(&mut self, subjects: &[Subject<'_>]) -> Result<Vec<Heads>, EngineError> {
        let m = &self.bundle.manifest;
        match &mut self.bundle.classifiers {
            Classifiers::Fused(fused) => {
                let k = m.labels.len();
                let rows = fused.classify(subjects, self.max_batch)?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        let part = |i: usize| row[i * k..(i + 1) * k].to_vec();
                        let effects = Effects { factual: part(2), counterfactual: part(3), tie: part(4) };
                        Heads { y_e: part(0), y_c: Some(part(1)), effects: Some(effects) }
                    })
                    .collect())
            }
            Classifiers::Separate { vanilla, context_branch } => {
                let y_e = vanilla.classify(subjects, self.max_batch)?;
                let y_c = match context_branch {
                    Some(branch) => branch.classify(subjects, self.max_batch)?.into_iter().map(Some).collect(),
                    None => vec![None; y_e.len()],
                };
                let star = m.counterfactual_e.as_slice();
                y_e.into_iter()
                    .zip(y_c)
                    .map(|(y_e, y_c)| {
                        let effects = match &y_c {
                            Some(c) => Some(
                                clef::effects(m.fusion, c, &y_e, star)
                                    .map_err(|e| EngineError::Run { model: "clef".into(), reason: e.to_string() })?,
                            ),
                            None => None,
                        };
                        Ok(Heads { y_e, y_c, effects })
                    })
                    .collect()
            }
        }
    }
}

/// What the models and CLEF say about one subject, before scoring.
struct Heads {
    y_e: Vec<f32>,
    y_c: Option<Vec<f32>>,
    effects: Option<Effects>,
}
