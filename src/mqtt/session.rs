//! One MQTT connection, MQTT 3.1.1 or 5, behind one small interface.
//!
//! rumqttc has a client per protocol version with parallel but distinct types. The
//! publisher only needs: connect with a persistent session and a last will, publish QoS 1,
//! learn each publish's packet id and its PUBACK, and hear about errors in words. This
//! module maps both clients onto that, so the delivery logic exists once.

use std::time::Duration;

use rumqttc::v5 as mq5;
use tokio::sync::mpsc;

use super::BrokerUrl;
use super::properties::Meta;

pub use crate::config::Protocol;

/// Everything needed to open a connection.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Protocol version.
    pub protocol: Protocol,
    /// Broker.
    pub url: BrokerUrl,
    /// Client id (the session's name on the broker).
    pub client_id: String,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// CA (PEM) and optional client certificate and key (PEM) for `mqtts://`.
    pub tls: Option<super::TlsFiles>,
    /// Retained last-will message: topic, payload and what it says about itself over
    /// MQTT 5 (`None`: no will).
    pub last_will: Option<(String, Vec<u8>, Meta)>,
    /// Most QoS 1 messages in flight.
    pub inflight: u16,
    /// Keep the session on the broker across connections (the event publisher), or start
    /// clean every time (the control connection: nothing it was sent comes back).
    pub persistent: bool,
    /// The largest packet we accept (declared to an MQTT 5 broker as Maximum Packet
    /// Size). A larger one ends the connection: rumqttc cannot skip it.
    pub max_incoming: usize,
}

/// What a connection reports, whatever the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The broker accepted the connection.
    Connected,
    /// A publish left with this packet id (in the order they were requested).
    Sent(u16),
    /// The broker acknowledged this packet id; `refused` holds an MQTT 5 reason when
    /// the broker took the message but will not deliver it.
    Acked {
        /// Packet id.
        pkid: u16,
        /// Reason for refusal (MQTT 5 only), as a metric label (a small, fixed set).
        refused: Option<&'static str>,
    },
    /// The broker answered a subscription: `ok` when it granted it (a refusal, its ACL
    /// denying the filter, means nothing will arrive on it).
    Subscribed {
        /// Whether every filter of the SUBSCRIBE was granted.
        ok: bool,
    },
    /// Our DISCONNECT went out.
    Disconnected,
    /// A message arrived on a topic we subscribed to.
    Received {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Vec<u8>,
    },
}

/// A connection failure, in words a user can act on.
#[derive(Debug, Clone)]
pub struct SessionError {
    /// A retry will not cure it until someone changes the config or the broker
    /// (refused credentials, TLS).
    pub permanent: bool,
    /// What went wrong.
    pub message: String,
    /// The kind of failure in a word or two, for counting (a metric label: a small,
    /// fixed set).
    pub reason: &'static str,
}

/// A short reason for an I/O failure: the few kinds a user can tell apart.
fn io_reason(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection_refused",
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => "connection_lost",
        K::TimedOut => "timeout",
        K::NotFound | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => "unreachable",
        _ => "io",
    }
}

/// The client half: publish and disconnect.
pub enum SessionClient {
    /// MQTT 3.1.1.
    V311(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(mq5::AsyncClient),
}

impl SessionClient {
    /// Queues a QoS 1 publish without waiting; false when the request queue is full.
    /// Over MQTT 5 it carries `meta` as properties (the contract of [`super::properties`]).
    pub fn publish(&self, topic: String, retain: bool, payload: Vec<u8>, meta: &Meta) -> bool {
        match self {
            SessionClient::V311(c) => c.try_publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload).is_ok(),
            SessionClient::V5(c) => {
                let qos = mq5::mqttbytes::QoS::AtLeastOnce;
                c.try_publish_with_properties(topic, qos, retain, payload, meta.publish_properties()).is_ok()
            }
        }
    }

    /// Subscribes (QoS 1) without waiting; false when the request queue is full.
    pub fn subscribe(&self, filter: String) -> bool {
        match self {
            SessionClient::V311(c) => c.try_subscribe(filter, rumqttc::QoS::AtLeastOnce).is_ok(),
            SessionClient::V5(c) => c.try_subscribe(filter, mq5::mqttbytes::QoS::AtLeastOnce).is_ok(),
        }
    }

