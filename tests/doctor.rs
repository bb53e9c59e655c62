//! `clefd doctor` on this machine (no GPU, a CPU build of ONNX Runtime): it says the
//! models run on the CPU and why, what `engine.require` and `engine.dla_core` need, what a
//! Jetson's files say (laid out under `CLEFD_SYSROOT`), and, as a health check, whether
//! the broker (a real mosquitto), the HTTP port, the state and spool folders and the
//! cameras can work; its exit code tells whether all of it holds.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// A config in `dir` that can all work: a real broker, a free HTTP port, a test camera.
fn healthy(dir: &Path, broker: &common::Broker) -> common::TestConfig {
    common::TestConfig::new(dir, &broker.url(), "doc").http(common::free_port()).camera("a", "test://ball")
}

/// One line of doctor's report, as it prints it.
fn row(key: &str, value: &str) -> String {
    format!("{key:<18} {value}")
}

/// An empty root: no Jetson files, no DLA compiler, whatever this machine has.
fn bare_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    root
}

#[test]
fn on_a_cpu_machine_with_everything_in_place_it_says_cpu_only_and_ok() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let cfg = healthy(dir.path(), &broker).write();
    let root = bare_root(dir.path());
    let out = common::run_clefd(
        &["doctor", "--cameras", "--config", cfg.to_str().unwrap()],
        &[("CLEFD_SYSROOT", root.to_str().unwrap())],
    );
    let (code, out) = (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned());
    assert_eq!(code, 0, "{out}");
    for expected in [
        "valid, 1 camera(s) enabled",
        row("Jetson", "no").as_str(),
        "ONNX Runtime       1.",
        "clefd needs 1.18 or newer",
        "providers built    ",
        "CPUExecutionProvider",
        "tensorrt         not in this ONNX Runtime build",
        "models run on      the CPU only",
        row("required", "engine.require = \"any\": met").as_str(),
        "bundle face-fer2013",
        "loads; debias off; runs on the CPU",
        "GStreamer          GStreamer 1.",
        "nvv4l2decoder    absent",
        "engine cache",
        row("broker", &format!("{}: accepted us (MQTT 3.1.1)", broker.url())).as_str(),
        ": free to serve /metrics and /healthz",
        "state_dir          ",
        "mqtt.spool_dir     ",
        row("camera a", "answers (").as_str(),
        "verdict            ok",
    ] {
        assert!(out.contains(expected), "'{expected}' missing:\n{out}");
    }
}

#[test]
fn an_unreachable_broker_is_not_ok_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    // Nobody listens on a fresh free port.
    let nowhere = format!("mqtt://127.0.0.1:{}", common::free_port());
    let cfg = healthy(dir.path(), &broker).with(|c| c.mqtt.url = nowhere.clone()).write();
    let (code, out) = doctor(&cfg, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("the broker at {nowhere} did not accept us")), "{out}");
    assert!(out.to_lowercase().contains("connection refused"), "the reason is given:\n{out}");
    assert!(!out.contains("verdict            ok"), "{out}");
}

#[test]
fn a_taken_http_port_is_not_ok() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    // Held here, and it never answers /healthz as a clefd would.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = healthy(dir.path(), &broker).http(port).write();
    let (code, out) = doctor(&cfg, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("http.listen 127.0.0.1:{port} cannot be bound")), "{out}");
    drop(taken);
}

/// Runs doctor with `state_dir` on a tmpfs of its own (a private mount namespace), set
/// up by `mount` (a shell fragment, `$D` the folder); `None` where that cannot be made.
fn doctor_on_tmpfs(test: &str, mount: &str) -> Option<(i32, String, PathBuf)> {
    if !Command::new("unshare").args(["-m", "true"]).status().is_ok_and(|s| s.success()) {
        common::could_not_run(test, "needs root for a private mount namespace (unshare -m)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let cfg = healthy(dir.path(), &broker).write();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let script = format!(
        "D={}; {mount} && exec {} doctor --config {}",
        state.display(),
        env!("CARGO_BIN_EXE_clefd"),
        cfg.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.code().unwrap_or(-1), text, state))
}

#[test]
fn a_read_only_state_dir_is_not_ok() {
    let Some((code, out, state)) =
        doctor_on_tmpfs("a_read_only_state_dir_is_not_ok", "mount -t tmpfs -o size=16m,ro clefd-test $D")
    else {
        return;
    };
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("state_dir {}: not writable", state.display())), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
}

#[test]
fn what_the_spool_holds_counts_towards_its_room() {
    // 8 MB, the spool capped at 7 MB and holding 5 MB of it: it needs 2 MB more, and about
    // 3 MB are free. Counted without what it holds, 7 MB would be missing.
    let held = "mount -t tmpfs -o size=8m clefd-test $D && mkdir -p $D/spool \
                && dd if=/dev/zero of=$D/spool/00000000000000000001.seg bs=1M count=5 2>/dev/null \
                && export CLEFD__MQTT__SPOOL_MAX_MB=7";
    let Some((code, out, _)) = doctor_on_tmpfs("what_the_spool_holds_counts_towards_its_room", held) else { return };
    assert!(out.contains(&row("  spool holds", "5120 kB of its 7168 kB")), "{out}");
    assert!(!out.contains("kB needed"), "{out}");
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_full_state_dir_is_not_ok() {
    // 1 MB, filled: the probe cannot be written, and the spool's 64 MB would not fit anyway.
    let fill = "mount -t tmpfs -o size=1m clefd-test $D && (dd if=/dev/zero of=$D/filler bs=64k 2>/dev/null; true)";
    let Some((code, out, state)) = doctor_on_tmpfs("a_full_state_dir_is_not_ok", fill) else { return };
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("state_dir {}: ", state.display())), "{out}");
    assert!(out.contains("No space left on device") || out.contains("kB needed"), "{out}");
}

