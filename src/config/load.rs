//! Reading the files and the environment into one [`Config`] as written: layering,
//! `cameras.d` drop-ins, unknown keys and type mistakes reported by origin, relative paths
//! resolved against the config file's folder.

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::file::{CameraConfig, Config};
use super::{Collector, ENV_PREFIX, MAX_CAMERAS};

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

/// Reads and layers the configuration rooted at `path`: the main file, `cameras.d`, the
/// environment, with relative paths resolved. `None` when it cannot be read as a whole
/// (the problems say why); values are checked by `validate` afterwards.
pub(super) fn layered(path: &Path, c: &mut Collector) -> Option<(Config, BTreeMap<String, PathBuf>)> {
    let main_file = path.display().to_string();
    let text = match read_text(path) {
        Ok(t) => t,
        Err(reason) => {
            c.push(&main_file, "-", reason);
            return None;
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
        // Checking the defaults in its place would only add false problems.
        Ok(layered) => deserialize(&layered, &main_file, c)?,
        Err(e) => {
            c.push(&main_file, "-", format!("not valid TOML: {}", one_line(&e.to_string())));
            return None;
        }
    };
    strict_types::<Config>(&text, &main_file, c);
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut camera_files: BTreeMap<String, PathBuf> =
        config.cameras.keys().map(|k| (k.clone(), path.to_path_buf())).collect();
    load_drop_ins(&base.join("cameras.d"), &mut config, &mut camera_files, c);
    resolve_paths(&mut config, &base);
    Some((config, camera_files))
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
pub(super) fn default_device_id() -> String {
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
pub(super) fn origin_of(key: &str, file: &str) -> String {
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
        &mut config.snapshots.dir,
    ]
    .into_iter()
    .flatten()
    {
        resolve(p);
    }
    if let Some(auth) = config.http.auth.as_mut() {
        for p in [&mut auth.token_file, &mut auth.basic_file].into_iter().flatten() {
            resolve(p);
        }
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
