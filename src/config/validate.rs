//! Turns the configuration as written into [`Settings`]: ranges, names that become MQTT
//! topic levels, URIs, enums, files and folders that must exist. Every problem is
//! collected with its file and key, so one `clefd check-config` lists them all; the typed
//! values are only handed out when there is none.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use std::time::Duration;

use super::file::{CameraConfig, Config, EngineConfig, MqttConfig};
use super::settings::*;
use super::{BrokerUrl, Collector, DecoderChoice, Precision, Protocol, Provider, Require, SourceSpec, Transport};

fn in_range<T: PartialOrd + fmt::Display + Copy>(c: &mut Collector, file: &str, key: &str, v: T, lo: T, hi: T) {
    if !(v >= lo && v <= hi) {
        c.push(file, key, format!("{v} is out of range: must be between {lo} and {hi}"));
    }
}

/// Longest name that becomes a topic level (camera, device, prefix): topics stay far below
/// the broker's packet limits, and names stay readable.
pub const MAX_NAME: usize = 64;

/// A name that is safe as one MQTT topic level.
fn topic_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
}

/// Why `prefix` cannot be Home Assistant's discovery prefix (levels without wildcards).
fn discovery_prefix_problem(prefix: &str) -> Option<String> {
    if prefix.is_empty() || prefix.len() > 128 {
        return Some("must be 1 to 128 characters (Home Assistant's default is homeassistant)".into());
    }
    if prefix.split('/').any(|level| level.is_empty() || level.contains(['+', '#']) || level.contains(char::is_control))
    {
        return Some(format!(
            "'{prefix}' is not a topic prefix: no '+' or '#', no empty levels (Home Assistant's default is homeassistant)"
        ));
    }
    None
}

/// Why `level` is not a log filter clefd understands (a level, or `target=level`, comma
/// separated). A bare unknown word would silence every log line.
fn log_level_problem(level: &str) -> Option<String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = level.split(',').map(str::trim).find(|part| {
        let lvl = part.rsplit_once('=').map_or(*part, |(_, l)| l);
        !LEVELS.contains(&lvl.to_ascii_lowercase().as_str())
    })?;
    Some(format!(
        "'{bad}' is not a log level: use error, warn, info, debug or trace (or target=level, comma separated)"
    ))
}

/// Why a camera URI would be misread: a `#` or `?` in its user name or password cuts the
/// URI there (the rest becomes a fragment or query, and the host is garbage).
fn uri_userinfo_problem(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let at = rest.rfind('@')?;
    rest[..at].contains(['#', '?']).then(|| {
        "a '#' or '?' in the user name or password must be written %23 or %3F, or put the password in password_file"
            .to_string()
    })
}

/// A number of seconds as a duration; out-of-range values are reported by `in_range`.
fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or_default()
}

/// Records a parse failure under `key`; the value when there is none.
fn parsed<T>(c: &mut Collector, file: &str, key: &str, result: Result<T, String>) -> Option<T> {
    result.map_err(|reason| c.push(file, key, reason)).ok()
}

/// Checks `raw` (cameras from `files`, the rest from `main`) and types it. The settings
/// come back only when every value could be typed; the caller also checks that no
/// problem was recorded.
pub(super) fn validate(
    raw: Config,
    files: BTreeMap<String, PathBuf>,
    main: &Path,
    c: &mut Collector,
) -> Option<Settings> {
    let m = main.display().to_string();
    check_names(&raw, &m, c);
    let device_id = raw.device_id.clone().unwrap_or_else(super::load::default_device_id);
    let engine = engine(&raw.engine, &raw.state_dir, &m, c);
    let mqtt = mqtt(&raw.mqtt, &raw.state_dir, &device_id, &m, c);
    let (events, tracker, supervisor) = tuning(&raw, &m, c);
    let http = http(&raw.http, &m, c);
    let snapshots = snapshots(&raw.snapshots, &m, c);
    let history = history(&raw.history, &raw.state_dir, &m, c);
    let enabled = raw.cameras.values().filter(|cam| cam.enabled).count();
    if enabled > super::MAX_CAMERAS {
        c.push(&m, "cameras", format!("{enabled} cameras enabled: one clefd runs at most {}", super::MAX_CAMERAS));
    }
    if raw.cameras.is_empty() || raw.cameras.values().any(|cam| cam.bundle.is_none()) {
        bundle_exists(c, &m, "engine.bundle", &raw.engine.bundle);
    }
    let mut cameras = BTreeMap::new();
    for (name, cam) in &raw.cameras {
        let from_main = files.get(name).is_none_or(|f| f == main);
        let file = files.get(name).map(|p| p.display().to_string()).unwrap_or_else(|| m.clone());
        let place = CameraPlace { name, file: &file, from_main };
        if let Some(settings) = camera(&place, cam, &raw.engine.bundle, c) {
            cameras.insert(name.clone(), settings);
        }
    }
    Some(Settings {
        device_id,
        state_dir: raw.state_dir,
        log_level: raw.log_level,
        watch_config: raw.watch_config,
        engine: engine?,
        mqtt: mqtt?,
        events,
        tracker,
        supervisor,
        http: http?,
        snapshots,
        history,
        cameras,
        camera_files: files,
    })
}

