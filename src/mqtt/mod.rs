//! Everything MQTT: the topic layout (README, "Topics and the event"), the publisher that
//! numbers, spools and sends events, the session over MQTT 3.1.1 or 5, and Home Assistant
//! discovery. The broker URL and protocol are config values (`config::BrokerUrl`).

mod control_link;
pub mod home_assistant;
mod outgoing;
pub mod progress;
pub mod properties;
mod publisher;
pub mod refusals;
pub mod session;
pub mod spool;
pub mod state_file;

pub use publisher::{Command, Outgoing, Parked, PublishStats, Publisher, PublisherConfig, TlsFiles, WINDOW};
pub use session::Protocol;

pub use crate::config::BrokerUrl;

/// Topic names for one device.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
    device: String,
}

impl Topics {
    /// Topics under `{prefix}/{device}`.
    pub fn new(prefix: &str, device: &str) -> Topics {
        Topics { prefix: prefix.into(), device: device.into() }
    }

    /// The device these topics belong to.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Retained `online` / `offline`.
    pub fn availability(&self) -> String {
        format!("{}/{}/availability", self.prefix, self.device)
    }

    /// Periodic statistics.
    pub fn stats(&self) -> String {
        format!("{}/{}/stats", self.prefix, self.device)
    }

    /// Retained JSON state of one camera.
    pub fn state(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/state", self.prefix, self.device)
    }

    /// Retained summary of what one camera sees now (faces, dominant emotion, tracks).
    pub fn current(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/current", self.prefix, self.device)
    }

    /// QoS 1 emotion events of one camera.
    pub fn emotion(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/emotion", self.prefix, self.device)
    }

    /// Retained JPEG of the face of the camera's newest track (`[snapshots] mqtt`).
    pub fn snapshot(&self, camera: &str) -> String {
        format!("{}/{}/{camera}/snapshot", self.prefix, self.device)
    }

    /// Where commands for one camera (`Some`) or every camera (`None`) arrive.
    pub fn set(&self, camera: Option<&str>) -> String {
        match camera {
            Some(camera) => format!("{}/{}/{camera}/set", self.prefix, self.device),
            None => format!("{}/{}/set", self.prefix, self.device),
        }
    }

    /// Where the answer to a command on [`Topics::set`] goes.
    pub fn set_result(&self, camera: Option<&str>) -> String {
        self.set(camera) + "/result"
    }

    /// Which camera a control topic addresses: `Some(None)` for the device's own,
    /// `Some(Some(camera))` for a camera's, `None` for any other topic.
    pub fn set_target(&self, topic: &str) -> Option<Option<String>> {
        let rest = topic.strip_prefix(&format!("{}/{}/", self.prefix, self.device))?;
        match rest.strip_suffix("set")? {
            "" => Some(None),
            camera => camera.strip_suffix('/').filter(|c| !c.is_empty() && !c.contains('/')).map(|c| Some(c.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Topics;

    #[test]
    fn control_topics_name_their_camera() {
        let t = Topics::new("clefd", "dev");
        assert_eq!(t.set_target(&t.set(None)), Some(None));
        assert_eq!(t.set_target(&t.set(Some("door"))), Some(Some("door".into())));
        assert_eq!(t.set_result(Some("door")), "clefd/dev/door/set/result");
        for other in ["clefd/dev/door/set/result", "clefd/dev/door/state", "clefd/other/set", "clefd/dev/a/b/set"] {
            assert_eq!(t.set_target(other), None, "{other}");
        }
    }
}
