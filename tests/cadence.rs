//! `detect_every` and `classify_every`: the detector runs on every N-th frame and faces
//! that hardly move keep their classification, while consumers see the same tracks and
//! labels as with every frame analysed.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

/// What one run of the astronaut clip (every frame analysed) gave: its events and the
/// daemon's run summary line.
struct Run {
    events: Vec<serde_json::Value>,
    summary: String,
}

impl Run {
    fn tracks(&self) -> BTreeSet<u64> {
        self.events.iter().filter_map(|e| e["track_id"].as_u64()).collect()
    }

    fn labels(&self) -> BTreeSet<String> {
        self.events.iter().filter_map(|e| e["emotion"].as_str().map(String::from)).collect()
    }

    fn new_labels(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["type"] == "new")
            .filter_map(|e| e["emotion"].as_str().map(String::from))
            .collect()
    }

    /// A `key=N` figure of the run summary.
    fn figure(&self, key: &str) -> u64 {
        self.summary
            .split(&format!("{key}="))
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in: {}", self.summary))
    }
}

/// The astronaut crossing the frame and back (`moving`), or sitting still.
fn run(moving: bool, camera_extra: &str) -> Run {
    let broker = common::Broker::start();
    let consumer = common::Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    if moving {
        common::astronaut_clip(&clip, 3.0, 15);
    } else {
        common::still_clip(&clip, 45);
    }
    let cfg = common::write_config(dir.path(), &broker.url(), &clip, &format!("realtime = false\n{camera_extra}"));
    let out = common::run_clefd(&["run", "--config", cfg.to_str().unwrap()], &[("RUST_LOG", "info")]);
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    let numbered: usize =
        std::fs::read_to_string(dir.path().join("state/seq")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    consumer.wait_for("every event numbered", Duration::from_secs(30), |m| {
        m.iter().filter(|x| x.topic.ends_with("/cam1/emotion")).count() >= numbered
    });
    let summary = log.lines().find(|l| l.contains("run summary")).unwrap_or_else(|| panic!("no run summary: {log}"));
    Run { events: consumer.on("/cam1/emotion").into_iter().map(|m| m.body).collect(), summary: summary.to_string() }
}

#[test]
fn detecting_every_third_frame_keeps_the_tracks_and_labels() {
    // The face crosses the frame and comes back: the tracker bridges three frames at a
    // time, the turn included.
    let every = run(true, "");
    assert!(!every.events.is_empty(), "the clip makes events");
    let frames = every.figure("frames");
    assert_eq!(every.figure("detected_frames"), frames, "by default the detector runs on every frame");
    assert_eq!(every.figure("classified_faces"), every.figure("faces"), "and every face is classified");

    let third = run(true, "detect_every = 3\n");
    assert_eq!(third.figure("frames"), frames, "every frame is still analysed and tracked");
    let detected = third.figure("detected_frames");
    assert!(detected >= frames / 3 && detected <= frames / 3 + 2, "one frame in three detected: {}", third.summary);
    assert_eq!(third.tracks().len(), every.tracks().len(), "the same number of tracks");
    assert_eq!(third.labels(), every.labels(), "the same labels");
    assert_eq!(third.new_labels(), every.new_labels(), "each track starts with the same label");

    assert_eq!(third.figure("classified_faces"), third.figure("faces"), "a moving face is classified every time");
}

#[test]
fn a_face_that_sits_still_keeps_its_classification() {
    let every = run(false, "");
    assert!(!every.events.is_empty(), "the clip makes events");
    let kept = run(false, "detect_every = 3\nclassify_every = 7\n");
    let (faces, classified) = (kept.figure("faces"), kept.figure("classified_faces"));
    assert!(faces >= 14, "{}", kept.summary);
    // Classified on its first frame, then again once its classification is 7 frames old:
    // about every third detection (they are 3 frames apart), more often when frames are
    // analysed ahead of the tracking that records the classifications.
    assert!(classified >= 2 && classified * 3 <= faces * 2, "{}", kept.summary);
    assert_eq!(kept.tracks().len(), every.tracks().len());
    assert_eq!(kept.labels(), every.labels());
    assert_eq!(kept.new_labels(), every.new_labels());
}
