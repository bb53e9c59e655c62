//! Home Assistant MQTT discovery: each camera appears as a device with an "Emotion"
//! sensor (the dominant emotion; per-label scores as attributes), available while clefd
//! is online. Cameras removed from the config are removed from Home Assistant too: the
//! cameras announced last time are remembered in `state_dir` and their config topics
//! cleared.

use std::path::Path;

use serde_json::json;

use super::{Outgoing, Topics};

/// One camera to announce.
#[derive(Debug, Clone)]
pub struct Announced {
    /// Camera name.
    pub camera: String,
    /// Bundle name (shown as the device model).
    pub bundle: String,
}

fn object_id(device: &str, camera: &str) -> String {
    format!("clefd_{device}_{camera}").replace(['.', '-'], "_")
}

/// The discovery topic of a camera's emotion sensor.
pub fn config_topic(discovery_prefix: &str, device: &str, camera: &str) -> String {
    format!("{discovery_prefix}/sensor/{}/emotion/config", object_id(device, camera))
}

/// The discovery payload of a camera's emotion sensor.
pub fn sensor_config(topics: &Topics, device: &str, cam: &Announced) -> serde_json::Value {
    let id = object_id(device, &cam.camera);
    json!({
        "name": "Emotion",
        "unique_id": format!("{id}_emotion"),
        "object_id": format!("{id}_emotion"),
        "state_topic": topics.emotion(&cam.camera),
        "value_template": "{{ value_json.emotion }}",
        "json_attributes_topic": topics.emotion(&cam.camera),
        "json_attributes_template": "{{ dict(value_json.scores, track_id=value_json.track_id, debias=value_json.debias) | tojson }}",
        "availability_topic": topics.availability(),
        "payload_available": "online",
        "payload_not_available": "offline",
        "icon": "mdi:emoticon-outline",
        "device": {
            "identifiers": [id],
            "name": format!("{} ({device})", cam.camera),
            "manufacturer": "clefd",
            "model": cam.bundle,
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
    })
}

/// Discovery messages for `cameras`, plus removals for cameras announced before (per
/// `memory`, a file in state_dir) that are gone now. Updates `memory`.
pub fn discovery(
    topics: &Topics,
    discovery_prefix: &str,
    device: &str,
    cameras: &[Announced],
    memory: &Path,
) -> Vec<Outgoing> {
    let before: Vec<String> =
        std::fs::read_to_string(memory).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    let mut out = Vec::new();
    for gone in before.iter().filter(|c| !cameras.iter().any(|a| &a.camera == *c)) {
        out.push(Outgoing::Retained { topic: config_topic(discovery_prefix, device, gone), payload: Vec::new() });
    }
    for cam in cameras {
        let payload = sensor_config(topics, device, cam).to_string().into_bytes();
        out.push(Outgoing::Retained { topic: config_topic(discovery_prefix, device, &cam.camera), payload });
    }
    let now: Vec<&str> = cameras.iter().map(|c| c.camera.as_str()).collect();
    if let Err(e) = std::fs::write(memory, serde_json::to_string(&now).unwrap_or_default()) {
        tracing::warn!(file = %memory.display(), error = %e, "cannot remember the cameras announced to Home Assistant");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announces_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let mem = dir.path().join("ha.json");
        let topics = Topics::new("clefd", "dev");
        let cam = |c: &str| Announced { camera: c.into(), bundle: "b".into() };
        let first = discovery(&topics, "homeassistant", "dev", &[cam("a"), cam("b")], &mem);
        assert_eq!(first.len(), 2);
        let second = discovery(&topics, "homeassistant", "dev", &[cam("a")], &mem);
        let removed: Vec<_> = second
            .iter()
            .filter_map(|o| match o {
                Outgoing::Retained { topic, payload } if payload.is_empty() => Some(topic.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(removed, vec!["homeassistant/sensor/clefd_dev_b/emotion/config".to_string()]);
    }
}
