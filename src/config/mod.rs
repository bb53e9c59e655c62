//! The daemon's configuration: what a user writes, how it is layered, and how it is
//! checked before anything starts.
//!
//! Layers, later ones winning: the main TOML file (`/etc/clefd/clefd.toml`), one file per
//! camera in `cameras.d/*.toml` beside it, then environment variables
//! `CLEFD__SECTION__KEY` (e.g. `CLEFD__MQTT__URL`). Loading never stops at the first
//! mistake: every problem is collected as a [`Problem`] naming the file, the key and the
//! reason, so `clefd check-config` can list them all at once.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod validate;

use validate::validate;

/// Environment variables with this prefix (then `__`) override config keys.
pub const ENV_PREFIX: &str = "CLEFD";

/// The whole configuration, after layering and validation.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    /// Cameras by name (the name appears in topics).
    pub cameras: BTreeMap<String, CameraConfig>,
}

/// Where the models come from and how they run.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    /// Protocol version: "3.1.1" (default) or "5".
    pub protocol: String,
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
}

/// Event lifecycle tuning.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct TrackerConfig {
    /// Minimum box overlap (IoU) to continue a track.
    pub iou_threshold: f32,
    /// Frames a track may go unseen before it ends.
    pub max_missed: u32,
}

/// The HTTP endpoints.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct HttpConfig {
    /// `address:port` to serve `/metrics` and `/healthz` on; empty turns them off.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "127.0.0.1:9857".into() }
    }
}

/// Camera restart policy.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    /// (about twice as fast on High-profile streams, for cameras at high resolutions).
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
    pub zones: Vec<crate::detect::filter::Area>,
    /// Areas whose faces never make events (a TV, a poster), as `zones`.
    pub ignore: Vec<crate::detect::filter::Area>,
}

impl Config {
    /// The bundle folders the enabled cameras use (the default bundle when no camera is
    /// enabled), each once: what `check-config`, `doctor` and `build-engines` load.
    pub fn bundles_in_use(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = self
            .cameras
            .values()
            .filter(|c| c.enabled)
            .map(|c| c.bundle.as_deref().unwrap_or(&self.engine.bundle))
            .collect();
        if dirs.is_empty() {
            dirs.push(&self.engine.bundle);
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

impl CameraConfig {
    /// Which faces this camera cares about.
    pub fn face_filter(&self) -> crate::detect::filter::FaceFilter {
        crate::detect::filter::FaceFilter {
            score_threshold: self.score_threshold,
            min_face_px: self.min_face_px,
            zones: self.zones.clone(),
            ignore: self.ignore.clone(),
        }
    }
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
            reconnect_max_s: 30.0,
            protocol: "3.1.1".into(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            stats_interval_s: 60.0,
            home_assistant: false,
            discovery_prefix: "homeassistant".into(),
            spool_dir: None,
            spool_max_mb: 64.0,
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
            width: 640,
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
        }
    }
}

/// One thing wrong with the configuration, precise enough to fix without guessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or `environment`) the offending value came from.
    pub file: String,
    /// The dotted key, or `-` when the whole file is at fault.
    pub key: String,
    /// What is wrong and, where possible, what to do.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.key, self.reason)
    }
}

/// All problems found while loading; never empty.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} configuration problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<Problem>);

/// A validated configuration, with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged, checked values; relative paths already resolved.
    pub config: Config,
    /// The device id actually in use (config or hostname).
    pub device_id: String,
    /// Which file each camera came from, for error messages at run time.
    pub camera_files: BTreeMap<String, PathBuf>,
}

struct Collector {
    problems: Vec<Problem>,
}

impl Collector {
    /// Records a problem; a key whose value came from a `CLEFD__…` variable is blamed on
    /// the environment, not on the file.
    fn push(&mut self, file: impl fmt::Display, key: impl Into<String>, reason: impl Into<String>) {
        let key = key.into();
        let file = origin_of(&key, &file.to_string());
        self.problems.push(Problem { file, key, reason: reason.into() });
    }
}

/// Most cameras one daemon runs (each has its own GStreamer pipeline and threads).
pub const MAX_CAMERAS: usize = 128;

/// Reads a config file as text, saying exactly why it cannot be (missing, a folder, a
/// pipe or device, no permission) instead of a parser's guess.
fn read_text(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "cannot read the config file: it does not exist (pass --config PATH)".into(),
        _ => format!("cannot read the config file: {e}"),
    })?;
    if meta.is_dir() {
        return Err("this is a folder, not a config file".into());
    }
    if !meta.is_file() {
        return Err("this is not a regular file (a pipe or a device?): point --config at a TOML file".into());
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read the config file: {e}"))
}

