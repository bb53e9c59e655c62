//! What goes to the publisher and how it is set up: the messages it is handed, its
//! settings, and the counters it keeps for `/healthz`, `/metrics` and the stats topic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::BrokerUrl;
use super::session::Protocol;
use crate::pipeline::Output;

/// What the publisher is asked to send: the pipeline's output as it came (one type from
/// analysis to the wire), and what the daemon adds beside it.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// From the pipeline. An event is numbered, spooled, sent QoS 1 and never lost
    /// silently; a camera's state is retained and sent again after every reconnect; a
    /// removed camera's retained state and summary are deleted.
    Analysis(Output),
    /// What a camera sees now (`{camera}/current`, retained, sent again after a reconnect).
    Current {
        /// Camera name.
        camera: String,
        /// The summary as JSON.
        payload: Vec<u8>,
    },
    /// The periodic statistics: sent while connected, not retained, not spooled.
    Stats(Vec<u8>),
    /// Any other retained message (Home Assistant discovery); sent again after every
    /// reconnect. An empty payload deletes the retained message.
    Retained {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// The camera it is about, named in its MQTT 5 properties.
        camera: Option<String>,
    },
    /// What runtime control set for a camera (`None`: nothing), shown in its retained
    /// state as `"control"` from now on.
    Controlled {
        /// Camera name.
        camera: String,
        /// The settings, as JSON.
        settings: Option<serde_json::Value>,
    },
    /// An answer on a control topic (`…/set/result`): not retained, not spooled, sent
    /// only while connected.
    Reply {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
    },
}

/// A command received on a control topic, for the daemon to check and apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The camera of `{prefix}/{device}/{camera}/set`; `None` for `{prefix}/{device}/set`
    /// (every camera).
    pub camera: Option<String>,
    /// The payload as received.
    pub payload: Vec<u8>,
}

impl From<Output> for Outgoing {
    fn from(output: Output) -> Outgoing {
        Outgoing::Analysis(output)
    }
}

/// What the publisher needs to know.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Broker address.
    pub url: BrokerUrl,
    /// MQTT client id.
    pub client_id: String,
    /// Topic prefix.
    pub prefix: String,
    /// Device id.
    pub device: String,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Username and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
    /// How long shutdown waits for the spool to drain.
    pub flush_timeout: Duration,
    /// `mqtts://`: CA (PEM) and optional client certificate and key (PEM).
    pub tls: Option<TlsFiles>,
    /// Longest wait between reconnection attempts (refused credentials and TLS
    /// failures are retried at this interval straight away).
    pub reconnect_max: Duration,
    /// MQTT 3.1.1 or 5.
    pub protocol: Protocol,
    /// Where commands on the control topics go; `None`: the control topics are not
    /// subscribed to (`mqtt.control` off).
    pub commands: Option<tokio::sync::mpsc::Sender<Command>>,
    /// MQTT 5: the message expiry of events, counted from their capture (`None`: they
    /// wait for a subscriber that is away as long as its session lasts).
    pub event_expiry_s: Option<u32>,
    /// Events waiting this long with no acknowledgement make delivery stuck (`/healthz`).
    pub stuck_after: Duration,
}

/// TLS material, already read from disk.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate(s), PEM.
    pub ca: Vec<u8>,
    /// Client certificate and key, PEM.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Counters, readable while the publisher runs.
