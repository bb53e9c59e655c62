//! The publisher's task, which a reload can move to new MQTT settings without losing an
//! event, and the Home Assistant announcements that go out through it.

use clefd::config::Settings;
use clefd::mqtt::home_assistant::{self, Announced};
use clefd::mqtt::{Outgoing, Parked, Publisher, PublisherConfig};

/// Home Assistant discovery for the enabled cameras (nothing when it is off).
pub fn discovery_messages(s: &Settings) -> Vec<Outgoing> {
    let Some(discovery_prefix) = &s.mqtt.home_assistant else { return Vec::new() };
    let announced: Vec<Announced> = s
        .enabled_cameras()
        .map(|(name, c)| {
            let bundle = clefd::engine::manifest::Manifest::load(&c.bundle).map(|m| m.name).unwrap_or_default();
            Announced { camera: name.clone(), bundle }
        })
        .collect();
    let topics = clefd::mqtt::Topics::new(&s.mqtt.connection.prefix, &s.device_id);
    home_assistant::discovery(
        &topics,
        discovery_prefix,
        &s.device_id,
        &announced,
        &s.state_dir.join("home-assistant.json"),
    )
}

type PublisherTask = tokio::task::JoinHandle<anyhow::Result<Option<Parked>>>;

/// The publisher's task, which a reload can move to new MQTT settings without losing an
/// event: the old connection says `offline` and closes, the spool and sequence carry over.
pub struct Publishing {
    park: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<PublisherTask>,
}

impl Publishing {
    pub fn start(publisher: Publisher, outputs: tokio::sync::mpsc::Receiver<Outgoing>) -> Publishing {
        let (park, parked) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(publisher.run_until(outputs, async move {
            // A dropped sender means "never park".
            if parked.await.is_err() {
                std::future::pending::<()>().await;
            }
        }));
        Publishing { park: Some(park), task: Some(task) }
    }

    /// Parks the running publisher and starts one with `cfg` in its place.
    pub async fn switch(&mut self, cfg: PublisherConfig) {
        let (Some(park), Some(task)) = (self.park.take(), self.task.take()) else { return };
        let _ = park.send(());
        match task.await {
            Ok(Ok(Some(parked))) => {
                tracing::info!(broker = %cfg.url, protocol = %cfg.protocol, "MQTT settings changed: reconnecting with the new ones");
                let (publisher, outputs) = Publisher::resume(cfg, parked);
                *self = Publishing::start(publisher, outputs);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "publishing failed"),
            Err(e) => tracing::error!(error = %e, "the publisher task ended abnormally"),
        }
    }

    /// Resolves when the publisher's task ends on its own (it never should while the
    /// daemon runs): the reason, for the log and the exit code.
    pub async fn ended(&mut self) -> String {
        let Some(task) = self.task.as_mut() else { return std::future::pending().await };
        let result = task.await;
        self.task = None;
        failure(result).unwrap_or_else(|| "the MQTT publisher stopped unexpectedly".into())
    }

    /// Waits for the publisher to drain and stop (the pipeline's senders are gone);
    /// returns why it failed, if it did.
    pub async fn finish(mut self) -> Option<String> {
        drop(self.park.take());
        failure(self.task.take()?.await)
    }
}

/// Why the publisher's task failed, if it did.
fn failure(result: Result<anyhow::Result<Option<Parked>>, tokio::task::JoinError>) -> Option<String> {
    match result {
        Ok(Err(e)) => Some(format!("publishing failed: {e:#}")),
        Err(e) => Some(format!("the MQTT publisher ended abnormally: {e}")),
        Ok(Ok(_)) => None,
    }
}
