//! Home Assistant discovery (announced, following reloads, and removed with the camera),
//! the retained `current` summary its sensors read, and the periodic stats message.

mod common;

use std::time::Duration;

use common::{Broker, Consumer, Daemon};

fn write(dir: &std::path::Path, broker: &Broker, cameras: &[&str]) -> std::path::PathBuf {
    let mut cfg = common::TestConfig::new(dir, &broker.url(), "ha").with(|c| {
        c.mqtt.home_assistant = true;
        c.mqtt.stats_interval_s = 1.0;
    });
    for c in cameras {
        cfg = cfg.camera(c, "test://ball");
    }
    cfg.write()
}

#[test]
fn home_assistant_discovery_and_stats() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&write(dir.path(), &broker, &["front", "back"]), &dir.path().join("a.log"));
    consumer.wait_for("discovery for both cameras and a stats message", Duration::from_secs(20), |m| {
        let configs = m
            .iter()
            .filter(|x| x.topic.starts_with("homeassistant/sensor/") && x.topic.ends_with("/emotion/config"))
            .count();
        let stats = m
            .iter()
            .any(|x| x.topic == "clefd/ha/stats" && x.body["cameras"]["front"]["frames"].as_u64().unwrap_or(0) > 0);
        configs >= 2 && stats
    });
    // A camera added by a reload is announced without a restart.
    write(dir.path(), &broker, &["front", "back", "side"]);
    common::signal(daemon.pid(), "HUP");
    consumer.wait_for("discovery of the added camera", Duration::from_secs(30), |m| {
        m.iter().any(|x| x.topic == "homeassistant/sensor/clefd_ha_side/faces/config" && x.body.is_object())
    });
    assert!(daemon.stop());
    for cam in ["front", "back", "side"] {
        let msg = consumer.on(&format!("homeassistant/sensor/clefd_ha_{cam}/emotion/config")).pop().expect("announced");
        let c = &msg.body;
        // What Home Assistant needs for an MQTT sensor with a device entry, reading the
        // camera's summary (not the raw event stream of every track).
        assert_eq!(c["state_topic"], format!("clefd/ha/{cam}/current"));
        assert_eq!(c["value_template"], "{{ value_json.emotion }}");
        assert_eq!(c["unique_id"], format!("clefd_ha_{cam}_emotion"));
        assert_eq!(c["default_entity_id"], format!("sensor.clefd_ha_{cam}_emotion"));
        assert!(c.get("object_id").is_none(), "object_id is deprecated in Home Assistant");
        let availability = c["availability"].as_array().expect("availability list");
        assert_eq!(availability[0]["topic"], "clefd/ha/availability");
        assert_eq!(availability[1]["topic"], format!("clefd/ha/{cam}/state"));
        assert_eq!(c["availability_mode"], "all", "available while clefd is online and the camera streams");
        assert_eq!(c["json_attributes_topic"], c["state_topic"]);
        assert!(c["device"]["identifiers"].as_array().is_some_and(|a| !a.is_empty()));
        assert!(c["device"]["name"].as_str().unwrap().contains(cam));
        assert!(c["name"].is_string());
        let faces = consumer.on(&format!("homeassistant/sensor/clefd_ha_{cam}/faces/config")).pop().expect("faces");
        assert_eq!(faces.body["state_topic"], format!("clefd/ha/{cam}/current"));
        assert_eq!(faces.body["value_template"], "{{ value_json.faces }}");
        assert_eq!(faces.body["device"]["identifiers"], c["device"]["identifiers"], "one device, two sensors");
    }
    let stats = consumer.on("clefd/ha/stats").pop().unwrap().body;
    for key in ["fps", "frames", "dropped", "latency_ms", "status"] {
        assert!(!stats["cameras"]["back"][key].is_null(), "stats.cameras.back.{key}: {stats}");
    }
    assert!(stats["inference"]["face-fer2013"]["detect_ms_per_batch"].as_f64().unwrap() > 0.0);
    assert!(!stats["mqtt"]["spooled"].is_null());

    // The camera `back` leaves the config: Home Assistant is told to forget it.
    let daemon = Daemon::start(&write(dir.path(), &broker, &["front", "side"]), &dir.path().join("b.log"));
    consumer.wait_for("removal of back", Duration::from_secs(20), |m| {
        m.iter().any(|x| {
            x.topic == "homeassistant/sensor/clefd_ha_back/emotion/config"
                && x.body == serde_json::Value::String(String::new())
        })
    });
    // And one removed by a reload, without a restart.
    write(dir.path(), &broker, &["front"]);
    common::signal(daemon.pid(), "HUP");
    consumer.wait_for("removal of side after a reload", Duration::from_secs(30), |m| {
        m.iter().any(|x| {
            x.topic == "homeassistant/sensor/clefd_ha_side/faces/config"
                && x.body == serde_json::Value::String(String::new())
        })
    });
    assert!(daemon.stop());
}

