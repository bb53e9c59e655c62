//! Loading a real file into typed settings: defaults, durations, resolved paths, and what a
//! reload would have to leave for a restart.

use std::path::Path;
use std::time::Duration;

use super::*;

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("bundle")).unwrap();
    let path = dir.join("clefd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const BASE: &str = r#"
device_id = "dev1"
state_dir = "state"
[engine]
bundle = "bundle"
batch_timeout_ms = 2.5
providers = ["cuda", "cpu"]
[mqtt]
url = "mqtt://broker.local"
stats_interval_s = 0
[events]
heartbeat_s = 2.5
[cameras.door]
uri = "rtsp://cam.local/stream"
transport = "udp"
"#;

#[test]
fn values_are_typed_once_with_defaults_and_paths_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let s = load(&write(dir.path(), BASE)).unwrap();
    assert_eq!(s.device_id, "dev1");
    assert_eq!(s.engine.batch_timeout, Duration::from_micros(2500));
    assert_eq!(s.engine.providers, vec![Provider::Cuda, Provider::Cpu]);
    assert_eq!(s.engine.cache_dir, dir.path().join("state/engine-cache"));
    assert_eq!(s.mqtt.connection.url, BrokerUrl { host: "broker.local".into(), port: 1883, tls: false });
    assert_eq!(s.mqtt.connection.client_id, "clefd-dev1");
    assert_eq!(s.mqtt.stats_every, None, "0 turns stats off");
    assert_eq!(s.mqtt.spool_dir, dir.path().join("state/spool"));
    assert_eq!(s.mqtt.spool_max_bytes, 64 * 1024 * 1024);
    assert_eq!(s.events.heartbeat, Duration::from_millis(2500));
    assert_eq!(s.http.as_ref().map(|h| h.listen), Some("127.0.0.1:9857".parse().unwrap()));
    assert!(
        s.http.as_ref().is_some_and(|h| !h.blur_faces && h.auth.is_none()),
        "faces shown, no credentials: the defaults"
    );
    let door = &s.cameras["door"];
    assert_eq!(door.source, SourceSpec::Rtsp { location: "rtsp://cam.local/stream".into() });
    assert_eq!(door.transport, Transport::Udp);
    assert_eq!(door.bundle, dir.path().join("bundle"), "a camera without a bundle gets the engine's");
    assert_eq!(door.width, DEFAULT_WIDTH);
    assert_eq!(s.mqtt.control, None, "runtime control is off unless asked for");
    let on = load(&write(dir.path(), &BASE.replace("[mqtt]\n", "[mqtt]\ncontrol = true\ncontrol_persist = true\n")))
        .unwrap();
    let kept = on.mqtt.control.and_then(|c| c.persist);
    assert_eq!(kept, Some(dir.path().join("state").join(super::CONTROL_FILE)));
}

#[test]
fn every_bad_value_is_reported_and_none_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    let bad = BASE
        .replace("transport = \"udp\"", "transport = \"quic\"\ndecoder = \"ffmpeg\"")
        .replace("providers = [\"cuda\", \"cpu\"]", "providers = [\"rocm\"]\nprecision = \"bf16\"")
        .replace("url = \"mqtt://broker.local\"", "url = \"http://broker\"\nprotocol = \"4\"");
    let problems = load(&write(dir.path(), &bad)).unwrap_err().0;
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "cameras.door.transport",
        "cameras.door.decoder",
        "engine.providers[0]",
        "engine.precision",
        "mqtt.url",
        "mqtt.protocol",
    ] {
        assert!(keys.contains(&key), "{key} not reported: {problems:?}");
    }
}

#[test]
fn decoder_software_is_a_choice_and_a_bad_one_names_file_camera_key_and_choices() {
    let dir = tempfile::tempdir().unwrap();
    let with =
        |value: &str| BASE.replace("transport = \"udp\"", &format!("transport = \"udp\"\ndecoder = \"{value}\""));
    let s = load(&write(dir.path(), &with("software"))).unwrap();
    assert_eq!(s.cameras["door"].decoder, DecoderChoice::Software);
    let path = write(dir.path(), &with("nvidia"));
    let problems = load(&path).unwrap_err().0;
    let said = problems.iter().find(|p| p.key == "cameras.door.decoder").map(ToString::to_string);
    let said = said.unwrap_or_else(|| panic!("decoder not reported: {problems:?}"));
    assert!(said.starts_with(&path.display().to_string()), "names the file: {said}");
    assert!(said.contains("'nvidia'") && said.contains("auto, libav or software"), "{said}");
}

#[test]
fn event_expiry_needs_mqtt_5() {
    let dir = tempfile::tempdir().unwrap();
    let with =
        |extra: &str| BASE.replace("url = \"mqtt://broker.local\"", &format!("url = \"mqtt://broker.local\"\n{extra}"));
    let problems = load(&write(dir.path(), &with("event_expiry_s = 60"))).unwrap_err().0;
    assert!(problems.iter().any(|p| p.key == "mqtt.event_expiry_s" && p.reason.contains("protocol")), "{problems:?}");
    let ok = load(&write(dir.path(), &with("event_expiry_s = 60\nprotocol = \"5\""))).unwrap();
    assert_eq!(ok.mqtt.connection.event_expiry_s, Some(60));
    let off = load(&write(dir.path(), &with("protocol = \"5\""))).unwrap();
    assert_eq!(off.mqtt.connection.event_expiry_s, None, "0 (the default): no expiry");
}

