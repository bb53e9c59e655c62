//! Everything MQTT: the broker URL, the topic layout (DESIGN.md §5), the publisher that
//! sends events, and a small subscriber for `clefd watch`.

pub mod home_assistant;
mod publisher;
pub mod session;
pub mod spool;
mod watch;

pub use publisher::{Outgoing, Parked, PublishStats, Publisher, PublisherConfig, TlsFiles, WINDOW};
pub use session::Protocol;
pub use watch::{WatchOptions, watch};

/// A broker address from `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port (1883, or 8883 for TLS, unless given).
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub fn parse(s: &str) -> Result<BrokerUrl, String> {
        let u = url::Url::parse(s).map_err(|e| format!("'{s}' is not a valid URL ({e}); expected mqtt://host:port"))?;
        let tls = match u.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!("unsupported scheme '{other}' in '{s}': use mqtt:// or mqtts://"));
            }
        };
        let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("'{s}' has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Ok(BrokerUrl { host, port: u.port().unwrap_or(if tls { 8883 } else { 1883 }), tls })
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", if self.tls { "mqtts" } else { "mqtt" }, self.host, self.port)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerUrl::parse("mqtt://127.0.0.1:18830").unwrap(),
            BrokerUrl { host: "127.0.0.1".into(), port: 18830, tls: false }
        );
        assert_eq!(BrokerUrl::parse("mqtts://broker").unwrap().port, 8883);
        assert!(BrokerUrl::parse("http://x").unwrap_err().contains("unsupported scheme"));
        assert!(BrokerUrl::parse("nonsense").is_err());
    }
}