/// The names that become topic levels, and the log filter.
fn check_names(raw: &Config, m: &str, c: &mut Collector) {
    if let Some(id) = &raw.device_id {
        if !topic_safe(id) {
            c.push(
                m,
                "device_id",
                format!("'{id}' cannot be an MQTT topic level: use up to {MAX_NAME} letters, digits, '-', '_' or '.'"),
            );
        }
    }
    if let Some(reason) = log_level_problem(&raw.log_level) {
        c.push(m, "log_level", reason);
    }
    if !topic_safe(&raw.mqtt.prefix) {
        c.push(
            m,
            "mqtt.prefix",
            format!("'{}' cannot be an MQTT topic level: use letters, digits, '-', '_' or '.'", raw.mqtt.prefix),
        );
    }
}

/// `[snapshots]`: on when they go somewhere.
fn snapshots(q: &super::file::SnapshotsConfig, m: &str, c: &mut Collector) -> Option<SnapshotSettings> {
    in_range(c, m, "snapshots.size_px", q.size_px, 32, 1024);
    in_range(c, m, "snapshots.max_files", q.max_files, 1, 1_000_000);
    let dir = q.dir.clone().filter(|d| !d.as_os_str().is_empty());
    (q.mqtt || dir.is_some()).then_some(SnapshotSettings {
        mqtt: q.mqtt,
        dir,
        max_files: q.max_files,
        size_px: q.size_px,
    })
}

/// `[history]`: on when enabled, in `state_dir`, bounded in age and size.
fn history(q: &super::file::HistoryConfig, state_dir: &Path, m: &str, c: &mut Collector) -> Option<HistorySettings> {
    in_range(c, m, "history.retain_h", q.retain_h, 0.001, 24.0 * 366.0);
    in_range(c, m, "history.max_mb", q.max_mb, 0.25, 1_048_576.0);
    q.enabled.then(|| HistorySettings {
        path: state_dir.join(super::HISTORY_FILE),
        retain: Duration::try_from_secs_f64(q.retain_h * 3600.0).unwrap_or_default(),
        max_bytes: (q.max_mb * 1024.0 * 1024.0) as u64,
    })
}

/// `[http]`: an address to listen on (or nothing), and the privacy settings.
fn http(h: &super::file::HttpConfig, m: &str, c: &mut Collector) -> Option<Option<HttpSettings>> {
    let auth = h.auth.as_ref().and_then(|a| http_auth(a, m, c));
    if h.listen.is_empty() {
        return Some(None);
    }
    let listen = &h.listen;
    let reason = format!("'{listen}' is not address:port (e.g. 127.0.0.1:9857); use \"\" to turn HTTP off");
    let listen = parsed(c, m, "http.listen", listen.parse().map_err(|_| reason))?;
    Some(Some(HttpSettings { listen, blur_faces: h.blur_faces, auth }))
}

