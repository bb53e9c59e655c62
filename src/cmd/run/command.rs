//! Commands on the control topics (`mqtt.control`): checked like the config file, applied
//! through the same reload as SIGHUP (only the cameras they change restart), echoed in
//! each camera's retained state as `"control"`, kept across restarts with
//! `control_persist`, and answered on `…/set/result`. A refused command changes nothing.

use clefd::config::Settings;
use clefd::mqtt::{Command, Outgoing, Topics};
use clefd::pipeline::Output;
use clefd::service::Signals;
use clefd::source::{CameraState, CameraStatus};
use tokio::sync::mpsc;

use super::super::control::Controls;
use super::super::options::pipeline_options;
use super::super::publishing::discovery_messages;
use super::{Applied, Daemon, Reloaded};

/// The next command, when control is on; never resolves when it is off.
pub(super) async fn next(commands: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What an earlier run kept (`control_persist`), for the cameras the files still name;
/// nothing when control or persistence is off, or when the kept file cannot be used.
pub(super) fn kept_controls(file: &Settings) -> Controls {
    let Some(path) = file.mqtt.control.as_ref().and_then(|c| c.persist.as_ref()) else { return Controls::default() };
    let mut controls = match Controls::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "what was set over MQTT before cannot be read: the camera files' settings apply");
            return Controls::default();
        }
    };
    controls.prune(file);
    if controls.apply(file).enabled_cameras().next().is_none() {
        tracing::warn!(file = %path.display(), "what was set over MQTT before would disable every camera: ignored");
        return Controls::default();
    }
    if !controls.0.is_empty() {
        tracing::info!(file = %path.display(), cameras = controls.0.len(), "applying what was set over MQTT before");
    }
    controls
}

impl Daemon {
    /// Checks and applies one command, and answers it.
    pub(super) async fn command(&mut self, cmd: Command, signals: &mut Signals) -> Reloaded {
        let camera = cmd.camera.as_deref();
        let target = camera.unwrap_or("every camera");
        let next = match self.controls.with_command(&self.file_settings, camera, &cmd.payload) {
            Ok(next) => next,
            Err(reason) => {
                tracing::warn!(camera = target, command = %String::from_utf8_lossy(&cmd.payload), reason, "control command refused");
                self.reply(camera, serde_json::json!({ "ok": false, "error": reason })).await;
                return Reloaded::Done;
            }
        };
        let settings = next.apply(&self.file_settings);
        let (options, unusable) = pipeline_options(&settings);
        for (camera, reason) in &unusable {
            tracing::error!(camera = %camera, error = %reason, "camera cannot start");
        }
        match self.reload_pipeline(options, signals).await {
            Ok(report) => {
                tracing::info!(camera = target, command = %String::from_utf8_lossy(&cmd.payload), changed = ?report.changed, added = ?report.added, removed = ?report.removed, "control command applied")
            }
            Err(Applied::Stopped) => return Reloaded::Stopped,
            Err(_) => {
                let reason = "the command could not be applied (the log says why); nothing changed";
                self.reply(camera, serde_json::json!({ "ok": false, "error": reason })).await;
                return Reloaded::Done;
            }
        }
        // Home Assistant forgets a camera turned off (and finds one turned on) before its
        // retained topics change.
        let names = |s: &Settings| s.enabled_cameras().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        if names(&self.settings) != names(&settings) {
            let announce = settings.clone();
            let messages = tokio::task::spawn_blocking(move || discovery_messages(&announce)).await.unwrap_or_default();
            for msg in messages {
                let _ = self.to_publisher.send(msg).await;
            }
        }
        self.announce_controls(Some(&self.settings), &next, &settings).await;
        self.report_unusable(&unusable).await;
        let persisted = self.keep(&next).await;
        let echo: serde_json::Map<String, serde_json::Value> = match camera {
            Some(name) => [(name.to_string(), next.echo(name).unwrap_or_default())].into_iter().collect(),
            None => settings.cameras.keys().map(|n| (n.clone(), next.echo(n).unwrap_or_default())).collect(),
        };
        (self.controls, self.settings) = (next, settings);
        self.reply(camera, serde_json::json!({ "ok": true, "control": echo, "persisted": persisted })).await;
        Reloaded::Done
    }

