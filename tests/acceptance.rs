//! Engine acceptance: every shipped bundle reproduces its golden vectors on this CPU in
//! FP32; an FP16 copy of a model and a deliberately perturbed model (both written with the
//! kit's `clef_kit.onnx_tools`) are caught with the deviation printed; a fused graph that
//! fails moves CLEF to the host; a bundle whose CPU FP32 result fails is refused with the
//! reason; stale golden vectors are refused; a bundle without them loads, unverified.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use clefd::engine::acceptance::{self, Check};
use clefd::engine::golden::Golden;
use clefd::engine::manifest::Manifest;
use clefd::engine::runtime::{self, SessionOptions};
use clefd::engine::tensorrt::Precision;
use clefd::engine::{Bundle, BundleError, ClefPlacement};

const BUNDLES: [&str; 3] = ["face-fer2013", "context-bias-demo", "context-multilabel-demo"];

fn cpu() -> SessionOptions {
    runtime::init(None).expect("the set-up's ONNX Runtime (make setup)");
    SessionOptions { threads: 1, ..Default::default() }
}

fn shipped(name: &str) -> PathBuf {
    common::repo().join("engines").join(name)
}

/// The kit's Python, or `None` (the test is then recorded as not run).
fn kit_python(test: &str) -> Option<PathBuf> {
    let python = common::repo().join(".local/kit-venv/bin/python");
    if python.is_file() {
        return Some(python);
    }
    common::could_not_run(test, "no kit virtualenv at .local/kit-venv (make kit-setup)");
    None
}

/// `python -m clef_kit.onnx_tools ARGS`, which must succeed.
fn onnx_tools(python: &Path, args: &[&str]) {
    let out = Command::new(python)
        .args(["-m", "clef_kit.onnx_tools"])
        .args(args)
        .current_dir(common::repo().join("engines/kit"))
        .output()
        .expect("run the kit");
    assert!(out.status.success(), "onnx_tools {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

/// A copy of a shipped bundle (models, manifest, golden vectors; symlinks followed),
/// renamed `rename` so its acceptance records are its own.
fn copy_bundle(name: &str, to: &Path, rename: &str) -> PathBuf {
    let dst = to.join(name);
    std::fs::create_dir_all(&dst).expect("mkdir");
    for entry in std::fs::read_dir(shipped(name)).expect("bundle") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, dst.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let manifest = dst.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let text = text.replace(&format!("name = \"{name}\""), &format!("name = \"{rename}\""));
    std::fs::write(&manifest, text).expect("write");
    dst
}

/// Rewrites `golden.json` so its vectors claim to be made for the model file now in the
/// bundle: the numbers stay those of the original model.
fn adopt_model(bundle: &Path, file: &str) {
    let json = bundle.join("golden.json");
    let mut golden: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).expect("read")).expect("json");
    let sha = clefd::engine::sha256_hex(&std::fs::read(bundle.join(file)).expect("model"));
    let models = golden["models"].as_object_mut().expect("models");
    for m in models.values_mut() {
        if m["file"] == file {
            m["sha256"] = sha.clone().into();
        }
    }
    std::fs::write(&json, serde_json::to_vec(&golden).expect("json")).expect("write");
}

fn show(what: &str, checks: &[Check]) {
    for c in checks {
        println!("{what}: {c}");
    }
}

#[test]
fn every_shipped_bundle_reproduces_its_golden_vectors_on_the_cpu_in_fp32() {
    let opts = cpu();
    for name in BUNDLES {
        for placement in [ClefPlacement::Engine, ClefPlacement::Host] {
            let a = acceptance::load(&shipped(name), &opts, placement)
                .unwrap_or_else(|e| panic!("{name} {placement:?}: {e}"));
            show(name, &a.checks);
            assert!(!a.fell_back, "{name} {placement:?}: fell back");
            assert!(!a.checks.is_empty(), "{name}: no check ran");
            for c in &a.checks {
                assert!(c.passed(), "{name}: {c}");
                assert_eq!((c.precision, c.provider == "cpu" || c.provider == "host"), ("fp32", true), "{c}");
                let worst = c.worst.as_ref().expect("a deviation was measured");
                // FP32 on the same provider as the reference: agreement far inside the tolerance.
                assert!(worst.max_abs <= 1e-4 && worst.relative() <= worst.limit / 20.0, "{name}: {c}");
            }
            let models: Vec<&str> = a.checks.iter().map(|c| c.model).collect();
            let expected: &[&str] = match (name, placement) {
                ("face-fer2013", _) => &["vanilla"],
                (_, ClefPlacement::Engine) => &["fused"],
                (_, ClefPlacement::Host) => &["vanilla", "context_branch", "clef_host"],
            };
            assert_eq!(models, expected, "{name} {placement:?}");
        }
    }
    let records = acceptance::records();
    assert!(
        records.iter().any(|r| r.bundle == "context-bias-demo"
            && r.model == "fused"
            && r.provider == "cpu"
            && r.precision == "fp32"
            && r.result == "accepted"),
        "{records:?}"
    );
}

