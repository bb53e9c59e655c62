//! Home Assistant discovery (announced, and removed with the camera) and the periodic
//! stats message.

mod common;

use std::time::Duration;

use common::{Broker, Consumer, Daemon};

fn write(dir: &std::path::Path, broker: &Broker, cameras: &[&str]) -> std::path::PathBuf {
    let mut text = common::base_config(dir, &broker.url(), "ha")
        .replace("[mqtt]\n", "[mqtt]\nhome_assistant = true\nstats_interval_s = 1\n");
    for c in cameras {
        text += &format!("[cameras.{c}]\nuri = \"test://ball\"\n");
    }
    let p = dir.join("clefd.toml");
    std::fs::write(&p, text).unwrap();
    p
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
    assert!(daemon.stop());
    for cam in ["front", "back"] {
        let msg = consumer.on(&format!("homeassistant/sensor/clefd_ha_{cam}/emotion/config")).pop().expect("announced");
        let c = &msg.body;
        // What Home Assistant needs for an MQTT sensor with a device entry.
        assert_eq!(c["state_topic"], format!("clefd/ha/{cam}/emotion"));
        assert_eq!(c["value_template"], "{{ value_json.emotion }}");
        assert_eq!(c["unique_id"], format!("clefd_ha_{cam}_emotion"));
        assert_eq!(c["availability_topic"], "clefd/ha/availability");
        assert_eq!(
            (c["payload_available"].as_str(), c["payload_not_available"].as_str()),
            (Some("online"), Some("offline"))
        );
        assert_eq!(c["json_attributes_topic"], c["state_topic"]);
        assert!(c["device"]["identifiers"].as_array().is_some_and(|a| !a.is_empty()));
        assert!(c["device"]["name"].as_str().unwrap().contains(cam));
        assert!(c["name"].is_string());
    }
    let stats = consumer.on("clefd/ha/stats").pop().unwrap().body;
    for key in ["fps", "frames", "dropped", "latency_ms", "status"] {
        assert!(!stats["cameras"]["back"][key].is_null(), "stats.cameras.back.{key}: {stats}");
    }
    assert!(stats["inference"]["face-fer2013"]["detect_ms_per_batch"].as_f64().unwrap() > 0.0);
    assert!(!stats["mqtt"]["spooled"].is_null());

    // The camera `back` leaves the config: Home Assistant is told to forget it.
    let daemon = Daemon::start(&write(dir.path(), &broker, &["front"]), &dir.path().join("b.log"));
    consumer.wait_for("removal of back", Duration::from_secs(20), |m| {
        m.iter().any(|x| {
            x.topic == "homeassistant/sensor/clefd_ha_back/emotion/config"
                && x.body == serde_json::Value::String(String::new())
        })
    });
    assert!(daemon.stop());
}