#[test]
fn the_current_summary_follows_the_faces_and_says_none_when_the_room_empties() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    // The face crosses the frame and leaves it; the clip loops, so it comes back.
    let clip = dir.path().join("passing.mp4");
    common::passing_clip(&clip, 90);
    let cfg = common::TestConfig::new(dir.path(), &broker.url(), "room")
        .with(|c| c.events.empty_after_s = 1.0)
        .looping_file("hall", &clip)
        .write();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    let current = |m: &[common::Received]| -> Vec<serde_json::Value> {
        m.iter().filter(|x| x.topic == "clefd/room/hall/current").map(|x| x.body.clone()).collect()
    };
    consumer.wait_for("someone, then nobody, then someone again", Duration::from_secs(90), |m| {
        let seen = current(m);
        let someone = |v: &serde_json::Value| v["faces"].as_u64().unwrap_or(0) >= 1 && v["emotion"] != "none";
        let first = seen.iter().position(someone);
        let empty =
            first.and_then(|f| seen[f..].iter().position(|v| v["faces"] == 0 && v["emotion"] == "none").map(|e| f + e));
        empty.is_some_and(|e| seen[e..].iter().any(someone))
    });
    let summary = current(&consumer.messages()).into_iter().find(|v| v["faces"] == 1).unwrap();
    assert_eq!(summary["tracks"].as_array().map(Vec::len), Some(1), "{summary}");
    assert_eq!(summary["tracks"][0]["emotion"], summary["emotion"]);
    // Retained: a dashboard that connects later gets the summary at once.
    let late = Consumer::start(broker.port);
    late.wait_for("the retained summary", Duration::from_secs(10), |m| {
        m.iter().any(|x| x.topic == "clefd/room/hall/current" && x.retained)
    });
    assert!(daemon.stop());
}

/// What Home Assistant stores for an MQTT sensor from one message: the values its
/// template reads (`value_json.NAME`, in order). Two messages give the same recorder row
/// when these agree; the templates clefd announces read nothing else.
fn reads(template: &str, payload: &serde_json::Value) -> Vec<serde_json::Value> {
    template
        .split("value_json.")
        .skip(1)
        .map(|rest| {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            payload[name.as_str()].clone()
        })
        .collect()
}

/// The rows Home Assistant's recorder writes for each sensor announced on `configs`
/// (by unique id) from `currents`, in the order they came: one whenever what the sensor
/// stores (its state, and its attributes read with `attributes` where given, else as
/// announced) differs from what it stored last.
fn recorded(
    configs: &[common::Received],
    currents: &[common::Received],
    attributes: Option<&str>,
) -> std::collections::BTreeMap<String, usize> {
    let mut rows = std::collections::BTreeMap::new();
    for config in configs.iter().filter(|c| c.body.is_object()) {
        let c = &config.body;
        let state = c["value_template"].as_str().expect("a state template");
        let attrs = c["json_attributes_template"].as_str().map(|t| attributes.unwrap_or(t));
        let (mut last, mut written) = (None, 0);
        for m in currents.iter().filter(|m| m.topic == c["state_topic"] && m.body.is_object()) {
            let stored = (reads(state, &m.body), attrs.map(|t| reads(t, &m.body)).unwrap_or_default());
            if last.as_ref() != Some(&stored) {
                written += 1;
                last = Some(stored);
            }
        }
        rows.insert(c["unique_id"].as_str().unwrap_or_default().to_string(), written);
    }
    rows
}

