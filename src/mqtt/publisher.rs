//! Publishes events QoS 1, keeps `availability` truthful (retained `online`, last will
//! and clean-shutdown `offline`), and reconnects with capped exponential backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use super::{BrokerUrl, Topics};
use crate::events::EmotionEvent;
use crate::events::seq::SeqCounter;
use crate::pipeline::Output;
use crate::source::CameraStatus;

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
    /// How long shutdown waits for acknowledgements.
    pub flush_timeout: Duration,
}

/// Counters, readable while the publisher runs.
#[derive(Debug, Default)]
pub struct PublishStats {
    /// Events handed to the MQTT client.
    pub published: AtomicU64,
    /// PUBACKs received (events and availability messages).
    pub acked: AtomicU64,
    /// QoS 1 messages sent (events and availability messages).
    pub sent_qos1: AtomicU64,
    /// Whether a connection is up.
    pub connected: AtomicBool,
}

/// The running publisher.
pub struct Publisher {
    client: AsyncClient,
    topics: Topics,
    stats: Arc<PublishStats>,
    seq: SeqCounter,
    flush_timeout: Duration,
    poller: tokio::task::JoinHandle<()>,
    stop_polling: Arc<AtomicBool>,
}

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

impl Publisher {
    /// Connects in the background; events can be queued at once.
    pub fn start(cfg: PublisherConfig, seq: SeqCounter) -> Publisher {
        let topics = Topics::new(&cfg.prefix, &cfg.device);
        let mut opts = MqttOptions::new(&cfg.client_id, &cfg.url.host, cfg.url.port);
        opts.set_keep_alive(cfg.keep_alive);
        opts.set_clean_session(false);
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        opts.set_last_will(LastWill::new(
            topics.availability(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some((user, pass)) = &cfg.credentials {
            opts.set_credentials(user, pass);
        }
        let (client, eventloop) = AsyncClient::new(opts, 256);
        let stats = Arc::new(PublishStats::default());
        let stop_polling = Arc::new(AtomicBool::new(false));
        let poller = tokio::spawn(poll(
            eventloop,
            client.clone(),
            topics.clone(),
            cfg.url.clone(),
            stats.clone(),
            stop_polling.clone(),
        ));
        Publisher {
            client,
            topics,
            stats,
            seq,
            flush_timeout: cfg.flush_timeout,
            poller,
            stop_polling,
        }
    }

    /// Counters.
    pub fn stats(&self) -> Arc<PublishStats> {
        self.stats.clone()
    }

    /// Stamps `seq` and publishes one event (waits only when the client queue is full).
    pub async fn publish(&mut self, mut event: EmotionEvent) -> anyhow::Result<()> {
        event.seq = self
            .seq
            .allocate()
            .map_err(|e| anyhow::anyhow!("cannot persist the event sequence number: {e}"))?;
        let payload = serde_json::to_vec(&event)?;
        tracing::info!(
            camera = %event.camera, track = event.track_id, seq = event.seq,
            "{:<6} {:<10} {:.2} (debias {})",
            format!("{:?}", event.kind).to_lowercase(), event.emotion, event.confidence,
            if event.debiased.is_some() { "on" } else { "off" }
        );
        self.stats.sent_qos1.fetch_add(1, Ordering::Relaxed);
        self.client
            .publish(
                self.topics.emotion(&event.camera),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await?;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes a camera's state, retained, so a new subscriber sees it at once.
    pub async fn publish_state(&mut self, status: &CameraStatus) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(status)?;
        self.stats.sent_qos1.fetch_add(1, Ordering::Relaxed);
        self.client
            .publish(
                self.topics.state(&status.camera),
                QoS::AtLeastOnce,
                true,
                payload,
            )
            .await?;
        Ok(())
    }

    /// Publishes everything from `outputs` until the channel closes.
    pub async fn drain(&mut self, mut outputs: mpsc::Receiver<Output>) -> anyhow::Result<()> {
        while let Some(out) = outputs.recv().await {
            match out {
                Output::Event(ev) => self.publish(*ev).await?,
                Output::CameraState(st) => self.publish_state(&st).await?,
            }
        }
        Ok(())
    }

    /// Clean shutdown: `offline` (retained), wait for acknowledgements (bounded), disconnect.
    pub async fn shutdown(mut self) {
        self.stats.sent_qos1.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .client
            .publish(
                self.topics.availability(),
                QoS::AtLeastOnce,
                true,
                "offline",
            )
            .await;
        let deadline = tokio::time::Instant::now() + self.flush_timeout;
        while self.stats.acked.load(Ordering::Relaxed)
            < self.stats.sent_qos1.load(Ordering::Relaxed)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let unacked = self
            .stats
            .sent_qos1
            .load(Ordering::Relaxed)
            .saturating_sub(self.stats.acked.load(Ordering::Relaxed));
        if unacked > 0 {
            tracing::warn!(
                unacked,
                "shutting down with messages the broker has not acknowledged"
            );
        }
        self.stop_polling.store(true, Ordering::SeqCst);
        let _ = self.client.disconnect().await;
        if tokio::time::timeout(Duration::from_secs(1), &mut self.poller)
            .await
            .is_err()
        {
            self.poller.abort();
        }
        tracing::info!(
            published = self.stats.published.load(Ordering::Relaxed),
            "MQTT publisher stopped"
        );
    }
}

async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    url: BrokerUrl,
    stats: Arc<PublishStats>,
    stop: Arc<AtomicBool>,
) {
    let mut backoff = BACKOFF_START;
    let mut failures = 0u32;
    while !stop.load(Ordering::SeqCst) {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!(broker = %url, "connected to MQTT broker");
                stats.connected.store(true, Ordering::SeqCst);
                backoff = BACKOFF_START;
                failures = 0;
                stats.sent_qos1.fetch_add(1, Ordering::Relaxed);
                if client
                    .try_publish(topics.availability(), QoS::AtLeastOnce, true, "online")
                    .is_err()
                {
                    stats.sent_qos1.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                stats.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                stats.connected.store(false, Ordering::SeqCst);
                break;
            }
            Ok(_) => {}
            Err(rumqttc::ConnectionError::RequestsDone) => break,
            Err(_) if stop.load(Ordering::SeqCst) => break,
            Err(e) => {
                stats.connected.store(false, Ordering::SeqCst);
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(broker = %url, error = %e, retry_in_ms = backoff.as_millis() as u64, attempts = failures, "MQTT broker unreachable; retrying");
                }
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_CAP);
            }
        }
    }
}

/// Up to ±20 % jitter, so a fleet does not reconnect in lock-step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let factor = 0.8 + 0.4 * (f64::from(nanos % 1000) / 1000.0);
    d.mul_f64(factor)
}