    /// Echoes what was set in every camera's state; says `disabled` for the cameras that
    /// were running (per `before`; all of them at start) and are now off, then clears their
    /// `current`; and forgets everywhere the cameras that left the configuration
    /// (running or disabled). Called after discovery changed, so Home Assistant no longer
    /// parses the topics cleared here.
    pub(super) async fn announce_controls(&self, before: Option<&Settings>, controls: &Controls, now: &Settings) {
        // The echo first, so the `disabled` state below already carries what was set.
        if now.mqtt.control.is_some() {
            for camera in now.cameras.keys() {
                let msg = Outgoing::Controlled { camera: camera.clone(), settings: controls.echo(camera) };
                let _ = self.to_publisher.send(msg).await;
            }
        }
        for (camera, settings) in &now.cameras {
            let was_on = before.is_none_or(|b| b.cameras.get(camera).is_some_and(|c| c.enabled));
            if settings.enabled || !was_on {
                continue;
            }
            let status = CameraStatus {
                camera: camera.clone(),
                status: CameraState::Disabled,
                fps: 0.0,
                last_error: None,
                since: clefd::events::rfc3339(std::time::SystemTime::now()),
                restarts: 0,
                dropped_fps_cap: 0,
                decoder: None,
                target_fps: None,
                health_fps: None,
            };
            // Listed as `disabled` in health, metrics and the status line too.
            self.sink.on_state(&status);
            let _ = self.to_publisher.send(Outgoing::Analysis(Output::CameraState(status))).await;
            let _ = self.to_publisher.send(Outgoing::Current { camera: camera.clone(), payload: Vec::new() }).await;
        }
        let gone = before.into_iter().flat_map(|b| b.cameras.keys()).filter(|c| !now.cameras.contains_key(*c));
        for camera in gone {
            self.sink.on_removed(camera);
            let _ = self.to_publisher.send(Outgoing::Analysis(Output::CameraRemoved(camera.clone()))).await;
        }
    }

    /// Lists the cameras that cannot start (a password file unreadable…) as `failed`, with
    /// why, in their retained state, health, metrics and the status line: a reload that
    /// leaves no usable camera is a fault, not an empty and healthy daemon.
    pub(super) async fn report_unusable(&self, unusable: &[(String, String)]) {
        for (camera, reason) in unusable {
            let status = CameraStatus {
                camera: camera.clone(),
                status: CameraState::Failed,
                fps: 0.0,
                last_error: Some(reason.clone()),
                since: clefd::events::rfc3339(std::time::SystemTime::now()),
                restarts: 0,
                dropped_fps_cap: 0,
                decoder: None,
                target_fps: None,
                health_fps: None,
            };
            self.sink.on_state(&status);
            let _ = self.to_publisher.send(Outgoing::Analysis(Output::CameraState(status))).await;
        }
    }

    /// Keeps `controls` for the next start when `control_persist` is on; whether it is kept.
    /// The file is written on a blocking thread: a slow disk never stalls the runtime.
    async fn keep(&self, controls: &Controls) -> bool {
        let Some(path) = self.settings.mqtt.control.as_ref().and_then(|c| c.persist.clone()) else { return false };
        let (kept, at) = (controls.clone(), path.clone());
        let saved = tokio::task::spawn_blocking(move || kept.save(&at))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        match saved {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "what was set over MQTT cannot be kept for the next start (it applies until then)");
                false
            }
        }
    }

    /// Answers a command on its `…/set/result` topic.
    async fn reply(&self, camera: Option<&str>, answer: serde_json::Value) {
        let topics = Topics::new(&self.settings.mqtt.connection.prefix, &self.settings.device_id);
        let payload = serde_json::to_vec(&answer).unwrap_or_default();
        let _ = self.to_publisher.send(Outgoing::Reply { topic: topics.set_result(camera), payload }).await;
    }
}
