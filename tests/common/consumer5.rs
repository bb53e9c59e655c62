//! An MQTT 5 consumer (rumqttc's v5 client): what a fleet's consumers and bridges see,
//! properties included. It subscribes to one filter (a shared subscription too), records
//! every message in the background, and can publish (a command, as a user would).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::consumer::{Describe, Recorder};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

/// One message an MQTT 5 consumer received.
#[derive(Debug, Clone)]
pub struct Received5 {
    /// Topic.
    pub topic: String,
    /// Payload as received.
    pub payload: Vec<u8>,
    /// Payload as JSON (or a JSON string for plain text, null for binary).
    pub body: serde_json::Value,
    /// Whether it came as a retained message.
    pub retained: bool,
    /// Its MQTT 5 properties (`None`: it carried none).
    pub properties: Option<PublishProperties>,
}

impl Received5 {
    /// The value of user property `name`, if it has exactly one.
    pub fn user(&self, name: &str) -> Option<&str> {
        let props = self.properties.as_ref()?;
        let mut values = props.user_properties.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next()?;
        values.next().is_none().then_some(first)
    }
}

impl Describe for Received5 {
    fn describe(&self) -> String {
        format!("{} {}", self.topic, self.body)
    }
}

/// An MQTT 5 subscriber recording everything in the background; stopped on drop.
pub struct Consumer5 {
    recorder: Recorder<Received5>,
    client: AsyncClient,
}

impl Consumer5 {
    /// Subscribes to `filter` (QoS 1) on `127.0.0.1:port` with a new session; returns once
    /// subscribed. With `session = Some(id)` the session persists (clean start off, a day's expiry), so
    /// what arrives for it while it is away is delivered when it is back.
    pub fn start(port: u16, filter: &str, session: Option<&str>) -> Consumer5 {
        let id = session.map_or_else(|| format!("consumer5-{}", super::free_port()), str::to_string);
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_start(session.is_none());
        if session.is_some() {
            opts.set_session_expiry_interval(Some(86_400));
        }
        opts.set_max_packet_size(Some(1 << 20));
        opts.set_keep_alive(Duration::from_secs(5));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let (client, mut lp) = rt.block_on(async { AsyncClient::new(opts, 256) });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (c, filter) = (client.clone(), filter.to_string());
        let recorder = Recorder::spawn(move |l, s| {
            rt.block_on(async move {
                while !s.load(Ordering::SeqCst) {
                    match tokio::time::timeout(Duration::from_millis(100), lp.poll()).await {
                        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) if !ack.session_present => {
                            // A new session (or one the broker lost): subscribe (again).
                            let _ = c.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                        }
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                            let _ = ready_tx.send(());
                        }
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                            let text = std::str::from_utf8(&p.payload).ok();
                            let body = text.map_or(serde_json::Value::Null, |t| {
                                serde_json::from_str(t).unwrap_or_else(|_| serde_json::Value::String(t.to_string()))
                            });
                            l.lock().expect("the log").push(Received5 {
                                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                payload: p.payload.to_vec(),
                                body,
                                retained: p.retain,
                                properties: p.properties.clone(),
                            });
                        }
                        // The broker is away (a test stops it): try again shortly.
                        Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                        _ => {}
                    }
                }
                let _ = c.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_millis(500), lp.poll()).await;
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("the MQTT 5 consumer subscribed");
        Consumer5 { recorder, client }
    }

    /// Publishes `payload` on `topic` (QoS 1, not retained).
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        self.client.try_publish(topic, QoS::AtLeastOnce, false, payload.to_vec()).expect("publish queued");
    }

    /// Everything so far.
    pub fn messages(&self) -> Vec<Received5> {
        self.recorder.messages()
    }

    /// Waits until `pred` holds on the messages, or panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Received5]) -> bool) {
        self.recorder.wait_for(what, timeout, pred)
    }
}
