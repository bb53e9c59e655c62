//! CLEF's counterfactual inference (Yang et al., CVPR 2024), as pure functions.
//!
//! Per subject the engine produces two logit vectors over the same K labels:
//! `Y_e` from the vanilla CAER model and `Y_c` from the context-only branch, which sees
//! the scene with the subject blanked out. The bundle supplies `Y_e*`, the learned
//! "no-treatment" value of the ensemble branch. The debiased estimate is the total
//! indirect effect
//!
//! ```text
//! TIE = φ(Y_c, Y_e) − φ(Y_c, Y_e*)
//! ```
//!
//! where φ is the fusion function. Everything here is computed in `f64` with
//! numerically stable forms (`log σ(x) = −softplus(−x)`), so the output is finite for
//! every finite input, however large.
//!
//! Nothing in this module does I/O or knows about frames, models or MQTT.

use serde::{Deserialize, Serialize};

/// How the context branch and the ensemble branch are combined (paper Eq. 11 and
/// Counterfactual VQA's alternatives). Chosen per bundle in its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// `φ(a, b) = log σ(a + b)`: the paper's choice.
    #[default]
    Sum,
    /// Harmonic: `z = σ(a)·σ(b); φ = log(z / (1 + z))`.
    Hm,
    /// RUBi: `φ = b · σ(a)`.
    Rubi,
}

/// Whether a bundle decides one label per subject or a set of labels.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// One label: argmax, reported as a softmax.
    SingleLabel,
    /// Several labels (EMOTIC-style): sigmoid per label, active above its threshold.
    MultiLabel {
        /// One threshold per label, in label order.
        thresholds: Vec<f32>,
    },
}

/// Errors from inputs whose lengths do not line up.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClefError {
    /// `Y_c`, `Y_e` and `Y_e*` must all have K entries (`Y_e*` may also be one scalar).
    #[error("length mismatch: Y_c has {y_c}, Y_e has {y_e}, Y_e* has {y_e_star} (expected K, K and K or 1)")]
    LengthMismatch {
        /// Entries in `Y_c`.
        y_c: usize,
        /// Entries in `Y_e`.
        y_e: usize,
        /// Entries in `Y_e*`.
        y_e_star: usize,
    },
}

/// The three quantities of Eq. 9, each K long.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects {
    /// `φ(Y_c, Y_e)`: what the full model says, context bias included.
    pub factual: Vec<f32>,
    /// `φ(Y_c, Y_e*)`: what the context alone pushes towards.
    pub counterfactual: Vec<f32>,
    /// `factual − counterfactual`: the debiased logits.
    pub tie: Vec<f32>,
}

/// A decision over K labels: what the event reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index of the top label (single-label), or of the highest-scoring active label
    /// (multi-label; the highest-scoring label when none is active).
    pub top: usize,
    /// Score of `top`, in 0..=1.
    pub confidence: f32,
    /// Softmax (single-label) or sigmoid (multi-label) per label.
    pub scores: Vec<f32>,
    /// Multi-label only: indices of the labels at or above their threshold.
    pub active: Vec<usize>,
}

/// `softplus(x) = log(1 + e^x)`, stable for any finite x.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `log σ(x) = −softplus(−x)`: never NaN, never −∞ for finite x.
pub fn log_sigmoid(x: f64) -> f64 {
    -softplus(-x)
}

/// `σ(x)`, computed without overflow for any finite `x`.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl Fusion {
    /// `φ(a, b)` for one label, where `a` is the context-branch logit and `b` the
    /// ensemble-branch logit (or `Y_e*` for the counterfactual).
    pub fn fuse(self, a: f64, b: f64) -> f64 {
        match self {
            Fusion::Sum => log_sigmoid(a + b),
            // log(z/(1+z)) with log z = log σ(a) + log σ(b); equals log σ(log z).
            Fusion::Hm => log_sigmoid(log_sigmoid(a) + log_sigmoid(b)),
            Fusion::Rubi => b * sigmoid(a),
        }
    }
}