    /// Unsubscribes without waiting; false when the request queue is full.
    pub fn unsubscribe(&self, filter: String) -> bool {
        match self {
            SessionClient::V311(c) => c.try_unsubscribe(filter).is_ok(),
            SessionClient::V5(c) => c.try_unsubscribe(filter).is_ok(),
        }
    }

    /// Sends DISCONNECT (a clean goodbye: the broker does not publish the last will).
    pub async fn disconnect(&self) {
        let _ = match self {
            SessionClient::V311(c) => c.disconnect().await.map_err(|_| ()),
            SessionClient::V5(c) => c.disconnect().await.map_err(|_| ()),
        };
    }
}

/// An open connection attempt: the client, the events of its event loop (driven by its
/// own task, since a poll must not be cancelled mid-handshake), and that task.
pub struct Session {
    /// Publish and disconnect.
    pub client: SessionClient,
    /// Events, then at most one error, then nothing.
    pub events: mpsc::Receiver<Result<SessionEvent, SessionError>>,
    /// The event-loop task.
    pub poller: tokio::task::JoinHandle<()>,
}

/// How long a session outlives its connection on the broker (MQTT 5): a week, so events
/// queued for a persistent subscriber survive our outages.
const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;

/// Starts connecting; progress and failure arrive on [`Session::events`].
pub fn open(o: &SessionOptions, queue: usize) -> Session {
    let (tx, events) = mpsc::channel(queue);
    let transport = o.tls.as_ref().map(tls_transport);
    match o.protocol {
        Protocol::V311 => {
            let mut opts = rumqttc::MqttOptions::new(&o.client_id, &o.url.host, o.url.port);
            opts.set_keep_alive(o.keep_alive);
            opts.set_clean_session(!o.persistent);
            opts.set_max_packet_size(o.max_incoming, 256 * 1024);
            opts.set_inflight(o.inflight);
            if let Some((topic, payload, _)) = o.last_will.clone() {
                opts.set_last_will(rumqttc::LastWill::new(topic, payload, rumqttc::QoS::AtLeastOnce, true));
            }
            if let Some((user, pass)) = &o.credentials {
                opts.set_credentials(user, pass);
            }
            if let Some(t) = transport {
                opts.set_transport(t);
            }
            let (client, eventloop) = rumqttc::AsyncClient::new(opts, queue);
            let poller = tokio::spawn(poll_v311(eventloop, tx));
            Session { client: SessionClient::V311(client), events, poller }
        }
        Protocol::V5 => {
            let mut opts = mq5::MqttOptions::new(&o.client_id, &o.url.host, o.url.port);
            opts.set_keep_alive(o.keep_alive);
            opts.set_clean_start(!o.persistent);
            if o.persistent {
                opts.set_session_expiry_interval(Some(SESSION_EXPIRY_S));
            }
            opts.set_max_packet_size(Some(u32::try_from(o.max_incoming).unwrap_or(u32::MAX)));
            opts.set_outgoing_inflight_upper_limit(o.inflight);
            if let Some((topic, payload, meta)) = o.last_will.clone() {
                let qos = mq5::mqttbytes::QoS::AtLeastOnce;
                let props = Some(meta.will_properties());
                opts.set_last_will(mq5::mqttbytes::v5::LastWill::new(topic, payload, qos, true, props));
            }
            if let Some((user, pass)) = &o.credentials {
                opts.set_credentials(user, pass);
            }
            if let Some(t) = transport {
                opts.set_transport(t);
            }
            let (client, eventloop) = mq5::AsyncClient::new(opts, queue);
            let poller = tokio::spawn(poll_v5(eventloop, tx));
            Session { client: SessionClient::V5(client), events, poller }
        }
    }
}

type Tx = mpsc::Sender<Result<SessionEvent, SessionError>>;

/// Why an MQTT 5 broker refused a message it acknowledged, as a metric label; `None` when
/// it accepted it (no subscriber yet is acceptance: a persistent one gets it later).
fn refusal(reason: mq5::mqttbytes::v5::PubAckReason) -> Option<&'static str> {
    use mq5::mqttbytes::v5::PubAckReason as R;
    match reason {
        R::Success | R::NoMatchingSubscribers => None,
        R::UnspecifiedError => Some("unspecified_error"),
        R::ImplementationSpecificError => Some("implementation_specific_error"),
        R::NotAuthorized => Some("not_authorized"),
        R::TopicNameInvalid => Some("topic_name_invalid"),
        R::PacketIdentifierInUse => Some("packet_identifier_in_use"),
        R::QuotaExceeded => Some("quota_exceeded"),
        R::PayloadFormatInvalid => Some("payload_format_invalid"),
    }
}

