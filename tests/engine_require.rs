//! `engine.require` with the real daemon on this machine's CPU build of ONNX Runtime:
//! a required GPU provider that is not there stops the start (exit 69, the library, the
//! providers it has and what to install, in the log); `any` starts and warns that the
//! models fell back to the CPU; an `engine.dla_core` without the DLA compiler is refused.

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

#[test]
fn a_dla_core_without_the_dla_compiler_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let cfg = test_config(dir.path(), &broker);
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let (code, log) =
        run_until_exit(&cfg, &[("CLEFD__ENGINE__DLA_CORE", "0"), ("CLEFD_SYSROOT", root.to_str().unwrap())]);
    assert_eq!(code, 69, "{log}");
    assert!(log.contains("engine.dla_core = 0, but libnvdla_compiler.so is not installed"), "{log}");
}
