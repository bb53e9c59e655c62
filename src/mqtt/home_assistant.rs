//! Home Assistant MQTT discovery: each camera appears as a device with two sensors, the
//! current dominant emotion over the faces in view (`none` when nobody is there; how many
//! faces show each emotion as attributes) and the number of faces, both read from the
//! camera's retained `current` summary.
//!
//! Home Assistant's recorder stores a row whenever a sensor's state or attributes change,
//! so both read only what a person would: the dominant emotion, the face count, faces per
//! emotion. The volatile details of `current` (per-track confidences, which change with
//! nearly every frame) stay on that topic for dashboards and are never an attribute. They are available while clefd is online *and* the camera streams.
//! Cameras removed from the config are removed from Home Assistant too: the cameras
//! announced last time are remembered in `state_dir` and their config topics cleared.
//! Discovery is sent at start and again after every reload.

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

/// The Emotion sensor's attributes: faces per emotion, which changes only when a face
/// comes, goes or changes its decided emotion (never the confidences).
pub const STABLE_ATTRIBUTES: &str = "{{ dict(emotions=value_json.emotions) | tojson }}";

/// The sensors each camera gets: (id suffix, display name).
const SENSORS: [(&str, &str); 2] = [("emotion", "Emotion"), ("faces", "Faces")];

fn object_id(device: &str, camera: &str) -> String {
    format!("clefd_{device}_{camera}").replace(['.', '-'], "_")
}

/// The discovery topic of one of a camera's sensors (`emotion` or `faces`).
pub fn config_topic(discovery_prefix: &str, device: &str, camera: &str, sensor: &str) -> String {
    format!("{discovery_prefix}/sensor/{}/{sensor}/config", object_id(device, camera))
}

/// The discovery payload of a camera's sensor `sensor` (`emotion` or `faces`).
pub fn sensor_config(topics: &Topics, device: &str, cam: &Announced, sensor: &str) -> serde_json::Value {
    let id = object_id(device, &cam.camera);
    let name = SENSORS.iter().find(|(s, _)| *s == sensor).map_or(sensor, |(_, n)| n);
    let mut config = json!({
        "name": name,
        "unique_id": format!("{id}_{sensor}"),
        // Home Assistant 2025.10 replaced `object_id` with `default_entity_id`.
        "default_entity_id": format!("sensor.{id}_{sensor}"),
        "state_topic": topics.current(&cam.camera),
        "value_template": format!("{{{{ value_json.{sensor} }}}}"),
        "availability": [
            {"topic": topics.availability(), "payload_available": "online", "payload_not_available": "offline"},
            {
                "topic": topics.state(&cam.camera),
                "value_template": "{{ 'online' if value_json.status == 'streaming' else 'offline' }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            },
        ],
        "availability_mode": "all",
        "device": {
            "identifiers": [id],
            "name": format!("{} ({device})", cam.camera),
            "manufacturer": "clefd",
            "model": cam.bundle,
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
    });
    let extra = if sensor == "faces" {
        json!({"state_class": "measurement", "icon": "mdi:account-group"})
    } else {
        json!({
            "icon": "mdi:emoticon-outline",
            "json_attributes_topic": topics.current(&cam.camera),
            "json_attributes_template": STABLE_ATTRIBUTES,
        })
    };
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    config
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
        for (sensor, _) in SENSORS {
            let topic = config_topic(discovery_prefix, device, gone, sensor);
            out.push(Outgoing::Retained { topic, payload: Vec::new(), camera: Some(gone.clone()) });
        }
    }
    for cam in cameras {
        for (sensor, _) in SENSORS {
            let payload = sensor_config(topics, device, cam, sensor).to_string().into_bytes();
            let topic = config_topic(discovery_prefix, device, &cam.camera, sensor);
            out.push(Outgoing::Retained { topic, payload, camera: Some(cam.camera.clone()) });
        }
    }
    let now: Vec<&str> = cameras.iter().map(|c| c.camera.as_str()).collect();
    if let Err(e) = super::state_file::write(memory, serde_json::to_string(&now).unwrap_or_default().as_bytes()) {
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
        assert_eq!(first.len(), 4, "two sensors per camera");
        let second = discovery(&topics, "homeassistant", "dev", &[cam("a")], &mem);
        let removed: Vec<_> = second
            .iter()
            .filter_map(|o| match o {
                Outgoing::Retained { topic, payload, .. } if payload.is_empty() => Some(topic.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            removed,
            vec![
                "homeassistant/sensor/clefd_dev_b/emotion/config".to_string(),
                "homeassistant/sensor/clefd_dev_b/faces/config".to_string()
            ]
        );
    }
}
