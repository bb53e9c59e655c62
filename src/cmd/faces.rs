//! `clefd faces`: the daemon's face detector on still pictures, one JSON line each.
//!
//! Datasets without face boxes (CAER-S) must be cropped the way the daemon crops the
//! field: this is how the CLEF kit finds the faces it trains on, with the very detector,
//! letterbox and decoding the daemon runs, rather than a look-alike in Python.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clefd::engine::Bundle;
use clefd::engine::runtime::{self, SessionOptions};
use serde_json::json;

/// Prints `{"image", "faces": [{"box_px": [x, y, w, h], "score"}]}` per picture (best
/// first), or `{"image", "error"}` for one that cannot be read; exits 1 if any could not.
pub fn faces(bundle: &Path, images: &[PathBuf], onnxruntime: Option<&Path>) -> anyhow::Result<ExitCode> {
    runtime::init(onnxruntime)?;
    let mut detector =
        Bundle::load_detector(bundle, &SessionOptions::default()).context("cannot load the bundle's detector")?;
    let mut out = std::io::stdout().lock();
    let mut failed = 0usize;
    for image in images {
        let line = match clefd::source::decode_image(image) {
            Ok(picture) => {
                let found = detector.detect(&picture.view())?;
                let faces: Vec<_> = found
                    .iter()
                    .map(|d| json!({"box_px": [d.rect.x, d.rect.y, d.rect.w, d.rect.h], "score": d.score}))
                    .collect();
                json!({"image": image, "width": picture.width, "height": picture.height, "faces": faces})
            }
            Err(e) => {
                failed += 1;
                json!({"image": image, "error": e.to_string()})
            }
        };
        writeln!(out, "{line}")?;
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
