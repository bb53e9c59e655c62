//! `engine.require` with the real daemon on this machine's CPU build of ONNX Runtime:
//! a required GPU provider that is not there stops the start (exit 69, the library, the
//! providers it has and what to install, in the log); one that loads but fails engine
//! acceptance stops it too (exit 69, with the numbers), in `run`, `build-engines` and
//! `doctor` alike; `any` starts and warns that the models fell back to the CPU; an
//! `engine.dla_core` without the DLA compiler is refused.

mod common;

use std::time::{Duration, Instant};

/// Runs `clefd run` on `cfg` with `env` until it exits by itself; its code and log.
fn run_until_exit(cfg: &std::path::Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = common::clefd();
    cmd.args(["run", "--config"]).arg(cfg).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // The log is read as it comes, so a long one never fills the pipe and stalls the child.
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut log);
        String::from_utf8_lossy(&log).into_owned()
    });
    // A refusal comes before any model loads; a daemon that starts instead is a failure.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("clefd started instead of refusing:\n{}", reader.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), reader.join().unwrap())
}

fn test_config(dir: &std::path::Path, broker: &common::Broker) -> std::path::PathBuf {
    common::TestConfig::new(dir, &broker.url(), "req").camera("a", "test://ball").write()
}

#[test]
fn a_required_gpu_provider_that_is_missing_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let cfg = test_config(dir.path(), &broker);
    for require in ["gpu", "cuda", "tensorrt"] {
        // Only `CLEFD_TEST_LATE_REQUIRE=1` defers the check: any other value keeps it early.
        let (code, log) =
            run_until_exit(&cfg, &[("CLEFD__ENGINE__REQUIRE", require), ("CLEFD_TEST_LATE_REQUIRE", "0")]);
        assert_eq!(code, 69, "require = {require}:\n{log}");
        for expected in [
            format!("engine.require = \"{require}\" cannot be met"),
            "libonnxruntime.so".to_string(),
            "CPUExecutionProvider".to_string(),
            "point engine.onnxruntime at its libonnxruntime.so".to_string(),
            // The environment overrides the file: the refusal names the variable to change.
            format!("it is \"{require}\" in this environment"),
            "set CLEFD__ENGINE__REQUIRE=any".to_string(),
            "systemctl edit clefd".to_string(),
        ] {
            assert!(log.contains(expected.as_str()), "require = {require}: '{expected}' missing:\n{log}");
        }
        assert!(!log.contains("ready cameras"), "it must not serve:\n{log}");
        assert!(
            log.contains(&format!("\"{require}\" cannot be met: the ONNX Runtime at"))
                && !log.contains("CLEFD_TEST_LATE_REQUIRE=1 (tests only)"),
            "require = {require}: checked before the start, not at model load:\n{log}"
        );
    }
}

/// On a GPU build whose CUDA or TensorRT libraries are missing, the early check passes (the
/// library lists the providers) and the models fail to load. This CPU build cannot list
/// them, so `CLEFD_TEST_LATE_REQUIRE` leaves the requirement to the load, which runs for
/// real: the refusal must still be 69 with the reason, not a bundle error (78).
#[test]
fn a_required_gpu_that_fails_at_model_load_exits_69_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let cfg = test_config(dir.path(), &broker);
    let (code, log) = run_until_exit(&cfg, &[("CLEFD__ENGINE__REQUIRE", "gpu"), ("CLEFD_TEST_LATE_REQUIRE", "1")]);
    assert_eq!(code, 69, "{log}");
    for expected in [
        "engine.require = \"gpu\" cannot be met: model detector",
        "cpu: ruled out by engine.require = \"gpu\"",
        "libonnxruntime.so",
        "CPUExecutionProvider",
        "set CLEFD__ENGINE__REQUIRE=any",
        "clefd will not start without it",
        // The test switch says it is on (only `=1` turns it on: the unit tests of requirements).
        "CLEFD_TEST_LATE_REQUIRE=1 (tests only)",
    ] {
        assert!(log.contains(expected), "'{expected}' missing:\n{log}");
    }
    assert!(!log.contains("check-config") && !log.contains("no choice could load it"), "not a bundle error:\n{log}");
    assert!(!log.contains("ready cameras"), "it must not serve:\n{log}");
}

#[test]
fn any_starts_on_the_cpu_and_warns_of_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let cfg = test_config(dir.path(), &broker);
    let log = dir.path().join("clefd.log");
    let daemon = common::Daemon::start(&cfg, &log);
    let text = common::wait_log(&log, "ready cameras", 1);
    let warn =
        text.lines().find(|l| l.contains("models fell back to cpu")).unwrap_or_else(|| panic!("no warning:\n{text}"));
    assert!(warn.contains("WARN"), "a warning, not a debug line: {warn}");
    assert!(warn.contains("tensorrt: not in this ONNX Runtime build"), "says why: {warn}");
    assert!(daemon.stop(), "stops cleanly");
}

