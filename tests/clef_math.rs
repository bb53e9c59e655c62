//! CLEF math against vectors from an independent NumPy implementation
//! (`tests/clef_reference/generate.py`), plus properties that must hold for any input.

use clefd::clef::{Fusion, Task, effects, sigmoids, softmax};
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    fusion: Fusion,
    y_c: Vec<f32>,
    y_e: Vec<f32>,
    y_e_star: Vec<f32>,
    factual: Vec<f64>,
    counterfactual: Vec<f64>,
    tie: Vec<f64>,
    softmax_tie: Vec<f64>,
    sigmoid_tie: Vec<f64>,
}

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

fn assert_close(what: &str, i: usize, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what} case {i}: length");
    for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * w.abs().max(1.0);
        assert!((f64::from(g) - w).abs() <= tol, "{what} case {i} label {j}: got {g}, want {w}");
    }
}

#[test]
fn matches_numpy_reference_vectors() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clef_reference/vectors.json"))
        .expect("reference vectors are committed");
    let vectors: Vectors = serde_json::from_str(&text).expect("vectors.json parses");
    assert!(vectors.cases.len() >= 45);
    for (i, c) in vectors.cases.iter().enumerate() {
        let e = effects(c.fusion, &c.y_c, &c.y_e, &c.y_e_star).expect("lengths match");
        assert_close("factual", i, &e.factual, &c.factual);
        assert_close("counterfactual", i, &e.counterfactual, &c.counterfactual);
        assert_close("tie", i, &e.tie, &c.tie);
        assert_close("softmax", i, &softmax(&e.tie), &c.softmax_tie);
        assert_close("sigmoid", i, &sigmoids(&e.tie), &c.sigmoid_tie);
    }
}

fn fusion() -> impl Strategy<Value = Fusion> {
    prop_oneof![Just(Fusion::Sum), Just(Fusion::Hm), Just(Fusion::Rubi)]
}

proptest! {
    #[test]
    fn no_treatment_gives_zero_tie(f in fusion(), y_c in prop::collection::vec(-1e4f32..1e4, 7), y_e in prop::collection::vec(-1e4f32..1e4, 7)) {
        let e = effects(f, &y_c, &y_e, &y_e).unwrap();
        prop_assert!(e.tie.iter().all(|&t| t == 0.0));
    }

    #[test]
    fn outputs_are_finite(f in fusion(), y_c in prop::collection::vec(-1e4f32..1e4, 26), y_e in prop::collection::vec(-1e4f32..1e4, 26), star in -1e4f32..1e4) {
        let e = effects(f, &y_c, &y_e, &[star]).unwrap();
        for v in e.factual.iter().chain(&e.counterfactual).chain(&e.tie) {
            prop_assert!(v.is_finite());
        }
        let p = softmax(&e.tie);
        prop_assert!(p.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
        prop_assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        prop_assert!(sigmoids(&e.tie).iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn sum_fusion_tie_is_monotone_in_y_e(y_c in -50f32..50.0, y_e in -50f32..50.0, star in -50f32..50.0, d in 0.01f32..10.0) {
        // A larger ensemble logit never lowers the debiased logit.
        let lo = effects(Fusion::Sum, &[y_c], &[y_e], &[star]).unwrap().tie[0];
        let hi = effects(Fusion::Sum, &[y_c], &[y_e + d], &[star]).unwrap().tie[0];
        prop_assert!(hi >= lo);
    }

    #[test]
    fn single_label_decision_is_argmax_of_softmax(logits in prop::collection::vec(-100f32..100.0, 7)) {
        let d = Task::SingleLabel.decide(&logits);
        let best = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        prop_assert_eq!(logits[d.top], best);
        prop_assert!((d.confidence - d.scores[d.top]).abs() < 1e-7);
    }
}
