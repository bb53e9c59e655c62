//! `clefd run`: the daemon. [`Daemon::start`] loads the models and starts the cameras,
//! [`Daemon::serve`] publishes until a signal or the end of the streams, reloading on
//! SIGHUP (or when the config files change), and [`Daemon::shutdown`] drains the publisher.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clefd::config::{self, Settings};
use clefd::events::current::CurrentView;
use clefd::events::seq::SeqCounter;
use clefd::events::seq::SeqError;
use clefd::mqtt::spool::Spool;
use clefd::mqtt::{Command, Outgoing, Publisher, PublisherConfig, Topics};
use clefd::pipeline::{Control, Outcome, Pipeline, PipelineError};
use clefd::service::forward::Forward;
use clefd::service::http::{Health, Seen};
use clefd::service::notify::Notifier;
use clefd::service::snapshots::SnapshotPlaces;
use clefd::service::{LogLevel, Signal, Signals, systemd};
use tokio::sync::mpsc;

use super::control::Controls;
use super::options::{load_config, pipeline_options, publisher_config};
use super::publishing::{Publishing, discovery_messages};

mod command;
mod reload;

/// How the daemon's main loop ended.
enum Ending {
    /// SIGTERM or SIGINT.
    Signalled,
    /// Every stream ended on its own (files without `loop`).
    StreamsEnded,
    /// Delivery stopped for good: a fatal error, the process must be restarted.
    PublisherFailed(String),
}

/// Camera threads come and go with every restart, and glibc gives each its own malloc
/// arena and keeps what they freed: RSS climbs to a plateau far above what is in use (the
/// torture run: 209 MB RSS for 89 MB in use by default, 148 MB with two arenas). Two
/// arenas keep it near what is used. `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes the allocator; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Runs the daemon. Exit codes: 0 when asked to stop (or every camera was a file that
/// ended), [`super::EXIT_CONFIG`] for an invalid configuration,
/// [`super::EXIT_UNAVAILABLE`] when what it requires is not on this machine
/// (`engine.require`, also when the required provider fails engine acceptance, and
/// `engine.dla_core`), 1 for any other failure (systemd restarts the service).
pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    limit_malloc_arenas();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().thread_name("clefd-rt").build()?;
    // First of all, so a signal during start-up is answered instead of killing us.
    let mut signals = {
        let _inside = rt.enter();
        Signals::register()
    };
    let settings = match load_config(path) {
        Ok(s) => s,
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
    let log_level = clefd::service::init_logging(&settings.log_level);
    tracing::info!(config = %path.display(), device = %settings.device_id, cameras = settings.cameras.len(), "clefd {} starting", env!("CARGO_PKG_VERSION"));
    if settings.enabled_cameras().next().is_none() {
        tracing::error!(
            "no camera configured in {}: add one (a [cameras.NAME] table, or a file in cameras.d/) and start again",
            path.display()
        );
        return Ok(ExitCode::from(super::EXIT_CONFIG));
    }
    let (daemon, started) = match Daemon::start(path, settings, log_level, &rt)? {
        Ok(both) => both,
        Err(code) => return Ok(code),
    };
    let snapshots = started.snapshots.clone();
    let (outcome, ending) = rt.block_on(daemon.serve(started, &mut signals));
    // A reload interrupted by SIGTERM may still be loading models on a blocking thread:
    // do not wait for it (its result is dropped; the pipeline has stopped).
    rt.shutdown_timeout(Duration::from_millis(500));
    // The pictures still queued are written (bounded: a hung disk does not hold up the
    // exit), off the runtime and whoever else still holds the places.
    if let Some(places) = snapshots {
        places.close();
    }
    log_summaries(&outcome);
    for (camera, reason) in &outcome.failures {
        tracing::error!(camera = %camera, "camera failed: {reason}");
    }
    Ok(match ending {
        Ending::Signalled => ExitCode::SUCCESS,
        Ending::StreamsEnded if outcome.failures.is_empty() => ExitCode::SUCCESS,
        Ending::StreamsEnded | Ending::PublisherFailed(_) => ExitCode::from(1),
    })
}

/// How a reload ended, for the main loop.
#[derive(Debug, PartialEq, Eq)]
enum Reloaded {
    /// Applied or refused: serving goes on.
    Done,
    /// A SIGTERM came while it ran: the daemon must stop.
    Stopped,
}

/// The configuration in force: the files' settings, what runtime control laid over them,
/// and the result.
struct InForce {
    /// As the files say.
    file: Settings,
    /// What was set over MQTT (`mqtt.control`), for cameras the files name.
    controls: Controls,
    /// `file` with `controls` applied: what runs.
    settings: Settings,
}

