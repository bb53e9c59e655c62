//! The one MQTT consumer of the tests: subscribes to everything and records each message
//! in the background, so a test can wait for what it expects and look at all it got.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One message a consumer received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Topic.
    pub topic: String,
    /// Payload as JSON (or a JSON string for plain text).
    pub body: serde_json::Value,
    /// Whether the broker delivered it as a retained message.
    pub retained: bool,
    /// The payload as received (for binary payloads such as snapshots).
    pub payload: Vec<u8>,
}

/// The `seq` of every event `device` sent in `msgs`, in arrival order (duplicates
/// included).
pub fn seqs(msgs: &[Received], device: &str) -> Vec<u64> {
    let prefix = format!("clefd/{device}/");
    msgs.iter()
        .filter(|m| m.topic.starts_with(&prefix) && m.topic.ends_with("/emotion"))
        .filter_map(|m| m.body["seq"].as_u64())
        .collect()
}

/// A message a consumer can name in a test's failure.
pub trait Describe {
    /// One line: the topic and what came.
    fn describe(&self) -> String;
}

impl Describe for Received {
    fn describe(&self) -> String {
        format!("{} {}", self.topic, self.body)
    }
}

/// What every consumer of the tests shares: messages a background thread records, a wait
/// for what a test expects (with a deadline), and the thread stopped on drop.
pub struct Recorder<T> {
    log: Arc<Mutex<Vec<T>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T: Clone + Describe + Send + 'static> Recorder<T> {
    /// Runs `record` on a thread of its own with the log to push to and the flag that
    /// says when to stop.
    pub fn spawn(record: impl FnOnce(Arc<Mutex<Vec<T>>>, Arc<AtomicBool>) + Send + 'static) -> Recorder<T> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || record(l, s));
        Recorder { log, stop, thread: Some(thread) }
    }

    /// Everything so far.
    pub fn messages(&self) -> Vec<T> {
        self.log.lock().expect("the log").clone()
    }

    /// Waits until `pred` holds on the messages, or panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[T]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.messages()) {
                return;
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self.messages().iter().map(Describe::describe).collect();
                panic!("timed out waiting for {what}; saw {} messages:\n{}", seen.len(), seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl<T> Drop for Recorder<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A subscriber to every topic (`#`) that records everything in the background.
pub struct Consumer {
    recorder: Recorder<Received>,
}

impl Consumer {
    /// Subscribes and returns once the broker has acknowledged the subscription.
    pub fn start(port: u16) -> Consumer {
        Consumer::launch(port, None)
    }

    /// A consumer with a persistent session under `client_id`: with a persistent broker,
    /// QoS 1 messages published while it was away are delivered when it comes back.
    pub fn start_persistent(port: u16, client_id: &str) -> Consumer {
        Consumer::launch(port, Some(client_id.to_string()))
    }

    fn launch(port: u16, persistent_id: Option<String>) -> Consumer {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let recorder = Recorder::spawn(move |l, s| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async move {
                let id = persistent_id.clone().unwrap_or_else(|| format!("consumer-{}", super::free_port()));
                let mut opts = MqttOptions::new(id, "127.0.0.1", port);
                opts.set_clean_session(persistent_id.is_none());
                opts.set_max_packet_size(1 << 20, 1 << 20);
                let (client, mut lp) = AsyncClient::new(opts, 64);
                client.subscribe("#", QoS::AtLeastOnce).await.expect("subscribe queued");
                while !s.load(Ordering::SeqCst) {
                    match tokio::time::timeout(Duration::from_millis(100), lp.poll()).await {
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                            let _ = ready_tx.send(());
                        }
                        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) if !ack.session_present => {
                            // A broker that lost our session: subscribe again.
                            let _ = client.try_subscribe("#", QoS::AtLeastOnce);
                        }
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                            let text = String::from_utf8_lossy(&p.payload).to_string();
                            let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                            let got = Received {
                                at: Instant::now(),
                                topic: p.topic.clone(),
                                body,
                                retained: p.retain,
                                payload: p.payload.to_vec(),
                            };
                            l.lock().expect("the log").push(got);
                        }
                        Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                        _ => {}
                    }
                }
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("subscribed");
        Consumer { recorder }
    }

    /// Everything so far.
    pub fn messages(&self) -> Vec<Received> {
        self.recorder.messages()
    }

    /// Takes everything received so far, leaving the log empty: a long run (the torture
    /// test) keeps nothing it has already looked at.
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.recorder.log.lock().expect("the log"))
    }

    /// Messages on topics ending with `suffix`.
    pub fn on(&self, suffix: &str) -> Vec<Received> {
        self.messages().into_iter().filter(|m| m.topic.ends_with(suffix)).collect()
    }

    /// The `seq` of every event `device` sent, in arrival order (duplicates included).
    pub fn seqs(&self, device: &str) -> Vec<u64> {
        seqs(&self.messages(), device)
    }

    /// Waits until `pred` holds on the messages, or panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Received]) -> bool) {
        self.recorder.wait_for(what, timeout, pred)
    }
}
