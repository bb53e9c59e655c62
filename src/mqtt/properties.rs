//! The MQTT 5 contract: what each publish says about itself, so that a consumer, a rule
//! engine or a bridge into Kafka can route and decode a message without opening it.
//!
//! Every publish over MQTT 5 carries a payload-format indicator (UTF-8 text, except the
//! JPEG snapshots), a content type, and user properties naming its schema, the device and
//! (where there is one) the camera; events also carry a message expiry when
//! `mqtt.event_expiry_s` is set, counted from the capture time. MQTT 3.1.1 has no
//! properties: the same messages go out bare there. README, "For consumers".

use rumqttc::v5::mqttbytes::v5::{LastWillProperties, PublishProperties};

use super::Topics;

/// What a message is; its content type and schema follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An emotion event (`…/emotion`).
    Event,
    /// A camera's retained state (`…/state`).
    State,
    /// A camera's retained summary (`…/current`).
    Current,
    /// A face's JPEG (`…/snapshot`).
    Snapshot,
    /// `online` / `offline` (`…/availability`), also the last will.
    Availability,
    /// The periodic statistics (`…/stats`).
    Stats,
    /// Home Assistant discovery.
    Discovery,
    /// The answer to a command (`…/set/result`).
    Reply,
}

impl Kind {
    /// The schema a consumer decodes the payload with (user property `schema`).
    pub fn schema(self) -> &'static str {
        match self {
            Kind::Event => crate::events::SCHEMA,
            Kind::State => "clefd.state/1",
            Kind::Current => "clefd.current/1",
            Kind::Snapshot => "clefd.snapshot/1",
            Kind::Availability => "clefd.availability/1",
            Kind::Stats => "clefd.stats/1",
            Kind::Discovery => "homeassistant.discovery/1",
            Kind::Reply => "clefd.set-result/1",
        }
    }

    /// The MIME type of the payload (`availability` is the bare word, not JSON).
    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Snapshot => "image/jpeg",
            Kind::Availability => "text/plain; charset=utf-8",
            _ => "application/json",
        }
    }

    /// Whether the payload is UTF-8 text (payload-format indicator 1): a broker may check
    /// it, so binary JPEGs say 0.
    pub fn utf8(self) -> bool {
        self != Kind::Snapshot
    }
}

/// What one publish says about itself; turned into MQTT 5 properties by the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// What the message is.
    pub kind: Kind,
    /// The device (user property `device`).
    pub device: String,
    /// The camera, when the message is about one (user property `camera`).
    pub camera: Option<String>,
    /// Seconds the broker keeps the message for subscribers that are away (`None`: no
    /// expiry).
    pub expiry_s: Option<u32>,
}

impl Meta {
    /// A message of `kind` from the device of `topics`, about `camera` if any.
    pub fn new(topics: &Topics, kind: Kind, camera: Option<&str>) -> Meta {
        Meta { kind, device: topics.device().to_string(), camera: camera.map(str::to_string), expiry_s: None }
    }

    /// The same message with a message expiry.
    pub fn expiring(self, expiry_s: Option<u32>) -> Meta {
        Meta { expiry_s, ..self }
    }

    fn user_properties(&self) -> Vec<(String, String)> {
        let mut props =
            vec![("schema".to_string(), self.kind.schema().to_string()), ("device".into(), self.device.clone())];
        if let Some(camera) = &self.camera {
            props.push(("camera".into(), camera.clone()));
        }
        props
    }

    /// The properties of a PUBLISH.
    pub fn publish_properties(&self) -> PublishProperties {
        PublishProperties {
            payload_format_indicator: Some(u8::from(self.kind.utf8())),
            message_expiry_interval: self.expiry_s,
            content_type: Some(self.kind.content_type().into()),
            user_properties: self.user_properties(),
            ..PublishProperties::default()
        }
    }

    /// The properties of the last will.
    pub fn will_properties(&self) -> LastWillProperties {
        LastWillProperties {
            delay_interval: None,
            payload_format_indicator: Some(u8::from(self.kind.utf8())),
            message_expiry_interval: self.expiry_s,
            content_type: Some(self.kind.content_type().into()),
            response_topic: None,
            correlation_data: None,
            user_properties: self.user_properties(),
        }
    }
}