/// `[http.auth]`: exactly one credentials file, and one that exists.
fn http_auth(a: &super::file::HttpAuthConfig, m: &str, c: &mut Collector) -> Option<HttpAuth> {
    let auth = match (&a.token_file, &a.basic_file) {
        (Some(token), None) => HttpAuth::Token(token.clone()),
        (None, Some(basic)) => HttpAuth::Basic(basic.clone()),
        _ => {
            c.push(m, "http.auth", "set exactly one of token_file (bearer token) and basic_file (user:password)");
            return None;
        }
    };
    let (key, file) = match &auth {
        HttpAuth::Token(f) => ("http.auth.token_file", f),
        HttpAuth::Basic(f) => ("http.auth.basic_file", f),
    };
    if !file.is_file() {
        c.push(m, key, format!("{} does not exist", file.display()));
        return None;
    }
    Some(auth)
}

/// `[engine]`.
fn engine(e: &EngineConfig, state_dir: &Path, m: &str, c: &mut Collector) -> Option<EngineSettings> {
    in_range(c, m, "engine.batch_max", e.batch_max, 1, 256);
    in_range(c, m, "engine.batch_timeout_ms", e.batch_timeout_ms, 0.0, 1000.0);
    in_range(c, m, "engine.threads", e.threads, 0, 256);
    in_range(c, m, "engine.lanes", e.lanes, 0, 64);
    let providers: Vec<Provider> = (e.providers.iter().enumerate())
        .filter_map(|(i, p)| parsed(c, m, &format!("engine.providers[{i}]"), Provider::parse(p)))
        .collect();
    let require = parsed(c, m, "engine.require", Require::parse(&e.require));
    if let Some(r) = require.filter(|r| *r != Require::Any && !providers.iter().any(|p| r.accepts(p.as_str()))) {
        c.push(
            m,
            "engine.require",
            format!(
                "\"{}\" needs a provider that meets it in engine.providers, which lists only {:?}",
                r.as_str(),
                e.providers
            ),
        );
    }
    let precision =
        parsed(c, m, "engine.precision", Precision::parse(&e.precision, e.int8_calibration_table.as_deref()));
    if let Some(p) = e.int8_calibration_table.as_ref().filter(|p| !p.is_file()) {
        c.push(m, "engine.int8_calibration_table", format!("{} does not exist", p.display()));
    }
    if let Some(core) = e.dla_core {
        in_range(c, m, "engine.dla_core", core, 0, 1);
    }
    if let Some(p) = e.onnxruntime.as_ref().filter(|p| !p.is_file()) {
        c.push(
            m,
            "engine.onnxruntime",
            format!("{} does not exist (run `make setup` or point it at libonnxruntime.so)", p.display()),
        );
    }
    Some(EngineSettings {
        onnxruntime: e.onnxruntime.clone(),
        bundle: e.bundle.clone(),
        lanes: e.lanes,
        threads: e.threads,
        providers,
        require: require?,
        cache_dir: e.cache_dir.clone().unwrap_or_else(|| state_dir.join("engine-cache")),
        precision: precision?,
        dla_core: e.dla_core,
        batching: e.batching,
        batch_max: e.batch_max,
        batch_timeout: secs(e.batch_timeout_ms / 1000.0),
    })
}