/// How often a face came into `camera`'s view (its summary's `faces` from 0 to more).
fn arrivals(currents: &[common::Received], camera: &str) -> usize {
    let faces = (currents.iter())
        .filter(|m| m.topic.contains(&format!("/{camera}/")) && m.body.is_object())
        .map(|m| m.body["faces"].as_u64());
    let mut before = Some(0);
    faces.filter(|now| std::mem::replace(&mut before, *now) == Some(0) && now.unwrap_or(0) > 0).count()
}

#[test]
fn home_assistant_records_a_row_only_when_what_a_person_reads_changes() {
    // The clip's face crosses the frame showing one emotion. Per face that comes and goes
    // a person reads two changes on each sensor (Faces 0 → 1 → 0; Emotion none → what
    // the face shows → none), so each sensor writes at most two rows a face, and one for
    // the first message. Measured: 5 rows each after 3 faces; the old per-track
    // attributes wrote 9 on the Emotion sensor.
    let bound = |faces: usize| 2 * faces + 1;
    // What the attributes were before: every track's confidence, changing with each event.
    const VOLATILE: &str = "{{ dict(tracks=value_json.tracks, confidence=value_json.confidence) | tojson }}";
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("passing.mp4");
    common::passing_clip(&clip, 90);
    let cfg = common::TestConfig::new(dir.path(), &broker.url(), "lean")
        .with(|c| {
            c.mqtt.home_assistant = true;
            c.events.empty_after_s = 1.0;
            // Heartbeats that a face's short stay sees several of (its confidence moves
            // with each), as a person who stays a while sees many of the default 10 s.
            c.events.heartbeat_s = 0.25;
        })
        .looping_file("front", &clip)
        .looping_file("back", &clip)
        .write();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    let split = |m: &[common::Received]| -> (Vec<common::Received>, Vec<common::Received>) {
        let configs = m.iter().filter(|x| x.topic.starts_with("homeassistant/sensor/")).cloned().collect();
        (configs, m.iter().filter(|x| x.topic.ends_with("/current")).cloned().collect())
    };
    consumer.wait_for("five faces on both cameras", Duration::from_secs(300), |m| {
        let (_, currents) = split(m);
        ["front", "back"].iter().all(|cam| arrivals(&currents, cam) >= 5)
    });
    assert!(daemon.stop());
    let (configs, currents) = split(&consumer.messages());
    assert_eq!(configs.iter().filter(|c| c.body.is_object()).count(), 4, "two sensors per camera");
    let rows = recorded(&configs, &currents, None);
    let volatile = recorded(&configs, &currents, Some(VOLATILE));
    for cam in ["front", "back"] {
        let faces = arrivals(&currents, cam);
        let bound = bound(faces);
        for sensor in ["emotion", "faces"] {
            let id = format!("clefd_lean_{cam}_{sensor}");
            let (lean, old) = (rows[&id], volatile[&id]);
            eprintln!(
                "Home Assistant, {id}: {faces} faces came, {lean} rows (bound {bound}); {old} with per-track attributes"
            );
            assert!(lean <= bound, "{id}: {lean} rows after {faces} faces, more than {bound}: {rows:?}");
        }
        // The bound tells the lean attributes from the old ones.
        let id = format!("clefd_lean_{cam}_emotion");
        assert!(volatile[&id] > bound, "{id}: per-track attributes within the bound too: {volatile:?}");
    }
    for c in configs.iter().filter(|c| c.body.is_object()) {
        let attrs = c.body["json_attributes_template"].as_str().unwrap_or_default();
        assert!(!attrs.contains("confidence") && !attrs.contains("tracks"), "volatile attributes: {attrs}");
    }
}