#[test]
fn a_required_gpu_on_a_cpu_build_is_not_met() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let cfg = healthy(dir.path(), &broker).write();
    let (code, out) = doctor(&cfg, &[("CLEFD__ENGINE__REQUIRE", "gpu")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&row("required", "engine.require = \"gpu\": NOT met (`run` exits 69)")), "{out}");
    assert!(out.contains("has only [") && out.contains("CPUExecutionProvider"), "{out}");
}

/// A Jetson's files under a root: the L4T release, the board, CUDA, device nodes.
fn jetson_root(dir: &Path, release: &str, board: &str, cuda: &str, nodes: &[&str]) -> PathBuf {
    let root = dir.join("jetson");
    let put = |path: &str, text: &str| {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    put("etc/nv_tegra_release", &format!("# {release}, GCID: 1, BOARD: generic, EABI: aarch64, DATE: x\n"));
    put("proc/device-tree/model", &format!("{board}\0"));
    put("usr/local/cuda/version.json", &format!("{{\"cuda\": {{\"name\": \"CUDA SDK\", \"version\": \"{cuda}\"}}}}"));
    for node in nodes {
        put(node.trim_start_matches('/'), "");
    }
    root
}

#[test]
fn jetpack_7_thor_and_orin_are_recognised_and_a_missing_dla_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let cfg = healthy(dir.path(), &broker)
        .with(|c| c.engine.dla_core = Some(0))
        .camera("lobby", "rtsp://cam.local/lobby")
        .camera_with("door", "rtsp://cam.local/door", |c| c.decoder = "software".into())
        .write();
    let thor = jetson_root(
        &dir.path().join("thor"),
        "R38 (release), REVISION: 2.0",
        "NVIDIA Jetson AGX Thor Developer Kit",
        "13.0.48",
        &["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvsciipc", "/dev/nvmap"],
    );
    // The drop-in an older clefd installed (JetPack 5 and 6 nodes only) stays after an upgrade.
    let drop_ins = thor.join("etc/systemd/system/clefd.service.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(drop_ins.join("jetson.conf"), "[Service]\nDeviceAllow=/dev/nvidia0 rw\n").unwrap();
    let (code, out) = doctor(&cfg, &[("CLEFD_SYSROOT", thor.to_str().unwrap())]);
    for expected in [
        row("L4T", "R38.2.0: JetPack 7 (Thor"),
        row("board", "NVIDIA Jetson AGX Thor Developer Kit"),
        row("CUDA", "13.0.48"),
        row("  GPU driver", "server-style"),
        row("DLA compiler", "absent"),
        row("GPU devices", "/dev/nvidia0, /dev/nvidiactl, /dev/nvidia-uvm, /dev/nvmap, /dev/nvsciipc"),
        "engine.dla_core = 0, but libnvdla_compiler.so is not installed".into(),
        "does not allow JetPack 7's GPU nodes".into(),
        // Thor's decoder choice: no nvjpegdec or Argus on this machine, so libjpeg and the reason.
        row("  MJPEG", "decoded by jpegdec (Thor's nvv4l2decoder takes no MJPEG"),
        row("  csi://", "Jetson Thor's JetPack 7 captures cameras through SIPL"),
        // The decoder each camera will get: on Thor, decodebin picks per stream; `software`
        // says it keeps to the CPU.
        row("  decoder a", "none (synthetic frames)"),
        row("  decoder lobby", "H.264: openh264dec for Baseline profile, avdec_h264 for the rest; MJPEG: jpegdec"),
        row("  decoder door", "H.264: openh264dec for Baseline profile, avdec_h264 for the rest (software only)"),
    ] {
        assert!(out.contains(&expected), "'{expected}' missing:\n{out}");
    }
    assert_eq!(code, 1, "the DLA asked for is missing:\n{out}");
    // JetPack 7.2 on an Orin, with a DLA compiler (as JetPack 5 and 6 have): met.
    let orin =
        jetson_root(&dir.path().join("orin"), "R39 (release), REVISION: 2.0", "NVIDIA Jetson AGX Orin", "13.1.0", &[]);
    std::fs::create_dir_all(orin.join("usr/lib/aarch64-linux-gnu/nvidia")).unwrap();
    std::fs::write(orin.join("usr/lib/aarch64-linux-gnu/nvidia/libnvdla_compiler.so"), "").unwrap();
    let drop_ins = orin.join("etc/systemd/system/clefd.service.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::copy(common::repo().join("systemd/jetson.conf"), drop_ins.join("jetson.conf")).unwrap();
    let (code, out) = doctor(&cfg, &[("CLEFD_SYSROOT", orin.to_str().unwrap())]);
    assert!(out.contains(&row("L4T", "R39.2.0: JetPack 7.2 (Orin and Thor")), "{out}");
    assert!(out.contains("engine.dla_core = 0: met"), "{out}");
    assert!(!out.contains("  MJPEG") && !out.contains("  csi://"), "Orin keeps nvv4l2decoder and Argus:\n{out}");
    assert_eq!(code, 0, "{out}");
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