/// Computes factual, counterfactual and TIE for one subject.
///
/// `y_e_star` is either K values or one value broadcast to all labels.
pub fn effects(fusion: Fusion, y_c: &[f32], y_e: &[f32], y_e_star: &[f32]) -> Result<Effects, ClefError> {
    let k = y_e.len();
    if y_c.len() != k || !(y_e_star.len() == k || y_e_star.len() == 1) {
        return Err(ClefError::LengthMismatch { y_c: y_c.len(), y_e: k, y_e_star: y_e_star.len() });
    }
    let star = |i: usize| f64::from(if y_e_star.len() == 1 { y_e_star[0] } else { y_e_star[i] });
    let mut out =
        Effects { factual: Vec::with_capacity(k), counterfactual: Vec::with_capacity(k), tie: Vec::with_capacity(k) };
    for i in 0..k {
        let a = f64::from(y_c[i]);
        let f = fusion.fuse(a, f64::from(y_e[i]));
        let cf = fusion.fuse(a, star(i));
        out.factual.push(f as f32);
        out.counterfactual.push(cf as f32);
        out.tie.push((f - cf) as f32);
    }
    Ok(out)
}

/// Softmax, stable for any finite logits.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let exps: Vec<f64> = logits.iter().map(|&x| (f64::from(x) - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// Elementwise sigmoid, stable for any finite logits.
pub fn sigmoids(logits: &[f32]) -> Vec<f32> {
    logits.iter().map(|&x| sigmoid(f64::from(x)) as f32).collect()
}

impl Task {
    /// Turns logits into per-label scores (softmax or sigmoid).
    pub fn scores(&self, logits: &[f32]) -> Vec<f32> {
        match self {
            Task::SingleLabel => softmax(logits),
            Task::MultiLabel { .. } => sigmoids(logits),
        }
    }

    /// Decides on scores already produced by [`Task::scores`] (possibly smoothed).
    pub fn decide_scores(&self, scores: Vec<f32>) -> Decision {
        let argmax = |idx: &mut dyn Iterator<Item = usize>| {
            idx.fold(None, |best: Option<usize>, i| match best {
                Some(b) if scores[b] >= scores[i] => Some(b),
                _ => Some(i),
            })
        };
        let (top, active) = match self {
            Task::SingleLabel => (argmax(&mut (0..scores.len())).unwrap_or(0), Vec::new()),
            Task::MultiLabel { thresholds } => {
                let active: Vec<usize> =
                    (0..scores.len()).filter(|&i| scores[i] >= thresholds.get(i).copied().unwrap_or(0.5)).collect();
                let top = argmax(&mut active.iter().copied()).or_else(|| argmax(&mut (0..scores.len())));
                (top.unwrap_or(0), active)
            }
        };
        let confidence = scores.get(top).copied().unwrap_or(0.0);
        Decision { top, confidence, scores, active }
    }

    /// Scores and decides in one step.
    pub fn decide(&self, logits: &[f32]) -> Decision {
        self.decide_scores(self.scores(logits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sigmoid_is_finite_at_extremes() {
        for x in [-1e4, -800.0, -100.0, 0.0, 100.0, 800.0, 1e4] {
            let v = log_sigmoid(x);
            assert!(v.is_finite(), "log_sigmoid({x}) = {v}");
        }
        assert!((log_sigmoid(0.0) + std::f64::consts::LN_2).abs() < 1e-12);
        assert!((log_sigmoid(-1e4) + 1e4).abs() < 1e-9);
    }

    #[test]
    fn mismatched_lengths_are_an_error() {
        let e = effects(Fusion::Sum, &[0.0; 3], &[0.0; 4], &[0.0]).unwrap_err();
        assert_eq!(e, ClefError::LengthMismatch { y_c: 3, y_e: 4, y_e_star: 1 });
    }

    #[test]
    fn multi_label_marks_labels_above_threshold() {
        let task = Task::MultiLabel { thresholds: vec![0.5, 0.9, 0.5] };
        let d = task.decide(&[2.0, 1.0, -3.0]);
        assert_eq!(d.active, vec![0]);
        assert_eq!(d.top, 0);
        assert!((d.confidence - 0.880797).abs() < 1e-5);
    }
}
