//! SIGHUP (or changed config files): the new configuration is checked before anything
//! changes, applied where it differs, and interrupted by SIGTERM without waiting for new
//! models to load.

use clefd::mqtt::PublisherConfig;
use clefd::pipeline::{PipelineOptions, ReloadReport};
use clefd::service::{Signal, Signals};

use super::super::options::{load_config, pipeline_options, publisher_config};
use super::super::publishing::{Publishing, discovery_messages};
use super::{Applied, Daemon, InForce, Reloaded};
use clefd::config::Settings;

impl Daemon {
    /// SIGHUP: check the new configuration first (files, bundles, MQTT settings); if
    /// anything is bad, log why and keep running as before. Otherwise restart only the
    /// cameras whose plan changed, move the publisher if the connection changed, and
    /// forget removed cameras everywhere (health, metrics, retained state).
    ///
    /// A SIGHUP that arrives while the pipeline moves is not lost: the files are read
    /// again once this reload is done, so the last edit is the one in force.
    ///
    /// A SIGTERM that arrives meanwhile is answered at once, even while new models load
    /// (minutes when TensorRT builds engines): the cameras stop, the half-done reload is
    /// dropped, and [`Reloaded::Stopped`] tells the caller to finish stopping.
    pub(super) async fn reload(&mut self, publishing: &mut Publishing, signals: &mut Signals) -> Reloaded {
        self.notifier.send("RELOADING=1");
        loop {
            match self.apply(publishing, signals).await {
                Applied::Now(now) => {
                    let InForce { file, controls, settings } = *now;
                    (self.file_settings, self.controls, self.settings) = (file, controls, settings);
                }
                Applied::Refused => {}
                Applied::Stopped => return Reloaded::Stopped,
            }
            if !self.reload_again.swap(false, std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            tracing::info!("reading the configuration again for the SIGHUP that came during the reload");
        }
        self.notifier.send("READY=1");
        Reloaded::Done
    }

    /// The reload itself: the settings now in force, or why not.
    async fn apply(&mut self, publishing: &mut Publishing, signals: &mut Signals) -> Applied {
        // Disk work (config files, bundles checked) off the async runtime.
        let path = self.config_path.clone();
        let file = match tokio::task::spawn_blocking(move || load_config(&path)).await {
            Ok(Ok(s)) => s,
            Err(e) => {
                tracing::error!(error = %e, "reading the configuration ended abnormally; the running one stays");
                return Applied::Refused;
            }
            Ok(Err(errors)) => {
                for p in &errors.0 {
                    tracing::error!("reload rejected: {p}");
                }
                tracing::error!("the new configuration is invalid; the running one stays");
                return Applied::Refused;
            }
        };
        // What was set over MQTT stays, for the cameras the files still name.
        let mut controls = self.controls.clone();
        controls.prune(&file);
        let mut new = controls.apply(&file);
        let later = self.settings.restart_only_changes(&new);
        if !later.is_empty() {
            tracing::warn!(settings = %later.join(", "), "these changes take effect at the next restart");
        }
        // Where snapshots go is set up at start: the running choice stays until a restart.
        new.snapshots = self.settings.snapshots.clone();
        let new_publisher = match self.new_publisher(&new).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the new MQTT settings cannot be used; the running configuration stays");
                return Applied::Refused;
            }
        };
        let (options, unusable) = pipeline_options(&new);
        for (camera, reason) in &unusable {
            tracing::error!(camera = %camera, error = %reason, "camera cannot start");
        }
        // Before the cameras restart, so their start is logged at the new level.
        let old_level = self.settings.log_level.clone();
        let level_changed = new.log_level != old_level && self.log_level.set(&new.log_level);
        if level_changed {
            tracing::info!(log_level = %new.log_level, "log level changed");
        }
        let report = match self.reload_pipeline(options, signals).await {
            Ok(report) => report,
            Err(ending) => {
                if level_changed {
                    self.log_level.set(&old_level);
                }
                return ending;
            }
        };
        if let Some(cfg) = new_publisher {
            publishing.switch(cfg).await;
        }
        // Added, changed and removed cameras: Home Assistant follows the reload.
        let announce = new.clone();
        let messages = tokio::task::spawn_blocking(move || discovery_messages(&announce)).await.unwrap_or_default();
        for msg in messages {
            let _ = self.to_publisher.send(msg).await;
        }
        tracing::info!(added = ?report.added, changed = ?report.changed, removed = ?report.removed, unchanged = report.unchanged.len(), workers_restarted = report.workers_restarted, "configuration reloaded");
        self.announce_controls(Some(&self.settings), &controls, &new).await;
        self.report_unusable(&unusable).await;
        Applied::Now(Box::new(InForce { file, controls, settings: new }))
    }

    /// Moves the pipeline to `options` (models load on a blocking thread) while still
    /// answering signals: `Err` says the reload was refused (logged) or interrupted.
    pub(super) async fn reload_pipeline(
        &self,
        options: PipelineOptions,
        signals: &mut Signals,
    ) -> Result<ReloadReport, Applied> {
        let control = self.control.clone();
        let mut reloading = tokio::task::spawn_blocking(move || control.reload(&options));
        let done = loop {
            tokio::select! {
                done = &mut reloading => break done,
                signal = signals.next() => match signal {
                    Signal::Stop => {
                        tracing::info!("SIGTERM during a reload: stopping without waiting for it");
                        return Err(Applied::Stopped);
                    }
                    Signal::Reload => {
                        tracing::info!("SIGHUP during a reload: the configuration is read again once this one is done");
                        self.reload_again.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                },
            }
        };
        match done {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the new configuration cannot be used; the running one stays");
                Err(Applied::Refused)
            }
            Err(e) => {
                tracing::error!(error = %e, "the reload ended abnormally");
                Err(Applied::Refused)
            }
        }
    }

    /// The publisher's settings when the connection changes (files read now, so a missing
    /// certificate refuses the reload), on a blocking thread: off the runtime.
    async fn new_publisher(&self, new: &Settings) -> anyhow::Result<Option<PublisherConfig>> {
        if new.mqtt.connection == self.settings.mqtt.connection {
            return Ok(None);
        }
        let settings = new.clone();
        let cfg = tokio::task::spawn_blocking(move || publisher_config(&settings)).await??;
        Ok(Some(PublisherConfig { commands: self.commands.clone(), ..cfg }))
    }
}
