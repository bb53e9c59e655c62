//! `clefd run`: the daemon.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use clefd::config;
use clefd::events::current::CurrentView;
use clefd::events::seq::SeqCounter;
use clefd::mqtt::home_assistant::{self, Announced};
use clefd::mqtt::spool::Spool;
use clefd::mqtt::{BrokerUrl, Parked, Publisher, PublisherConfig, TlsFiles};
use clefd::pipeline::{Outcome, Pipeline, PipelineError};
use clefd::service::http::Health;
use clefd::service::notify::Notifier;
use clefd::service::systemd;
use clefd::service::{Signal, Signals};

/// How the daemon's main loop ended.
enum Ending {
    /// SIGTERM or SIGINT.
    Signalled,
    /// Every stream ended on its own (files without `loop`).
    StreamsEnded,
    /// Delivery stopped for good: a fatal error, the process must be restarted.
    PublisherFailed(String),
}

/// Loads the config, starts the pipeline and the publisher, and runs until the streams
/// end or a signal arrives. Exit codes: 0 when asked to stop (or every camera was a file
/// that ended), [`super::EXIT_CONFIG`] for an invalid configuration, 1 for any other
/// failure (systemd restarts the service).
pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().thread_name("clefd-rt").build()?;
    // First of all, so a signal during start-up is answered instead of killing us.
    let mut signals = {
        let _inside = rt.enter();
        Signals::register()
    };
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(errors) => {
            clefd::service::init_logging("info");
            for p in &errors.0 {
                tracing::error!("{p}");
            }
            tracing::error!(
                "invalid configuration ({} problem(s)); run `clefd check-config --config {}`",
                errors.0.len(),
                path.display()
            );
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    let cfg = &loaded.config;
    clefd::service::init_logging(&cfg.log_level);
    tracing::info!(config = %path.display(), device = %loaded.device_id, cameras = cfg.cameras.len(), "clefd {} starting", env!("CARGO_PKG_VERSION"));
    if !cfg.cameras.values().any(|c| c.enabled) {
        tracing::error!(
            "no camera configured in {}: add one (a [cameras.NAME] table, or a file in cameras.d/) and start again",
            path.display()
        );
        return Ok(ExitCode::from(super::EXIT_CONFIG));
    }
    let spool_dir = cfg.mqtt.spool_dir.clone().unwrap_or_else(|| cfg.state_dir.join("spool"));
    let spool = Spool::open(&spool_dir, (cfg.mqtt.spool_max_mb * 1024.0 * 1024.0) as u64)
        .with_context(|| format!("opening the event spool {} (is it writable?)", spool_dir.display()))?;
    let seq_path = cfg.state_dir.join("seq");
    let seq = SeqCounter::open(&seq_path, spool.next_seq())
        .with_context(|| format!("opening the event sequence file {} (is state_dir writable?)", seq_path.display()))?;
    let publisher_cfg = publisher_config(cfg, &loaded.device_id)?;
    let notifier = Arc::new(Notifier::from_env());
    let (tx, from_pipeline) = tokio::sync::mpsc::channel(256);
    let (to_publisher, rx) = tokio::sync::mpsc::channel(256);
    // Loading models can take minutes the first time (TensorRT builds its engines): keep
    // asking systemd for more time until READY, so a first build is never killed.
    let starting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let extender = {
        let (starting, notifier) = (starting.clone(), notifier.clone());
        std::thread::Builder::new().name("clefd-start".into()).spawn(move || {
            while starting.load(std::sync::atomic::Ordering::SeqCst) {
                notifier.send("EXTEND_TIMEOUT_USEC=60000000");
                for _ in 0..40 {
                    if !starting.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        })
    };
    let started = Pipeline::start(&loaded, tx);
    starting.store(false, std::sync::atomic::Ordering::SeqCst);
    if let Ok(t) = extender {
        let _ = t.join();
    }
    let pipeline = match started {
        Ok(p) => p,
        Err(e @ (PipelineError::Engine(_) | PipelineError::Bundle { .. })) => {
            tracing::error!("{e}; run `clefd check-config --config {}`", path.display());
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
        Err(e) => return Err(e.into()),
    };
    let probe = pipeline.probe();
    let stats_every = cfg.mqtt.stats_interval_s;
    let discovery = if cfg.mqtt.home_assistant { discovery_messages(&loaded) } else { Vec::new() };
    let listen: Option<std::net::SocketAddr> = cfg.http.listen.parse().ok();
    let cameras = cfg.cameras.values().filter(|c| c.enabled).count();
    let control = pipeline.control();
    let config_path = path.to_path_buf();
    let running_cfg = loaded.config.clone();
    let empty_after = Duration::from_secs_f64(cfg.events.empty_after_s);
    let current = CurrentView::new(empty_after, empty_after.max(Duration::from_secs_f64(cfg.events.heartbeat_s * 2.5)));
    let (outcome, ending): (Outcome, Ending) = rt.block_on(async move {
        let publisher = Publisher::new(publisher_cfg, seq, spool);
        let health = Arc::new(Health::new(probe, publisher.stats()));
        let http = match listen {
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!(%addr, "serving /metrics and /healthz");
                    Some(l)
                }
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot serve /metrics and /healthz (is http.listen in use?)");
                    None
                }
            },
            None => None,
        };
        let mut publishing = Publishing::start(publisher, rx);
        for msg in discovery {
            let _ = to_publisher.send(msg).await;
        }
        let stats = (stats_every > 0.0).then(|| {
            let every = Duration::from_secs_f64(stats_every);
            tokio::spawn(clefd::service::stats::publish_stats(to_publisher.clone(), health.clone(), every))
        });
        let reloads_tx = to_publisher.clone();
        tokio::spawn(systemd::relay(from_pipeline, to_publisher, notifier.clone(), health.clone(), cameras, current));
        tokio::spawn(systemd::monitor(notifier.clone(), health.clone(), Notifier::watchdog_interval()));
        if let Some(listener) = http {
            tokio::spawn(clefd::service::http::serve(listener, health.clone()));
        }
        // Serving: config and engines loaded, publisher and HTTP up. Cameras report
        // their own state; one that is down must not hold the service back.
        notifier.send(&format!("READY=1\nSTATUS=0/{cameras} cameras streaming, starting"));
        tracing::info!(cameras, "ready");
        let mut waiting = tokio::task::spawn_blocking(move || pipeline.wait());
        let mut running_cfg = running_cfg;
        let mut watched = running_cfg.watch_config.then(|| config::sources_fingerprint(&config_path));
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let stop = |control: clefd::pipeline::Control| tokio::task::spawn_blocking(move || control.stop());
        let (outcome, ending) = loop {
            tokio::select! {
                done = &mut waiting => break (done, Ending::StreamsEnded),
                signal = signals.next() => match signal {
                    Signal::Stop => {
                        notifier.send("STOPPING=1");
                        let _ = stop(control.clone()).await;
                        break (waiting.await, Ending::Signalled);
                    }
                    Signal::Reload => {
                        notifier.send("RELOADING=1");
                        tracing::info!(config = %config_path.display(), "SIGHUP: reloading the configuration");
                        let ctx = ReloadCtx { control: &control, publishing: &mut publishing, to_publisher: &reloads_tx };
                        if let Some(applied) = reload(&config_path, &running_cfg, ctx).await {
                            running_cfg = applied;
                        }
                        watched = running_cfg.watch_config.then(|| config::sources_fingerprint(&config_path));
                        notifier.send("READY=1");
                    }
                },
                reason = publishing.ended() => {
                    tracing::error!("{reason}: stopping so that systemd restarts clefd");
                    notifier.send("STOPPING=1");
                    let _ = stop(control.clone()).await;
                    break (waiting.await, Ending::PublisherFailed(reason));
                }
                _ = tick.tick(), if watched.is_some() => {
                    let now = config::sources_fingerprint(&config_path);
                    if watched.as_ref() != Some(&now) {
                        watched = Some(now);
                        notifier.send("RELOADING=1");
                        tracing::info!(config = %config_path.display(), "configuration files changed: reloading");
                        let ctx = ReloadCtx { control: &control, publishing: &mut publishing, to_publisher: &reloads_tx };
                        if let Some(applied) = reload(&config_path, &running_cfg, ctx).await {
                            running_cfg = applied;
                        }
                        if !running_cfg.watch_config {
                            watched = None;
                        }
                        notifier.send("READY=1");
                    }
                }
            }
        };
        // The stats task and the reloads hold senders too: let go so the publisher sees
        // the end.
        if let Some(s) = stats {
            s.abort();
        }
        drop(reloads_tx);
        let ending = match (ending, publishing.finish().await) {
            (Ending::PublisherFailed(r), _) => Ending::PublisherFailed(r),
            (_, Some(failure)) => Ending::PublisherFailed(failure),
            (e, None) => e,
        };
        (outcome.unwrap_or_default(), ending)
    });
    log_summaries(&outcome);
    for (camera, reason) in &outcome.failures {
        tracing::error!(camera = %camera, "camera failed: {reason}");
    }
    Ok(match ending {
        Ending::Signalled => ExitCode::SUCCESS,
        Ending::StreamsEnded if outcome.failures.is_empty() => ExitCode::SUCCESS,
        Ending::StreamsEnded => ExitCode::from(1),
        Ending::PublisherFailed(_) => ExitCode::from(1),
    })
}

