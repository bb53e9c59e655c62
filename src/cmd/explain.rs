//! `clefd explain`: one image through a bundle, every intermediate value as JSON.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clefd::engine::Bundle;
use clefd::engine::runtime::{self, SessionOptions};
use clefd::events::LabelValues;
use clefd::pipeline::analyze::Analyzer;
use serde_json::json;

/// Prints the analysis of `image` by the bundle in `dir`.
pub fn explain(dir: &Path, image: &Path, onnxruntime: Option<&Path>) -> anyhow::Result<ExitCode> {
    runtime::init(onnxruntime)?;
    let bundle = Bundle::load(dir, &SessionOptions::default()).context("cannot load the engine bundle")?;
    let mut analyzer = Analyzer::new(bundle, 16);
    let picture = clefd::source::decode_image(image)?;
    let (faces, _) = analyzer.analyze(&picture.view())?;
    let m = analyzer.manifest();
    let labels = &m.labels;
    let (w, h) = (picture.width as f32, picture.height as f32);
    let faces: Vec<_> = faces
        .iter()
        .map(|f| {
            let r = f.detection.rect;
            let c = r.clamped(w, h);
            let decision = analyzer.task().decide_scores(f.scores.clone());
            json!({
                "box_px": [r.x, r.y, r.w, r.h],
                "box": {"x": c.x / w, "y": c.y / h, "w": c.w / w, "h": c.h / h},
                "detector_score": f.detection.score,
                "y_e": f.y_e,
                "y_c": f.y_c,
                "vanilla": LabelValues::new(labels, &f.vanilla_scores),
                "factual": f.factual_scores.as_ref().map(|s| LabelValues::new(labels, s)),
                "debiased": f.effects.as_ref().map(|e| LabelValues::new(labels, &e.tie)),
                "context_bias": f.effects.as_ref().map(|e| LabelValues::new(labels, &e.counterfactual)),
                "emotion": labels.get(decision.top),
                "confidence": decision.confidence,
            })
        })
        .collect();
    let out = json!({
        "bundle": {
            "name": m.name,
            "version": m.version,
            "sha256": m.sha256,
            "task": format!("{:?}", m.task),
            "fusion": m.fusion,
            "labels": labels,
            "debias": if analyzer.debias() { "on" } else { "off" },
        },
        "image": {"path": image.display().to_string(), "width": picture.width, "height": picture.height},
        "faces": faces,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