/// What [`Daemon::apply`] did with the new configuration.
enum Applied {
    /// It is in force.
    Now(Box<InForce>),
    /// It is not (the reason is logged); the running one stays.
    Refused,
    /// A SIGTERM interrupted it.
    Stopped,
}

/// The running daemon: the pipeline, the publisher it feeds, and what a reload needs.
struct Daemon {
    config_path: PathBuf,
    /// The configuration in force.
    settings: Settings,
    /// The files' settings, under what runtime control set.
    file_settings: Settings,
    /// What runtime control set.
    controls: Controls,
    /// Where the publisher hands the commands it receives (`mqtt.control` on).
    commands: Option<mpsc::Sender<Command>>,
    control: Control,
    notifier: Arc<Notifier>,
    /// Where the pipeline's sink and the daemon's own messages go.
    to_publisher: mpsc::Sender<Outgoing>,
    seen: Seen,
    sink: Forward,
    /// Cameras the configuration names but that could not be started at all.
    unusable: Vec<(String, String)>,
    /// The running log filter, which a reload changes.
    log_level: LogLevel,
    /// A SIGHUP came while a reload was under way: read the files again once it is done,
    /// so the last edit always wins and no reload request is lost.
    reload_again: std::sync::atomic::AtomicBool,
}

/// What [`Daemon::start`] hands to [`Daemon::serve`]: the running pipeline, and the
/// publisher with the channel it will read.
struct Started {
    pipeline: Pipeline,
    publisher: Publisher,
    outputs: mpsc::Receiver<Outgoing>,
    /// Commands from the control topics, when `mqtt.control` is on.
    commands: Option<mpsc::Receiver<Command>>,
    /// Where snapshots go, when they are on: closed at the end of the run (see [`run`]).
    snapshots: Option<Arc<SnapshotPlaces>>,
}

impl Daemon {
    /// Opens the spool and sequence, loads the models and starts the cameras. `Err` carries
    /// the exit code when the daemon cannot start for a reason already logged.
    fn start(
        path: &Path,
        file_settings: Settings,
        log_level: LogLevel,
        rt: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Result<(Daemon, Started), ExitCode>> {
        let controls = command::kept_controls(&file_settings);
        let settings = controls.apply(&file_settings);
        let (commands, commands_rx) = match settings.mqtt.control {
            Some(_) => {
                let (tx, rx) = mpsc::channel(16);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let q = &settings.mqtt;
        let mut spool = Spool::open(&q.spool_dir, q.spool_max_bytes)
            .with_context(|| format!("opening the event spool {} (is it writable?)", q.spool_dir.display()))?;
        let seq_path = settings.state_dir.join("seq");
        let seq = match SeqCounter::open(&seq_path, spool.next_seq()) {
            Ok(seq) => seq,
            Err(e @ (SeqError::Impossible { .. } | SeqError::Damaged { .. })) => {
                tracing::error!("{e}");
                return Ok(Err(ExitCode::from(super::EXIT_CONFIG)));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "opening the event sequence file {} (is state_dir writable?)",
                    seq_path.display()
                )));
            }
        };
        // A SIGKILL between numbering events and spooling them left a gap: count it.
        spool.count_unspooled(seq.peek());
        let publisher = {
            let _inside = rt.enter();
            let cfg = PublisherConfig { commands: commands.clone(), ..publisher_config(&settings)? };
            Publisher::new(cfg, seq, spool)
        };
        if let Err(e) = clefd::engine::runtime::init(settings.engine.onnxruntime.as_deref()) {
            tracing::error!("{e}; run `clefd check-config --config {}`", path.display());
            return Ok(Err(ExitCode::from(super::EXIT_CONFIG)));
        }
        // The tests' fake GPU warns on every start, before anything reports a provider.
        let _ = clefd::engine::runtime::faked_gpu_providers();
        if let Err(reason) = super::requirements::check(&settings.engine) {
            tracing::error!(
                "{reason}; clefd will not start without it (`clefd doctor --config {}` says more)",
                path.display()
            );
            return Ok(Err(ExitCode::from(super::EXIT_UNAVAILABLE)));
        }
        let (options, unusable) = pipeline_options(&settings);
        for (camera, reason) in &unusable {
            tracing::error!(camera = %camera, error = %reason, "camera cannot start");
        }
        if let Some(history) = &settings.history {
            clefd::history::install(history);
        }
        let notifier = Arc::new(Notifier::from_env());
        let (to_publisher, rx) = mpsc::channel(256);
        let seen = Seen::default();
        let empty_after = settings.events.empty_after;
        let current = CurrentView::new(empty_after, empty_after.max(settings.events.heartbeat.mul_f64(2.5)));
        let cameras = settings.enabled_cameras().count();
        let mut sink = Forward::new(to_publisher.clone(), seen.clone(), notifier.clone(), current, cameras)
            .with_delivery(publisher.stats());
        let places = settings.snapshots.as_ref().map(|snapshots| {
            let topics = snapshots.mqtt.then(|| Topics::new(&settings.mqtt.connection.prefix, &settings.device_id));
            let dir = snapshots.dir.clone().map(|d| (d, snapshots.max_files));
            Arc::new(SnapshotPlaces::new(topics, dir))
        });
        if let Some(places) = &places {
            sink = sink.with_snapshots(places.clone());
        }
        let started = while_starting(&notifier, || Pipeline::start(options, sink.clone()));
        let pipeline = match started {
            Ok(p) => p,
            // The required provider does not load the models, or loads them but fails engine
            // acceptance: unavailable, like a provider missing from the build.
            Err(e @ PipelineError::Bundle { .. }) if matches!(&e, PipelineError::Bundle { source, .. } if source.unmet_requirement()) =>
            {
                tracing::error!(
                    "{e}; clefd will not start without it (`clefd doctor --config {}` says more)",
                    path.display()
                );
                return Ok(Err(ExitCode::from(super::EXIT_UNAVAILABLE)));
            }
            Err(e @ PipelineError::Bundle { .. }) => {
                tracing::error!("{e}; run `clefd check-config --config {}`", path.display());
                return Ok(Err(ExitCode::from(super::EXIT_CONFIG)));
            }
            Err(PipelineError::NoCamera(reasons)) if !unusable.is_empty() => {
                let all: Vec<String> = unusable.iter().map(|(_, r)| r.clone()).chain([reasons]).collect();
                return Err(PipelineError::NoCamera(all.join("; ")).into());
            }
            Err(e) => return Err(e.into()),
        };
        let daemon = Daemon {
            config_path: path.to_path_buf(),
            control: pipeline.control(),
            settings,
            file_settings,
            controls,
            commands,
            notifier,
            to_publisher,
            seen,
            sink,
            unusable,
            log_level,
            reload_again: std::sync::atomic::AtomicBool::new(false),
        };
        Ok(Ok((daemon, Started { pipeline, publisher, outputs: rx, commands: commands_rx, snapshots: places })))
    }