#[test]
fn an_fp16_copy_of_a_model_on_the_cpu_is_caught_with_its_deviation() {
    let Some(python) = kit_python("an_fp16_copy_of_a_model_on_the_cpu_is_caught_with_its_deviation") else {
        return;
    };
    let opts = cpu();
    let tmp = tempfile::tempdir().expect("tempdir");
    for (name, file, model) in
        [("face-fer2013", "fer2013_mini_xception.onnx", "vanilla"), ("context-bias-demo", "clef_fused.onnx", "fused")]
    {
        let dir = copy_bundle(name, tmp.path(), &format!("{name}-fp16"));
        let model_path = dir.join(file);
        onnx_tools(&python, &["fp16", &shipped(name).join(file).to_string_lossy(), &model_path.to_string_lossy()]);
        let golden = Golden::load(&shipped(name), 7).expect("golden").expect("some");
        let mut bundle = Bundle::load(&dir, &opts).expect("the FP16 copy loads");
        let checks = acceptance::check(&mut bundle, &golden, &opts);
        show(&format!("{name} FP16"), &checks);
        let c = checks.iter().find(|c| c.model == model).expect("the model was checked");
        let why = c.failure.as_deref().unwrap_or_else(|| panic!("FP16 passed: {c}"));
        assert!(why.contains("deviates by"), "{why}");
        let worst = c.worst.as_ref().expect("deviation");
        assert!(!worst.within() && worst.max_abs < 0.1, "an FP16-sized deviation: {c}");
    }
}

#[test]
fn a_perturbed_fused_graph_moves_clef_to_the_host() {
    let Some(python) = kit_python("a_perturbed_fused_graph_moves_clef_to_the_host") else { return };
    let opts = cpu();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = copy_bundle("context-bias-demo", tmp.path(), "perturbed-fused");
    let fused = dir.join("clef_fused.onnx");
    onnx_tools(&python, &["perturb", &fused.to_string_lossy(), &fused.to_string_lossy(), "--amount", "0.5"]);
    adopt_model(&dir, "clef_fused.onnx");
    let a = acceptance::load(&dir, &opts, ClefPlacement::Engine).expect("accepted with CLEF on the host");
    show("perturbed fused", &a.checks);
    assert!(a.fell_back && !a.bundle.fused(), "CLEF moved to the host");
    let rejected = &a.checks[0];
    assert_eq!((rejected.model, rejected.passed()), ("fused", false), "{rejected}");
    assert!(rejected.to_string().contains("deviates by"), "{rejected}");
    assert!(a.checks[1..].iter().all(Check::passed));
    let records = acceptance::records();
    let fused_record =
        records.iter().find(|r| r.bundle == "perturbed-fused" && r.model == "fused" && r.result == "rejected");
    assert!(fused_record.is_some(), "{records:?}");
}

#[test]
fn a_bundle_whose_cpu_fp32_result_fails_is_refused_with_the_reason() {
    let Some(python) = kit_python("a_bundle_whose_cpu_fp32_result_fails_is_refused_with_the_reason") else {
        return;
    };
    let opts = SessionOptions { providers: vec!["tensorrt".into(), "cuda".into(), "cpu".into()], ..cpu() };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = copy_bundle("face-fer2013", tmp.path(), "perturbed-face");
    let model = dir.join("fer2013_mini_xception.onnx");
    onnx_tools(&python, &["perturb", &model.to_string_lossy(), &model.to_string_lossy(), "--amount", "0.5"]);
    // Golden vectors made for another model file: refused as stale, before any run.
    let stale = acceptance::load(&dir, &opts, ClefPlacement::Engine).expect_err("stale golden vectors");
    println!("stale: {stale}");
    assert!(stale.to_string().contains("made for another fer2013_mini_xception.onnx"), "{stale}");
    // The same vectors claiming this model: the chain (TensorRT, CUDA: not in this build)
    // ends at the CPU in FP32, which fails, so the bundle is refused with the numbers.
    adopt_model(&dir, "fer2013_mini_xception.onnx");
    let refused = acceptance::load(&dir, &opts, ClefPlacement::Engine).expect_err("refused").to_string();
    println!("refused: {refused}");
    assert!(refused.contains("refused"), "{refused}");
    assert!(refused.contains("vanilla on cpu fp32: rejected: y_e deviates by"), "{refused}");
    // Through the daemon's loader too.
    let e = Bundle::load_accepted(&dir, &opts).expect_err("refused").to_string();
    assert!(e.contains("deviates by"), "{e}");
}