#[test]
fn reload_names_the_changes_that_wait_for_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = load(&write(dir.path(), BASE)).unwrap();
    let mut new = old.clone();
    new.engine.lanes = 3;
    new.mqtt.connection.keep_alive = Duration::from_secs(5);
    assert!(old.restart_only_changes(&new).is_empty(), "engine and connection are applied by reload");
    new.mqtt.spool_max_bytes += 1;
    new.http = None;
    new.mqtt.control = Some(super::ControlSettings { persist: None });
    assert_eq!(
        old.restart_only_changes(&new),
        vec!["[http]", "mqtt.spool_max_mb", "mqtt.control and mqtt.control_persist"]
    );
}

#[test]
fn engine_require_is_typed_and_must_be_reachable_through_the_providers() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load(&write(dir.path(), BASE)).unwrap().engine.require, Require::Any, "the default");
    let gpu = BASE.replace("providers = [\"cuda\", \"cpu\"]", "providers = [\"cuda\", \"cpu\"]\nrequire = \"gpu\"");
    assert_eq!(load(&write(dir.path(), &gpu)).unwrap().engine.require, Require::Gpu);
    let unreachable = BASE.replace("providers = [\"cuda\", \"cpu\"]", "providers = [\"cpu\"]\nrequire = \"tensorrt\"");
    let problems = load(&write(dir.path(), &unreachable)).unwrap_err().0;
    assert!(problems.iter().any(|p| p.key == "engine.require" && p.reason.contains("lists only")), "{problems:?}");
    let bad = BASE.replace("providers = [\"cuda\", \"cpu\"]", "providers = [\"cuda\", \"cpu\"]\nrequire = \"npu\"");
    let problems = load(&write(dir.path(), &bad)).unwrap_err().0;
    assert!(problems.iter().any(|p| p.key == "engine.require" && p.reason.contains("use any, gpu")), "{problems:?}");
}

#[test]
fn http_privacy_settings_are_typed_and_their_files_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("http.token"), "t0k3n\n").unwrap();
    let with = |http: &str| format!("{BASE}[http]\nlisten = \"127.0.0.1:9000\"\n{http}\n");
    let s = load(&write(dir.path(), &with("blur_faces = true\n[http.auth]\ntoken_file = \"http.token\""))).unwrap();
    let http = s.http.unwrap();
    assert!(http.blur_faces);
    assert_eq!(http.auth, Some(HttpAuth::Token(dir.path().join("http.token"))), "relative to the config file");
    for (auth, key) in [
        ("basic_file = \"missing\"", "http.auth.basic_file"),
        ("token_file = \"http.token\"\nbasic_file = \"http.token\"", "http.auth"),
        ("", "http.auth"),
    ] {
        let problems = load(&write(dir.path(), &with(&format!("[http.auth]\n{auth}")))).unwrap_err().0;
        assert!(problems.iter().any(|p| p.key == key), "{auth}: {problems:?}");
    }
}

#[test]
fn history_is_off_unless_enabled_and_its_bounds_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load(&write(dir.path(), BASE)).unwrap().history, None, "off by default: it keeps personal data");
    let on = format!("{BASE}[history]\nenabled = true\nretain_h = 0.5\nmax_mb = 2\n");
    let h = load(&write(dir.path(), &on)).unwrap().history.unwrap();
    assert_eq!(h.path, dir.path().join("state/history.sqlite"));
    assert_eq!((h.retain, h.max_bytes), (Duration::from_secs(1800), 2 * 1024 * 1024));
    let bad = format!("{BASE}[history]\nenabled = true\nretain_h = 0\nmax_mb = 0.1\nkeep = 3\n");
    let problems = load(&write(dir.path(), &bad)).unwrap_err().0;
    let file = dir.path().join("clefd.toml").display().to_string();
    for key in ["history.retain_h", "history.max_mb", "history.keep"] {
        assert!(problems.iter().any(|p| p.key == key && p.file == file), "{key} named in {problems:?}");
    }
}

#[test]
fn a_camera_named_dot_or_dot_dot_is_refused_with_its_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for name in [".", ".."] {
        let text = format!("{BASE}[cameras.\"{name}\"]\nuri = \"test://ball\"\n");
        let path = write(dir.path(), &text);
        let problems = load(&path).unwrap_err().0;
        let key = format!("cameras.{name}.name");
        assert!(
            problems.iter().any(|p| p.key == key && p.file.ends_with("clefd.toml") && p.reason.contains("path step")),
            "{name}: {problems:?}"
        );
    }
    // The likelier way in: a drop-in file that names its camera.
    std::fs::create_dir_all(dir.path().join("cameras.d")).unwrap();
    std::fs::write(dir.path().join("cameras.d/dots.toml"), "name = \"..\"\nuri = \"test://ball\"\n").unwrap();
    let problems = load(&write(dir.path(), BASE)).unwrap_err().0;
    assert!(
        problems.iter().any(|p| p.key == "name" && p.file.ends_with("dots.toml") && p.reason.contains("path step")),
        "a drop-in: {problems:?}"
    );
    std::fs::write(dir.path().join("cameras.d/dots.toml"), "name = \"v1..2\"\nuri = \"test://ball\"\n").unwrap();
    assert!(load(&write(dir.path(), BASE)).is_ok(), "dots inside a name are fine");
}
