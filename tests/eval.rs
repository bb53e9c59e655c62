//! `clefd eval` on the committed slice of the context-bias world: the daemon's own
//! preprocessing, ONNX Runtime and CLEF reproduce the stored numbers exactly, and agree
//! with the CLEF kit's Python evaluation within 0.5 points. A change in crops, masking,
//! normalisation or the CLEF math shows up here as a changed count.

mod common;

use serde_json::Value;

fn bundle() -> std::path::PathBuf {
    common::repo().join("engines/context-bias-demo")
}

fn eval_json(dataset: &std::path::Path) -> Value {
    let b = bundle();
    let out = common::run_clefd(
        &["eval", "--bundle", b.to_str().unwrap(), "--dataset", dataset.to_str().unwrap(), "--json"],
        &[],
    );
    assert!(out.status.success(), "clefd eval failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("clefd eval --json prints JSON")
}

#[test]
fn eval_reproduces_the_stored_accuracies_on_the_committed_anti_slice() {
    let dir = bundle().join("eval");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).expect("expected.json is committed"))
            .expect("expected.json parses");
    let got = eval_json(&dir.join("anti"));
    assert_eq!(got["n"], expected["n"], "number of faces");
    assert_eq!(got["debias"], true);
    for kind in ["vanilla", "factual", "debiased"] {
        assert_eq!(
            got[kind]["correct"], expected["clefd"][kind]["correct"],
            "{kind}: clefd eval no longer reproduces the stored count"
        );
        let rust = got[kind]["accuracy"].as_f64().unwrap();
        let kit = expected["kit"][kind]["accuracy"].as_f64().unwrap();
        assert!((rust - kit).abs() <= 0.5, "{kind}: clefd {rust:.2} % vs kit {kit:.2} %: more than 0.5 points apart");
        let confusion = got[kind]["confusion"].as_array().unwrap();
        let total: u64 = confusion.iter().flat_map(|r| r.as_array().unwrap()).map(|c| c.as_u64().unwrap()).sum();
        assert_eq!(Value::from(total), got["n"], "{kind}: the confusion matrix counts every face once");
    }
    // On the anti split the scene always points the wrong way: debiasing must help.
    let (factual, tie) = (got["factual"]["accuracy"].as_f64().unwrap(), got["debiased"]["accuracy"].as_f64().unwrap());
    assert!(tie > factual, "TIE {tie:.1} % should beat factual {factual:.1} % on anti");
}

