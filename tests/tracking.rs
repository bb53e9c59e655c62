//! Two faces moving across each other in a synthesised clip keep two ids, and each
//! produces exactly one `new` and one `end`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::synth::{ClipSpec, Sprite};

#[test]
fn two_crossing_faces_keep_their_ids() {
    let broker = common::Broker::start();
    let consumer = common::Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("crossing.mp4");
    let face = common::astronaut();
    let sprite =
        |from: (f32, f32), to: (f32, f32)| Sprite { image: face.clone(), size: (220, 220), from, to, round_trips: 0.5 };
    let spec = ClipSpec {
        width: 640,
        height: 480,
        fps: 15,
        frames: 60,
        sprites: vec![sprite((0.0, 20.0), (420.0, 20.0)), sprite((420.0, 150.0), (0.0, 150.0))],
    };
    common::synth::make_clip(&spec, &clip).unwrap();
    let cfg = common::write_config(dir.path(), &broker.url(), &clip, "");
    let out = common::run_clefd(&["run", "--config", cfg.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    consumer.wait_for("offline", Duration::from_secs(10), |m| {
        m.iter().any(|x| x.topic.ends_with("/availability") && x.body == "offline" && !x.retained)
    });
    let mut per_track: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut xs: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for m in consumer.on("/cam1/emotion") {
        let id = m.body["track_id"].as_u64().unwrap();
        per_track.entry(id).or_default().push(m.body["type"].as_str().unwrap().to_string());
        xs.entry(id).or_default().push(m.body["box"]["x"].as_f64().unwrap());
    }
    // One face moves right, the other left: a track whose box changes direction more
    // than once has swapped faces more than once.
    for (id, x) in &xs {
        let turns = x.windows(3).filter(|w| (w[1] - w[0]) * (w[2] - w[1]) < 0.0).count();
        assert!(turns <= 1, "track {id} swapped faces: x = {x:?}");
    }
    assert_eq!(per_track.len(), 2, "two faces, two tracks: {per_track:?}\n{stderr}");
    for (id, kinds) in &per_track {
        assert_eq!(kinds.iter().filter(|k| *k == "new").count(), 1, "track {id}: {kinds:?}");
        assert_eq!(kinds.iter().filter(|k| *k == "end").count(), 1, "track {id}: {kinds:?}");
        assert_eq!(kinds.first().map(String::as_str), Some("new"));
        assert_eq!(kinds.last().map(String::as_str), Some("end"));
    }
}
