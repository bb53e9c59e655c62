//! Bad input gets a clear, specific error: a model that does not fit its manifest, a
//! missing or wrong ONNX Runtime library, a corrupt video. And `explain` on a good
//! bundle gives the documented JSON.

mod common;

use std::path::Path;

use serde_json::Value;

fn copy_bundle(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(common::demo_bundle()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

fn explain(bundle: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let image = common::repo().join("assets/astronaut.png");
    let out =
        common::run_clefd(&["explain", "--bundle", bundle.to_str().unwrap(), "--image", image.to_str().unwrap()], env);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn explain_reports_every_stage_for_the_astronaut() {
    let (code, stdout, stderr) = explain(&common::demo_bundle(), &[]);
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("explain prints JSON");
    assert_eq!(v["bundle"]["name"], "face-fer2013");
    let faces = v["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1, "{stdout}");
    let f = &faces[0];
    assert_eq!(f["emotion"], "happy");
    assert!(f["vanilla"]["happy"].as_f64().unwrap() > 0.95);
    assert_eq!(f["y_e"].as_array().unwrap().len(), 7);
    assert!(
        f["y_c"].is_null() && f["factual"].is_null() && f["debiased"].is_null() && f["context_bias"].is_null(),
        "no context branch"
    );
    assert!(f["detector_score"].as_f64().unwrap() > 0.8);
    // BlazeFace full-range puts the face at x≈174, y≈70, 105 px wide (checked against
    // MediaPipe's TFLite model by engines/tools/convert_models.py).
    let b: Vec<f64> = f["box_px"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!((b[0] - 174.0).abs() < 8.0 && (b[1] - 70.0).abs() < 8.0 && (b[2] - 105.0).abs() < 10.0, "box {b:?}");
    assert!((f["box"]["x"].as_f64().unwrap() - b[0] / 512.0).abs() < 1e-4);
}

#[test]
fn a_model_that_does_not_fit_its_manifest_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    copy_bundle(&bundle);
    let manifest = std::fs::read_to_string(bundle.join("manifest.toml")).unwrap();
    std::fs::write(
        bundle.join("manifest.toml"),
        manifest.replace("width = 64\nheight = 64", "width = 48\nheight = 48"),
    )
    .unwrap();
    let (code, _, stderr) = explain(&bundle, &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "model vanilla: tensor 'face' has shape [-1, 1, 64, 64], but the manifest expects [-1, 1, 48, 48]"
        ),
        "{stderr}"
    );

    let manifest = std::fs::read_to_string(bundle.join("manifest.toml"))
        .unwrap()
        .replace("width = 48\nheight = 48", "width = 64\nheight = 64");
    std::fs::write(bundle.join("manifest.toml"), manifest.replace("output = \"logits\"", "output = \"probs\""))
        .unwrap();
    let (code, _, stderr) = explain(&bundle, &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("model vanilla: the manifest names output 'probs', but the graph has [\"logits\"]"),
        "{stderr}"
    );

    let manifest = std::fs::read_to_string(bundle.join("manifest.toml"))
        .unwrap()
        .replace("output = \"probs\"", "output = \"logits\"");
    std::fs::write(bundle.join("manifest.toml"), manifest.replace("strides = [4]", "strides = [8]")).unwrap();
    let (code, _, stderr) = explain(&bundle, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("model detector: tensor 'reshaped_regressor_face_4' has shape [1, 2304, 16], but the manifest expects [1, 576, 16]"), "{stderr}");
}

#[test]
fn a_missing_onnx_runtime_library_is_a_clear_error() {
    let (code, _, stderr) = explain(&common::demo_bundle(), &[("ORT_DYLIB_PATH", "/no/such/libonnxruntime.so")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("ONNX Runtime library not found (looked in: /no/such/libonnxruntime.so)"), "{stderr}");
    assert!(stderr.contains("make setup"), "says what to do: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_library_that_is_not_onnx_runtime_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"\x7fELF but not really").unwrap();
    let (code, _, stderr) = explain(&common::demo_bundle(), &[("ORT_DYLIB_PATH", fake.to_str().unwrap())]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("cannot use ONNX Runtime at {}", fake.display())), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_corrupt_video_fails_its_camera_with_a_clear_error() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("corrupt.mp4");
    let mut junk = b"\x00\x00\x00\x18ftypmp42".to_vec();
    junk.extend((0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    std::fs::write(&clip, junk).unwrap();
    let config = common::write_config(dir.path(), &broker.url(), &clip, "");
    let out = common::run_clefd(&["run", "--config", config.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("camera failed") && stderr.contains("camera=cam1"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The oldest ONNX Runtime clefd loads is the newest GPU build for JetPack 5 (1.18): the
/// astronaut gets the same answer on it as on the set-up's current version.
#[test]
fn onnx_runtime_1_18_runs_the_models_as_the_current_version_does() {
    let floor = common::repo().join(".local/onnxruntime-1.18/libonnxruntime.so");
    assert!(floor.is_file(), "make test (scripts/setup.sh --test) fetches ONNX Runtime 1.18 for this test");
    let (code, now, stderr) = explain(&common::demo_bundle(), &[]);
    assert_eq!(code, 0, "{stderr}");
    let (code, old, stderr) = explain(&common::demo_bundle(), &[("ORT_DYLIB_PATH", floor.to_str().unwrap())]);
    assert_eq!(code, 0, "ONNX Runtime 1.18 loads: {stderr}");
    let (now, old): (Value, Value) = (serde_json::from_str(&now).unwrap(), serde_json::from_str(&old).unwrap());
    assert_eq!(old["faces"][0]["emotion"], now["faces"][0]["emotion"]);
    let (a, b) =
        (now["faces"][0]["vanilla"]["happy"].as_f64().unwrap(), old["faces"][0]["vanilla"]["happy"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-3, "same scores on 1.18 ({b}) and now ({a})");
}
