//! `clefd bench` runs the real pipeline and the models alone, and reports what the issue
//! asks for (per-camera fps, faces/s, latency, drops, per-stage time, peak memory). Only
//! the report's shape and its plainly-true facts are checked: timing goals live in the
//! benchmark itself, never in a test.

mod common;

use common::{clefd, repo};

fn bench(args: &[&str]) -> String {
    let out = clefd().current_dir(repo()).arg("bench").args(args).env_remove("RUST_LOG").output().expect("clefd runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "clefd bench {args:?} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// The number after `key` on the first line that has it.
fn figure(text: &str, key: &str) -> f64 {
    text.lines()
        .find_map(|l| l.split(key).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.trim_end_matches([',', ';']).parse().ok())
        .unwrap_or_else(|| panic!("no '{key}' figure in:\n{text}"))
}

#[test]
fn the_pipeline_report_covers_every_camera_and_every_stage() {
    let text = bench(&["--cameras", "2", "--seconds", "3", "--unpaced", "--width", "320"]);
    assert!(text.contains("width 320"), "the report says what width the cameras work at:\n{text}");
    for cam in ["cam0", "cam1"] {
        let line = text.lines().find(|l| l.trim_start().starts_with(cam)).unwrap_or_else(|| panic!("{cam}:\n{text}"));
        assert!(figure(line, "fps") > 1.0, "{line}");
        assert!(figure(line, "faces/s") > 1.0, "the astronaut's face is found: {line}");
        assert!(figure(line, "p50") > 0.0 && figure(line, "p99") >= figure(line, "p50"), "{line}");
        assert!(line.contains("dropped"), "{line}");
        assert!(
            line.ends_with("decoder openh264dec") || common::hardware_decoder_installed(),
            "a Baseline clip goes to OpenH264: {line}"
        );
    }
    assert!(figure(&text, "total  fps") > 2.0, "{text}");
    assert!(figure(&text, "detect") > 0.0 && figure(&text, "classify") > 0.0, "{text}");
    // Where the CPU went: inference lanes and GStreamer's decoding threads both worked.
    assert!(figure(&text, "inference") > 0.0, "{text}");
    assert!(figure(&text, "decoding (GStreamer threads)") > 0.0, "{text}");
    let rss = figure(&text, "peak RSS");
    assert!(rss > 10.0 && rss < 2000.0, "{text}");
}

#[test]
fn the_models_alone_run_on_decoded_frames() {
    let text = bench(&["--model-only", "--cameras", "2", "--seconds", "1"]);
    assert!(text.contains("model-only: 2 camera frame(s) per batch at width 640"), "{text}");
    assert!(figure(&text, "frames/s") > 1.0, "{text}");
    assert!(figure(&text, "faces/s") > 1.0, "the face in the decoded frames is found: {text}");
    assert!(figure(&text, "inference") > 0.0, "{text}");
}

#[test]
fn detection_intervals_are_compared_side_by_side() {
    let text = bench(&["--detect-every", "1,3", "--seconds", "1"]);
    let detected: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.contains("detector on"))
        .map(|l| (figure(l, "detector on"), figure(l, "of")))
        .collect();
    assert_eq!(detected.len(), 2, "one run per value:\n{text}");
    assert_eq!(detected[0].0, detected[0].1, "detect_every = 1: every frame:\n{text}");
    assert!(detected[1].1 > 0.0 && detected[1].0 * 2.0 < detected[1].1, "detect_every = 3: a third:\n{text}");
    let table: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("detect_every  frames/s")).skip(1).collect();
    let row = |n: &str| table.iter().find(|l| l.split_whitespace().next() == Some(n)).copied();
    let first = row("1").unwrap_or_else(|| panic!("a row for 1:\n{text}"));
    assert_eq!(first.split_whitespace().nth(3), Some("1.00"), "ratios are to the first value: {first}");
    let third: Vec<f64> = row("3").expect(&text).split_whitespace().filter_map(|v| v.parse().ok()).collect();
    assert!(third.len() == 5 && third[1] > 0.0 && third[2] > 0.0, "frames/s and CPU per frame: {third:?}");
    let out = clefd().current_dir(repo()).args(["bench", "--detect-every", "0"]).output().expect("clefd runs");
    assert!(!out.status.success(), "detect_every starts at 1");
}