/// A Jetson on JetPack 7.2 (L4T R39, an Orin) as files under a test root, which ships no
/// DLA compiler; `with_dla` puts one where JetPack 5 and 6 have it.
fn jetpack_72_root(dir: &std::path::Path, with_dla: bool) -> std::path::PathBuf {
    let root = dir.join(if with_dla { "orin-dla" } else { "orin" });
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/nv_tegra_release"), "# R39 (release), REVISION: 2.0, GCID: 1, BOARD: generic\n")
        .unwrap();
    std::fs::create_dir_all(root.join("proc/device-tree")).unwrap();
    std::fs::write(root.join("proc/device-tree/model"), "NVIDIA Jetson AGX Orin\0").unwrap();
    if with_dla {
        let lib = root.join("usr/lib/aarch64-linux-gnu/tegra");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("libnvdla_compiler.so"), "").unwrap();
    }
    root
}

#[test]
fn a_dla_core_without_the_dla_compiler_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let cfg = test_config(dir.path(), &broker);
    let missing = "engine.dla_core = 0, but libnvdla_compiler.so is not installed";
    // No Jetson at all (an empty root), and a JetPack 7.2 Orin without the compiler.
    let empty = dir.path().join("root");
    std::fs::create_dir_all(&empty).unwrap();
    for root in [empty, jetpack_72_root(dir.path(), false)] {
        let sysroot = ("CLEFD_SYSROOT", root.to_str().unwrap());
        let (code, log) = run_until_exit(&cfg, &[("CLEFD__ENGINE__DLA_CORE", "0"), sysroot]);
        assert_eq!(code, 69, "{}:\n{log}", root.display());
        for expected in [missing, "JetPack 7.2 ships no DLA compiler", "remove engine.dla_core"] {
            assert!(log.contains(expected), "'{expected}' missing:\n{log}");
        }
        assert!(!log.contains("ready cameras"), "it must not serve:\n{log}");
        // `build-engines` refuses the same, with the same code.
        let out = common::run_clefd(
            &["build-engines", "--config", cfg.to_str().unwrap()],
            &[("CLEFD__ENGINE__DLA_CORE", "0"), sysroot],
        );
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{log}");
        assert!(log.contains(missing), "{log}");
    }
    // With the compiler where JetPack 6 puts it, the requirement is met: nothing refuses.
    let root = jetpack_72_root(dir.path(), true);
    let sysroot = ("CLEFD_SYSROOT", root.to_str().unwrap());
    let out = common::run_clefd(
        &["build-engines", "--config", cfg.to_str().unwrap()],
        &[("CLEFD__ENGINE__DLA_CORE", "0"), sysroot],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !log.contains("libnvdla_compiler.so"), "{log}");
}

/// A copy of the demo bundle whose golden vectors no provider reproduces: every `y_e`
/// reference is 0.5 off, as the numbers of a GPU whose kernels drift would be.
fn drifting_bundle(dir: &std::path::Path) -> std::path::PathBuf {
    let dst = dir.join("drifting");
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(common::demo_bundle()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dst.join(path.file_name().unwrap())).unwrap();
        }
    }
    let json = dst.join("golden.json");
    let mut golden: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for vector in golden["vectors"].as_array_mut().unwrap() {
        for v in vector["y_e"].as_array_mut().unwrap() {
            *v = (v.as_f64().unwrap() + 0.5).into();
        }
    }
    std::fs::write(&json, serde_json::to_vec(&golden).unwrap()).unwrap();
    dst
}

/// What every refusal of a required GPU that fails acceptance says: the requirement, the
/// bundle, each rejected choice with its numbers, and what to do.
const ACCEPTANCE_REFUSAL: [&str; 9] = [
    "engine.require = \"gpu\" cannot be met: bundle face-fer2013: no choice it allows reproduces the golden vectors",
    // Model, provider, precision, worst deviation (0.5 on the logits) and tolerance, for
    // each choice the chain tried before the CPU.
    "vanilla on tensorrt fp16: rejected: y_e deviates by",
    "vanilla on tensorrt fp32: rejected: y_e deviates by",
    "(max abs 5.000e-1 on a scale of",
    "; tolerance ",
    "rules out the CPU, where the reference was made",
    // As the service's user: run as root it would leave root-owned engine cache folders.
    "run `sudo -u clefd env CLEFD__ENGINE__REQUIRE=any clefd build-engines`",
    "python -m clef_kit.golden",
    "set CLEFD__ENGINE__REQUIRE=any",
];

/// The hook that fakes a GPU provider on the CPU says it is on.
const FAKE_GPU_WARNING: &str = "CLEFD_TEST_GPU_ON_CPU (tests only)";