#[derive(Debug)]
pub struct PublishStats {
    /// Events acknowledged by the broker.
    pub acked: AtomicU64,
    /// Events sent (including re-sends).
    pub sent: AtomicU64,
    /// Events dropped because the spool was full.
    pub dropped: AtomicU64,
    /// Events lost because the disk refused them (full, read-only, too many open files):
    /// they got no durable `seq` or no place in the spool.
    pub failed: AtomicU64,
    /// Spooled records skipped at start because their checksum did not match.
    pub corrupt: AtomicU64,
    /// Why events cannot be kept right now (the last disk error), cleared when a write
    /// succeeds again; `/healthz` reports it.
    pub problem: std::sync::Mutex<Option<String>>,
    /// Since when no connection is up (`None` while connected).
    pub disconnected_since: std::sync::Mutex<Option<std::time::Instant>>,
    /// Events waiting in the spool.
    pub spooled: AtomicU64,
    /// Successful connections.
    pub connects: AtomicU64,
    /// Whether a connection is up.
    pub connected: AtomicBool,
    /// The id of the control connection (`mqtt.control`) that is up with both its
    /// subscriptions granted, 0 while none is: a command sent then is dropped by the
    /// broker, unanswered. An id, not a flag, so that a link that ends after a newer one
    /// came up (a reload) cannot clear the newer one's mark.
    pub control_ready: AtomicU64,
    /// How many times the control connection got both its subscriptions acknowledged.
    pub control_subscribes: AtomicU64,
    /// Whether acknowledgements come, and how the connection fails.
    pub delivery: super::progress::DeliveryWatch,
}

impl Default for PublishStats {
    fn default() -> PublishStats {
        PublishStats {
            acked: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            problem: std::sync::Mutex::new(None),
            disconnected_since: std::sync::Mutex::new(Some(std::time::Instant::now())),
            spooled: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            control_ready: AtomicU64::new(0),
            control_subscribes: AtomicU64::new(0),
            delivery: Default::default(),
        }
    }
}

impl PublishStats {
    /// Whether a control connection is up with both its subscriptions granted.
    pub fn control_is_ready(&self) -> bool {
        self.control_ready.load(Ordering::Relaxed) != 0
    }

    /// The current disk problem, if any.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().ok().and_then(|p| p.clone())
    }

    /// How long the broker has been out of reach (zero while connected).
    pub fn disconnected_for(&self) -> Duration {
        self.disconnected_since.lock().ok().and_then(|t| t.map(|t| t.elapsed())).unwrap_or_default()
    }

    /// Why delivery is not working, for `/healthz`: the broker out of reach, events
    /// waiting with no acknowledgement (however often the connection comes and goes
    /// meanwhile), or every event refused, for longer than `mqtt.delivery_stuck_s`;
    /// `None` when fine.
    pub fn delivery_problem(&self) -> Option<String> {
        let down = self.disconnected_for();
        if down > self.delivery.stuck_after() {
            return Some(format!(
                "the MQTT broker has been unreachable for {:.0} s (events wait in the spool)",
                down.as_secs_f64()
            ));
        }
        self.delivery.problem(self.spooled.load(Ordering::Relaxed))
    }

    /// Like [`PublishStats::delivery_problem`], in words that stay the same while the
    /// cause does (no running clock, no count), for systemd's `STATUS=`.
    pub fn delivery_summary(&self) -> Option<String> {
        if self.disconnected_for() > self.delivery.stuck_after() {
            let why = self.delivery.last_failure().map(|m| format!(" ({m})")).unwrap_or_default();
            return Some(format!("the MQTT broker is unreachable{why}"));
        }
        self.delivery.summary()
    }

    pub(super) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::SeqCst);
        if let Ok(mut since) = self.disconnected_since.lock() {
            match (up, *since) {
                (true, _) => *since = None,
                (false, None) => *since = Some(std::time::Instant::now()),
                (false, Some(_)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_down_limit_is_mqtt_delivery_stuck_s() {
        // A fresh publisher has no connection yet: down since now.
        let stats = PublishStats::default();
        stats.delivery.set_stuck_after(Duration::ZERO);
        let said = stats.delivery_problem().expect("down longer than a zero allowance");
        assert!(said.contains("unreachable"), "{said}");
        assert_eq!(stats.delivery_summary().as_deref(), Some("the MQTT broker is unreachable"));
        stats.delivery.set_stuck_after(Duration::from_secs(3600));
        assert_eq!(stats.delivery_problem(), None, "within an hour's allowance");
        assert_eq!(stats.delivery_summary(), None);
        stats.delivery.set_stuck_after(Duration::ZERO);
        stats.set_connected(true);
        assert_eq!(stats.delivery_problem(), None, "connected, nothing waiting");
    }
}
