//! `clefd eval`: a bundle scored on a labelled dataset through the daemon's own code path
//! (decode, crops and masking, ONNX Runtime, CLEF), so the numbers say what the daemon
//! will do, and a change in preprocessing or math shows up as a changed number.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clefd::engine::Bundle;
use clefd::engine::manifest::TaskKind;
use clefd::engine::runtime::{self, SessionOptions};
use clefd::eval::{Accuracy, Item, MeanAp, read_caer_s, read_dataset, read_emotic, read_npy_picture};
use clefd::pipeline::analyze::Analyzer;
use serde_json::json;

/// The three decisions the evaluation compares.
const KINDS: [&str; 3] = ["vanilla", "factual", "debiased"];

enum Tally {
    Single([Accuracy; 3]),
    Multi([MeanAp; 3]),
}

/// Scores the bundle in `bundle` on the dataset in `dataset` and prints the result
/// (a table and confusion matrices, or JSON).
pub fn eval(bundle: &Path, dataset: &Path, onnxruntime: Option<&Path>, as_json: bool) -> anyhow::Result<ExitCode> {
    runtime::init(onnxruntime)?;
    let loaded = Bundle::load(bundle, &SessionOptions::default()).context("cannot load the engine bundle")?;
    let mut analyzer = Analyzer::new(loaded, 16);
    let m = analyzer.manifest().clone();
    let k = m.labels.len();
    let items = read_items(dataset, &m)?;
    let mut no_face = 0usize;
    let mut tally = match m.task {
        TaskKind::SingleLabel => Tally::Single(std::array::from_fn(|_| Accuracy::new(k))),
        TaskKind::MultiLabel => Tally::Multi(Default::default()),
    };
    for item in &items {
        let picture = match item.in_array {
            Some(index) => read_npy_picture(&item.file, index)?,
            None => clefd::source::decode_image(&item.file)?,
        };
        let faces = match item.face {
            Some(rect) => analyzer.analyze_boxes(&picture.view(), &[rect])?,
            None => analyzer.analyze(&picture.view())?.0,
        };
        // Where the dataset gives no box, the largest face found is the subject.
        let largest = faces.iter().max_by(|a, b| a.detection.rect.area().total_cmp(&b.detection.rect.area()));
        let Some(face) = largest else {
            no_face += 1;
            continue;
        };
        let factual = face.effects.as_ref().map_or(&face.y_e, |e| &e.factual);
        let tie = face.effects.as_ref().map_or(&face.y_e, |e| &e.tie);
        match &mut tally {
            Tally::Single(acc) => {
                let truth = *item.labels.first().with_context(|| format!("{}: no label", item.file.display()))?;
                for (a, logits) in acc.iter_mut().zip([&face.y_e, factual, tie]) {
                    a.add(truth, logits);
                }
            }
            Tally::Multi(maps) => {
                for (a, logits) in maps.iter_mut().zip([&face.y_e, factual, tie]) {
                    a.add(&item.labels, &clefd::clef::sigmoids(logits));
                }
            }
        }
    }
    let debias = analyzer.debias();
    let scored = items.len() - no_face;
    if as_json {
        let mut out = as_json_value(&m, dataset, scored, &tally, debias);
        out["no_face"] = json!(no_face);
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", as_text(&m, dataset, scored, &tally, debias));
        if no_face > 0 {
            println!("{no_face} picture(s) without a face the detector found: not scored");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The dataset named by `--dataset`: a folder with `index.csv`, or `caer-s:DIR` /
/// `emotic:DIR` (CAER-S or EMOTIC as distributed; their test split is scored).
fn read_items(dataset: &Path, m: &clefd::engine::manifest::Manifest) -> anyhow::Result<Vec<Item>> {
    let spec = dataset.to_string_lossy();
    if let Some(dir) = spec.strip_prefix("caer-s:") {
        return Ok(read_caer_s(Path::new(dir), &m.labels)?);
    }
    if let Some(dir) = spec.strip_prefix("emotic:") {
        return Ok(read_emotic(Path::new(dir), &m.labels, (m.subject.body_width, m.subject.body_height))?);
    }
    Ok(read_dataset(dataset, &m.labels)?)
}

fn as_json_value(
    m: &clefd::engine::manifest::Manifest,
    dataset: &Path,
    n: usize,
    tally: &Tally,
    debias: bool,
) -> serde_json::Value {
    let mut out = json!({
        "bundle": {"name": m.name, "version": m.version, "sha256": m.sha256},
        "dataset": dataset.display().to_string(),
        "n": n,
        "labels": m.labels,
        "debias": debias,
    });
    for (i, kind) in KINDS.iter().enumerate() {
        out[*kind] = match tally {
            Tally::Single(acc) => json!({
                "correct": acc[i].correct,
                "accuracy": acc[i].percent(),
                "confusion": acc[i].confusion.chunks(m.labels.len()).collect::<Vec<_>>(),
            }),
            Tally::Multi(maps) => json!({"map": maps[i].percent(), "ap": maps[i].per_label()}),
        };
    }
    out
}

fn as_text(m: &clefd::engine::manifest::Manifest, dataset: &Path, n: usize, tally: &Tally, debias: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "bundle {} {} ({}) on {}: {n} faces", m.name, m.version, &m.sha256[..12], dataset.display());
    if !debias {
        let _ = writeln!(s, "note: the bundle has no context branch; factual and TIE are the vanilla model's logits");
    }
    let names = ["vanilla (Y_e alone)", "factual φ(Y_c,Y_e)", "TIE (debiased)"];
    let value = |i: usize| match tally {
        Tally::Single(acc) => (acc[i].percent(), format!("({}/{})", acc[i].correct, acc[i].n)),
        Tally::Multi(maps) => (maps[i].percent(), "mAP".to_string()),
    };
    let metric = if matches!(tally, Tally::Single(_)) { "accuracy" } else { "mean average precision" };
    let _ = writeln!(s, "{metric}:");
    for (i, name) in names.iter().enumerate() {
        let (pct, detail) = value(i);
        let _ = writeln!(s, "  {name:22} {pct:6.2} %  {detail}");
    }
    let _ = writeln!(s, "  TIE − factual: {:+.2} points", value(2).0 - value(1).0);
    if let Tally::Multi(maps) = tally {
        per_label_ap(&mut s, &m.labels, maps);
    }
    if let Tally::Single(acc) = tally {
        for (i, title) in [(1, "factual"), (2, "TIE")] {
            let _ = writeln!(s, "\nconfusion, {title} (rows: truth, columns: decision)");
            let width = m.labels.iter().map(String::len).max().unwrap_or(5).max(5);
            let _ = write!(s, "{:width$}", "");
            for l in &m.labels {
                let _ = write!(s, " {l:>width$}");
            }
            s.push('\n');
            for (truth, row) in acc[i].confusion.chunks(m.labels.len()).enumerate() {
                let _ = write!(s, "{:width$}", m.labels[truth]);
                for c in row {
                    let _ = write!(s, " {c:>width$}");
                }
                s.push('\n');
            }
        }
    }
    s
}

/// The AP of every label in the three views ("-" for a label without a positive item).
fn per_label_ap(s: &mut String, labels: &[String], maps: &[MeanAp; 3]) {
    let width = labels.iter().map(String::len).max().unwrap_or(5).max(5);
    let _ =
        writeln!(s, "\naverage precision per label (%)\n{:width$} {:>8} {:>8} {:>8}", "", "vanilla", "factual", "TIE");
    let aps: Vec<Vec<Option<f64>>> = maps.iter().map(MeanAp::per_label).collect();
    for (j, label) in labels.iter().enumerate() {
        let _ = write!(s, "{label:width$}");
        for view in &aps {
            match view.get(j).copied().flatten() {
                Some(ap) => {
                    let _ = write!(s, " {:>8.2}", 100.0 * ap);
                }
                None => {
                    let _ = write!(s, " {:>8}", "-");
                }
            }
        }
        s.push('\n');
    }
}
