//! The configuration as a user writes it: the TOML layout, every key with its default.
//! Values stay as written (strings, seconds as numbers) until `validate` turns them into
//! [`super::Settings`]. Public, and serializable, so the tests write their configs with
//! these same types instead of patching text.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Area;

/// The whole file, as written (after layering).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// Identifies this device in MQTT topics and events; defaults to the hostname.
    pub device_id: Option<String>,
    /// Where state that must survive restarts lives (the event sequence number).
    pub state_dir: PathBuf,
    /// Log filter (`info`, `debug`, `clefd=debug,warn`); `RUST_LOG` wins when set.
    pub log_level: String,
    /// Reload by itself when the config file or a file in `cameras.d/` changes (checked
    /// every 2 s), as if sent SIGHUP: drop a camera file in and it starts.
    pub watch_config: bool,
    /// ONNX Runtime and the default engine bundle.
    pub engine: EngineConfig,
    /// Broker connection and topics.
    pub mqtt: MqttConfig,
    /// When tracked subjects produce events.
    pub events: EventsConfig,
    /// How faces are followed from frame to frame.
    pub tracker: TrackerConfig,
    /// How failed or silent cameras are restarted.
    pub supervisor: SupervisorConfig,
    /// `/metrics` and `/healthz`.
    pub http: HttpConfig,
    /// Pictures of faces as their tracks begin (off by default).
    pub snapshots: SnapshotsConfig,
    /// Events kept on the device for the history page and `/api/events` (off by default).
    pub history: HistoryConfig,
    /// Cameras by name (the name appears in topics).
    pub cameras: BTreeMap<String, CameraConfig>,
}

/// Where the models come from and how they run.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct EngineConfig {
    /// Path of `libonnxruntime.so`; then `ORT_DYLIB_PATH`, then the set-up's location.
    pub onnxruntime: Option<PathBuf>,
    /// The bundle cameras use unless they name their own (relative to the config file).
    pub bundle: PathBuf,
    /// Inference lanes per bundle: copies of its models that analyse frames at the same
    /// time. 0 lets clefd pick: one per core (at most four) when the models run on the CPU
    /// (small models cannot keep several cores busy one frame at a time), one on a GPU.
    pub lanes: usize,
    /// Intra-op threads per model; 0 lets clefd pick (1 with several lanes, else the
    /// number of cores).
    pub threads: usize,
    /// Execution providers to try, in order: `tensorrt`, `cuda`, `cpu`.
    pub providers: Vec<String>,
    /// The provider the models must get, or clefd refuses to start: `any` (default: the
    /// first of `providers` that takes them, a fallback logged as a warning), `gpu`
    /// (TensorRT or CUDA), `tensorrt` or `cuda`.
    pub require: String,
    /// Where TensorRT engines are cached (default: `<state_dir>/engine-cache`).
    pub cache_dir: Option<PathBuf>,
    /// TensorRT's arithmetic: `fp16` (default), `fp32`, or `int8` (needs
    /// `int8_calibration_table`).
    pub precision: String,
    /// `int8`: TensorRT calibration table.
    pub int8_calibration_table: Option<PathBuf>,
    /// Run TensorRT engines on this deep-learning accelerator (Xavier, Orin AGX/NX: 0 or 1)
    /// instead of the GPU.
    pub dla_core: Option<u32>,
    /// Gather frames of several cameras into one inference batch.
    pub batching: bool,
    /// Most frames, and most faces, per batch.
    pub batch_max: usize,
    /// How long a ready frame waits for other cameras' frames to share its batch, with a
    /// single lane (a GPU). With several lanes a frame starts at once on a free lane; under
    /// load, frames gather while the lanes are busy and go together anyway.
    pub batch_timeout_ms: f64,
}

/// MQTT broker and topic settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct MqttConfig {
    /// `mqtt://host:port` (or `mqtts://`).
    pub url: String,
    /// First topic level.
    pub prefix: String,
    /// MQTT client id; defaults to `clefd-<device_id>`.
    pub client_id: Option<String>,
    /// Keep-alive interval in seconds.
    pub keep_alive_s: u64,
    /// Username for the broker, if it wants one.
    pub username: Option<String>,
    /// File holding the password (never put passwords in the config itself).
    pub password_file: Option<PathBuf>,
    /// How long shutdown waits for the broker to acknowledge outstanding events.
    pub flush_timeout_s: f64,
    /// Longest wait between reconnection attempts.
    pub reconnect_max_s: f64,
    /// `/healthz` says delivery is stuck when events have waited this long with no
    /// acknowledgement from the broker (however the connection comes and goes).
    pub delivery_stuck_s: f64,
    /// Protocol version: "3.1.1" (default) or "5".
    pub protocol: String,
    /// MQTT 5: seconds an event stays deliverable, counted from its capture (message
    /// expiry); 0 (default): it waits for a persistent subscriber as long as its session.
    pub event_expiry_s: f64,
    /// `mqtts://`: CA certificate (PEM) that signed the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// `mqtts://`: client certificate (PEM), for brokers that require one.
    pub client_cert: Option<PathBuf>,
    /// `mqtts://`: the client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
    /// Seconds between `{prefix}/{device}/stats` messages; 0 turns them off.
    pub stats_interval_s: f64,
    /// Announce each camera to Home Assistant (MQTT discovery).
    pub home_assistant: bool,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
    /// Where unacknowledged events wait (default: `<state_dir>/spool`).
    pub spool_dir: Option<PathBuf>,
    /// Most disk the spool may use; beyond it the oldest events are dropped (counted).
    pub spool_max_mb: f64,
    /// Take commands on `{prefix}/{device}/set` and `{prefix}/{device}/{camera}/set`
    /// (enable or disable a camera, its fps cap, score threshold, smallest face).
    pub control: bool,
    /// Keep what was set over MQTT across restarts (in `<state_dir>/control.json`).
    pub control_persist: bool,
}

