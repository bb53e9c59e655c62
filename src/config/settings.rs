//! The configuration as clefd uses it: every value parsed into its type (durations, URLs,
//! URIs, enums), every default and relative path filled in, once, by [`super::load`].
//! Nothing downstream parses a config string again or falls back silently.
//!
//! Sections are grouped by what a reload must do when they change, and compared whole
//! with `!=`: a field added to a section is covered by reload without anyone listing it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Area, BrokerUrl, DecoderChoice, Precision, Protocol, Provider, Require, SourceSpec, Transport};

/// The whole configuration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Identifies this device in topics and events (the config's, else the hostname).
    pub device_id: String,
    /// Where state that must survive restarts lives.
    pub state_dir: PathBuf,
    /// Log filter; `RUST_LOG` wins when set.
    pub log_level: String,
    /// Reload when the config files change.
    pub watch_config: bool,
    /// ONNX Runtime and how bundles run.
    pub engine: EngineSettings,
    /// Broker, topics, spool.
    pub mqtt: MqttSettings,
    /// Event lifecycle.
    pub events: EventSettings,
    /// Frame-to-frame face tracking.
    pub tracker: TrackerSettings,
    /// Camera restarts.
    pub supervisor: SupervisorSettings,
    /// The HTTP side door (`/metrics`, `/healthz`, the live view); `None` turns it off.
    pub http: Option<HttpSettings>,
    /// Snapshots of faces as their tracks begin, when on.
    pub snapshots: Option<SnapshotSettings>,
    /// The events kept on the device, when on.
    pub history: Option<HistorySettings>,
    /// Every camera, enabled or not, by name.
    pub cameras: BTreeMap<String, CameraSettings>,
    /// Which file each camera came from, for messages at run time.
    pub camera_files: BTreeMap<String, PathBuf>,
}

/// The HTTP side door: where it listens and what it shows to whom.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Blur faces in the pictures served (the analysis is unchanged).
    pub blur_faces: bool,
    /// Credentials every route but `/healthz` asks for; `None`: open to whoever reaches it.
    pub auth: Option<HttpAuth>,
}

/// Where the HTTP credentials are kept (read when the server starts, never logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAuth {
    /// A file holding a bearer token.
    Token(PathBuf),
    /// A file holding `user:password` for HTTP Basic.
    Basic(PathBuf),
}

/// How models are loaded and run.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    /// `libonnxruntime.so` to load; `None`: `ORT_DYLIB_PATH`, then the set-up's copy.
    pub onnxruntime: Option<PathBuf>,
    /// The bundle of cameras that name none.
    pub bundle: PathBuf,
    /// Inference lanes per bundle; 0 lets clefd pick.
    pub lanes: usize,
    /// Intra-op threads per model; 0 lets clefd pick.
    pub threads: usize,
    /// Execution providers, in order of preference.
    pub providers: Vec<Provider>,
    /// The provider the models must get, or clefd refuses to start.
    pub require: Require,
    /// Where TensorRT engines are cached.
    pub cache_dir: PathBuf,
    /// TensorRT's arithmetic.
    pub precision: Precision,
    /// Deep-learning accelerator core, or the GPU.
    pub dla_core: Option<u32>,
    /// Gather frames of several cameras into one batch.
    pub batching: bool,
    /// Most frames, and most faces, per batch.
    pub batch_max: usize,
    /// How long a ready frame waits for company with a single lane.
    pub batch_timeout: Duration,
}

/// Everything MQTT.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    /// The connection; a reload that changes it reconnects without losing an event.
    pub connection: MqttConnection,
    /// How often `{prefix}/{device}/stats` is sent; `None` turns it off.
    pub stats_every: Option<Duration>,
    /// Home Assistant's discovery prefix, when cameras are announced.
    pub home_assistant: Option<String>,
    /// Where unacknowledged events wait.
    pub spool_dir: PathBuf,
    /// Most bytes the spool may use.
    pub spool_max_bytes: u64,
    /// Runtime control over MQTT, when on.
    pub control: Option<ControlSettings>,
}

/// `[snapshots]`: where the pictures of faces go, and how large they are.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotSettings {
    /// Retained on `{prefix}/{device}/{camera}/snapshot`.
    pub mqtt: bool,
    /// Into this folder, keeping the newest `max_files`.
    pub dir: Option<PathBuf>,
    /// Pictures the folder keeps.
    pub max_files: usize,
    /// The longest side of a picture, in pixels.
    pub size_px: u32,
}

/// `[history]`: where events are kept on the device, and for how long and how much.
#[derive(Debug, Clone, PartialEq)]
pub struct HistorySettings {
    /// The SQLite file (`state_dir/history.sqlite`).
    pub path: PathBuf,
    /// Events older than this are deleted.
    pub retain: Duration,
    /// Most bytes the file may use.
    pub max_bytes: u64,
}

/// `mqtt.control`: commands over MQTT, and whether what they set outlives a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSettings {
    /// Where what was set is kept across restarts (`control_persist`); `None`: forgotten.
    pub persist: Option<PathBuf>,
}