/// What an event spooled for `topic` (`{prefix}/{device}/{camera}/emotion`) says about
/// itself: device and camera as its topic names them (an event spooled before the device
/// was renamed keeps its own), `expiry_s` as [`remaining_expiry`] has it.
pub fn event_meta(topic: &str, topics: &Topics, expiry_s: Option<u32>) -> Meta {
    let mut levels = topic.rsplit('/').skip(1);
    let (camera, device) = (levels.next(), levels.next());
    Meta {
        kind: Kind::Event,
        device: device.unwrap_or(topics.device()).to_string(),
        camera: camera.map(str::to_string),
        expiry_s,
    }
}

/// What an answer on a control result topic (`…/set/result`) says about itself.
pub fn reply_meta(topics: &Topics, topic: &str) -> Meta {
    let camera = topic.strip_suffix("/result").and_then(|t| topics.set_target(t)).flatten();
    Meta::new(topics, Kind::Reply, camera.as_deref())
}

/// The message expiry an event gets when it is sent: `expiry_s` less the time since its
/// capture (`ts` in the payload), at least one second (an event that waited in the spool
/// longer than its expiry still goes out, so the spool's accounting stays whole, but no
/// subscriber that is away receives it late). `None` when no expiry is set.
pub fn remaining_expiry(expiry_s: Option<u32>, payload: &[u8], now: time::OffsetDateTime) -> Option<u32> {
    #[derive(serde::Deserialize)]
    struct Captured<'a> {
        ts: &'a str,
    }
    let expiry = expiry_s?;
    let age = serde_json::from_slice::<Captured>(payload)
        .ok()
        .and_then(|c| time::OffsetDateTime::parse(c.ts, &time::format_description::well_known::Rfc3339).ok())
        .map_or(0, |ts| (now - ts).whole_seconds().max(0));
    let left = i64::from(expiry) - age;
    Some(u32::try_from(left.max(1)).unwrap_or(expiry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_says_what_it_carries() {
        let topics = Topics::new("clefd", "dev");
        let p = Meta::new(&topics, Kind::Event, Some("door")).expiring(Some(60)).publish_properties();
        assert_eq!(p.payload_format_indicator, Some(1));
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(p.message_expiry_interval, Some(60));
        assert_eq!(
            p.user_properties,
            vec![
                ("schema".to_string(), "clefd.emotion/2".to_string()),
                ("device".into(), "dev".into()),
                ("camera".into(), "door".into())
            ]
        );
        let jpeg = Meta::new(&topics, Kind::Snapshot, Some("door")).publish_properties();
        assert_eq!((jpeg.payload_format_indicator, jpeg.content_type.as_deref()), (Some(0), Some("image/jpeg")));
        let stats = Meta::new(&topics, Kind::Stats, None).publish_properties();
        assert_eq!(stats.user_properties.len(), 2, "no camera");
        assert_eq!(stats.message_expiry_interval, None);
    }

    #[test]
    fn events_and_answers_name_their_camera() {
        let topics = Topics::new("site/a", "dev");
        let e = event_meta(&topics.emotion("door"), &topics, Some(5));
        assert_eq!((e.device.as_str(), e.camera.as_deref(), e.expiry_s), ("dev", Some("door"), Some(5)));
        let old = event_meta("site/a/old-name/door/emotion", &topics, None);
        assert_eq!(old.device, "old-name", "the device its topic names");
        assert_eq!(reply_meta(&topics, &topics.set_result(Some("door"))).camera.as_deref(), Some("door"));
        assert_eq!(reply_meta(&topics, &topics.set_result(None)).camera, None);
    }

    #[test]
    fn the_expiry_counts_from_the_capture() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_700_000_100).unwrap();
        let event = |ts: &str| format!(r#"{{"schema":"clefd.emotion/2","ts":"{ts}","seq":1}}"#).into_bytes();
        let fresh = event("2023-11-14T22:13:20Z"); // 1_700_000_000: 100 s before now
        assert_eq!(remaining_expiry(Some(300), &fresh, now), Some(200));
        assert_eq!(remaining_expiry(Some(60), &fresh, now), Some(1), "waited past its expiry: one second left");
        assert_eq!(remaining_expiry(None, &fresh, now), None);
        assert_eq!(remaining_expiry(Some(30), b"not json", now), Some(30), "no capture time: the whole expiry");
    }
}