/// `[mqtt]`.
fn mqtt(q: &MqttConfig, state_dir: &Path, device_id: &str, m: &str, c: &mut Collector) -> Option<MqttSettings> {
    let url = parsed(c, m, "mqtt.url", BrokerUrl::parse(&q.url));
    if url.is_some() && url::Url::parse(&q.url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some()) {
        c.push(
            m,
            "mqtt.url",
            "a user name or password in the URL is not used: set mqtt.username, and the password in mqtt.password_file",
        );
    }
    if let Some(reason) = discovery_prefix_problem(&q.discovery_prefix) {
        c.push(m, "mqtt.discovery_prefix", reason);
    }
    in_range(c, m, "mqtt.keep_alive_s", q.keep_alive_s, 5, 3600);
    in_range(c, m, "mqtt.flush_timeout_s", q.flush_timeout_s, 0.0, 600.0);
    if q.stats_interval_s != 0.0 {
        in_range(c, m, "mqtt.stats_interval_s", q.stats_interval_s, 1.0, 86400.0);
    }
    in_range(c, m, "mqtt.reconnect_max_s", q.reconnect_max_s, 0.5, 3600.0);
    in_range(c, m, "mqtt.delivery_stuck_s", q.delivery_stuck_s, 1.0, 86400.0);
    let protocol = parsed(c, m, "mqtt.protocol", Protocol::parse(&q.protocol));
    if q.event_expiry_s != 0.0 {
        in_range(c, m, "mqtt.event_expiry_s", q.event_expiry_s, 1.0, f64::from(u32::MAX));
        if protocol.is_some_and(|p| p != Protocol::V5) {
            c.push(m, "mqtt.event_expiry_s", "message expiry is an MQTT 5 property: set mqtt.protocol = \"5\"");
        }
    }
    in_range(c, m, "mqtt.spool_max_mb", q.spool_max_mb, 0.1, 1_000_000.0);
    let tls = tls(q, url.as_ref().is_some_and(|u| u.tls), m, c);
    let connection = MqttConnection {
        url: url?,
        prefix: q.prefix.clone(),
        client_id: q.client_id.clone().unwrap_or_else(|| format!("clefd-{device_id}")),
        keep_alive: Duration::from_secs(q.keep_alive_s),
        username: q.username.clone(),
        password_file: q.password_file.clone(),
        protocol: protocol?,
        event_expiry_s: (q.event_expiry_s > 0.0).then(|| q.event_expiry_s.clamp(1.0, f64::from(u32::MAX)) as u32),
        tls,
        flush_timeout: secs(q.flush_timeout_s),
        reconnect_max: secs(q.reconnect_max_s),
        stuck_after: secs(q.delivery_stuck_s),
    };
    Some(MqttSettings {
        connection,
        stats_every: (q.stats_interval_s > 0.0).then(|| secs(q.stats_interval_s)),
        home_assistant: q.home_assistant.then(|| q.discovery_prefix.clone()),
        spool_dir: q.spool_dir.clone().unwrap_or_else(|| state_dir.join("spool")),
        spool_max_bytes: (q.spool_max_mb * 1024.0 * 1024.0) as u64,
        control: q
            .control
            .then(|| ControlSettings { persist: q.control_persist.then(|| state_dir.join(super::CONTROL_FILE)) }),
    })
}

/// The password and certificate files, and whether they fit the URL's scheme.
fn tls(q: &MqttConfig, tls: bool, m: &str, c: &mut Collector) -> Option<TlsPaths> {
    for (key, file) in [
        ("mqtt.password_file", &q.password_file),
        ("mqtt.ca_file", &q.ca_file),
        ("mqtt.client_cert", &q.client_cert),
        ("mqtt.client_key", &q.client_key),
    ] {
        if let Some(p) = file.as_ref().filter(|p| !p.is_file()) {
            c.push(m, key, format!("{} does not exist", p.display()));
        }
    }
    if q.client_cert.is_some() != q.client_key.is_some() {
        c.push(m, "mqtt.client_cert", "client_cert and client_key go together: set both or neither");
    }
    if tls && q.ca_file.is_none() {
        c.push(m, "mqtt.ca_file", "mqtt.url is mqtts://: set ca_file to the CA that signed the broker's certificate");
    }
    if !tls && (q.ca_file.is_some() || q.client_cert.is_some()) {
        c.push(m, "mqtt.ca_file", "TLS files are set but mqtt.url is not mqtts://");
    }
    let client = q.client_cert.clone().zip(q.client_key.clone());
    q.ca_file.clone().filter(|_| tls).map(|ca_file| TlsPaths { ca_file, client })
}