/// No GPU here: `CLEFD_TEST_GPU_ON_CPU` makes the TensorRT provider load the models (on
/// the CPU, under its name), so the early check passes and acceptance runs for real on
/// golden vectors nobody reproduces. Under `require = "gpu"` the chain stops before the
/// CPU: the required provider cannot be had, exit 69 with the numbers, not the bundle
/// error (78) that the same bundle gets under `"any"`, where the CPU is tried and fails too.
#[test]
fn a_required_gpu_that_fails_engine_acceptance_exits_69_with_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let bundle = drifting_bundle(dir.path());
    let cfg = common::TestConfig::new(dir.path(), &broker.url(), "req")
        .with(|c| c.engine.bundle = bundle.clone())
        .camera("a", "test://ball")
        .write();
    let fake = ("CLEFD_TEST_GPU_ON_CPU", "tensorrt");
    let (code, log) = run_until_exit(&cfg, &[("CLEFD__ENGINE__REQUIRE", "gpu"), fake]);
    assert_eq!(code, 69, "{log}");
    for expected in ACCEPTANCE_REFUSAL.iter().chain(&[FAKE_GPU_WARNING, "clefd will not start without it"]) {
        assert!(log.contains(expected), "'{expected}' missing:\n{log}");
    }
    let refusal = log.lines().find(|l| l.contains("cannot be met: bundle")).unwrap_or_default();
    assert!(refusal.contains("ERROR") && !refusal.contains("on cpu fp32"), "the CPU is not tried: {refusal}");
    assert!(!log.contains("ready cameras") && !log.contains("check-config"), "not served, not a bundle error:\n{log}");
    // The CPU alone is not even tried: nothing says the configured providers lack a GPU.
    assert!(!log.contains("engine.providers (cpu) lists no provider"), "{log}");

    // The same bundle under "any": the chain goes on to the CPU, which fails too, so the
    // bundle itself is refused (78), and nothing says a requirement is unmet.
    let (code, log) = run_until_exit(&cfg, &[("CLEFD__ENGINE__REQUIRE", "any"), fake]);
    assert_eq!(code, 78, "{log}");
    assert!(log.contains("no execution provider and precision reproduces its golden vectors"), "{log}");
    assert!(log.contains("vanilla on cpu fp32: rejected: y_e deviates by"), "the CPU was tried:\n{log}");
    assert!(!log.contains("cannot be met"), "{log}");
}

/// `build-engines` refuses as `run` does (69, the same reason), and `doctor`, which loads
/// the bundles with the configured providers and requirement, says the same and fails.
#[test]
fn build_engines_and_doctor_say_the_same_of_a_required_gpu_that_fails_acceptance() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let bundle = drifting_bundle(dir.path());
    let cfg = common::TestConfig::new(dir.path(), &broker.url(), "req")
        .with(|c| c.engine.bundle = bundle.clone())
        .camera("a", "test://ball")
        .write();
    let cfg = cfg.to_str().unwrap();
    let env = [("CLEFD__ENGINE__REQUIRE", "gpu"), ("CLEFD_TEST_GPU_ON_CPU", "tensorrt")];
    let out = common::run_clefd(&["build-engines", "--config", cfg], &env);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{log}");
    for expected in ACCEPTANCE_REFUSAL.iter().chain(&[FAKE_GPU_WARNING]) {
        assert!(log.contains(expected), "build-engines: '{expected}' missing:\n{log}");
    }
    assert!(!log.contains("ready: a start loads these models"), "{log}");

    let out = common::run_clefd(&["doctor", "--config", cfg], &env);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let required = format!("engine.require = \"gpu\": NOT met for bundle {} (`run` exits 69)", bundle.display());
    for expected in ACCEPTANCE_REFUSAL.iter().chain(&[required.as_str()]) {
        assert!(report.contains(expected), "doctor: '{expected}' missing:\n{report}");
    }
    // Before the bundles, only the provider is said to be there, not the requirement met.
    assert!(
        report.contains("engine.require = \"gpu\": provider present (engine acceptance per bundle below)"),
        "{report}"
    );
    assert!(!report.contains("engine.require = \"gpu\": met"), "no line contradicts the bundle's:\n{report}");
    // The fake GPU is named in the report and in doctor's log, and fails the verdict.
    assert!(report.contains("CLEFD_TEST_GPU_ON_CPU fakes tensorrt on the CPU"), "{report}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(FAKE_GPU_WARNING), "doctor logs the hook's warning");
    let verdict = report.split("thing(s) cannot work:").nth(1).unwrap_or_default();
    assert!(verdict.contains("cannot be met: bundle face-fer2013"), "listed in the verdict:\n{report}");

    // A bundle the GPU reproduces passes everywhere: the fake provider itself is no refusal.
    let good = common::TestConfig::new(dir.path(), &broker.url(), "req").camera("a", "test://ball").write();
    let out = common::run_clefd(&["build-engines", "--config", good.to_str().unwrap()], &env);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("face-fer2013: vanilla on tensorrt fp16: accepted"), "{printed}");
}

