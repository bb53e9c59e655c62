//! Everything MQTT: the topic layout (README, "Topics and the event"), the publisher that
//! numbers, spools and sends events, the session over MQTT 3.1.1 or 5, and Home Assistant
//! discovery. The broker URL and protocol are config values (`config::BrokerUrl`).

pub mod home_assistant;
mod outgoing;
mod publisher;
pub mod session;
pub mod spool;

pub use publisher::{Outgoing, Parked, PublishStats, Publisher, PublisherConfig, TlsFiles, WINDOW};
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
}