/// Event lifecycle tuning.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct EventsConfig {
    /// Frames a track must be seen before its `new` event.
    pub min_track_age: u32,
    /// An `update` is sent at least this often while a track lives.
    pub heartbeat_s: f64,
    /// Weight of the newest frame in the exponential moving average of scores (0..1].
    pub smoothing: f32,
    /// A new label must beat the current one by this margin to change the emotion.
    pub hysteresis: f32,
    /// The retained `current` summary says `none` after this many seconds without faces.
    pub empty_after_s: f64,
}

/// Tracker tuning.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct TrackerConfig {
    /// Minimum box overlap (IoU) to continue a track.
    pub iou_threshold: f32,
    /// Frames a track may go unseen before it ends.
    pub max_missed: u32,
}

/// Snapshots: a small JPEG of each face when its track begins. Off unless `mqtt` or
/// `dir` is set.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct SnapshotsConfig {
    /// Publish it retained on `{prefix}/{device}/{camera}/snapshot`.
    pub mqtt: bool,
    /// Write it into this folder as `{track_uid}.jpg`.
    pub dir: Option<PathBuf>,
    /// Pictures the folder keeps (the oldest go first).
    pub max_files: usize,
    /// The longest side of a picture, in pixels.
    pub size_px: u32,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        SnapshotsConfig { mqtt: false, dir: None, max_files: 500, size_px: 160 }
    }
}

/// The day at a glance: events kept in `state_dir` for the history page and
/// `/api/events`. Off by default: it keeps personal data (who showed what, when) on disk,
/// which a user should choose to do.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct HistoryConfig {
    /// Keep events at all.
    pub enabled: bool,
    /// Hours an event is kept (fractions allowed); older ones are deleted.
    pub retain_h: f64,
    /// Most megabytes the history's file may use; the oldest events go first.
    pub max_mb: f64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { enabled: false, retain_h: 24.0, max_mb: 256.0 }
    }
}

/// The HTTP endpoints.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct HttpConfig {
    /// `address:port` to serve `/metrics` and `/healthz` on; empty turns them off.
    pub listen: String,
    /// Blur each face in the live view and `latest.jpg` before it is encoded (the analysis
    /// is unchanged): people on the picture cannot be recognised by whoever looks.
    pub blur_faces: bool,
    /// Ask for credentials on every route but `/healthz` (off when absent).
    pub auth: Option<HttpAuthConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "127.0.0.1:9857".into(), blur_faces: false, auth: None }
    }
}

/// `[http.auth]`: where the credentials are, in a file so that they stay out of the
/// config (set exactly one).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct HttpAuthConfig {
    /// A file holding a token: clients send `Authorization: Bearer <token>`.
    pub token_file: Option<PathBuf>,
    /// A file holding one line `user:password`: clients (browsers too) use HTTP Basic.
    pub basic_file: Option<PathBuf>,
}

/// Camera restart policy.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct SupervisorConfig {
    /// First delay before restarting a failed camera.
    pub backoff_initial_s: f64,
    /// Longest delay between restarts (the backoff doubles up to this).
    pub backoff_max_s: f64,
    /// A connected camera that delivers no frame for this long is restarted.
    pub stall_timeout_s: f64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig { backoff_initial_s: 1.0, backoff_max_s: 30.0, stall_timeout_s: 10.0 }
    }
}