    /// Serves until a signal, the end of every stream, or a publisher failure; the run's
    /// outcome (with the cameras that could not start among its failures) and how it ended.
    async fn serve(mut self, started: Started, signals: &mut Signals) -> (Outcome, Ending) {
        let Started { pipeline, publisher, outputs: rx, commands: mut commands_rx, snapshots } = started;
        let health = Arc::new(Health::new(pipeline.probe(), publisher.stats(), &self.seen).with_snapshots(snapshots));
        let mut publishing = Publishing::start(publisher, rx);
        let background = self.spawn_background(&health).await;
        self.announce_controls(None, &self.controls, &self.settings).await;
        // Serving: config and engines loaded, publisher and HTTP up. Cameras report
        // their own state; one that is down must not hold the service back.
        let cameras = self.settings.enabled_cameras().count();
        // What the cameras reported so far (they may already stream); later changes follow.
        self.sink.ready();
        tracing::info!(cameras, "ready");
        let mut waiting = tokio::task::spawn_blocking(move || pipeline.wait());
        let mut watched = self.fingerprint();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let (outcome, ending) = loop {
            tokio::select! {
                done = &mut waiting => break (done, Ending::StreamsEnded),
                signal = signals.next() => match signal {
                    Signal::Stop => break (self.stop(waiting).await, Ending::Signalled),
                    Signal::Reload => {
                        tracing::info!(config = %self.config_path.display(), "SIGHUP: reloading the configuration");
                        if self.reload(&mut publishing, signals).await == Reloaded::Stopped {
                            break (self.stop(waiting).await, Ending::Signalled);
                        }
                        watched = self.fingerprint();
                    }
                },
                Some(cmd) = command::next(&mut commands_rx) => {
                    if self.command(cmd, signals).await == Reloaded::Stopped {
                        break (self.stop(waiting).await, Ending::Signalled);
                    }
                    if self.reload_again.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        tracing::info!("reloading for the SIGHUP that came while a command applied");
                        if self.reload(&mut publishing, signals).await == Reloaded::Stopped {
                            break (self.stop(waiting).await, Ending::Signalled);
                        }
                        watched = self.fingerprint();
                    }
                }
                reason = publishing.ended() => {
                    tracing::error!("{reason}: stopping so that systemd restarts clefd");
                    break (self.stop(waiting).await, Ending::PublisherFailed(reason));
                }
                _ = tick.tick(), if watched.is_some() => {
                    let now = self.fingerprint();
                    if now != watched {
                        tracing::info!(config = %self.config_path.display(), "configuration files changed: reloading");
                        if self.reload(&mut publishing, signals).await == Reloaded::Stopped {
                            break (self.stop(waiting).await, Ending::Signalled);
                        }
                        watched = self.fingerprint();
                    }
                }
            }
        };
        self.shutdown(publishing, background, outcome, ending).await
    }

    /// The config files' fingerprint while `watch_config` is on.
    fn fingerprint(&self) -> Option<Vec<(PathBuf, u64, Option<std::time::SystemTime>)>> {
        self.settings.watch_config.then(|| config::sources_fingerprint(&self.config_path))
    }

    /// Starts what runs beside the pipeline: discovery, stats, `current` summaries, the
    /// watchdog monitor, HTTP. Returns the tasks that hold a sender to the publisher.
    async fn spawn_background(&self, health: &Arc<Health>) -> Vec<tokio::task::JoinHandle<()>> {
        let http = match &self.settings.http {
            Some(settings) => match tokio::net::TcpListener::bind(settings.listen).await {
                Ok(l) => {
                    let addr = settings.listen;
                    tracing::info!(%addr, blur_faces = settings.blur_faces, auth = settings.auth.is_some(), "serving /metrics, /healthz and the live view");
                    Some((l, settings.clone()))
                }
                Err(e) => {
                    let addr = settings.listen;
                    tracing::error!(%addr, error = %e, "cannot serve /metrics and /healthz (is http.listen in use?)");
                    None
                }
            },
            None => None,
        };
        for msg in discovery_messages(&self.settings) {
            let _ = self.to_publisher.send(msg).await;
        }
        let mut senders = vec![tokio::spawn(self.sink.clone().tick_current())];
        if let Some(every) = self.settings.mqtt.stats_every {
            let stats = clefd::service::stats::publish_stats(self.to_publisher.clone(), health.clone(), every);
            senders.push(tokio::spawn(stats));
        }
        tokio::spawn(systemd::monitor(self.notifier.clone(), health.clone(), Notifier::watchdog_interval()));
        if let Some((listener, settings)) = http {
            tokio::spawn(clefd::service::server::serve(listener, health.clone(), settings));
        }
        senders
    }

    /// Stops every camera and waits for the workers to finish their frames.
    async fn stop(&self, waiting: tokio::task::JoinHandle<Outcome>) -> Result<Outcome, tokio::task::JoinError> {
        self.notifier.send("STOPPING=1");
        let control = self.control.clone();
        let _ = tokio::task::spawn_blocking(move || control.stop()).await;
        waiting.await
    }

    /// Lets the publisher drain what is left and stop; the run's outcome.
    async fn shutdown(
        self,
        publishing: Publishing,
        background: Vec<tokio::task::JoinHandle<()>>,
        outcome: Result<Outcome, tokio::task::JoinError>,
        ending: Ending,
    ) -> (Outcome, Ending) {
        // Every sender must go for the publisher to see the end.
        for task in background {
            task.abort();
        }
        let Daemon { to_publisher, sink, unusable, .. } = self;
        drop((to_publisher, sink));
        let ending = match (ending, publishing.finish().await) {
            (Ending::PublisherFailed(r), _) => Ending::PublisherFailed(r),
            (_, Some(failure)) => Ending::PublisherFailed(failure),
            (e, None) => e,
        };
        let _ = tokio::task::spawn_blocking(|| clefd::history::flush(Duration::from_secs(2))).await;
        let mut outcome = outcome.unwrap_or_default();
        outcome.failures.extend(unusable);
        (outcome, ending)
    }
}

/// Runs `start` (loading models can take minutes the first time, while TensorRT builds its
/// engines), asking systemd for more time every 20 s until it returns, so a first build is
/// never killed.
fn while_starting<T>(notifier: &Arc<Notifier>, start: impl FnOnce() -> T) -> T {
    let starting = Arc::new(AtomicBool::new(true));
    let extender = {
        let (starting, notifier) = (starting.clone(), notifier.clone());
        std::thread::Builder::new().name("clefd-start".into()).spawn(move || {
            while starting.load(Ordering::SeqCst) {
                notifier.send("EXTEND_TIMEOUT_USEC=60000000");
                for _ in 0..40 {
                    if !starting.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        })
    };
    let result = start();
    starting.store(false, Ordering::SeqCst);
    if let Ok(t) = extender {
        let _ = t.join();
    }
    result
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
            detected_frames = s.stages.detected,
            classified_faces = s.stages.classified,
            events = s.events,
            fps = format!("{:.1}", s.frames as f64 / secs),
            detect_ms = format!("{:.2}", per(s.stages.detect)),
            classify_ms = format!("{:.2}", per(s.stages.classify)),
            publish_ms = format!("{:.3}", per(s.stages.publish)),
            "run summary"
        );
    }
}