/// What one broker connection is made with.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConnection {
    /// The broker.
    pub url: BrokerUrl,
    /// First topic level.
    pub prefix: String,
    /// MQTT client id (the config's, else `clefd-<device_id>`).
    pub client_id: String,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// User name for the broker.
    pub username: Option<String>,
    /// File holding the broker's password (read when connecting).
    pub password_file: Option<PathBuf>,
    /// Protocol version.
    pub protocol: Protocol,
    /// MQTT 5 message expiry of events, in seconds from their capture.
    pub event_expiry_s: Option<u32>,
    /// `mqtts://`: the certificates.
    pub tls: Option<TlsPaths>,
    /// How long shutdown waits for outstanding acknowledgements.
    pub flush_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// Events waiting this long with no acknowledgement make delivery stuck (`/healthz`).
    pub stuck_after: Duration,
}

/// Certificate files of a TLS connection.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsPaths {
    /// CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// Client certificate and its key, for brokers that require one.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// When tracks make events.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSettings {
    /// Sightings before a track's `new` event.
    pub min_track_age: u32,
    /// Longest silence of a live track.
    pub heartbeat: Duration,
    /// Weight of the newest frame in the score average.
    pub smoothing: f32,
    /// Margin a new label must win by.
    pub hysteresis: f32,
    /// When the retained `current` summary says `none`.
    pub empty_after: Duration,
}

/// How faces are followed.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerSettings {
    /// Least box overlap that continues a track.
    pub iou_threshold: f32,
    /// Frames a track may go unseen.
    pub max_missed: u32,
}

/// How failed or silent cameras are restarted.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorSettings {
    /// First delay before a restart.
    pub backoff_initial: Duration,
    /// Longest delay between restarts.
    pub backoff_max: Duration,
    /// Silence after which a connected camera is restarted.
    pub stall_timeout: Duration,
}

/// One camera.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSettings {
    /// What to open (the URI, parsed).
    pub source: SourceSpec,
    /// A disabled camera is checked but not started.
    pub enabled: bool,
    /// `file://`: start again at the end.
    pub looping: bool,
    /// `file://`: pace at the stream's rate.
    pub realtime: bool,
    /// Working width.
    pub width: u32,
    /// Its bundle (the engine's default when the camera names none).
    pub bundle: PathBuf,
    /// Most frames analysed per second.
    pub fps: Option<f64>,
    /// `rtsp://`: how packets travel.
    pub transport: Transport,
    /// `rtsp://`: jitter-buffer latency in milliseconds.
    pub latency_ms: u32,
    /// Software decoder threads (0: one per core).
    pub decoder_threads: u32,
    /// Which decoders the camera may get: `auto`, `libav` for H.264, or `software` (the
    /// CPU's only).
    pub decoder: DecoderChoice,
    /// `rtsp://`: file holding the password (read when the camera starts).
    pub password_file: Option<PathBuf>,
    /// Faces scoring below this are ignored.
    pub score_threshold: Option<f32>,
    /// Faces smaller than this (pixels, shorter side) are ignored.
    pub min_face_px: Option<f32>,
    /// Areas to watch.
    pub zones: Vec<Area>,
    /// Areas whose faces never count.
    pub ignore: Vec<Area>,
    /// The detector runs on every N-th frame (1: every frame).
    pub detect_every: u32,
    /// A face that has not moved much is classified again at least every N frames.
    pub classify_every: u32,
    /// Snapshots of its faces, when `[snapshots]` is on.
    pub snapshots: bool,
}

impl Settings {
    /// The enabled cameras, by name.
    pub fn enabled_cameras(&self) -> impl Iterator<Item = (&String, &CameraSettings)> {
        self.cameras.iter().filter(|(_, c)| c.enabled)
    }

    /// The bundle folders the enabled cameras use (the default bundle when none is
    /// enabled), each once: what `check-config`, `doctor` and `build-engines` load.
    pub fn bundles_in_use(&self) -> Vec<&PathBuf> {
        let mut dirs: Vec<&PathBuf> = self.enabled_cameras().map(|(_, c)| &c.bundle).collect();
        if dirs.is_empty() {
            dirs.push(&self.engine.bundle);
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// The settings whose change a running daemon cannot apply, by name, when `new`
    /// replaces `self`. Every field is named here, so a new one cannot be forgotten: the
    /// ones a reload applies (engine, connection, cameras, ...) are compared by whoever
    /// applies them.
    pub fn restart_only_changes(&self, new: &Settings) -> Vec<&'static str> {
        let Settings {
            device_id,
            state_dir,
            log_level: _, // applied by the daemon on reload
            watch_config: _,
            engine: _,
            mqtt,
            events,
            tracker: _,
            supervisor: _,
            http,
            snapshots,
            history,
            cameras: _,
            camera_files: _,
        } = self;
        let MqttSettings { connection: _, stats_every, home_assistant, spool_dir, spool_max_bytes, control } = mqtt;
        let mut changed = Vec::new();
        let mut check = |differs: bool, name: &'static str| {
            if differs {
                changed.push(name);
            }
        };
        check(*device_id != new.device_id, "device_id");
        check(*state_dir != new.state_dir, "state_dir");
        check(*http != new.http, "[http]");
        check(*snapshots != new.snapshots, "[snapshots]");
        check(*history != new.history, "[history]");
        check(*stats_every != new.mqtt.stats_every, "mqtt.stats_interval_s");
        check(*home_assistant != new.mqtt.home_assistant, "Home Assistant discovery");
        check(*spool_dir != new.mqtt.spool_dir, "mqtt.spool_dir");
        check(*spool_max_bytes != new.mqtt.spool_max_bytes, "mqtt.spool_max_mb");
        check(*control != new.mqtt.control, "mqtt.control and mqtt.control_persist");
        check(events.empty_after != new.events.empty_after, "events.empty_after_s");
        changed
    }
}