/// One camera.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct CameraConfig {
    /// `rtsp://`, `file:///abs/path` (or `file:rel/path`, relative to the config file),
    /// `test://`, `v4l2:///dev/videoN`, `csi://N`, `http(s)://`.
    pub uri: String,
    /// A disabled camera is validated but not started.
    pub enabled: bool,
    /// `file://` only: start again at the end.
    #[serde(rename = "loop")]
    pub looping: bool,
    /// `file://` only: pace frames at the stream's rate like a live camera (default), or
    /// analyse every frame as fast as inference allows (decoding waits for inference).
    pub realtime: bool,
    /// Working width: wider frames are scaled down to it (height follows the aspect
    /// ratio); narrower ones are kept as they come, since upscaling adds nothing.
    pub width: u32,
    /// This camera's bundle, if not the engine default (relative to the config file).
    pub bundle: Option<PathBuf>,
    /// Analyse at most this many frames per second (extra frames are dropped early).
    pub fps: Option<f64>,
    /// `rtsp://` only: `tcp` (default) or `udp`.
    pub transport: String,
    /// `rtsp://` only: jitter-buffer latency in milliseconds.
    pub latency_ms: u32,
    /// Threads of a software video decoder (0: one per core). One is enough for the
    /// frame rates a camera gives and leaves the cores to inference (measured: +6 % fps,
    /// −13 MB with four cameras on two cores).
    pub decoder_threads: u32,
    /// Which software decoder H.264 gets when no hardware decoder is installed: `auto`
    /// (OpenH264 for the profiles it declares — about 35 MB less memory than libav, which
    /// loads FFmpeg and everything FFmpeg links — and libav for the rest) or `libav`
    /// (about twice as fast on High-profile streams, for cameras at high resolutions), or
    /// `software` (never a hardware decoder, nor `nvvidconv` after it: the opt-out for a
    /// hardware decoder that misbehaves on this camera).
    pub decoder: String,
    /// `rtsp://` only: file holding the password for the user named in the URI.
    pub password_file: Option<PathBuf>,
    /// `cameras.d` files only: the camera's name (default: the file name without `.toml`).
    pub name: Option<String>,
    /// Faces the detector scores below this are ignored (on top of the bundle's threshold).
    pub score_threshold: Option<f32>,
    /// Faces smaller than this many pixels (the box's shorter side, at the working width)
    /// are ignored.
    pub min_face_px: Option<f32>,
    /// Areas to watch, normalised: `[x, y, w, h]` rectangles or `[[x, y], ...]` polygons.
    /// When set, a face whose centre is in none of them makes no event.
    pub zones: Vec<Area>,
    /// Areas whose faces never make events (a TV, a poster), as `zones`.
    pub ignore: Vec<Area>,
    /// Run the face detector on every N-th frame; in between, faces stay where they were
    /// last found and the tracker follows them (DeepStream's `interval` + 1).
    pub detect_every: u32,
    /// Classify a face again at least every N frames; in between, a face that has not
    /// moved or grown much keeps its last classification (1: every frame).
    pub classify_every: u32,
    /// Take snapshots of this camera's faces when `[snapshots]` is on.
    pub snapshots: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            device_id: None,
            state_dir: PathBuf::from("/var/lib/clefd"),
            log_level: "info".into(),
            watch_config: false,
            engine: EngineConfig::default(),
            mqtt: MqttConfig::default(),
            events: EventsConfig::default(),
            tracker: TrackerConfig::default(),
            supervisor: SupervisorConfig::default(),
            http: HttpConfig::default(),
            snapshots: SnapshotsConfig::default(),
            history: HistoryConfig::default(),
            cameras: BTreeMap::new(),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            onnxruntime: None,
            bundle: PathBuf::from("/usr/share/clefd/engines/face-fer2013"),
            lanes: 0,
            threads: 0,
            providers: vec!["tensorrt".into(), "cuda".into(), "cpu".into()],
            require: "any".into(),
            cache_dir: None,
            precision: "fp16".into(),
            int8_calibration_table: None,
            dla_core: None,
            batching: true,
            batch_max: 16,
            batch_timeout_ms: 5.0,
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            prefix: "clefd".into(),
            client_id: None,
            keep_alive_s: 30,
            username: None,
            password_file: None,
            flush_timeout_s: 5.0,
            delivery_stuck_s: 60.0,
            reconnect_max_s: 30.0,
            protocol: "3.1.1".into(),
            event_expiry_s: 0.0,
            ca_file: None,
            client_cert: None,
            client_key: None,
            stats_interval_s: 60.0,
            home_assistant: false,
            discovery_prefix: "homeassistant".into(),
            spool_dir: None,
            spool_max_mb: 64.0,
            control: false,
            control_persist: false,
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { min_track_age: 3, heartbeat_s: 10.0, smoothing: 0.5, hysteresis: 0.1, empty_after_s: 10.0 }
    }
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig { iou_threshold: 0.3, max_missed: 10 }
    }
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            uri: String::new(),
            enabled: true,
            looping: false,
            realtime: true,
            width: super::DEFAULT_WIDTH,
            bundle: None,
            fps: None,
            transport: "tcp".into(),
            latency_ms: 200,
            decoder_threads: 1,
            decoder: "auto".into(),
            password_file: None,
            name: None,
            score_threshold: None,
            min_face_px: None,
            zones: Vec::new(),
            ignore: Vec::new(),
            detect_every: 1,
            classify_every: 1,
            snapshots: true,
        }
    }
}