/// Every file under `dir` with its length and modification time: what a run wrote there.
fn listing(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            }
            out.push((e.path(), meta.len(), meta.modified().unwrap()));
        }
    }
    out.sort();
    out
}

/// `doctor` never builds a TensorRT engine nor writes the engine cache (minutes of silence
/// on a Jetson, and, run as root, cache folders the service cannot write): with the
/// (faked) TensorRT provider, which makes cache entries as the real one does, a model not
/// built yet is reported with the command that builds it and its bundle checked on the
/// CPU; once `build-engines` built them, doctor loads them from the cache, and writes
/// nothing either way, even with an `engine.dla_core` it cannot have (the DLA is left out,
/// as `run` would refuse it rather than build for it).
#[test]
fn doctor_builds_no_engine_and_writes_nothing_in_the_engine_cache() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let cfg = test_config(dir.path(), &broker);
    let cfg = cfg.to_str().unwrap();
    let cache = dir.path().join("state/engine-cache");
    let env = [("CLEFD_TEST_GPU_ON_CPU", "tensorrt")];
    let out = common::run_clefd(&["doctor", "--config", cfg], &env);
    let report = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "engine not built yet for detector on tensorrt: run `sudo -u clefd clefd build-engines`",
        "runs on the CPU here (checked there until its TensorRT engine is built)",
        "engine acceptance: vanilla on cpu fp32: accepted",
    ] {
        assert!(report.contains(expected), "'{expected}' missing:\n{report}");
    }
    assert!(!cache.exists(), "doctor created the engine cache: {:?}", listing(&cache));

    // build-engines (as the service's user) builds them; doctor then loads them as they are.
    let out = common::run_clefd(&["build-engines", "--config", cfg], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let built = listing(&cache);
    assert!(built.iter().any(|(p, _, _)| p.ends_with("gpu_on_cpu.engine")), "{built:?}");
    let out = common::run_clefd(&["doctor", "--config", cfg], &env);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("runs on the GPU (tensorrt)") && !report.contains("not built yet"), "{report}");
    assert_eq!(listing(&cache), built, "doctor wrote in the cache");

    // An engine.dla_core this machine cannot have: unmet, and loaded without the DLA (the
    // engines built above), not built for a DLA that `run` would never use.
    let empty = dir.path().join("root");
    std::fs::create_dir_all(&empty).unwrap();
    let dla = [env[0], ("CLEFD__ENGINE__DLA_CORE", "0"), ("CLEFD_SYSROOT", empty.to_str().unwrap())];
    let out = common::run_clefd(&["doctor", "--config", cfg], &dla);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("libnvdla_compiler.so is not installed"), "{report}");
    assert!(report.contains("runs on the GPU (tensorrt)") && !report.contains("not built yet"), "{report}");
    assert_eq!(listing(&cache), built, "doctor wrote in the cache");
}

/// The Jetson drop-in gives the service `engine.require = "gpu"`; `build-engines` and
/// `doctor` run from a shell do not have it, so each says that it sees another
/// requirement than the service does (read from the drop-ins under `CLEFD_SYSROOT`).
#[test]
fn build_engines_and_doctor_warn_when_the_service_requires_more_than_they_do() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let cfg = test_config(dir.path(), &broker);
    let cfg = cfg.to_str().unwrap();
    let root = dir.path().join("jetson");
    let dropins = root.join("etc/systemd/system/clefd.service.d");
    std::fs::create_dir_all(&dropins).unwrap();
    let packaged =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/jetson.conf")).unwrap();
    std::fs::write(dropins.join("jetson.conf"), packaged).unwrap();
    let warning = "the service runs with engine.require=gpu; this run does not";
    let sysroot = ("CLEFD_SYSROOT", root.to_str().unwrap());
    let out = common::run_clefd(&["build-engines", "--config", cfg], &[sysroot]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.lines().any(|l| l.contains("WARN") && l.contains(warning)), "{log}");
    let out = common::run_clefd(&["doctor", "--config", cfg], &[sysroot]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(warning), "{}", String::from_utf8_lossy(&out.stdout));
    // Run as the service would be, nothing to say; nor without a drop-in.
    let out = common::run_clefd(&["doctor", "--config", cfg], &[sysroot, ("CLEFD__ENGINE__REQUIRE", "gpu")]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("the service runs with"));
    std::fs::remove_file(dropins.join("jetson.conf")).unwrap();
    let out = common::run_clefd(&["build-engines", "--config", cfg], &[sysroot]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("the service runs with"));
}
