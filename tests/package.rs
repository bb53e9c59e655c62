//! The amd64 package: it builds, holds what it should where it should, and once
//! installed `clefd check-config` accepts the shipped configuration.

mod common;

use std::process::Command;

#[test]
fn the_deb_builds_installs_and_checks_its_own_config() {
    let out = Command::new("bash").arg(common::repo().join("scripts/build-deb.sh")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deb = common::repo().join(String::from_utf8_lossy(&out.stdout).trim());
    let listing = Command::new("dpkg-deb").arg("-c").arg(&deb).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in [
        "./usr/bin/clefd",
        "./usr/lib/clefd/libonnxruntime.so",
        "./lib/systemd/system/clefd.service",
        "./usr/lib/sysusers.d/clefd.conf",
        "./usr/share/clefd/systemd/jetson.conf",
        "./etc/clefd/clefd.toml",
        "./etc/clefd/cameras.d/",
        "./usr/share/clefd/engines/face-fer2013/manifest.toml",
        "./usr/share/clefd/engines/face-fer2013/blazeface_full.onnx",
        "./usr/share/clefd/engines/context-bias-demo/manifest.toml",
        "./usr/share/clefd/engines/context-bias-demo/vanilla.onnx",
        "./usr/share/clefd/engines/context-bias-demo/context_branch.onnx",
        "./usr/share/clefd/engines/context-bias-demo/clef_fused.onnx",
        "./usr/share/clefd/engines/context-multilabel-demo/manifest.toml",
        "./usr/share/clefd/engines/context-multilabel-demo/clef_fused.onnx",
        "./usr/share/doc/clefd/NOTICE",
        "./usr/share/clefd/assets/astronaut.png",
        "./var/lib/clefd/",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(path)), "{path} missing from the package:\n{listing}");
    }
    let conffiles = Command::new("dpkg-deb").args(["-I"]).arg(&deb).arg("conffiles").output().unwrap();
    assert!(String::from_utf8_lossy(&conffiles.stdout).contains("/etc/clefd/clefd.toml"), "the config is a conffile");

    // Install it for real (CI runs as root on a throwaway machine), check, remove.
    if Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
    {
        let st = Command::new("dpkg").args(["-i"]).arg(&deb).output().unwrap();
        assert!(st.status.success(), "dpkg -i: {}", String::from_utf8_lossy(&st.stderr));
        let check = Command::new("/usr/bin/clefd")
            .args(["check-config", "--config", "/etc/clefd/clefd.toml"])
            .env_remove("ORT_DYLIB_PATH")
            .output()
            .unwrap();
        let explain = Command::new("/usr/bin/clefd")
            .args(["explain", "--bundle", "/usr/share/clefd/engines/face-fer2013", "--image"])
            .arg(common::repo().join("assets/astronaut.png"))
            .env_remove("ORT_DYLIB_PATH")
            .output()
            .unwrap();
        let debiasing = Command::new("/usr/bin/clefd")
            .args(["explain", "--bundle", "/usr/share/clefd/engines/context-bias-demo", "--image"])
            .arg(common::repo().join("engines/context-bias-demo/eval/anti/00000.png"))
            .env_remove("ORT_DYLIB_PATH")
            .output()
            .unwrap();
        // Away from the checkout, `clefd bench` finds the shipped bundle and picture.
        let elsewhere = tempfile::tempdir().unwrap();
        let bench = Command::new("/usr/bin/clefd")
            .args(["bench", "--model-only", "--seconds", "0.5"])
            .current_dir(elsewhere.path())
            .env_remove("ORT_DYLIB_PATH")
            .output()
            .unwrap();
        let user = Command::new("getent").args(["passwd", "clefd"]).output().unwrap();
        let _ = Command::new("dpkg").args(["--purge", "clefd"]).output();
        let text = String::from_utf8_lossy(&check.stdout);
        assert!(check.status.success(), "check-config on the shipped config: {text}");
        assert!(
            explain.status.success(),
            "the installed binary finds its ONNX Runtime: {}",
            String::from_utf8_lossy(&explain.stderr)
        );
        assert!(String::from_utf8_lossy(&explain.stdout).contains("\"happy\""));
        assert!(
            bench.status.success() && String::from_utf8_lossy(&bench.stdout).contains("faces/s"),
            "the installed bench runs on its shipped bundle and picture: {}",
            String::from_utf8_lossy(&bench.stderr)
        );
        assert!(
            String::from_utf8_lossy(&debiasing.stdout).contains("\"debias\": \"on\""),
            "the installed context-bias bundle (detector linked from face-fer2013) loads: {}",
            String::from_utf8_lossy(&debiasing.stderr)
        );
        assert!(user.status.success(), "the package creates the clefd user");
    } else {
        // Built and inspected above; installing it needs root.
        common::could_not_run(
            "the_deb_builds_installs_and_checks_its_own_config (install step)",
            "needs root for dpkg -i",
        );
    }
}