#[test]
fn a_required_gpu_that_no_choice_loads_is_an_unmet_requirement_not_a_refusal() {
    // engine.require = "gpu" with the CPU ruled out: no choice loads, nothing is compared,
    // and the load's own error comes back (which `run` turns into exit 69), not "refused".
    let opts = SessionOptions {
        providers: vec!["tensorrt".into(), "cuda".into(), "cpu".into()],
        require: runtime::Require::Gpu,
        ..cpu()
    };
    let e = acceptance::load(&shipped("face-fer2013"), &opts, ClefPlacement::Engine).expect_err("unmet");
    println!("{e}");
    assert!(
        matches!(e, BundleError::Engine(runtime::EngineError::Required { require: "gpu", .. })),
        "an unmet requirement, not {e:?}"
    );
    let text = e.to_string();
    for expected in [
        "model detector",
        "tensorrt: not in this ONNX Runtime build",
        "cpu: ruled out by engine.require = \"gpu\"",
        "libonnxruntime.so",
        "CPUExecutionProvider",
        "point engine.onnxruntime at",
    ] {
        assert!(text.contains(expected), "'{expected}' missing: {text}");
    }
}

/// A choice remembered under `engine.require = "any"` (the CPU, after the GPU providers
/// refused) is not reused when a reload asks for "gpu" with the same providers: the
/// requirement is part of what was chosen, so the reload refuses instead of running on the
/// CPU again.
#[test]
fn a_choice_remembered_under_any_is_not_reused_when_a_gpu_is_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = copy_bundle("face-fer2013", dir.path(), "remembered-require");
    let any = SessionOptions { providers: vec!["tensorrt".into(), "cuda".into(), "cpu".into()], ..cpu() };
    let first = acceptance::load(&bundle, &any, ClefPlacement::Engine).expect("loads under any");
    let gpu = SessionOptions { require: runtime::Require::Gpu, ..any.clone() };
    match (first.bundle.provider(), acceptance::load(&bundle, &gpu, ClefPlacement::Engine)) {
        ("cpu", Ok(a)) => {
            panic!("\"gpu\" required, yet loaded on {} (the choice made under \"any\")", a.bundle.provider())
        }
        ("cpu", Err(e)) => assert!(e.unmet_requirement(), "an unmet requirement, not {e:?}"),
        // A GPU build took it under "any": "gpu" loads it there too.
        (_, got) => assert!(got.is_ok_and(|a| a.bundle.provider() != "cpu"), "a GPU build loads it on the GPU"),
    }
    // The choice under "any" is still remembered for "any".
    let again = acceptance::load(&bundle, &any, ClefPlacement::Engine).expect("loads under any");
    assert!(again.checks.is_empty() && again.bundle.provider() == first.bundle.provider(), "a hit: {:?}", again.checks);
}

#[test]
fn the_golden_set_runs_in_batches_within_engine_batch_max() {
    // A TensorRT profile ends at engine.batch_max: the three vectors must never run as one
    // batch of three when it is 1 or 2.
    for (batch_max, expected) in [(1, 1), (2, 2), (16, 3)] {
        let mut opts = cpu();
        opts.tensorrt.batch_max = batch_max;
        for name in BUNDLES {
            let labels = Manifest::load(&shipped(name)).expect("manifest").labels.len();
            let golden = Golden::load(&shipped(name), labels).expect("golden").expect("some");
            for placement in [ClefPlacement::Engine, ClefPlacement::Host] {
                let mut bundle = Bundle::load_placed(&shipped(name), &opts, placement).expect("loads");
                let checks = acceptance::check(&mut bundle, &golden, &opts);
                for c in checks.iter().filter(|c| c.model != "clef_host") {
                    assert!(c.passed(), "{name} batch_max {batch_max}: {c}");
                    assert_eq!(c.batch, expected, "{name} batch_max {batch_max}: {c}");
                }
            }
        }
    }
}