/// Home Assistant discovery for the enabled cameras.
fn discovery_messages(loaded: &config::Loaded) -> Vec<clefd::mqtt::Outgoing> {
    let cfg = &loaded.config;
    let announced: Vec<Announced> = cfg
        .cameras
        .iter()
        .filter(|(_, c)| c.enabled)
        .map(|(name, c)| {
            let dir = c.bundle.clone().unwrap_or_else(|| cfg.engine.bundle.clone());
            let bundle = clefd::engine::manifest::Manifest::load(&dir).map(|m| m.name).unwrap_or_default();
            Announced { camera: name.clone(), bundle }
        })
        .collect();
    let topics = clefd::mqtt::Topics::new(&cfg.mqtt.prefix, &loaded.device_id);
    home_assistant::discovery(
        &topics,
        &cfg.mqtt.discovery_prefix,
        &loaded.device_id,
        &announced,
        &cfg.state_dir.join("home-assistant.json"),
    )
}

/// One log line per bundle: what the run analysed and where the time went.
fn log_summaries(outcome: &Outcome) {
    for s in &outcome.summaries {
        let secs = s.elapsed.as_secs_f64().max(1e-9);
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / s.frames.max(1) as f64;
        tracing::info!(
            bundle = %s.bundle,
            frames = s.frames,
            dropped = s.dropped,
            faces = s.faces,
            events = s.events,
            fps = format!("{:.1}", s.frames as f64 / secs),
            detect_ms = format!("{:.2}", per(s.stages.detect)),
            classify_ms = format!("{:.2}", per(s.stages.classify)),
            publish_ms = format!("{:.3}", per(s.stages.publish)),
            "run summary"
        );
    }
}

