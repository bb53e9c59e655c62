//! One frame through a bundle: detect faces, classify each subject with the vanilla
//! model and the context branch (batched), and apply CLEF. Shared by `run`, `explain`
//! and the benchmarks, so every path makes the same decision on the same pixels.

use std::time::{Duration, Instant};

use crate::clef::{self, Effects, Task};
use crate::detect::Detection;
use crate::engine::Bundle;
use crate::engine::classifier::SubjectBoxes;
use crate::engine::runtime::EngineError;
use crate::image::RgbView;

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
    pub factual_scores: Vec<f32>,
    /// The scores decisions are made on: of the TIE (debias on) or of `Y_e` (off).
    pub scores: Vec<f32>,
}

/// Time spent per stage on one frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// Letterbox + detector + decode.
    pub detect: Duration,
    /// Crops + classifiers + CLEF.
    pub classify: Duration,
}

/// A bundle ready to analyse frames.
#[derive(Debug)]
pub struct Analyzer {
    bundle: Bundle,
    task: Task,
}

impl Analyzer {
    /// Wraps a loaded bundle.
    pub fn new(bundle: Bundle) -> Analyzer {
        let task = bundle.manifest.clef_task();
        Analyzer { bundle, task }
    }

    /// The bundle's manifest (labels, name, digest).
    pub fn manifest(&self) -> &crate::engine::manifest::Manifest {
        &self.bundle.manifest
    }

    /// The decision rule of the bundle.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// Whether events will carry a TIE.
    pub fn debias(&self) -> bool {
        self.bundle.context_branch.is_some()
    }

    /// Analyses one frame.
    pub fn analyze(
        &mut self,
        frame: &RgbView<'_>,
    ) -> Result<(Vec<FaceAnalysis>, StageTimes), EngineError> {
        let t0 = Instant::now();
        let detections = self.bundle.detector.detect(frame)?;
        let t1 = Instant::now();
        if detections.is_empty() {
            return Ok((
                Vec::new(),
                StageTimes {
                    detect: t1 - t0,
                    classify: Duration::ZERO,
                },
            ));
        }
        let m = &self.bundle.manifest;
        let subjects: Vec<SubjectBoxes> = detections
            .iter()
            .map(|d| SubjectBoxes::from_face(d.rect, &m.subject))
            .collect();
        let y_e = self.bundle.vanilla.classify(frame, &subjects)?;
        let y_c = match self.bundle.context_branch.as_mut() {
            Some(branch) => Some(branch.classify(frame, &subjects)?),
            None => None,
        };
        let star = m.counterfactual_e.as_slice();
        let mut faces = Vec::with_capacity(detections.len());
        for (i, (detection, y_e)) in detections.into_iter().zip(y_e).enumerate() {
            let y_c = y_c.as_ref().map(|all| all[i].clone());
            let effects =
                match &y_c {
                    Some(c) => Some(clef::effects(m.fusion, c, &y_e, star).map_err(|e| {
                        EngineError::Run {
                            model: "clef".into(),
                            reason: e.to_string(),
                        }
                    })?),
                    None => None,
                };
            let factual_scores = self.task.scores(&y_e);
            let scores = match &effects {
                Some(e) => self.task.scores(&e.tie),
                None => factual_scores.clone(),
            };
            faces.push(FaceAnalysis {
                detection,
                y_e,
                y_c,
                effects,
                factual_scores,
                scores,
            });
        }
        Ok((
            faces,
            StageTimes {
                detect: t1 - t0,
                classify: t1.elapsed(),
            },
        ))
    }
}