/// `[events]`, `[tracker]` and `[supervisor]`.
fn tuning(raw: &Config, m: &str, c: &mut Collector) -> (EventSettings, TrackerSettings, SupervisorSettings) {
    let (e, t, s) = (&raw.events, &raw.tracker, &raw.supervisor);
    in_range(c, m, "events.min_track_age", e.min_track_age, 1, 1000);
    in_range(c, m, "events.heartbeat_s", e.heartbeat_s, 0.1, 86400.0);
    in_range(c, m, "events.smoothing", e.smoothing, 0.01, 1.0);
    in_range(c, m, "events.hysteresis", e.hysteresis, 0.0, 0.99);
    in_range(c, m, "events.empty_after_s", e.empty_after_s, 0.0, 86400.0);
    in_range(c, m, "tracker.iou_threshold", t.iou_threshold, 0.01, 0.99);
    in_range(c, m, "tracker.max_missed", t.max_missed, 0, 1000);
    in_range(c, m, "supervisor.backoff_initial_s", s.backoff_initial_s, 0.01, 3600.0);
    in_range(c, m, "supervisor.backoff_max_s", s.backoff_max_s, s.backoff_initial_s, 86400.0);
    in_range(c, m, "supervisor.stall_timeout_s", s.stall_timeout_s, 0.5, 3600.0);
    (
        EventSettings {
            min_track_age: e.min_track_age,
            heartbeat: secs(e.heartbeat_s),
            smoothing: e.smoothing,
            hysteresis: e.hysteresis,
            empty_after: secs(e.empty_after_s),
        },
        TrackerSettings { iou_threshold: t.iou_threshold, max_missed: t.max_missed },
        SupervisorSettings {
            backoff_initial: secs(s.backoff_initial_s),
            backoff_max: secs(s.backoff_max_s),
            stall_timeout: secs(s.stall_timeout_s),
        },
    )
}

/// Records a missing bundle folder, and what the caller's check finds in one that exists
/// (each folder once).
fn bundle_exists(c: &mut Collector, file: &str, key: &str, dir: &Path) {
    if c.bundles_seen.iter().any(|b| b == dir) {
        return;
    }
    c.bundles_seen.push(dir.to_path_buf());
    if !dir.is_dir() {
        c.push(file, key, format!("engine bundle folder {} does not exist", dir.display()));
    } else if let Some(p) = (c.check_bundle)(dir) {
        let reason = format!("{} (bundle named by {key} in {file})", p.reason);
        c.problems.push(super::Problem { reason, ..p });
    }
}

/// Where a camera was defined, for its problems' file and keys.
struct CameraPlace<'a> {
    name: &'a str,
    file: &'a str,
    /// In the main file, where its keys are `cameras.NAME.KEY`.
    from_main: bool,
}

impl CameraPlace<'_> {
    fn key(&self, k: &str) -> String {
        if self.from_main { format!("cameras.{}.{k}", self.name) } else { k.to_string() }
    }
}

/// One camera.
fn camera(at: &CameraPlace, cam: &CameraConfig, default_bundle: &Path, c: &mut Collector) -> Option<CameraSettings> {
    let (name, file) = (at.name, at.file);
    if at.from_main && cam.name.as_ref().is_some_and(|n| n != name) {
        c.push(
            file,
            at.key("name"),
            format!("a camera table's name is its key ('{name}'); remove `name` or rename the table"),
        );
    }
    if !topic_safe(name) {
        let shown = name.chars().take(80).collect::<String>();
        c.push(
            file,
            at.key("name"),
            format!(
                "camera name '{shown}' cannot be an MQTT topic level: use up to {MAX_NAME} letters, digits, '-', '_' or '.'"
            ),
        );
    }
    if matches!(name, "." | "..") {
        c.push(
            file,
            at.key("name"),
            format!(
                "camera name '{name}' is a path step: its live view's links (/cameras/{name}/...) would lead elsewhere"
            ),
        );
    }
    let source = camera_source(at, cam, c);
    in_range(c, file, &at.key("width"), cam.width, 32, 4096);
    in_range(c, file, &at.key("latency_ms"), cam.latency_ms, 0, 60_000);
    in_range(c, file, &at.key("decoder_threads"), cam.decoder_threads, 0, 64);
    if let Some(fps) = cam.fps {
        in_range(c, file, &at.key("fps"), fps, super::limits::FPS.0, super::limits::FPS.1);
    }
    let decoder = DecoderChoice::parse(&cam.decoder);
    if decoder.is_none() {
        c.push(
            file,
            at.key("decoder"),
            format!("'{}' is not a decoder choice: use {}", cam.decoder, DecoderChoice::ALLOWED),
        );
    }
    let transport = parsed(c, file, &at.key("transport"), Transport::parse(&cam.transport));
    if let Some(b) = &cam.bundle {
        bundle_exists(c, file, &at.key("bundle"), b);
    }
    check_faces(at, cam, c);
    Some(CameraSettings {
        source: source?,
        enabled: cam.enabled,
        looping: cam.looping,
        realtime: cam.realtime,
        width: cam.width,
        bundle: cam.bundle.clone().unwrap_or_else(|| default_bundle.to_path_buf()),
        fps: cam.fps,
        transport: transport?,
        latency_ms: cam.latency_ms,
        decoder_threads: cam.decoder_threads,
        decoder: decoder?,
        password_file: cam.password_file.clone(),
        score_threshold: cam.score_threshold,
        min_face_px: cam.min_face_px,
        zones: cam.zones.clone(),
        ignore: cam.ignore.clone(),
        detect_every: cam.detect_every,
        classify_every: cam.classify_every,
        snapshots: cam.snapshots,
    })
}