/// Whether the broker would give the same refusal to the same message whatever happens
/// next (its ACL denies the topic, the topic or payload is invalid): then re-sending it
/// only holds back every event behind it, and the event is dropped, counted. Any other
/// refusal (a quota, "unspecified", "implementation specific", a packet id in use) can
/// clear on a retry: the event stays in the spool and is sent again after a reconnect.
pub fn refusal_is_final(reason: &str) -> bool {
    matches!(reason, "not_authorized" | "topic_name_invalid" | "payload_format_invalid")
}

/// Whether a 3.1.1 SUBACK granted every filter (0x80 is a refusal).
fn granted_v311(codes: &[rumqttc::SubscribeReasonCode]) -> bool {
    !codes.is_empty() && codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
}

/// Whether an MQTT 5 SUBACK granted every filter (any code from 0x80 up is a refusal).
fn granted_v5(codes: &[mq5::mqttbytes::v5::SubscribeReasonCode]) -> bool {
    !codes.is_empty() && codes.iter().all(|c| matches!(c, mq5::mqttbytes::v5::SubscribeReasonCode::Success(_)))
}

async fn poll_v311(mut eventloop: rumqttc::EventLoop, tx: Tx) {
    use rumqttc::{Event, Outgoing, Packet};
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => SessionEvent::Connected,
            Ok(Event::Incoming(Packet::PubAck(ack))) => SessionEvent::Acked { pkid: ack.pkid, refused: None },
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                SessionEvent::Subscribed { ok: granted_v311(&ack.return_codes) }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                SessionEvent::Received { topic: p.topic, payload: p.payload.to_vec() }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => SessionEvent::Sent(pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => SessionEvent::Disconnected,
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(Err(describe_v311(&e))).await;
                return;
            }
        };
        if tx.send(Ok(event)).await.is_err() {
            return;
        }
    }
}

async fn poll_v5(mut eventloop: mq5::EventLoop, tx: Tx) {
    use mq5::mqttbytes::v5::Packet;
    use mq5::{Event, Incoming};
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => SessionEvent::Connected,
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                SessionEvent::Acked { pkid: ack.pkid, refused: refusal(ack.reason) }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => SessionEvent::Subscribed { ok: granted_v5(&ack.return_codes) },
            Ok(Event::Incoming(Packet::Publish(p))) => SessionEvent::Received {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload.to_vec(),
            },
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => SessionEvent::Sent(pkid),
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => SessionEvent::Disconnected,
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(Err(describe_v5(&e))).await;
                return;
            }
        };
        if tx.send(Ok(event)).await.is_err() {
            return;
        }
    }
}

const CHECK_CREDENTIALS: &str = "the broker refused our credentials (check mqtt.username and mqtt.password_file)";

fn tls_message(e: &dyn std::fmt::Display) -> String {
    format!("TLS failed: {e} (check mqtt.ca_file, and that the broker's certificate names this host)")
}

/// TLS to the broker with these files (the daemon's sessions and `clefd watch`).
pub fn tls_transport(files: &super::TlsFiles) -> rumqttc::Transport {
    // rustls needs a process-wide crypto provider; ring is the one we build.
    let _ = rustls::crypto::ring::default_provider().install_default();
    rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
        ca: files.ca.clone(),
        alpn: None,
        client_auth: files.client.clone(),
    })
}

/// The reason of a connection that ended because the broker sent a packet larger than
/// [`SessionOptions::max_incoming`]: the client cannot skip it, nor read its topic.
pub const TOO_LARGE: &str = "too_large";

