//! The amd64 package: it builds, holds what it should where it should, and once
//! installed `clefd check-config` accepts the shipped configuration. Every package asks for
//! the glibc its binary needs (the zig builds: 2.31, Ubuntu 20.04's), and its Depends
//! resolve on Ubuntu 20.04, 22.04 and 24.04 (checked against the arm64 package lists in
//! tests/ubuntu/; Ubuntu names these packages the same on amd64).

mod common;

use std::process::Command;

#[test]
fn the_deb_builds_installs_and_checks_its_own_config() {
    // The release binary this test build has (`make deb` packages the zig build instead),
    // for this machine's architecture, into a folder of its own: never over the package
    // `make deb` made.
    let arch = Command::new("dpkg").arg("--print-architecture").output().unwrap();
    let arch = String::from_utf8_lossy(&arch.stdout).trim().to_string();
    let debs = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(common::repo().join("scripts/build-deb.sh"))
        .env("ARCH", &arch)
        .env("CLEFD_BINARY", env!("CARGO_BIN_EXE_clefd"))
        .env("CLEFD_DEB_DIR", debs.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deb = common::repo().join(String::from_utf8_lossy(&out.stdout).trim());
    assert!(deb.starts_with(debs.path()) && deb.is_file(), "the package went to {}, not CLEFD_DEB_DIR", deb.display());
    assert!(
        std::fs::read_dir(debs.path()).unwrap().count() == 1,
        "only the .deb is left in CLEFD_DEB_DIR (no staging folder)"
    );
    // Depends asks for exactly the newest glibc the packaged binary needs: no more (an
    // older system that can run it could not install it), no less.
    let unpacked = tempfile::tempdir().unwrap();
    assert!(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(unpacked.path()).status().unwrap().success());
    let needs = glibc_needed(&unpacked.path().join("usr/bin/clefd"));
    let depends = Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Depends").output().unwrap();
    let depends = String::from_utf8_lossy(&depends.stdout).into_owned();
    assert!(depends.starts_with(&format!("libc6 (>= {needs}),")), "the binary needs glibc {needs}: {depends}");
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

#[test]
fn packaging_another_binary_never_writes_over_make_debs_package_and_names_a_missing_one() {
    // Without CLEFD_DEB_DIR, another binary's package goes to target/deb-test/; `make deb`'s
    // folder is target/deb/. A missing CLEFD_BINARY is named as such (before anything is
    // copied), not sent to `make deb`.
    let script = std::fs::read_to_string(common::repo().join("scripts/build-deb.sh")).unwrap();
    assert!(script.contains("out_dir=${CLEFD_DEB_DIR:-target/deb-test}"), "tests' packages need a folder of their own");
    let debs = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(common::repo().join("scripts/build-deb.sh"))
        .env("CLEFD_BINARY", debs.path().join("no-such-clefd"))
        .env("CLEFD_DEB_DIR", debs.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing binary is packaged?");
    assert!(stderr.contains("CLEFD_BINARY=") && !stderr.contains("make deb"), "{stderr}");
    assert_eq!(std::fs::read_dir(debs.path()).unwrap().count(), 0, "nothing is staged for a missing binary");
}

/// The newest glibc symbol version `binary` needs (`GLIBC_2.31` → `2.31`), from its dynamic
/// symbols; objdump reads either architecture.
fn glibc_needed(binary: &std::path::Path) -> String {
    let out = Command::new("objdump").arg("-T").arg(binary).output().expect("objdump (binutils)");
    assert!(out.status.success(), "objdump -T {}: {}", binary.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let number = |v: &str| v.split('.').map(|p| p.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
    text.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .max_by_key(|v| number(v))
        .unwrap_or_else(|| panic!("{} needs no glibc symbol?", binary.display()))
        .to_string()
}

#[test]
fn the_zig_builds_need_no_glibc_newer_than_2_31() {
    // The arm64 build is made in `make test`'s arm64 stage, the amd64 one by `make deb`;
    // each that is here is checked, and packaged as `make deb` packages it.
    let builds = [
        ("arm64", "target/aarch64-unknown-linux-gnu/release/clefd"),
        ("amd64", "target/x86_64-unknown-linux-gnu/release/clefd"),
    ];
    let mut checked = 0;
    for (arch, path) in builds {
        let binary = common::repo().join(path);
        if !binary.is_file() {
            continue;
        }
        let needs = glibc_needed(&binary);
        let newest = needs.split('.').map(|p| p.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
        assert!(newest <= vec![2, 31], "{arch}: {path} needs glibc {needs}; Ubuntu 20.04 and JetPack 5 have 2.31");
        // The package `make deb` makes of it asks for at least the glibc it needs.
        let control = Command::new("bash")
            .arg(common::repo().join("scripts/build-deb.sh"))
            .arg("--control")
            .env("ARCH", arch)
            .env_remove("CLEFD_BINARY")
            .env_remove("CLEFD_DEB_DIR")
            .output()
            .unwrap();
        let control = String::from_utf8_lossy(&control.stdout);
        let asks = control
            .lines()
            .find_map(|l| l.strip_prefix("Depends: libc6 (>= "))
            .and_then(|rest| rest.split_once(')'))
            .map(|(v, _)| v.to_string())
            .unwrap_or_else(|| panic!("{arch}: no libc6 in Depends:\n{control}"));
        assert!(
            version_satisfies(&asks, ">=", &needs),
            "{arch}: Depends asks for glibc {asks}, the binary needs {needs}"
        );
        assert!(
            version_satisfies("2.31", ">=", &asks),
            "{arch}: Depends asks for glibc {asks}, newer than Ubuntu 20.04's"
        );
        println!("{arch}: {path} needs glibc {needs}");
        checked += 1;
    }
    if checked == 0 {
        common::could_not_run(
            "the_zig_builds_need_no_glibc_newer_than_2_31",
            "no zig build here (make build ARCH=arm64, or make deb)",
        );
    }
}

/// The package names of one Ubuntu release (`tests/ubuntu/<release>.txt`): name -> version.
fn ubuntu_packages(release: &str) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(common::repo().join(format!("tests/ubuntu/{release}.txt"))).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' ').map(|(n, v)| (n.to_string(), v.trim().to_string())))
        .collect()
}

/// Whether `have` satisfies `op want` (`>=`, `=`, ...), by dpkg's own comparison.
fn version_satisfies(have: &str, op: &str, want: &str) -> bool {
    let op = match op {
        ">=" => "ge",
        "<=" => "le",
        ">>" => "gt",
        "<<" => "lt",
        "=" => "eq",
        other => panic!("unknown version relation {other}"),
    };
    Command::new("dpkg").args(["--compare-versions", have, op, want]).status().unwrap().success()
}

/// The clauses of a control field that no alternative of resolves among `packages`.
fn unresolved(field: &str, packages: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    field
        .split(',')
        .map(str::trim)
        .filter(|clause| {
            !clause.split('|').map(str::trim).any(|alt| {
                let (name, relation) = match alt.split_once('(') {
                    Some((n, r)) => (n.trim(), Some(r.trim_end_matches(')').trim())),
                    None => (alt, None),
                };
                let Some(have) = packages.get(name) else { return false };
                relation.is_none_or(|r| {
                    let (op, want) = r.split_once(' ').expect("a relation and a version");
                    version_satisfies(have, op.trim(), want.trim())
                })
            })
        })
        .map(str::to_string)
        .collect()
}

/// Both architectures' control files, each against the arm64 lists of tests/ubuntu/ (Ubuntu
/// names these packages the same on amd64; no amd64 list is kept).
#[test]
fn the_package_depends_resolve_on_ubuntu_20_04_22_04_and_24_04() {
    for arch in ["arm64", "amd64"] {
        let out = Command::new("bash")
            .arg(common::repo().join("scripts/build-deb.sh"))
            .arg("--control")
            .env("ARCH", arch)
            .env_remove("CLEFD_BINARY")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let control = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |name: &str| {
            control
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap_or_else(|| panic!("no {name} in:\n{control}"))
                .to_string()
        };
        assert!(field("Architecture") == arch, "{control}");
        for release in ["20.04", "22.04", "24.04"] {
            let packages = ubuntu_packages(release);
            for name in ["Depends", "Recommends"] {
                let missing = unresolved(&field(name), &packages);
                assert!(missing.is_empty(), "{arch}, Ubuntu {release}: {name} {missing:?} resolve to no package there");
            }
        }
    }
    // The lists themselves can fail a wrong control file: t64's rename, and glibc.
    let noble = ubuntu_packages("24.04");
    assert_eq!(unresolved("libglib2.0-0", &noble), vec!["libglib2.0-0".to_string()]);
    assert_eq!(unresolved("libc6 (>= 2.36)", &ubuntu_packages("22.04")).len(), 1);
}

#[test]
fn the_jetson_drop_in_lets_jetpack_7_gpu_nodes_in_and_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(common::repo().join("systemd/clefd.service")).unwrap();
    let drop_in = std::fs::read_to_string(common::repo().join("systemd/jetson.conf")).unwrap();
    let path = dir.path().join("clefd.service");
    std::fs::write(&path, unit.replace("/usr/bin/clefd", env!("CARGO_BIN_EXE_clefd")) + "\n" + &drop_in).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("clefd.service:"), "systemd-analyze verify: {stderr}");
    // Every GPU node `doctor` looks for (JetPack 5 and 6's, and JetPack 7's server-style
    // driver: Thor, Orin from 7.2) is allowed; /dev/dri/* through its device class.
    for node in clefd::jetson::GPU_NODES {
        let allow =
            if node == "/dev/dri" { "DeviceAllow=char-drm rw".to_string() } else { format!("DeviceAllow={node} rw") };
        assert!(drop_in.lines().any(|l| l == allow), "{node}: no '{allow}' in the drop-in");
    }
    assert!(clefd::jetson::GPU_NODES.contains(&"/dev/nvsciipc"), "JetPack 7's nodes are in the list");
    assert!(drop_in.lines().any(|l| l == "Environment=CLEFD__ENGINE__REQUIRE=gpu"), "a Jetson requires its GPU");
    // A start refused for a missing requirement (69) or a bad config (78) is not retried.
    assert!(unit.lines().any(|l| l == "RestartPreventExitStatus=78 69"), "{unit}");
}
