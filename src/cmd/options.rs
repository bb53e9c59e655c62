//! From the checked configuration to what each part takes: the pipeline's options, the
//! engine's session options, the publisher's settings. Files named by the configuration
//! (passwords, certificates, bundle manifests) are read here, at the edge, so the core
//! never opens a file because a config said so.

use std::path::Path;

use anyhow::Context;
use clefd::config::{
    self, CameraSettings, ConfigErrors, EngineSettings, EventSettings, Problem, Settings, SupervisorSettings,
};
use clefd::detect::filter::FaceFilter;
use clefd::engine::manifest::Manifest;
use clefd::engine::runtime::SessionOptions;
use clefd::engine::tensorrt::TrtSettings;
use clefd::events::lifecycle::LifecycleConfig;
use clefd::mqtt::{PublisherConfig, TlsFiles};
use clefd::pipeline::{Batching, Cadence, CameraPlan, PipelineOptions, WorkerOptions};
use clefd::source::{CameraOptions, SupervisorOptions};

/// [`config::load`] with every bundle's manifest checked too: what `check-config`, `run`
/// and a reload accept, every problem listed at once.
pub fn load_config(path: &Path) -> Result<Settings, ConfigErrors> {
    config::load_with(path, &|dir| {
        Manifest::load(dir).err().map(|e| Problem { file: e.path, key: e.key, reason: e.reason })
    })
}

/// How models run, from `[engine]`.
pub fn session_options(engine: &EngineSettings) -> SessionOptions {
    SessionOptions {
        threads: engine.threads,
        providers: engine.providers.iter().map(|p| p.as_str().to_string()).collect(),
        require: engine.require,
        cache_dir: Some(engine.cache_dir.clone()),
        tensorrt: TrtSettings {
            precision: engine.precision.clone(),
            dla_core: engine.dla_core,
            batch_max: engine.batch_max,
        },
        cache_only: false,
    }
}

/// The pipeline's options for the enabled cameras, and the cameras that cannot start
/// (their password file cannot be read), with why.
///
/// The sections the pipeline uses are taken apart field by field, without `..`: a field
/// added to one of them does not compile until it is given to the pipeline (and so
/// compared by its reload) or named as not its business.
pub fn pipeline_options(s: &Settings) -> (PipelineOptions, Vec<(String, String)>) {
    let EngineSettings {
        onnxruntime: _, // loaded once, by `engine::runtime::init`
        bundle: _,      // resolved into each camera's `bundle`
        lanes,
        threads,
        // The next five go to the sessions, through `session_options`.
        providers: _,
        require: _,
        cache_dir: _,
        precision: _,
        dla_core: _,
        batching,
        batch_max,
        batch_timeout,
    } = &s.engine;
    let EventSettings { min_track_age, heartbeat, smoothing, hysteresis, empty_after: _ } = &s.events;
    let workers = WorkerOptions {
        device_id: s.device_id.clone(),
        session: session_options(&s.engine),
        lanes: *lanes,
        threads: *threads,
        batching: Batching { max_frames: if *batching { *batch_max } else { 1 }, linger: *batch_timeout },
        lifecycle: LifecycleConfig {
            min_track_age: *min_track_age,
            heartbeat: *heartbeat,
            smoothing: *smoothing,
            hysteresis: *hysteresis,
        },
        tracker: s.tracker.clone(),
        snapshot_px: s.snapshots.as_ref().map(|p| p.size_px),
    };
    let mut cameras = std::collections::BTreeMap::new();
    let mut unusable = Vec::new();
    for (name, cam) in s.enabled_cameras() {
        match camera_plan(&s.supervisor, name, cam) {
            Ok(plan) => drop(cameras.insert(name.clone(), plan)),
            Err(reason) => unusable.push((name.clone(), reason)),
        }
    }
    // Only a command can enable a disabled camera, so it keeps a file run alive only while
    // commands are taken: without `mqtt.control` the files' end is the run's end.
    let disabled = match s.mqtt.control {
        Some(_) => (s.cameras.iter()).filter(|(_, c)| !c.enabled).map(|(name, _)| name.clone()).collect(),
        None => Vec::new(),
    };
    (PipelineOptions { workers, cameras, disabled }, unusable)
}

/// One camera as the pipeline runs it, its password read into its URI.
fn camera_plan(sup: &SupervisorSettings, name: &str, cam: &CameraSettings) -> Result<CameraPlan, String> {
    let CameraSettings {
        source,
        enabled: _, // only enabled cameras get here
        looping,
        realtime,
        width,
        bundle,
        fps,
        transport,
        latency_ms,
        decoder_threads,
        decoder,
        password_file,
        score_threshold,
        min_face_px,
        zones,
        ignore,
        detect_every,
        classify_every,
        snapshots,
    } = cam;
    let spec = match password_file {
        Some(f) => {
            let pw =
                std::fs::read_to_string(f).map_err(|e| format!("cannot read password_file {}: {e}", f.display()))?;
            source.with_password(pw.trim_end_matches(['\r', '\n']))?
        }
        None => source.clone(),
    };
    let camera = CameraOptions {
        name: name.to_string(),
        spec,
        width: *width,
        looping: *looping,
        realtime: *realtime,
        fps_cap: *fps,
        rtsp_udp: *transport == config::Transport::Udp,
        rtsp_latency_ms: *latency_ms,
        decoder_threads: *decoder_threads,
        decoder: *decoder,
    };
    let SupervisorSettings { backoff_initial, backoff_max, stall_timeout } = sup.clone();
    Ok(CameraPlan {
        bundle: bundle.clone(),
        source: SupervisorOptions { camera, backoff_initial, backoff_max, stall_timeout },
        filter: FaceFilter {
            score_threshold: *score_threshold,
            min_face_px: *min_face_px,
            zones: zones.clone(),
            ignore: ignore.clone(),
        },
        cadence: Cadence { detect_every: *detect_every, classify_every: *classify_every },
        snapshots: *snapshots,
    })
}

/// The publisher's settings, reading the password and TLS files.
pub fn publisher_config(s: &Settings) -> anyhow::Result<PublisherConfig> {
    let m = &s.mqtt.connection;
    let credentials = match (&m.username, &m.password_file) {
        (Some(u), Some(f)) => {
            let pw =
                std::fs::read_to_string(f).with_context(|| format!("reading mqtt.password_file {}", f.display()))?;
            Some((u.clone(), pw.trim_end_matches(['\r', '\n']).to_string()))
        }
        (Some(u), None) => Some((u.clone(), String::new())),
        _ => None,
    };
    let read = |p: &Path, what: &str| std::fs::read(p).with_context(|| format!("reading {what} {}", p.display()));
    let tls = match &m.tls {
        Some(t) => Some(TlsFiles {
            ca: read(&t.ca_file, "mqtt.ca_file")?,
            client: match &t.client {
                Some((cert, key)) => Some((read(cert, "mqtt.client_cert")?, read(key, "mqtt.client_key")?)),
                None => None,
            },
        }),
        None => None,
    };
    Ok(PublisherConfig {
        tls,
        reconnect_max: m.reconnect_max,
        protocol: m.protocol,
        event_expiry_s: m.event_expiry_s,
        url: m.url.clone(),
        client_id: m.client_id.clone(),
        prefix: m.prefix.clone(),
        device: s.device_id.clone(),
        keep_alive: m.keep_alive,
        credentials,
        flush_timeout: m.flush_timeout,
        stuck_after: m.stuck_after,
        // The daemon connects its command channel when `mqtt.control` is on.
        commands: None,
    })
}
