//! Checks a layered configuration before anything starts: ranges, names that become MQTT
//! topic levels, URIs, files and bundles that must exist. Every problem is collected with
//! its file and key, so one `clefd check-config` lists them all.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::{Collector, Config};
use crate::engine::manifest::Manifest;
use crate::source::SourceSpec;

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

/// Records every problem of `config` (cameras from `camera_files`, the rest from `main`).
pub(super) fn validate(config: &Config, camera_files: &BTreeMap<String, PathBuf>, main: &Path, c: &mut Collector) {
    let m = main.display().to_string();
    if let Some(id) = &config.device_id {
        if !topic_safe(id) {
            c.push(
                &m,
                "device_id",
                format!("'{id}' cannot be an MQTT topic level: use up to {MAX_NAME} letters, digits, '-', '_' or '.'"),
            );
        }
    }
    if let Err(reason) = crate::mqtt::BrokerUrl::parse(&config.mqtt.url) {
        c.push(&m, "mqtt.url", reason);
    } else if url::Url::parse(&config.mqtt.url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some()) {
        c.push(
            &m,
            "mqtt.url",
            "a user name or password in the URL is not used: set mqtt.username, and the password in mqtt.password_file",
        );
    }
    if let Some(reason) = log_level_problem(&config.log_level) {
        c.push(&m, "log_level", reason);
    }
    if let Some(reason) = discovery_prefix_problem(&config.mqtt.discovery_prefix) {
        c.push(&m, "mqtt.discovery_prefix", reason);
    }
    let enabled = config.cameras.values().filter(|cam| cam.enabled).count();
    if enabled > super::MAX_CAMERAS {
        c.push(&m, "cameras", format!("{enabled} cameras enabled: one clefd runs at most {}", super::MAX_CAMERAS));
    }
    if !topic_safe(&config.mqtt.prefix) {
        c.push(
            &m,
            "mqtt.prefix",
            format!("'{}' cannot be an MQTT topic level: use letters, digits, '-', '_' or '.'", config.mqtt.prefix),
        );
    }
    in_range(c, &m, "mqtt.keep_alive_s", config.mqtt.keep_alive_s, 5, 3600);
    in_range(c, &m, "mqtt.flush_timeout_s", config.mqtt.flush_timeout_s, 0.0, 600.0);
    if !config.http.listen.is_empty() && config.http.listen.parse::<std::net::SocketAddr>().is_err() {
        c.push(
            &m,
            "http.listen",
            format!("'{}' is not address:port (e.g. 127.0.0.1:9857); use \"\" to turn HTTP off", config.http.listen),
        );
    }
    if config.mqtt.stats_interval_s != 0.0 {
        in_range(c, &m, "mqtt.stats_interval_s", config.mqtt.stats_interval_s, 1.0, 86400.0);
    }
    in_range(c, &m, "mqtt.reconnect_max_s", config.mqtt.reconnect_max_s, 0.5, 3600.0);
    if let Err(reason) = crate::mqtt::Protocol::parse(&config.mqtt.protocol) {
        c.push(&m, "mqtt.protocol", reason);
    }
    in_range(c, &m, "mqtt.spool_max_mb", config.mqtt.spool_max_mb, 0.1, 1_000_000.0);
    for (key, file) in [
        ("mqtt.password_file", &config.mqtt.password_file),
        ("mqtt.ca_file", &config.mqtt.ca_file),
        ("mqtt.client_cert", &config.mqtt.client_cert),
        ("mqtt.client_key", &config.mqtt.client_key),
    ] {
        if let Some(p) = file.as_ref().filter(|p| !p.is_file()) {
            c.push(&m, key, format!("{} does not exist", p.display()));
        }
    }
    if config.mqtt.client_cert.is_some() != config.mqtt.client_key.is_some() {
        c.push(&m, "mqtt.client_cert", "client_cert and client_key go together: set both or neither");
    }
    let tls = config.mqtt.url.starts_with("mqtts://") || config.mqtt.url.starts_with("ssl://");
    if tls && config.mqtt.ca_file.is_none() {
        c.push(&m, "mqtt.ca_file", "mqtt.url is mqtts://: set ca_file to the CA that signed the broker's certificate");
    }
    if !tls && (config.mqtt.ca_file.is_some() || config.mqtt.client_cert.is_some()) {
        c.push(&m, "mqtt.ca_file", "TLS files are set but mqtt.url is not mqtts://");
    }
    in_range(c, &m, "events.min_track_age", config.events.min_track_age, 1, 1000);
    in_range(c, &m, "events.heartbeat_s", config.events.heartbeat_s, 0.1, 86400.0);
    in_range(c, &m, "events.smoothing", config.events.smoothing, 0.01, 1.0);
    in_range(c, &m, "events.hysteresis", config.events.hysteresis, 0.0, 0.99);
    in_range(c, &m, "events.empty_after_s", config.events.empty_after_s, 0.0, 86400.0);
    in_range(c, &m, "tracker.iou_threshold", config.tracker.iou_threshold, 0.01, 0.99);
    in_range(c, &m, "tracker.max_missed", config.tracker.max_missed, 0, 1000);
    in_range(c, &m, "supervisor.backoff_initial_s", config.supervisor.backoff_initial_s, 0.01, 3600.0);
    in_range(
        c,
        &m,
        "supervisor.backoff_max_s",
        config.supervisor.backoff_max_s,
        config.supervisor.backoff_initial_s,
        86400.0,
    );
    in_range(c, &m, "supervisor.stall_timeout_s", config.supervisor.stall_timeout_s, 0.5, 3600.0);
    in_range(c, &m, "engine.batch_max", config.engine.batch_max, 1, 256);
    in_range(c, &m, "engine.batch_timeout_ms", config.engine.batch_timeout_ms, 0.0, 1000.0);
    in_range(c, &m, "engine.threads", config.engine.threads, 0, 256);
    in_range(c, &m, "engine.lanes", config.engine.lanes, 0, 64);
    for (i, p) in config.engine.providers.iter().enumerate() {
        if !matches!(p.as_str(), "tensorrt" | "cuda" | "cpu") {
            c.push(
                &m,
                format!("engine.providers[{i}]"),
                format!("unknown execution provider '{p}': use tensorrt, cuda or cpu"),
            );
        }
    }
    if let Err(reason) = crate::engine::tensorrt::Precision::parse(
        &config.engine.precision,
        config.engine.int8_calibration_table.as_deref(),
    ) {
        c.push(&m, "engine.precision", reason);
    }
    if let Some(p) = config.engine.int8_calibration_table.as_ref().filter(|p| !p.is_file()) {
        c.push(&m, "engine.int8_calibration_table", format!("{} does not exist", p.display()));
    }
    if let Some(core) = config.engine.dla_core {
        in_range(c, &m, "engine.dla_core", core, 0, 1);
    }
    if let Some(p) = &config.engine.onnxruntime {
        if !p.is_file() {
            c.push(
                &m,
                "engine.onnxruntime",
                format!("{} does not exist (run `make setup` or point it at libonnxruntime.so)", p.display()),
            );
        }
    }
    let mut bundles_checked = Vec::new();
    let mut check_bundle = |c: &mut Collector, file: &str, key: &str, dir: &Path| {
        if bundles_checked.iter().any(|b: &PathBuf| b == dir) {
            return;
        }
        bundles_checked.push(dir.to_path_buf());
        if !dir.is_dir() {
            c.push(file, key, format!("engine bundle folder {} does not exist", dir.display()));
        } else if let Err(e) = Manifest::load(dir) {
            c.push(e.path, e.key, format!("{} (bundle named by {key} in {file})", e.reason));
        }
    };
    let default_used = config.cameras.values().any(|cam| cam.bundle.is_none());
    if default_used || config.cameras.is_empty() {
        check_bundle(c, &m, "engine.bundle", &config.engine.bundle);
    }
    for (name, cam) in &config.cameras {
        let from_main = camera_files.get(name).is_none_or(|f| f == main);
        let file = camera_files.get(name).map(|p| p.display().to_string()).unwrap_or_else(|| m.clone());
        let key = |k: &str| {
            if from_main { format!("cameras.{name}.{k}") } else { k.to_string() }
        };
        if from_main && cam.name.as_ref().is_some_and(|n| n != name) {
            c.push(
                &file,
                key("name"),
                format!("a camera table's name is its key ('{name}'); remove `name` or rename the table"),
            );
        }
        if !topic_safe(name) {
            c.push(
                &file,
                key("name"),
                format!(
                    "camera name '{}' cannot be an MQTT topic level: use up to {MAX_NAME} letters, digits, '-', '_' or '.'",
                    name.chars().take(80).collect::<String>()
                ),
            );
        }
        if cam.uri.is_empty() {
            c.push(&file, key("uri"), format!("camera '{name}' has no uri"));
        } else if let Some(reason) = uri_userinfo_problem(&cam.uri) {
            c.push(&file, key("uri"), format!("camera '{name}': {reason}"));
        } else if let Err(reason) = SourceSpec::parse(&cam.uri) {
            c.push(&file, key("uri"), format!("camera '{name}': {reason}"));
        }
        in_range(c, &file, &key("width"), cam.width, 32, 4096);
        in_range(c, &file, &key("latency_ms"), cam.latency_ms, 0, 60_000);
        in_range(c, &file, &key("decoder_threads"), cam.decoder_threads, 0, 64);
        if let Some(p) = &cam.password_file {
            if !p.is_file() {
                c.push(&file, key("password_file"), format!("{} does not exist", p.display()));
            } else if let Err(reason) = crate::source::with_password(&cam.uri, "x") {
                c.push(&file, key("password_file"), reason);
            }
        }
        if let Some(fps) = cam.fps {
            in_range(c, &file, &key("fps"), fps, 0.1, 240.0);
        }
        if crate::source::DecoderChoice::parse(&cam.decoder).is_none() {
            c.push(&file, key("decoder"), format!("'{}' is not a decoder choice: use auto or libav", cam.decoder));
        }
        if !matches!(cam.transport.as_str(), "tcp" | "udp") {
            c.push(&file, key("transport"), format!("'{}' is not a transport: use tcp or udp", cam.transport));
        }
        if let Some(b) = &cam.bundle {
            check_bundle(c, &file, &key("bundle"), b);
        }
        if let Some(t) = cam.score_threshold {
            in_range(c, &file, &key("score_threshold"), t, 0.0, 1.0);
        }
        if let Some(px) = cam.min_face_px {
            in_range(c, &file, &key("min_face_px"), px, 0.0, 4096.0);
        }
        for (what, areas) in [("zones", &cam.zones), ("ignore", &cam.ignore)] {
            for (i, area) in areas.iter().enumerate() {
                if let Some(reason) = area.problem() {
                    c.push(&file, key(&format!("{what}[{i}]")), reason);
                }
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