/// What a reload may touch besides the configuration.
struct ReloadCtx<'a> {
    control: &'a clefd::pipeline::Control,
    publishing: &'a mut Publishing,
    /// For Home Assistant discovery of the cameras now configured.
    to_publisher: &'a tokio::sync::mpsc::Sender<clefd::mqtt::Outgoing>,
}

/// SIGHUP: validate the new config first (files, bundles, MQTT settings); if anything is
/// bad, log why and keep running as before. Otherwise restart only the cameras whose
/// section changed, and forget removed ones everywhere (health, metrics, retained state).
/// Returns the config now in force.
async fn reload(path: &Path, running: &config::Config, ctx: ReloadCtx<'_>) -> Option<config::Config> {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(errors) => {
            for p in &errors.0 {
                tracing::error!("reload rejected: {p}");
            }
            tracing::error!("the new configuration is invalid; the running one stays");
            return None;
        }
    };
    let (new, old) = (&loaded.config.mqtt, &running.mqtt);
    if new.spool_dir != old.spool_dir
        || new.spool_max_mb != old.spool_max_mb
        || new.home_assistant != old.home_assistant
        || new.discovery_prefix != old.discovery_prefix
        || new.stats_interval_s != old.stats_interval_s
        || loaded.config.device_id != running.device_id
        || loaded.config.http != running.http
    {
        tracing::warn!(
            "changes to device_id, [http], mqtt.spool_dir, mqtt.spool_max_mb, mqtt.stats_interval_s and Home Assistant discovery take effect at the next restart"
        );
    }
    let new_publisher = if mqtt_connection_changed(new, old) {
        match publisher_config(&loaded.config, &loaded.device_id) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the new MQTT settings cannot be used; the running configuration stays");
                return None;
            }
        }
    } else {
        None
    };
    let c = ctx.control.clone();
    let new = loaded.clone();
    let report = match tokio::task::spawn_blocking(move || c.reload(&new)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the new configuration cannot be used; the running one stays");
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "the reload ended abnormally");
            return None;
        }
    };
    if let Some(cfg) = new_publisher {
        ctx.publishing.switch(cfg).await;
    }
    if loaded.config.mqtt.home_assistant {
        // Added, changed and removed cameras: Home Assistant follows the reload.
        for msg in discovery_messages(&loaded) {
            let _ = ctx.to_publisher.send(msg).await;
        }
    }
    tracing::info!(added = ?report.added, changed = ?report.changed, removed = ?report.removed, unchanged = report.unchanged.len(), workers_restarted = report.workers_restarted, "configuration reloaded");
    Some(loaded.config)
}

