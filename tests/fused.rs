//! CLEF inside the engine: a bundle's fused graph (`clef_kit.fuse`) gives the same logits,
//! factual, counterfactual and TIE as the two models with CLEF on the host, to 1e-5, for
//! the shipped bundle and for every fusion × task (the fixtures in `tests/fused/`, written
//! by `engines/kit/make_fused_fixtures.py`); and the daemon uses it by default.

mod common;

use std::path::PathBuf;

use clefd::engine::runtime::{self, SessionOptions};
use clefd::engine::{Bundle, ClefPlacement};
use clefd::image::Rect;
use clefd::pipeline::analyze::{Analyzer, FaceAnalysis};

fn bundles() -> Vec<PathBuf> {
    let mut out =
        vec![common::repo().join("engines/context-bias-demo"), common::repo().join("engines/context-multilabel-demo")];
    for fusion in ["sum", "hm", "rubi"] {
        for task in ["single", "multi"] {
            out.push(common::repo().join(format!("tests/fused/{fusion}-{task}")));
        }
    }
    out
}

/// `a` and `b` agree to 1e-5, relative to their size where that exceeds 1.
fn agree(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(x.is_finite() && y.is_finite(), "{what}[{i}]: {x} vs {y}");
        let tolerance = 1e-5 * x.abs().max(1.0);
        assert!((x - y).abs() <= tolerance, "{what}[{i}]: host {x} vs fused {y}");
    }
}

fn analyse(bundle: Bundle, faces: &[Rect]) -> Vec<FaceAnalysis> {
    let picture = common::astronaut();
    Analyzer::new(bundle, 16).analyze_boxes(&picture.view(), faces).expect("the bundle runs")
}

#[test]
fn the_fused_graph_agrees_with_clef_on_the_host_for_every_bundle_fusion_and_task() {
    runtime::init(None).expect("ONNX Runtime (run scripts/setup.sh)");
    let opts = SessionOptions { threads: 1, ..SessionOptions::default() };
    // Faces all over the picture, one partly outside it, in one batch.
    let faces: Vec<Rect> = (0..6)
        .map(|i| Rect { x: -20.0 + 70.0 * i as f32, y: 5.0 + 25.0 * i as f32, w: 90.0 + 20.0 * i as f32, h: 110.0 })
        .collect();
    for dir in bundles() {
        let name = dir.display().to_string();
        let host = Bundle::load_placed(&dir, &opts, ClefPlacement::Host).unwrap_or_else(|e| panic!("{name}: {e}"));
        let fused = Bundle::load(&dir, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!host.fused() && host.debias(), "{name}: the host path runs both models");
        assert!(fused.fused(), "{name}: a bundle with [fused] runs it by default");
        let (host, fused) = (analyse(host, &faces), analyse(fused, &faces));
        assert_eq!(host.len(), faces.len());
        assert_eq!(fused.len(), faces.len());
        let mut decisions_differ = false;
        for (i, (h, f)) in host.iter().zip(&fused).enumerate() {
            let at = |what: &str| format!("{name} face {i} {what}");
            agree(&at("y_e"), &h.y_e, &f.y_e);
            agree(&at("y_c"), h.y_c.as_deref().unwrap_or_default(), f.y_c.as_deref().unwrap_or_default());
            let (he, fe) = (h.effects.as_ref().expect("host effects"), f.effects.as_ref().expect("fused effects"));
            agree(&at("factual"), &he.factual, &fe.factual);
            agree(&at("counterfactual"), &he.counterfactual, &fe.counterfactual);
            agree(&at("tie"), &he.tie, &fe.tie);
            agree(&at("scores"), &h.scores, &f.scores);
            decisions_differ |= h.vanilla_scores != h.scores;
        }
        assert!(
            host.windows(2).any(|p| p[0].y_e != p[1].y_e),
            "{name}: the faces give different logits, so a mix-up would show"
        );
        assert!(decisions_differ, "{name}: CLEF changes the scores, so a skipped subtraction would show");
    }
}

#[test]
fn a_fused_graph_without_a_context_branch_is_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = common::repo().join("tests/fused/sum-single");
    for file in ["vanilla.onnx", "clef_fused.onnx", "blazeface_full.onnx"] {
        std::fs::copy(fixture.join(file), dir.path().join(file)).unwrap();
    }
    let manifest = std::fs::read_to_string(fixture.join("manifest.toml")).unwrap();
    let start = manifest.find("[context_branch]").expect("the fixture has a context branch");
    let end = manifest.find("# One graph").expect("the fixture has a fused graph");
    std::fs::write(dir.path().join("manifest.toml"), format!("{}{}", &manifest[..start], &manifest[end..])).unwrap();
    let e = clefd::engine::manifest::Manifest::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("manifest.toml: fused: "), "{e}");
    assert!(e.contains("needs a [context_branch]"), "{e}");
}
