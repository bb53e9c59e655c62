//! `clefd doctor` on this machine (no GPU, a CPU build of ONNX Runtime): it says the
//! models run on the CPU and why, and its exit code tells whether what the config asks
//! for can work.

mod common;

fn doctor(config: &std::path::Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = common::run_clefd(&["doctor", "--config", config.to_str().unwrap()], env);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn config(dir: &std::path::Path, cameras: &str) -> std::path::PathBuf {
    let p = dir.join("clefd.toml");
    let text = format!(
        "state_dir = \"{}\"\n[engine]\nbundle = \"{}\"\n{cameras}",
        dir.join("state").display(),
        common::demo_bundle().display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn on_a_cpu_machine_it_says_cpu_only_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[cameras.a]\nuri = \"test://ball\"\n");
    let (code, out) = doctor(&cfg, &[]);
    assert_eq!(code, 0, "{out}");
    for expected in [
        "valid, 1 camera(s) enabled",
        "ONNX Runtime       1.",
        "clefd needs 1.18 or newer",
        "tensorrt         not in this ONNX Runtime build",
        "models run on      the CPU only",
        "bundle face-fer2013",
        "loads; debias off; runs on the CPU",
        "GStreamer          GStreamer 1.",
        "nvv4l2decoder    absent",
        "engine cache",
        "verdict            ok",
    ] {
        assert!(out.contains(expected), "'{expected}' missing:\n{out}");
    }
}

#[test]
fn what_cannot_work_is_listed_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[cameras.a]\nuri = \"test://ball\"\n[cameras.cam]\nuri = \"csi://0\"\n");
    let (code, out) = doctor(&cfg, &[("CLEFD__ENGINE__PROVIDERS", "tensorrt")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("none of the providers asked for (tensorrt) is available"), "{out}");
    assert!(out.contains("csi:// camera(s) [\"cam\"] need nvarguscamerasrc"), "{out}");
}

#[test]
fn an_invalid_config_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[cameras.a]\nuri = \"nope://x\"\n");
    let (code, out) = doctor(&cfg, &[]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("the configuration is invalid"), "{out}");
}

#[test]
fn build_engines_loads_every_bundle_and_says_where_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[cameras.a]\nuri = \"test://ball\"\n");
    let out = common::run_clefd(&["build-engines", "--config", cfg.to_str().unwrap()], &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("no GPU provider in this ONNX Runtime"), "{log}");
    assert!(log.contains("bundle=face-fer2013 detector=\"cpu\" classifiers=vanilla: cpu"), "{log}");
    // What the package runs on install: on a CPU-only ONNX Runtime, nothing is loaded.
    let out = common::run_clefd(&["build-engines", "--if-gpu", "--config", cfg.to_str().unwrap()], &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("nothing to build") && !log.contains("loading bundle"), "{log}");
    let bad = config(dir.path(), "[cameras.a]\nuri = \"nope://x\"\n");
    let out = common::run_clefd(&["build-engines", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(78));
}
