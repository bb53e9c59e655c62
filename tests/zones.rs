//! Per-camera choice of faces, end to end: a zone that leaves the face out, an ignored
//! area over it, and a smallest face size above it each silence the camera; a size below
//! the face's, and a zone around it, leave the usual events.

mod common;

use std::time::Duration;

/// Runs a file camera of the astronaut clip with `camera_extra` in its section; returns
/// the events the broker received.
fn events_with(camera_extra: &str) -> Vec<serde_json::Value> {
    let broker = common::Broker::start();
    let consumer = common::Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 2.0, 15);
    let cfg = common::write_config(dir.path(), &broker.url(), &clip, &format!("realtime = false\n{camera_extra}"));
    let out = common::run_clefd(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The daemon's own count: every event gets the next seq before it leaves.
    let numbered: usize =
        std::fs::read_to_string(dir.path().join("state/seq")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    consumer.wait_for("every event numbered", Duration::from_secs(30), |m| {
        m.iter().filter(|x| x.topic.ends_with("/cam1/emotion")).count() >= numbered
    });
    consumer.on("/cam1/emotion").into_iter().map(|m| m.body).collect()
}

#[test]
fn zones_ignored_areas_and_face_sizes_choose_the_faces() {
    let usual = events_with("");
    assert!(!usual.is_empty(), "the clip makes events");
    // The face stays in the upper two thirds of the frame.
    assert!(usual.iter().all(|e| e["box"]["y"].as_f64().unwrap() + e["box"]["h"].as_f64().unwrap() / 2.0 < 0.7));
    assert!(events_with("zones = [[0.0, 0.7, 1.0, 0.3]]\n").is_empty(), "a zone that leaves the face out");
    assert!(
        !events_with("zones = [[[0.0, 0.0], [1.0, 0.0], [1.0, 0.7], [0.0, 0.7]]]\n").is_empty(),
        "a zone (polygon) around it"
    );
    assert!(events_with("ignore = [[0.0, 0.0, 1.0, 1.0]]\n").is_empty(), "an ignored area over it");
    let side = usual.iter().map(|e| e["box"]["h"].as_f64().unwrap() * 480.0).fold(f64::INFINITY, f64::min);
    assert!(events_with(&format!("min_face_px = {:.0}\n", side * 3.0)).is_empty(), "smaller than min_face_px");
    assert!(!events_with(&format!("min_face_px = {:.0}\n", side / 2.0)).is_empty(), "larger than min_face_px");
    assert!(events_with("score_threshold = 1.0\n").is_empty(), "no face scores above 1.0");
}

#[test]
fn check_config_refuses_areas_outside_the_frame() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    std::fs::write(&clip, b"x").unwrap();
    let cfg = common::write_config(
        dir.path(),
        "mqtt://127.0.0.1:1",
        &clip,
        "zones = [[0.5, 0.5, 0.6, 0.1], [[0.0, 0.0], [1.0, 1.0]]]\nmin_face_px = -3.0\n",
    );
    let out = common::run_clefd(&["check-config", "--config", cfg.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("cameras.cam1.zones[0]: rectangle") && text.contains("inside the frame"), "{text}");
    assert!(text.contains("cameras.cam1.zones[1]: polygon") && text.contains("three corners"), "{text}");
    assert!(text.contains("cameras.cam1.min_face_px: -3 is out of range"), "{text}");
}
