//! The whole spine with real parts: a synthesised H.264 clip of a real face decoded by
//! GStreamer, BlazeFace and the FER2013 model through ONNX Runtime, events published to
//! a real mosquitto, received by a subscriber and checked against the schema file.

mod common;

use std::time::Duration;

use common::Received;
use serde_json::Value;

/// Subscribes, runs `f`, then waits until `device` says `offline` (not the retained
/// one a previous run left); every message received, in order.
fn collect_while(port: u16, device: &str, f: impl FnOnce()) -> Vec<Received> {
    let consumer = common::Consumer::start(port);
    f();
    let topic = format!("clefd/{device}/availability");
    consumer.wait_for("offline", Duration::from_secs(90), |m| {
        m.iter().any(|x| x.topic == topic && x.body == "offline" && !x.retained)
    });
    consumer.messages()
}

/// The bodies of the messages on `topic`.
fn on<'a>(messages: &'a [Received], topic: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m.topic == topic).map(|m| &m.body).collect()
}

#[test]
fn astronaut_clip_produces_schema_valid_happy_events() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("astronaut.mp4");
    common::astronaut_clip(&clip, 3.0, 15);
    // Analysed at half width: frame_size still reports the stream's own 640x480.
    let config = common::write_config(dir.path(), &broker.url(), &clip, "width = 320");
    let mut stderr = String::new();
    let messages = collect_while(broker.port, "testdev", || {
        let output = common::run_clefd(&["run", "--config", config.to_str().unwrap()], &[]);
        stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "clefd run failed: {stderr}");
    });

    let schema: Value = serde_json::from_str(&common::event_schema()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");

    let availability: Vec<&Value> =
        messages.iter().filter(|m| m.topic == "clefd/testdev/availability" && !m.retained).map(|m| &m.body).collect();
    assert_eq!(availability.first().and_then(|v| v.as_str()), Some("online"), "online first: {availability:?}");
    assert_eq!(availability.last().and_then(|v| v.as_str()), Some("offline"), "offline last");

    let events = on(&messages, "clefd/testdev/cam1/emotion");
    assert!(events.len() >= 2, "expected new and end events, got {events:?}\n{stderr}");
    for ev in &events {
        let errors: Vec<String> = validator.iter_errors(ev).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "event violates the schema: {errors:?}\n{ev}");
        assert_eq!(ev["emotion"], "happy", "{ev}");
        assert_eq!(ev["schema"], "clefd.emotion/2");
        assert_eq!(ev["debias"], "off");
        assert!(ev["factual"].is_null() && ev["debiased"].is_null() && ev["context_bias"].is_null());
        assert_eq!(ev["vanilla"]["happy"].as_f64().map(|p| p > 0.5), Some(true), "{ev}");
        assert_eq!(ev["frame_size"], serde_json::json!({"width": 640, "height": 480}));
        let (started, ts) = (ev["track_started"].as_str().unwrap(), ev["ts"].as_str().unwrap());
        assert!(started <= ts, "a track starts before its events: {started} > {ts}");
        assert!(ev["confidence"].as_f64().unwrap() > 0.9);
        assert_eq!(ev["bundle"]["name"], "face-fer2013");
        // The astronaut's face is in the upper middle of the sprite.
        let (y, h) = (ev["box"]["y"].as_f64().unwrap(), ev["box"]["h"].as_f64().unwrap());
        assert!((0.1..0.45).contains(&y) && (0.08..0.35).contains(&h), "face box {}", ev["box"]);
    }
    assert_eq!(events.first().unwrap()["type"], "new");
    assert_eq!(events.last().unwrap()["type"], "end");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "seq increases by one: {seqs:?}");
    let track = &events[0]["track_id"];
    assert!(events.iter().all(|e| &e["track_id"] == track), "one face, one track");
    let uid = events[0]["track_uid"].as_str().unwrap().to_string();
    assert!(events.iter().all(|e| e["track_uid"] == uid.as_str() && e["track_started"] == events[0]["track_started"]));

    // A second run continues the sequence (persisted in state_dir).
    let again = collect_while(broker.port, "testdev", || {
        let o = common::run_clefd(&["run", "--config", config.to_str().unwrap()], &[]);
        assert!(o.status.success());
    });
    let first_again = again.iter().find(|m| m.topic.ends_with("/emotion")).map(|m| &m.body);
    assert_eq!(
        first_again.map(|v| v["seq"].as_u64().unwrap()),
        Some(seqs.last().unwrap() + 1),
        "seq continues across restarts"
    );
    let uid_again = first_again.and_then(|v| v["track_uid"].as_str()).unwrap_or_default();
    assert!(!uid_again.is_empty() && uid_again != uid, "track_uid is unique across restarts: {uid_again} = {uid}");
}