/// What a 3.1.1 connection error means, and whether a retry can cure it.
pub fn describe_v311(e: &rumqttc::ConnectionError) -> SessionError {
    use rumqttc::ConnectReturnCode as C;
    use rumqttc::ConnectionError as E;
    let (permanent, message) = match e {
        E::ConnectionRefused(C::BadUserNamePassword | C::NotAuthorized) => (true, CHECK_CREDENTIALS.into()),
        E::ConnectionRefused(code) => (true, format!("the broker refused the connection ({code:?})")),
        E::Tls(e) => (true, tls_message(e)),
        other => (false, other.to_string()),
    };
    let reason = match e {
        E::ConnectionRefused(C::BadUserNamePassword | C::NotAuthorized) => "credentials",
        E::ConnectionRefused(_) => "refused_by_broker",
        E::Tls(_) => "tls",
        E::Io(io) => io_reason(io),
        E::NetworkTimeout | E::FlushTimeout => "timeout",
        E::MqttState(rumqttc::StateError::Io(io)) => io_reason(io),
        E::MqttState(rumqttc::StateError::Deserialization(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(_))) => {
            TOO_LARGE
        }
        E::MqttState(_) | E::NotConnAck(_) => "protocol",
        _ => "other",
    };
    SessionError { permanent, message, reason }
}

fn describe_v5(e: &mq5::ConnectionError) -> SessionError {
    use mq5::ConnectionError as E;
    use mq5::mqttbytes::v5::ConnectReturnCode as C;
    let (permanent, message) = match e {
        E::ConnectionRefused(C::BadUserNamePassword | C::NotAuthorized | C::BadAuthenticationMethod) => {
            (true, CHECK_CREDENTIALS.into())
        }
        E::ConnectionRefused(C::UnsupportedProtocolVersion | C::RefusedProtocolVersion) => {
            (true, "the broker does not speak MQTT 5 (set mqtt.protocol = \"3.1.1\")".into())
        }
        E::ConnectionRefused(code) => (true, format!("the broker refused the connection ({code:?})")),
        E::Tls(e) => (true, tls_message(e)),
        other => (false, other.to_string()),
    };
    let reason = match e {
        E::ConnectionRefused(C::BadUserNamePassword | C::NotAuthorized | C::BadAuthenticationMethod) => "credentials",
        E::ConnectionRefused(C::UnsupportedProtocolVersion | C::RefusedProtocolVersion) => "protocol_version",
        E::ConnectionRefused(_) => "refused_by_broker",
        E::Tls(_) => "tls",
        E::Io(io) => io_reason(io),
        E::Timeout(_) => "timeout",
        E::MqttState(mq5::StateError::Io(io)) => io_reason(io),
        E::MqttState(mq5::StateError::Deserialization(mq5::mqttbytes::Error::PayloadSizeLimitExceeded { .. })) => {
            TOO_LARGE
        }
        E::MqttState(_) | E::NotConnAck(_) => "protocol",
        _ => "other",
    };
    SessionError { permanent, message, reason }
}

#[cfg(test)]
mod refusal_tests {
    use super::*;
    use mq5::mqttbytes::v5::PubAckReason as R;

    #[test]
    fn only_a_suback_granting_every_filter_is_a_subscription() {
        use mq5::mqttbytes::v5::SubscribeReasonCode as C5;
        use rumqttc::SubscribeReasonCode as C4;
        let q1 = rumqttc::QoS::AtLeastOnce;
        assert!(granted_v311(&[C4::Success(q1)]));
        assert!(!granted_v311(&[C4::Failure]), "0x80: the ACL denies the filter");
        assert!(!granted_v311(&[]));
        let q1 = mq5::mqttbytes::QoS::AtLeastOnce;
        assert!(granted_v5(&[C5::Success(q1)]));
        for refused in [C5::NotAuthorized, C5::Unspecified, C5::QuotaExceeded, C5::WildcardSubscriptionsNotSupported] {
            assert!(!granted_v5(&[C5::Success(q1), refused]), "{refused:?} is a refusal");
        }
    }

    #[test]
    fn only_refusals_a_retry_cannot_cure_drop_the_event() {
        let verdict = |r| refusal(r).map(refusal_is_final);
        assert_eq!(verdict(R::Success), None);
        assert_eq!(verdict(R::NoMatchingSubscribers), None, "no subscriber yet is acceptance");
        for r in [R::NotAuthorized, R::TopicNameInvalid, R::PayloadFormatInvalid] {
            assert_eq!(verdict(r), Some(true), "{r:?}: the same message gets the same answer");
        }
        for r in [R::QuotaExceeded, R::UnspecifiedError, R::ImplementationSpecificError, R::PacketIdentifierInUse] {
            assert_eq!(verdict(r), Some(false), "{r:?} can clear on a retry: the event is kept");
        }
    }
}
