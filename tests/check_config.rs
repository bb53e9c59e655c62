//! `clefd check-config` on broken configurations: each problem is reported on its own
//! line naming the file and the key, and the exit code is 78 (EX_CONFIG).

mod common;

use std::path::Path;

fn check(config: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = common::run_clefd(&["check-config", "--config", config.to_str().unwrap()], env);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    std::fs::write(&clip, b"not really a video; check-config only needs the file").unwrap();
    (dir, clip)
}

fn main_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("clefd.toml");
    let text = format!("[engine]\nbundle = \"{}\"\n{body}", common::demo_bundle().display());
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_config_without_cameras_is_valid_but_says_so() {
    let (dir, _) = setup();
    let p = main_config(dir.path(), "");
    let (code, out) = check(&p, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no camera configured yet"), "{out}");
}

#[test]
fn a_valid_config_passes() {
    let (dir, clip) = setup();
    let p = main_config(dir.path(), &format!("[cameras.door]\nuri = \"file://{}\"\n", clip.display()));
    let (code, out) = check(&p, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok (1 camera(s) enabled"));
}

#[test]
fn each_broken_config_gets_its_own_message() {
    let (dir, clip) = setup();
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (
            format!("[mqtt]\nurll = \"x\"\n[cameras.a]\nuri = \"file://{}\"\n", clip.display()),
            "unknown key",
            vec!["mqtt.urll: unknown key"],
        ),
        (
            format!("[mqtt]\nprotocol = \"4\"\n[cameras.a]\nuri = \"file://{}\"\n", clip.display()),
            "unknown MQTT version",
            vec!["mqtt.protocol: '4' is not an MQTT version clefd speaks: use \"3.1.1\" or \"5\""],
        ),
        (
            "[cameras.a]\nuri = \"test://ball\"\ndecoder_threads = 100\n".into(),
            "decoder threads out of range",
            vec!["cameras.a.decoder_threads: 100 is out of range: must be between 0 and 64"],
        ),
        (
            "[cameras.a]\nuri = \"test://ball\"\ndecoder = \"ffmpeg\"\n".into(),
            "unknown decoder choice",
            vec!["cameras.a.decoder: 'ffmpeg' is not a decoder choice: use auto, libav or software"],
        ),
        (
            "[cameras.a]\nuri = \"ftp://host/x\"\n".into(),
            "bad uri scheme",
            vec!["cameras.a.uri: camera 'a': unsupported scheme 'ftp'"],
        ),
        (
            "[cameras.a]\nuri = \"file:///no/such/clip.mp4\"\n".into(),
            "missing file",
            vec!["cameras.a.uri: camera 'a': file /no/such/clip.mp4 does not exist"],
        ),
        (
            format!("[cameras.a]\nuri = \"file://{}\"\nbundle = \"/no/such/bundle\"\n", clip.display()),
            "missing bundle",
            vec!["cameras.a.bundle: engine bundle folder /no/such/bundle does not exist"],
        ),
        (
            format!(
                "[events]\nsmoothing = 3.0\n[tracker]\nmax_missed = 5000\n[cameras.a]\nuri = \"file://{}\"\nwidth = 10\n",
                clip.display()
            ),
            "out of range",
            vec![
                "events.smoothing: 3 is out of range: must be between 0.01 and 1",
                "tracker.max_missed: 5000 is out of range",
                "cameras.a.width: 10 is out of range",
            ],
        ),
        (
            format!("[mqtt]\nurl = \"http://broker\"\n[cameras.a]\nuri = \"file://{}\"\n", clip.display()),
            "bad broker url",
            vec!["mqtt.url: unsupported scheme 'http'"],
        ),
        (
            format!("[events]\nmin_track_age = \"three\"\n[cameras.a]\nuri = \"file://{}\"\n", clip.display()),
            "wrong type",
            vec!["events.min_track_age: expected"],
        ),
        ("[cameras.a\nuri=".into(), "invalid toml", vec![": -: not valid TOML"]),
        (
            format!(
                "[mqtt]\nurl = \"mqtt://user:secret@localhost\"\n[cameras.a]\nuri = \"file://{}\"\n",
                clip.display()
            ),
            "credentials in the broker url",
            vec!["mqtt.url: a user name or password in the URL is not used: set mqtt.username"],
        ),
        (
            "[cameras.a]\nuri = \"rtsp://admin:pa#ss@10.0.0.5/stream\"\n".into(),
            "a # in a camera password",
            vec!["cameras.a.uri: camera 'a': a '#' or '?' in the user name or password must be written %23 or %3F"],
        ),
        (
            format!("[mqtt]\ndiscovery_prefix = \"home/#\"\n[cameras.a]\nuri = \"file://{}\"\n", clip.display()),
            "a wildcard in the discovery prefix",
            vec!["mqtt.discovery_prefix: 'home/#' is not a topic prefix"],
        ),
        (
            format!("[cameras.a]\nuri = \"file://{}\"\nfps = \"10\"\n", clip.display()),
            "a number in quotes",
            vec!["fps (line 5): invalid type: string \"10\", expected f64"],
        ),
        (
            format!("[cameras.a]\nuri = \"file://{}\"\nwidth = 640.7\n", clip.display()),
            "a fraction where a whole number goes",
            vec!["width (line 5): invalid type: floating point `640.7`, expected u32"],
        ),
        (
            format!("[cameras.a]\nuri = \"file://{}\"\nenabled = \"no\"\n", clip.display()),
            "a boolean in quotes",
            vec!["enabled (line 5): invalid type: string \"no\", expected a boolean"],
        ),
        (
            format!("[cameras.a]\nuri = \"file://{}\"\nuser = \"admin\"\npassword = \"x\"\n", clip.display()),
            "Frigate-style credentials",
            vec![
                "cameras.a.user: unknown key: a camera's user name goes in its uri",
                "cameras.a.password: unknown key: put the camera's password in a file",
            ],
        ),
        (
            format!("[cameras.{}]\nuri = \"file://{}\"\n", "x".repeat(70_000), clip.display()),
            "a camera name too long for a topic",
            vec!["cannot be an MQTT topic level: use up to 64"],
        ),
    ];
    for (body, what, expected) in cases {
        let p = main_config(dir.path(), &body);
        let (code, out) = check(&p, &[]);
        assert_eq!(code, 78, "{what}: exit code; output:\n{out}");
        for e in expected {
            assert!(out.contains(e), "{what}: expected '{e}' in:\n{out}");
        }
        for line in out.lines() {
            assert!(
                line.starts_with(p.to_str().unwrap()) || line.contains("manifest.toml"),
                "{what}: line names the file: {line}"
            );
        }
    }
}

#[test]
fn duplicate_camera_names_across_files_are_rejected() {
    let (dir, clip) = setup();
    let p = main_config(dir.path(), &format!("[cameras.door]\nuri = \"file://{}\"\n", clip.display()));
    let drop_ins = dir.path().join("cameras.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(drop_ins.join("door.toml"), format!("uri = \"file://{}\"\n", clip.display())).unwrap();
    std::fs::write(drop_ins.join("yard.toml"), format!("uri = \"file://{}\"\nbogus = 1\n", clip.display())).unwrap();
    let (code, out) = check(&p, &[]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("door.toml: name: camera 'door' is already defined in"), "{out}");
    assert!(out.contains("yard.toml: bogus: unknown key"), "{out}");
}

#[test]
fn environment_overrides_apply_and_are_named() {
    let (dir, clip) = setup();
    let p = main_config(dir.path(), &format!("[cameras.door]\nuri = \"file://{}\"\n", clip.display()));
    let (code, out) = check(&p, &[("CLEFD__MQTT__URL", "mqtt://127.0.0.1:18830")]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = check(&p, &[("CLEFD__MQTT__URL", "gopher://x")]);
    assert_eq!(code, 78);
    assert!(out.contains("mqtt.url: unsupported scheme 'gopher'"), "{out}");
    let (code, out) = check(&p, &[("CLEFD__MQTT__NOPE", "1")]);
    assert_eq!(code, 78);
    assert!(out.contains("environment: mqtt.nope: unknown key"), "{out}");
}

#[test]
fn a_missing_config_file_is_named() {
    let (code, out) = check(Path::new("/no/such/clefd.toml"), &[]);
    assert_eq!(code, 78);
    assert!(out.contains("/no/such/clefd.toml: -: cannot read the config file"), "{out}");
}

#[test]
fn the_documented_default_config_is_valid() {
    // config/clefd.toml lists every key with its default; it must stay loadable.
    let bundle = common::demo_bundle();
    let (code, out) =
        check(&common::repo().join("config/clefd.toml"), &[("CLEFD__ENGINE__BUNDLE", bundle.to_str().unwrap())]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn environment_errors_are_blamed_on_the_environment_alone_and_lists_can_be_set() {
    let (dir, clip) = setup();
    let p = main_config(dir.path(), &format!("[cameras.door]\nuri = \"file://{}\"\n", clip.display()));
    let (code, out) = check(&p, &[("CLEFD__EVENTS__HEARTBEAT_S", "abc")]);
    assert_eq!(code, 78);
    assert!(out.contains("environment: events.heartbeat_s: expected"), "{out}");
    assert_eq!(out.lines().count(), 1, "no other (false) problem: {out}");
    // A variable name cannot hold '-': FRONT_DOOR addresses the camera front-door.
    let dashed = dir.path().join("dashed.toml");
    std::fs::write(
        &dashed,
        format!(
            "[engine]\nbundle = \"{}\"\n[cameras.front-door]\nuri = \"file://{}\"\n",
            common::demo_bundle().display(),
            clip.display()
        ),
    )
    .unwrap();
    let (code, out) = check(&dashed, &[("CLEFD__CAMERAS__FRONT_DOOR__FPS", "500")]);
    assert_eq!(code, 78);
    assert!(out.contains("environment: cameras.front-door.fps: 500 is out of range"), "{out}");
    let (code, out) = check(&p, &[("CLEFD__LOG_LEVEL", "verbose")]);
    assert_eq!(code, 78);
    assert!(out.contains("log_level: 'verbose' is not a log level"), "{out}");
    let (code, out) = check(&p, &[("CLEFD__ENGINE__PROVIDERS", "cpu")]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = check(&p, &[("CLEFD__ENGINE__PROVIDERS", "cpu,gpu")]);
    assert_eq!(code, 78);
    assert!(out.contains("engine.providers[1]: unknown execution provider 'gpu'"), "{out}");
}

#[test]
fn files_that_would_be_skipped_or_cannot_be_read_are_named() {
    let (dir, clip) = setup();
    let p = main_config(dir.path(), &format!("[cameras.door]\nuri = \"file://{}\"\n", clip.display()));
    let drop_ins = dir.path().join("cameras.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(drop_ins.join("yard.yml"), "uri: test://ball\n").unwrap();
    let (code, out) = check(&p, &[]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("yard.yml: -: only *.toml files are read here: rename it to yard.toml"), "{out}");
    std::fs::remove_file(drop_ins.join("yard.yml")).unwrap();
    let (code, out) = check(dir.path(), &[]);
    assert_eq!(code, 78);
    assert!(out.contains(": -: this is a folder, not a config file"), "{out}");
    let (code, out) = check(Path::new("/dev/zero"), &[]);
    assert_eq!(code, 78);
    assert!(out.contains("/dev/zero: -: this is not a regular file"), "{out}");
}

#[test]
fn more_cameras_than_one_daemon_runs_are_refused() {
    let (dir, clip) = setup();
    let p = main_config(dir.path(), "");
    let drop_ins = dir.path().join("cameras.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    for i in 0..=clefd::config::MAX_CAMERAS {
        std::fs::write(drop_ins.join(format!("cam{i}.toml")), format!("uri = \"file://{}\"\n", clip.display()))
            .unwrap();
    }
    let (code, out) = check(&p, &[]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("camera files: one clefd runs at most 128 cameras"), "{out}");
}

/// A broken bundle manifest and a broken key are listed together, in one run: the
/// manifest is checked by the CLI's parser while the config is (config itself knows no
/// manifests).
#[test]
fn a_bad_manifest_and_a_bad_key_are_listed_in_one_run() {
    let (dir, clip) = setup();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("manifest.toml"), "name = 5\n").unwrap();
    let p = dir.path().join("clefd.toml");
    std::fs::write(
        &p,
        format!(
            "[cameras.a]\nuri = \"file://{}\"\nbundle = \"bundle\"\ntransport = \"quic\"\n[cameras.b]\nuri = \"test://ball\"\nbundle = \"bundle\"\n",
            clip.display()
        ),
    )
    .unwrap();
    let (code, out) = check(&p, &[]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("cameras.a.transport: 'quic' is not a transport"), "{out}");
    let manifest: Vec<&str> = out.lines().filter(|l| l.contains("manifest.toml")).collect();
    assert_eq!(manifest.len(), 1, "one bundle, reported once though two cameras use it:\n{out}");
    assert!(manifest[0].contains("(bundle named by cameras.a.bundle in "), "{out}");
}

/// The tests' typed config builder writes what the daemon's own strict reader accepts
/// (no unknown key, every value in range), and only the keys it set.
#[test]
fn the_tests_config_builder_writes_a_valid_minimal_file() {
    let (dir, clip) = setup();
    let cfg = common::TestConfig::new(dir.path(), "mqtt://127.0.0.1:1883", "built")
        .http(common::free_port())
        .looping_file("door", &clip)
        .with(|c| c.mqtt.spool_max_mb = 0.5);
    let text = cfg.to_toml();
    assert!(text.contains("loop = true") && text.contains("spool_max_mb = 0.5"), "{text}");
    assert!(!text.contains("providers") && !text.contains("transport"), "defaults are left out:\n{text}");
    let back: common::config::Config = toml::from_str(&text).expect("the daemon's file type reads it back");
    assert_eq!(back, cfg.config);
    let (code, out) = check(&cfg.write(), &[]);
    assert_eq!(code, 0, "{out}\n{text}");
}