#[test]
fn a_live_test_source_runs_until_sigterm_then_goes_offline_cleanly() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = common::TestConfig::new(dir.path(), &broker.url(), "live")
        .with(|c| {
            c.engine = Default::default();
            c.engine.bundle = common::demo_bundle();
            c.events = Default::default();
            c.supervisor = Default::default();
        })
        .http(port)
        .camera("pattern", "test://ball")
        .write();
    let messages = collect_while(broker.port, "live", || {
        let mut child = common::clefd()
            .args(["run", "--config", config.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Counted, not timed: the test pattern has been analysed for a while.
        let series = "clefd_frames_analysed_total{camera=\"pattern\"}";
        common::wait_metric(port, series, "20 frames of the test pattern analysed", Duration::from_secs(60), |n| {
            n > 20.0
        });
        assert!(child.try_wait().unwrap().is_none(), "a live source keeps the daemon running");
        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "SIGTERM exits 0: {stderr}");
        assert!(stderr.contains("SIGTERM: shutting down"), "{stderr}");
    });
    let avail: Vec<&Value> = on(&messages, "clefd/live/availability");
    assert_eq!(avail, ["online", "offline"], "{avail:?}");
    assert!(!messages.iter().any(|m| m.topic.ends_with("/emotion")), "no face in a test pattern");
}

/// The test config, playing `clip` (relative to the repository) once through `bundle`.
fn config_for(dir: &std::path::Path, broker: &str, clip: &str, bundle: &std::path::Path) -> std::path::PathBuf {
    let clip = common::repo().join(clip);
    common::TestConfig::new(dir, broker, "testdev")
        .with(|c| c.engine.bundle = bundle.to_path_buf())
        .camera("cam1", &format!("file://{}", clip.display()))
        .write()
}

#[test]
fn a_debiasing_bundle_sends_its_three_views_consistently() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = common::repo().join("engines/context-bias-demo");
    let config = config_for(dir.path(), &broker.url(), "assets/context-bias-anti.mp4", &bundle);
    let messages = collect_while(broker.port, "testdev", || {
        let o = common::run_clefd(&["run", "--config", config.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    });
    let schema: Value = serde_json::from_str(&common::event_schema()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let events = on(&messages, "clefd/testdev/cam1/emotion");
    assert!(events.len() >= 3, "{events:?}");
    let argmax = |m: &Value, add: Option<&Value>| {
        m.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap() + add.map_or(0.0, |a| a[k].as_f64().unwrap())))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(k, _)| k)
            .unwrap()
    };
    for ev in &events {
        let errors: Vec<String> = validator.iter_errors(ev).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "event violates the schema: {errors:?}\n{ev}");
        assert_eq!(ev["debias"], "on");
        assert!(ev["vanilla"].is_object() && ev["factual"].is_object(), "{ev}");
        // factual = φ(Y_c, Y_e) = TIE + φ(Y_c, Y_e*): the wire's three views agree.
        assert_eq!(argmax(&ev["factual"], None), argmax(&ev["debiased"], Some(&ev["context_bias"])), "{ev}");
    }
}

#[test]
fn a_multi_label_bundle_sends_active_labels_above_their_thresholds() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = common::repo().join("engines/context-multilabel-demo");
    let config = config_for(dir.path(), &broker.url(), "assets/multilabel-anti.mp4", &bundle);
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(bundle.join("manifest.toml")).unwrap()).unwrap();
    let labels: Vec<&str> = manifest["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    let thresholds: Vec<f64> =
        manifest["thresholds"].as_array().unwrap().iter().map(|t| t.as_float().unwrap()).collect();
    assert!(labels.len() >= 6, "the multi-label demo has at least six categories");
    let messages = collect_while(broker.port, "testdev", || {
        let o = common::run_clefd(&["run", "--config", config.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    });
    let schema: Value = serde_json::from_str(&common::event_schema()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let events = on(&messages, "clefd/testdev/cam1/emotion");
    assert!(events.len() >= 3, "{events:?}");
    let mut shown = 0;
    for ev in &events {
        let errors: Vec<String> = validator.iter_errors(ev).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "event violates the schema: {errors:?}\n{ev}");
        assert_eq!(ev["debias"], "on");
        let active: Vec<&str> = ev["active"]
            .as_array()
            .expect("multi-label events carry `active`")
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        shown += active.len();
        for (label, threshold) in labels.iter().zip(&thresholds) {
            let score = ev["scores"][label].as_f64().unwrap();
            if (score - threshold).abs() > 1e-4 {
                assert_eq!(
                    active.contains(label),
                    score >= *threshold,
                    "{label}: score {score} vs threshold {threshold}\n{ev}"
                );
            }
        }
    }
    assert!(shown > 0, "some event has an active label");
}