#[test]
fn model_only_compares_clef_in_the_fused_graph_with_clef_on_the_host() {
    let text = bench(&["--model-only", "--seconds", "0.5", "--bundle", "engines/context-bias-demo"]);
    assert_eq!(text.matches(", CLEF in the fused graph").count(), 3, "three runs of each, alternating:\n{text}");
    assert_eq!(text.matches(", CLEF on the host").count(), 3, "{text}");
    let per_face: Vec<f64> =
        text.lines().filter(|l| l.contains("per face: classify")).map(|l| figure(l, "per face: classify")).collect();
    assert_eq!(per_face.len(), 6, "{text}");
    assert!(per_face.iter().all(|ms| *ms > 0.0), "every run classified faces: {text}");
    let line = text.lines().find(|l| l.starts_with("classify time per face, fused graph / host CLEF")).expect(&text);
    assert!(figure(line, "median") > 0.0, "{line}");
    // A bundle without a fused graph runs once.
    let text = bench(&["--model-only", "--seconds", "0.5"]);
    assert_eq!(text.matches("model-only:").count(), 1, "{text}");
    assert!(text.contains("no CLEF (debias off)"), "{text}");
}

#[test]
fn the_share_of_the_models_limit_is_stated_from_pairs_of_runs() {
    let text = bench(&["--share", "2", "--seconds", "1"]);
    assert_eq!(text.matches("model-only: 1 camera frame(s) per batch").count(), 2, "{text}");
    assert!(text.matches("pipeline:").count() == 2 && text.contains("decoded as fast as possible"), "{text}");
    // Each pair: "share S (P / M faces/s)", S being P over M. No bound on S itself: tests
    // run side by side here, so either run of a pair may be starved.
    let pairs: Vec<&str> = text.lines().filter(|l| l.starts_with("  share ")).collect();
    assert_eq!(pairs.len(), 2, "one share per pair:\n{text}");
    let shares: Vec<f64> = pairs.iter().map(|l| figure(l, "share")).collect();
    for (line, share) in pairs.iter().zip(&shares) {
        let (pipeline, models) = (figure(line, "("), figure(line, "/"));
        assert!(pipeline > 0.0 && models > 0.0, "both runs found faces: {line}");
        assert!((share - pipeline / models).abs() < 0.006, "the share is the pipeline's over the models': {line}");
    }
    let median = figure(&text, "median");
    assert!((median - (shares[0] + shares[1]) / 2.0).abs() < 0.011, "median of two is their mean: {text}");
    assert_eq!(text.matches("peak RSS").count(), 1, "memory is stated once, for the whole run:\n{text}");

    let out = clefd().current_dir(repo()).args(["bench", "--share", "--model-only"]).output().expect("clefd runs");
    assert!(!out.status.success(), "--share runs both sides itself");
}

#[test]
fn a_recording_of_ones_own_can_be_benchmarked() {
    let text = bench(&["--clip", "assets/context-bias-anti.mp4", "--cameras", "1", "--seconds", "1", "--unpaced"]);
    assert!(text.contains("assets/context-bias-anti.mp4"), "the report names the recording:\n{text}");
    assert!(figure(&text, "total  fps") > 1.0, "{text}");
    assert!(
        text.contains("decoder avdec_h264") || common::hardware_decoder_installed(),
        "a High-profile recording goes to libav:\n{text}"
    );
    let models = bench(&["--clip", "assets/context-bias-anti.mp4", "--model-only", "--seconds", "0.5"]);
    assert!(figure(&models, "faces/s") > 1.0, "the recording's first frame has a face: {models}");

    let out = clefd().current_dir(repo()).args(["bench", "--clip", "no-such.mp4"]).output().expect("clefd runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clip no-such.mp4: no such file"), "{out:?}");
}