/// Whether the connection itself must change (broker, identity, credentials, TLS, timing).
fn mqtt_connection_changed(new: &config::MqttConfig, old: &config::MqttConfig) -> bool {
    let key = |m: &config::MqttConfig| {
        (
            m.url.clone(),
            m.prefix.clone(),
            m.client_id.clone(),
            m.keep_alive_s,
            m.username.clone(),
            m.password_file.clone(),
            m.ca_file.clone(),
            m.client_cert.clone(),
            m.client_key.clone(),
            m.protocol.clone(),
        )
    };
    key(new) != key(old) || new.flush_timeout_s != old.flush_timeout_s || new.reconnect_max_s != old.reconnect_max_s
}

/// The publisher's settings from the config, reading the password and TLS files.
pub(crate) fn publisher_config(cfg: &config::Config, device_id: &str) -> anyhow::Result<PublisherConfig> {
    let url = BrokerUrl::parse(&cfg.mqtt.url).map_err(anyhow::Error::msg)?;
    let credentials = match (&cfg.mqtt.username, &cfg.mqtt.password_file) {
        (Some(u), Some(f)) => {
            let pw =
                std::fs::read_to_string(f).with_context(|| format!("reading mqtt.password_file {}", f.display()))?;
            Some((u.clone(), pw.trim_end_matches(['\r', '\n']).to_string()))
        }
        (Some(u), None) => Some((u.clone(), String::new())),
        _ => None,
    };
    let read = |p: &Path, what: &str| std::fs::read(p).with_context(|| format!("reading {what} {}", p.display()));
    let tls = if url.tls {
        let ca = match &cfg.mqtt.ca_file {
            Some(p) => read(p, "mqtt.ca_file")?,
            None => anyhow::bail!("mqtt.url is mqtts:// but mqtt.ca_file is not set"),
        };
        let client = match (&cfg.mqtt.client_cert, &cfg.mqtt.client_key) {
            (Some(c), Some(k)) => Some((read(c, "mqtt.client_cert")?, read(k, "mqtt.client_key")?)),
            _ => None,
        };
        Some(TlsFiles { ca, client })
    } else {
        None
    };
    Ok(PublisherConfig {
        tls,
        reconnect_max: Duration::from_secs_f64(cfg.mqtt.reconnect_max_s),
        protocol: clefd::mqtt::Protocol::parse(&cfg.mqtt.protocol).map_err(anyhow::Error::msg)?,
        url,
        client_id: cfg.mqtt.client_id.clone().unwrap_or_else(|| format!("clefd-{device_id}")),
        prefix: cfg.mqtt.prefix.clone(),
        device: device_id.to_string(),
        keep_alive: Duration::from_secs(cfg.mqtt.keep_alive_s),
        credentials,
        flush_timeout: Duration::from_secs_f64(cfg.mqtt.flush_timeout_s),
    })
}

type PublisherTask = tokio::task::JoinHandle<anyhow::Result<Option<Parked>>>;

/// The publisher's task, which a reload can move to new MQTT settings without losing an
/// event: the old connection says `offline` and closes, the spool and sequence carry over.
struct Publishing {
    park: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<PublisherTask>,
}

impl Publishing {
    fn start(publisher: Publisher, outputs: tokio::sync::mpsc::Receiver<clefd::mqtt::Outgoing>) -> Publishing {
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
    async fn switch(&mut self, cfg: PublisherConfig) {
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
    async fn ended(&mut self) -> String {
        let Some(task) = self.task.as_mut() else { return std::future::pending().await };
        let result = task.await;
        self.task = None;
        failure(result).unwrap_or_else(|| "the MQTT publisher stopped unexpectedly".into())
    }

    /// Waits for the publisher to drain and stop (the pipeline's senders are gone);
    /// returns why it failed, if it did.
    async fn finish(mut self) -> Option<String> {
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