/// Type mistakes the layering would quietly coerce (`fps = "10"`, `width = 640.7`,
/// `enabled = "no"`): the file is read again, strictly, as TOML.
fn strict_types<T: for<'de> Deserialize<'de>>(text: &str, file: &str, c: &mut Collector) {
    if let Err(e) = toml::from_str::<T>(text) {
        let msg = e.message().to_string();
        if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
            let at = e.span().map_or_else(
                || "-".to_string(),
                |span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.lines().count().max(1);
                    let key = before.rsplit('\n').next().and_then(|l| l.split('=').next()).map(str::trim);
                    match key.filter(|k| !k.is_empty()) {
                        Some(k) => format!("{k} (line {line})"),
                        None => format!("line {line}"),
                    }
                },
            );
            c.push(file, at, format!("{msg} (write the value as its type: numbers and true/false without quotes)"));
        }
    }
}

/// The cameras a user may address from the environment: the main file's tables and the
/// `cameras.d` files (by name, which is the file name unless a `name` key says otherwise).
fn camera_names(text: &str, path: &Path) -> Vec<String> {
    let mut names: Vec<String> = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("cameras").and_then(|c| c.as_table()).map(|c| c.keys().cloned().collect()))
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir(path.parent().unwrap_or(Path::new(".")).join("cameras.d")) {
        names.extend(
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())),
        );
    }
    names
}

/// `CLEFD__…` variables, with camera names put right: a variable name cannot hold `-`,
/// so `CLEFD__CAMERAS__FRONT_DOOR__FPS` addresses the camera `front-door` when there is
/// one (and no `front_door`).
fn environment(cameras: &[String]) -> config::Map<String, String> {
    let prefix = format!("{ENV_PREFIX}__CAMERAS__");
    std::env::vars()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .map(|(k, v)| {
            let Some((name, key)) = k.strip_prefix(&prefix).and_then(|rest| rest.split_once("__")) else {
                return (k, v);
            };
            let wanted = name.to_lowercase();
            let exact = cameras.iter().any(|c| c.to_lowercase() == wanted);
            match cameras.iter().find(|c| !exact && c.to_lowercase().replace('-', "_") == wanted) {
                Some(camera) => (format!("{prefix}{}__{key}", camera.to_uppercase()), v),
                None => (k, v),
            }
        })
        .collect()
}

/// Loads, layers and validates the configuration rooted at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let mut c = Collector { problems: Vec::new() };
    let main_file = path.display().to_string();
    let text = match read_text(path) {
        Ok(t) => t,
        Err(reason) => {
            c.push(&main_file, "-", reason);
            return Err(ConfigErrors(c.problems));
        }
    };
    let env = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("engine.providers")
        .source(Some(environment(&camera_names(&text, path))));
    let layered = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(env)
        .build();
    let mut config: Config = match layered {
        Ok(layered) => match deserialize(&layered, &main_file, &mut c) {
            Some(config) => config,
            // Checking the defaults in its place would only add false problems.
            None => return Err(ConfigErrors(c.problems)),
        },
        Err(e) => {
            c.push(&main_file, "-", format!("not valid TOML: {}", one_line(&e.to_string())));
            return Err(ConfigErrors(c.problems));
        }
    };
    strict_types::<Config>(&text, &main_file, &mut c);
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut camera_files: BTreeMap<String, PathBuf> =
        config.cameras.keys().map(|k| (k.clone(), path.to_path_buf())).collect();
    load_drop_ins(&base.join("cameras.d"), &mut config, &mut camera_files, &mut c);
    resolve_paths(&mut config, &base);
    validate(&config, &camera_files, path, &mut c);
    let device_id = config.device_id.clone().unwrap_or_else(default_device_id);
    if c.problems.is_empty() { Ok(Loaded { config, device_id, camera_files }) } else { Err(ConfigErrors(c.problems)) }
}

/// What the configuration is read from, as names, sizes and modification times: a change
/// here means the files changed (for `watch_config`).
pub fn sources_fingerprint(path: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let stat = |p: PathBuf| {
        let meta = std::fs::metadata(&p).ok();
        let (len, modified) = meta.map_or((0, None), |m| (m.len(), m.modified().ok()));
        (p, len, modified)
    };
    let mut out = vec![stat(path.to_path_buf())];
    let drop_ins = path.parent().unwrap_or(Path::new(".")).join("cameras.d");
    if let Ok(entries) = std::fs::read_dir(&drop_ins) {
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        out.extend(files.into_iter().map(stat));
    }
    out
}

/// Parser messages span several lines (with a source snippet); problems are one line each.
fn one_line(msg: &str) -> String {
    msg.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "|").collect::<Vec<_>>().join(" ")
}

/// The hostname, or `clefd` if it cannot be read.
fn default_device_id() -> String {
    hostname::get().ok().and_then(|h| h.into_string().ok()).filter(|h| !h.is_empty()).unwrap_or_else(|| "clefd".into())
}