/// A camera's URI, parsed, and its password file.
fn camera_source(at: &CameraPlace, cam: &CameraConfig, c: &mut Collector) -> Option<SourceSpec> {
    let (name, file) = (at.name, at.file);
    let problem = if cam.uri.is_empty() {
        Some(format!("camera '{name}' has no uri"))
    } else {
        uri_userinfo_problem(&cam.uri).map(|reason| format!("camera '{name}': {reason}"))
    };
    if let Some(reason) = problem {
        c.push(file, at.key("uri"), reason);
        return None;
    }
    let spec = SourceSpec::parse(&cam.uri).map_err(|reason| format!("camera '{name}': {reason}"));
    let spec = parsed(c, file, &at.key("uri"), spec)?;
    if let Some(p) = &cam.password_file {
        if !p.is_file() {
            c.push(file, at.key("password_file"), format!("{} does not exist", p.display()));
        } else if let Err(reason) = spec.with_password("x") {
            c.push(file, at.key("password_file"), reason);
        }
    }
    Some(spec)
}

/// Thresholds, zones and ignored areas.
fn check_faces(at: &CameraPlace, cam: &CameraConfig, c: &mut Collector) {
    if let Some(t) = cam.score_threshold {
        in_range(c, at.file, &at.key("score_threshold"), t, super::limits::SCORE.0, super::limits::SCORE.1);
    }
    if let Some(px) = cam.min_face_px {
        in_range(c, at.file, &at.key("min_face_px"), px, super::limits::FACE_PX.0, super::limits::FACE_PX.1);
    }
    let (lo, hi) = super::limits::DETECT_EVERY;
    in_range(c, at.file, &at.key("detect_every"), cam.detect_every, lo, hi);
    let (lo, hi) = super::limits::CLASSIFY_EVERY;
    in_range(c, at.file, &at.key("classify_every"), cam.classify_every, lo, hi);
    for (what, areas) in [("zones", &cam.zones), ("ignore", &cam.ignore)] {
        for (i, area) in areas.iter().enumerate() {
            if let Some(reason) = area.problem() {
                c.push(at.file, at.key(&format!("{what}[{i}]")), reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_levels_reject_wildcards() {
        assert!(topic_safe("front-door_1"));
        assert!(!topic_safe("a/b"));
        assert!(!topic_safe("#"));
        assert!(!topic_safe("+"));
        assert!(!topic_safe(""));
        assert!(!topic_safe("a\u{7}b"));
        assert!(topic_safe(&"x".repeat(MAX_NAME)));
        assert!(!topic_safe(&"x".repeat(70_000)));
    }

    #[test]
    fn log_levels_and_discovery_prefixes() {
        assert!(log_level_problem("info").is_none());
        assert!(log_level_problem("clefd=debug,warn").is_none());
        assert!(log_level_problem("verbose").unwrap().contains("'verbose' is not a log level"));
        assert!(discovery_prefix_problem("homeassistant").is_none());
        assert!(discovery_prefix_problem("home/assistant").is_none());
        assert!(discovery_prefix_problem("home/#").is_some());
        assert!(discovery_prefix_problem("home//x").is_some());
    }

    #[test]
    fn a_hash_or_question_mark_in_a_password_is_caught() {
        assert!(uri_userinfo_problem("rtsp://admin:pa#ss@10.0.0.5/stream").is_some());
        assert!(uri_userinfo_problem("rtsp://admin:pa?ss@10.0.0.5/stream").is_some());
        assert!(uri_userinfo_problem("rtsp://admin:pa%23ss@10.0.0.5/stream").is_none());
        assert!(uri_userinfo_problem("rtsp://10.0.0.5/stream?channel=1").is_none());
    }
}
