//! The Jetson build (arm64, cross-built here by `scripts/build-arm64.sh`), checked the two
//! ways that matter before it meets a Jetson: statically (it asks JetPack 5 for nothing it
//! lacks: glibc ≤ 2.31, GStreamer API ≤ 1.16, only the libraries a Jetson has) and by running
//! it under qemu with Debian's arm64 GStreamer and PyPI's aarch64 ONNX Runtime: it finds the
//! same face with the same label as the amd64 build, and a `test://` camera streams frames
//! through GStreamer into the models.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The arm64 binary, built (or found up to date) once per test run.
fn arm64_clefd() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new("bash").arg(common::repo().join("scripts/build-arm64.sh")).output().unwrap();
        assert!(
            out.status.success(),
            "the arm64 cross build failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        common::repo().join("target/aarch64-unknown-linux-gnu/release/clefd")
    })
}

fn sysroot() -> PathBuf {
    common::repo().join(".local/arm64/sysroot")
}

fn arm64_onnxruntime() -> PathBuf {
    common::repo().join(".local/arm64/onnxruntime/libonnxruntime.so")
}

/// `qemu-aarch64-static -L SYSROOT clefd ARGS`: the sysroot stands in for a Jetson's `/`
/// (its libraries, GStreamer plugins and an ARM `/proc/cpuinfo`); plugins are scanned in
/// process (`GST_REGISTRY_FORK=no`: no arm64 plugin scanner to fork), into a registry of
/// the test's own.
fn qemu(registry_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("qemu-aarch64-static");
    cmd.arg("-L").arg(sysroot()).arg(arm64_clefd()).args(args);
    for var in ["GST_PLUGIN_PATH", "GST_PLUGIN_SYSTEM_PATH", "GST_PLUGIN_SCANNER", "ORT_DYLIB_PATH", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.env("GST_REGISTRY_FORK", "no").env("GST_REGISTRY", registry_dir.join("registry.arm64.bin"));
    cmd
}

fn readelf(args: &[&str]) -> String {
    let out = Command::new("readelf").args(args).arg(arm64_clefd()).output().expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A dotted version as comparable numbers ("2.31" → [2, 31]).
fn version(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[test]
fn the_binary_asks_jetpack_5_for_nothing_it_lacks() {
    let header = readelf(&["-h"]);
    assert!(header.contains("AArch64"), "not an arm64 binary:\n{header}");

    // glibc: the newest symbol version it needs must be in JetPack 5's glibc 2.31.
    let versions = readelf(&["-V", "-W"]);
    let newest = versions
        .split(|c: char| c.is_whitespace())
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .max_by_key(|v| version(v))
        .expect("the binary needs some glibc")
        .to_string();
    assert!(version(&newest) <= version("2.31"), "needs glibc {newest}, JetPack 5 has 2.31");

    // Libraries: the GStreamer and GLib a Jetson has, glibc, and nothing else (no libssl,
    // no libonnxruntime: ONNX Runtime is loaded at run time from the path the config gives).
    let allowed = [
        "libgstreamer-1.0.so.0",
        "libgstbase-1.0.so.0",
        "libgstapp-1.0.so.0",
        "libgstvideo-1.0.so.0",
        "libgobject-2.0.so.0",
        "libglib-2.0.so.0",
        "libc.so.6",
        "libm.so.6",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
        "libgcc_s.so.1",
        "ld-linux-aarch64.so.1",
    ];
    let dynamic = readelf(&["-d", "-W"]);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(needed.contains(&"libgstreamer-1.0.so.0"), "{needed:?}");
    let unexpected: Vec<_> = needed.iter().filter(|n| !allowed.contains(n)).collect();
    assert!(unexpected.is_empty(), "libraries outside the Jetson allow-list: {unexpected:?}");

    // GStreamer and GLib functions: each one's first version, from Debian's symbols files.
    let mut since: HashMap<String, String> = HashMap::new();
    let symbols = sysroot().join("var/lib/dpkg/symbols");
    for file in std::fs::read_dir(&symbols).unwrap_or_else(|e| panic!("{}: {e}", symbols.display())) {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| l.starts_with(' ')) {
            let mut words = line.split_whitespace();
            if let (Some(sym), Some(ver)) = (words.next(), words.next()) {
                let name = sym.split('@').next().unwrap_or(sym);
                since.insert(name.to_string(), ver.split(['-', '~', '+']).next().unwrap_or(ver).to_string());
            }
        }
    }
    let imports: BTreeSet<String> = readelf(&["--dyn-syms", "-W"])
        .lines()
        .filter(|l| l.contains(" UND "))
        .filter_map(|l| l.split_whitespace().nth(7))
        .map(|s| s.split('@').next().unwrap_or(s).to_string())
        .filter(|s| s.starts_with("gst_") || s.starts_with("g_"))
        .collect();
    assert!(imports.len() > 50, "too few GStreamer/GLib imports to be the real binary: {imports:?}");
    let mut too_new = Vec::new();
    for sym in &imports {
        let ver = since.get(sym).unwrap_or_else(|| panic!("{sym} is in no Debian symbols file: which library has it?"));
        // JetPack 5 (Ubuntu 20.04): GStreamer 1.16, GLib 2.64.
        let ceiling = if sym.starts_with("gst_") { "1.16.99" } else { "2.64.99" };
        if version(ver) > version(ceiling) {
            too_new.push(format!("{sym} (since {ver})"));
        }
    }
    assert!(too_new.is_empty(), "functions JetPack 5 does not have: {too_new:?}");
}

/// Face boxes and labels from `explain`'s JSON.
fn faces(json: &str) -> Vec<(String, Vec<f64>)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    v["faces"]
        .as_array()
        .expect("faces")
        .iter()
        .map(|f| {
            let label = f["emotion"].as_str().expect("emotion").to_string();
            let b = f["box_px"].as_array().expect("box_px").iter().map(|x| x.as_f64().unwrap()).collect();
            (label, b)
        })
        .collect()
}

#[test]
fn under_qemu_it_runs_and_explains_a_still_like_the_amd64_build() {
    let dir = tempfile::tempdir().unwrap();
    let out = qemu(dir.path(), &["--version"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(env!("CARGO_PKG_VERSION")), "{text}");

    let image = common::repo().join("assets/astronaut.png");
    let bundle = common::demo_bundle();
    let (image, bundle, ort) = (image.to_str().unwrap(), bundle.to_str().unwrap(), arm64_onnxruntime());
    let args = ["explain", "--bundle", bundle, "--image", image, "--onnxruntime", ort.to_str().unwrap()];
    let arm = qemu(dir.path(), &args).output().unwrap();
    assert!(arm.status.success(), "arm64 explain failed:\n{}", String::from_utf8_lossy(&arm.stderr));
    let native = common::run_clefd(&args[..5], &[]);
    assert!(native.status.success(), "{}", String::from_utf8_lossy(&native.stderr));

    let (arm, native) = (faces(&String::from_utf8_lossy(&arm.stdout)), faces(&String::from_utf8_lossy(&native.stdout)));
    assert_eq!(native.len(), 1, "the astronaut has one face: {native:?}");
    assert_eq!(arm.len(), native.len(), "arm64 {arm:?} vs amd64 {native:?}");
    for ((arm_label, arm_box), (label, b)) in arm.iter().zip(&native) {
        assert_eq!(arm_label, label);
        for (x, y) in arm_box.iter().zip(b) {
            assert!((x - y).abs() < 1.0, "boxes differ by a pixel or more: {arm_box:?} vs {b:?}");
        }
    }
}

#[test]
fn under_qemu_a_test_camera_streams_frames_into_the_models() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let port = common::free_port();
    let config = dir.path().join("clefd.toml");
    let base = common::base_config(dir.path(), &broker.url(), "jetson");
    let engine = format!("[engine]\nonnxruntime = \"{}\"\n", arm64_onnxruntime().display());
    let text = format!(
        "{}[http]\nlisten = \"127.0.0.1:{port}\"\n[cameras.pattern]\nuri = \"test://ball\"\nfps = 5\n",
        base.replacen("[engine]\n", &engine, 1)
    );
    std::fs::write(&config, text).unwrap();

    let log = dir.path().join("clefd.log");
    let mut daemon = common::Daemon::spawn(qemu(dir.path(), &["run", "--config", config.to_str().unwrap()]), &log);
    let analysed = |body: &str| {
        body.lines()
            .find(|l| l.starts_with("clefd_frames_analysed_total{camera=\"pattern\"}"))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Emulation is slow (seconds per frame on a loaded machine): the deadline is generous;
    // the test waits for a count, not for a speed.
    let body =
        common::wait_http(port, "/metrics", "5 frames analysed under qemu", Duration::from_secs(400), |code, b| {
            code == 200 && analysed(b) >= 5
        });
    assert!(daemon.running(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(body.contains("clefd_camera_streaming{camera=\"pattern\"} 1"), "{body}");
    assert!(daemon.stop(), "SIGTERM under qemu did not end in exit 0:\n{}", std::fs::read_to_string(&log).unwrap());
}

#[test]
fn the_arm64_package_holds_the_arm64_binary_and_onnx_runtime() {
    arm64_clefd();
    let out =
        Command::new("bash").arg(common::repo().join("scripts/build-deb.sh")).env("ARCH", "arm64").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deb = common::repo().join(String::from_utf8_lossy(&out.stdout).trim());
    let info = Command::new("dpkg-deb").arg("-I").arg(&deb).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Architecture: arm64"), "{info}");
    assert!(info.contains("libc6 (>= 2.31)"), "{info}");
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.path()).status().unwrap();
    assert!(st.success());
    for file in ["usr/bin/clefd", "usr/lib/clefd/libonnxruntime.so"] {
        let out = Command::new("readelf").arg("-h").arg(dir.path().join(file)).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("AArch64"), "{file} is not an arm64 file");
    }
    let postinst = Command::new("dpkg-deb").args(["-I"]).arg(&deb).arg("postinst").output().unwrap();
    let postinst = String::from_utf8_lossy(&postinst.stdout);
    assert!(postinst.contains("clefd build-engines --if-gpu"), "the package builds engines on a Jetson:\n{postinst}");
}