/// Deserializes one layered source, reporting unknown keys and type errors by origin.
fn deserialize<T: for<'de> Deserialize<'de>>(layered: &config::Config, file: &str, c: &mut Collector) -> Option<T> {
    let mut unknown = Vec::new();
    let result: Result<T, _> = serde_ignored::deserialize(layered.clone(), |p| unknown.push(p.to_string()));
    for key in unknown {
        let hint = match key.rsplit('.').next().unwrap_or("") {
            "user" | "username" if key.starts_with("cameras.") || !key.contains('.') => {
                "unknown key: a camera's user name goes in its uri (rtsp://USER@host/...)"
            }
            "password" | "pass" if key.starts_with("mqtt.") => {
                "unknown key: put the broker's password in a file and name it with mqtt.password_file"
            }
            "password" | "pass" => "unknown key: put the camera's password in a file and name it with password_file",
            "user" => "unknown key: did you mean username?",
            _ => "unknown key (misspelt? see config/clefd.toml for every key)",
        };
        c.push(origin_of(&key, file), key, hint);
    }
    match result {
        Ok(v) => Some(v),
        Err(config::ConfigError::Type { unexpected, expected, key, .. }) => {
            let key = key.unwrap_or_else(|| "-".into());
            c.push(origin_of(&key, file), key, format!("expected {expected}, found {unexpected}"));
            None
        }
        Err(e) => {
            c.push(file, "-", e.to_string());
            None
        }
    }
}

/// Which layer a key's value came from: the environment when a `CLEFD__…` variable
/// names it, else the file.
fn origin_of(key: &str, file: &str) -> String {
    let var = format!("{ENV_PREFIX}__{}", key.replace('.', "__").to_uppercase()).replace('-', "_");
    if std::env::vars_os().any(|(k, _)| k.to_string_lossy().to_uppercase().replace('-', "_") == var) {
        "environment".into()
    } else {
        file.to_string()
    }
}

fn load_drop_ins(dir: &Path, config: &mut Config, files: &mut BTreeMap<String, PathBuf>, c: &mut Collector) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    // Files that look meant as camera files but would be skipped: say so.
    for p in paths.iter().filter(|p| {
        p.extension().is_some_and(|x| matches!(x.to_str(), Some("yml" | "yaml" | "json" | "conf" | "ini" | "cfg")))
    }) {
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        c.push(p.display(), "-", format!("only *.toml files are read here: rename it to {stem}.toml (in TOML)"));
    }
    paths.retain(|p| p.extension().is_some_and(|x| x == "toml"));
    if paths.len() > MAX_CAMERAS {
        c.push(
            dir.display(),
            "-",
            format!("{} camera files: one clefd runs at most {MAX_CAMERAS} cameras", paths.len()),
        );
        return;
    }
    for p in paths {
        let file = p.display().to_string();
        match read_text(&p) {
            Ok(text) => strict_types::<CameraConfig>(&text, &file, c),
            Err(reason) => {
                c.push(&file, "-", reason);
                continue;
            }
        }
        let layered = match config::Config::builder()
            .add_source(config::File::from(p.as_path()).format(config::FileFormat::Toml))
            .build()
        {
            Ok(l) => l,
            Err(e) => {
                c.push(&file, "-", format!("not valid TOML: {}", one_line(&e.to_string())));
                continue;
            }
        };
        let Some(camera) = deserialize::<CameraConfig>(&layered, &file, c) else {
            continue;
        };
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let name = camera.name.clone().unwrap_or(stem);
        if let Some(previous) = files.get(&name) {
            c.push(
                &file,
                "name",
                format!("camera '{name}' is already defined in {}; camera names must be unique", previous.display()),
            );
            continue;
        }
        files.insert(name.clone(), p.clone());
        config.cameras.insert(name, camera);
    }
}

fn resolve_paths(config: &mut Config, base: &Path) {
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    resolve(&mut config.engine.bundle);
    resolve(&mut config.state_dir);
    if let Some(p) = config.engine.onnxruntime.as_mut() {
        resolve(p);
    }
    if let Some(p) = config.engine.cache_dir.as_mut() {
        resolve(p);
    }
    if let Some(p) = config.engine.int8_calibration_table.as_mut() {
        resolve(p);
    }
    if let Some(p) = config.mqtt.password_file.as_mut() {
        resolve(p);
    }
    for p in [
        &mut config.mqtt.spool_dir,
        &mut config.mqtt.ca_file,
        &mut config.mqtt.client_cert,
        &mut config.mqtt.client_key,
    ]
    .into_iter()
    .flatten()
    {
        resolve(p);
    }
    for cam in config.cameras.values_mut() {
        if let Some(p) = cam.bundle.as_mut() {
            resolve(p);
        }
        if let Some(p) = cam.password_file.as_mut() {
            resolve(p);
        }
        // `file:relative/clip.mp4` is relative to the config file's folder.
        if let Some(rest) = cam.uri.strip_prefix("file:").filter(|r| !r.starts_with('/')) {
            let abs = base.join(rest);
            let abs = abs.canonicalize().unwrap_or(abs);
            cam.uri = format!("file://{}", abs.display());
        }
    }
}