#[test]
fn a_model_replaced_in_place_is_checked_again_on_reload() {
    let Some(python) = kit_python("a_model_replaced_in_place_is_checked_again_on_reload") else { return };
    let opts = cpu();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = copy_bundle("face-fer2013", tmp.path(), "replaced-in-place");
    let first = acceptance::load(&dir, &opts, ClefPlacement::Engine).expect("accepted");
    assert!(!first.checks.is_empty());
    // The same path, a second lane: remembered, not run again.
    let again = acceptance::load(&dir, &opts, ClefPlacement::Engine).expect("accepted");
    assert!(again.checks.is_empty(), "the same bundle and settings are not checked twice");
    // A perturbed model put in its place (manifest unchanged) is checked, and refused.
    let model = dir.join("fer2013_mini_xception.onnx");
    onnx_tools(&python, &["perturb", &model.to_string_lossy(), &model.to_string_lossy(), "--amount", "0.5"]);
    adopt_model(&dir, "fer2013_mini_xception.onnx");
    let e = match acceptance::load(&dir, &opts, ClefPlacement::Engine) {
        Ok(a) => panic!("the replaced model was accepted, checks {:?}", a.checks),
        Err(e) => e.to_string(),
    };
    println!("replaced: {e}");
    assert!(e.contains("vanilla on cpu fp32: rejected: y_e deviates by"), "{e}");
}

#[test]
fn a_bundle_without_golden_vectors_loads_unverified() {
    let opts = cpu();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = copy_bundle("face-fer2013", tmp.path(), "no-golden");
    for entry in std::fs::read_dir(&dir).expect("bundle") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("golden")) {
            std::fs::remove_file(&path).expect("rm");
        }
    }
    let a = acceptance::load(&dir, &opts, ClefPlacement::Engine).expect("loads");
    assert!(a.checks.is_empty());
    let verdict = acceptance::verdict("no-golden");
    assert_eq!(verdict, "vanilla on cpu fp32: unverified (no golden vectors)");
    // A manifest tolerance out of range is refused with its key.
    let manifest = dir.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(&manifest, text.replace("[detector]", "[acceptance]\nlogits = -1.0\n\n[detector]")).expect("write");
    let e = acceptance::load(&dir, &opts, ClefPlacement::Engine).expect_err("bad tolerance").to_string();
    assert!(e.contains("acceptance.logits"), "{e}");
}

#[test]
fn the_fallback_order_is_fp16_fp32_cuda_cpu_within_the_configured_providers() {
    let opts = SessionOptions { providers: vec!["tensorrt".into(), "cuda".into(), "cpu".into()], ..Default::default() };
    let chain: Vec<(Vec<String>, Precision)> =
        acceptance::candidates(&opts).into_iter().map(|o| (o.providers, o.tensorrt.precision)).collect();
    let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        chain,
        vec![
            (p(&["tensorrt", "cuda", "cpu"]), Precision::Fp16),
            (p(&["tensorrt", "cuda", "cpu"]), Precision::Fp32),
            (p(&["cuda", "cpu"]), Precision::Fp16),
            (p(&["cpu"]), Precision::Fp16),
        ]
    );
    // A GPU-only list never falls back to the CPU.
    let gpu = SessionOptions { providers: vec!["tensorrt".into()], ..Default::default() };
    assert!(acceptance::candidates(&gpu).iter().all(|o| o.providers == ["tensorrt"]));
}

#[test]
fn the_daemon_reports_acceptance_in_metrics_and_healthz() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let config = common::TestConfig::new(dir.path(), &broker.url(), "acceptance")
        .http(port)
        .camera("cam", "test://ball")
        .write();
    let daemon = common::Daemon::start(&config, &dir.path().join("clefd.log"));
    let series = "clefd_engine_acceptance{bundle=\"face-fer2013\",model=\"vanilla\",provider=\"cpu\",precision=\"fp32\",result=\"accepted\"}";
    let v = common::wait_metric(port, series, "engine acceptance", std::time::Duration::from_secs(120), |v| v == 1.0);
    assert_eq!(v, 1.0);
    let (_, metrics) = common::http_get(port, "/metrics");
    common::promtool_check(&metrics).unwrap_or_else(|e| panic!("promtool: {e}\n{metrics}"));
    assert!(!metrics.contains("result=\"rejected\""), "{metrics}");
    // The detail is there whatever the cameras' state makes the status.
    let detail = "face-fer2013: vanilla on cpu fp32: accepted (relative deviation";
    let body = common::wait_http(port, "/healthz", "acceptance detail", std::time::Duration::from_secs(60), |_, b| {
        b.contains("\"engine_acceptance\"")
    });
    assert!(body.contains(detail), "{body}");
    assert!(daemon.stop());
}