#[test]
fn eval_prints_a_table_and_confusion_matrices() {
    let b = bundle();
    let d = b.join("eval/anti");
    let out = common::run_clefd(&["eval", "--bundle", b.to_str().unwrap(), "--dataset", d.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in ["factual φ(Y_c,Y_e)", "TIE (debiased)", "TIE − factual", "confusion, TIE", "surprise"] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }
}

#[test]
fn a_dataset_with_an_unknown_label_is_refused_with_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let src = bundle().join("eval/anti");
    let first = std::fs::read_to_string(src.join("index.csv")).unwrap();
    let row = first.lines().nth(1).unwrap();
    let file = row.split(',').next().unwrap();
    std::fs::copy(src.join(file), dir.path().join(file)).unwrap();
    std::fs::write(dir.path().join("index.csv"), format!("file,label,x,y,w,h\n{file},bored,10,10,30,30\n")).unwrap();
    let b = bundle();
    let out =
        common::run_clefd(&["eval", "--bundle", b.to_str().unwrap(), "--dataset", dir.path().to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("index.csv") && err.contains("row 2") && err.contains("'bored'"), "{err}");
}

/// The fair baseline (the same vanilla architecture trained on the same biased pictures
/// with plain cross-entropy, no CLEF) runs through `clefd eval` as a bundle without a
/// context branch, reproduces its stored count, and loses to CLEF's TIE on the anti slice
/// by a clear margin: what CLEF buys over not using it.
#[test]
fn the_baseline_reproduces_its_count_and_clefs_tie_beats_it_on_anti() {
    let dir = bundle().join("eval");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let baseline = dir.join("baseline");
    let anti = dir.join("anti");
    let out = common::run_clefd(
        &["eval", "--bundle", baseline.to_str().unwrap(), "--dataset", anti.to_str().unwrap(), "--json"],
        &[],
    );
    assert!(out.status.success(), "clefd eval failed: {}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["debias"], false, "the baseline has no context branch");
    assert_eq!(got["n"], expected["n"]);
    assert_eq!(got["vanilla"]["correct"], expected["baseline"]["clefd"]["correct"], "the stored count");
    let (rust, kit) =
        (got["vanilla"]["accuracy"].as_f64().unwrap(), expected["baseline"]["kit"]["accuracy"].as_f64().unwrap());
    assert!((rust - kit).abs() <= 0.5, "clefd {rust:.2} % vs kit {kit:.2} %");
    let tie = expected["clefd"]["debiased"]["accuracy"].as_f64().unwrap();
    assert!(tie >= rust + 10.0, "CLEF's TIE {tie:.1} % vs the baseline {rust:.1} % on anti");
    for split in ["biased", "balanced", "anti"] {
        assert!(expected["test_accuracy"][split]["baseline"].is_number(), "{split}: the baseline row is stored");
    }
}

/// `clefd eval --dataset caer-s:DIR` reads CAER-S's own layout (split folders, one folder
/// per class, no boxes): faces are found by the bundle's detector, a picture without one
/// is counted and left out, and a class the bundle does not know is named.
#[test]
fn a_caer_s_folder_is_scored_with_faces_found_by_the_detector() {
    let dir = tempfile::tempdir().unwrap();
    let happy = dir.path().join("test/Happy");
    let neutral = dir.path().join("test/Neutral");
    std::fs::create_dir_all(&happy).unwrap();
    std::fs::create_dir_all(&neutral).unwrap();
    std::fs::create_dir_all(dir.path().join("train/Happy")).unwrap();
    std::fs::copy(common::repo().join("assets/astronaut.png"), happy.join("0001.png")).unwrap();
    let made = std::process::Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "num-buffers=1", "pattern=black", "!", "video/x-raw,width=320,height=240"])
        .args(["!", "pngenc", "!", "filesink", &format!("location={}", neutral.join("0002.png").display())])
        .status()
        .unwrap();
    assert!(made.success(), "gst-launch-1.0 writes the faceless picture");
    let bundle = common::demo_bundle();
    let dataset = format!("caer-s:{}", dir.path().display());
    let out = common::run_clefd(&["eval", "--bundle", bundle.to_str().unwrap(), "--dataset", &dataset, "--json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["n"], 1, "one picture scored: {got}");
    assert_eq!(got["no_face"], 1, "the black picture has no face: {got}");
    assert_eq!(got["vanilla"]["correct"], 1, "the astronaut is happy: {got}");
    // A class the bundle does not know, named with its folder.
    std::fs::create_dir_all(dir.path().join("test/Bored")).unwrap();
    let out = common::run_clefd(&["eval", "--bundle", bundle.to_str().unwrap(), "--dataset", &dataset, "--json"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("test/Bored") && err.contains("class 'Bored'"), "{err}");
}

/// The multi-label demo (`engines/context-multilabel-demo`): `clefd eval` reproduces the
/// stored mAP of every view on its anti slice exactly and the kit's within 0.5 points, and
/// scores its fair baseline as stored; the table's rows are all there.
#[test]
fn the_multi_label_demo_reproduces_the_kits_map_and_its_baseline() {
    let bundle = common::repo().join("engines/context-multilabel-demo");
    let dir = bundle.join("eval");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let anti = dir.join("anti");
    let run = |b: &std::path::Path| -> Value {
        let out = common::run_clefd(
            &["eval", "--bundle", b.to_str().unwrap(), "--dataset", anti.to_str().unwrap(), "--json"],
            &[],
        );
        assert!(out.status.success(), "clefd eval failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let got = run(&bundle);
    assert_eq!(got["n"], expected["n"]);
    for kind in ["vanilla", "factual", "debiased"] {
        let rust = got[kind]["map"].as_f64().unwrap();
        let stored = expected["clefd"][kind].as_f64().unwrap();
        let kit = expected["kit"][kind].as_f64().unwrap();
        assert!((rust - stored).abs() < 1e-3, "{kind}: clefd {rust:.4} vs stored {stored:.4}");
        assert!((rust - kit).abs() <= 0.5, "{kind}: clefd {rust:.2} vs kit {kit:.2}: more than 0.5 points apart");
        assert_eq!(got[kind]["ap"].as_array().unwrap().len(), 6, "{kind}: one AP per label");
    }
    let base = run(&dir.join("baseline"));
    assert_eq!(got["debias"], true);
    assert_eq!(base["debias"], false, "the baseline has no context branch");
    let (rust, kit) = (base["vanilla"]["map"].as_f64().unwrap(), expected["baseline"]["kit"].as_f64().unwrap());
    assert!((rust - kit).abs() <= 0.5, "baseline: clefd {rust:.2} vs kit {kit:.2}");
    // Where the scene never goes with the states shown, debiasing must help.
    let (factual, tie) = (got["factual"]["map"].as_f64().unwrap(), got["debiased"]["map"].as_f64().unwrap());
    assert!(tie > factual && tie > rust, "anti: TIE {tie:.1} vs factual {factual:.1} and baseline {rust:.1}");
    for split in ["biased", "balanced", "anti"] {
        for row in ["baseline", "vanilla", "factual", "debiased"] {
            assert!(expected["test_map"][split][row].is_number(), "{split}/{row} is stored");
        }
    }
}

/// `clefd eval --dataset emotic:DIR` reads EMOTIC's original `Annotations.mat`
/// (compressed, as MATLAB writes it) and mat2py.py's `emotic_pre/test.csv` alike: the
/// same people (each annotated body becomes the subject), the same per-label APs.
/// `tests/emotic/` was written by `python -m clef_kit.fixtures emotic` (three test people).
#[test]
fn an_emotic_folder_reads_the_same_from_its_mat_file_and_its_csv() {
    let dir = tempfile::tempdir().unwrap();
    let copy = std::process::Command::new("cp")
        .arg("-r")
        .arg(common::repo().join("tests/emotic"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copy.success());
    let root = dir.path().join("emotic");
    let bundle = common::repo().join("engines/context-multilabel-demo");
    let run = || -> Value {
        let dataset = format!("emotic:{}", root.display());
        let out =
            common::run_clefd(&["eval", "--bundle", bundle.to_str().unwrap(), "--dataset", &dataset, "--json"], &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let from_mat = run();
    assert_eq!(from_mat["n"], 3, "three annotated people: {from_mat}");
    std::fs::remove_dir_all(root.join("Annotations")).unwrap();
    let from_csv = run();
    assert_eq!(from_csv["n"], 3);
    for kind in ["vanilla", "factual", "debiased"] {
        assert_eq!(from_mat[kind]["ap"], from_csv[kind]["ap"], "{kind}: the two layouts give the same people");
    }
    // Happiness, Anger and Sadness each have one positive; the other three none.
    let defined = from_csv["debiased"]["ap"].as_array().unwrap().iter().filter(|a| a.is_number()).count();
    assert_eq!(defined, 3, "{from_csv}");
    // A category that is not EMOTIC's is named with its file and row.
    let csv = root.join("emotic_pre/test.csv");
    let text = std::fs::read_to_string(&csv).unwrap().replace("'Anger'", "'Grumpy'");
    std::fs::write(&csv, text).unwrap();
    let dataset = format!("emotic:{}", root.display());
    let out = common::run_clefd(&["eval", "--bundle", bundle.to_str().unwrap(), "--dataset", &dataset], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("test.csv: row 3") && err.contains("'Grumpy'"), "{err}");
}

/// `clefd faces` prints one JSON line per picture with the detector's boxes (what the kit
/// crops CAER-S with), and a line naming the problem for a picture it cannot read.
#[test]
fn faces_prints_a_line_per_picture_and_names_the_unreadable_one() {
    let bundle = common::demo_bundle();
    let astronaut = common::repo().join("assets/astronaut.png");
    let missing = common::repo().join("assets/no-such-picture.png");
    let out = common::run_clefd(
        &["faces", "--bundle", bundle.to_str().unwrap(), astronaut.to_str().unwrap(), missing.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "a picture could not be read");
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let faces = lines[0]["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1, "one astronaut: {}", lines[0]);
    let b: Vec<f64> = faces[0]["box_px"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let (w, h) = (lines[0]["width"].as_f64().unwrap(), lines[0]["height"].as_f64().unwrap());
    assert!(b[2] > 0.05 * w && b[0] >= 0.0 && b[0] + b[2] <= w && b[1] + b[3] <= h, "{b:?} in {w}x{h}");
    assert!(lines[1]["error"].as_str().unwrap().contains("no-such-picture.png"), "{}", lines[1]);
}
