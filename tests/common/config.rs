//! Test configs, typed: built on the same file types the daemon reads
//! (`clefd::config::file`) and serialized to TOML, so a key that does not exist fails to
//! compile instead of being patched into a string where a `.replace` may silently miss.
//! Only what differs from the daemon's defaults is written, as a person would.

use std::path::{Path, PathBuf};

pub use clefd::config::file::{CameraConfig, Config};

/// A config being built for one test; [`TestConfig::write`] puts it on disk.
#[derive(Debug, Clone)]
pub struct TestConfig {
    /// The daemon's config, as its file says it.
    pub config: Config,
    dir: PathBuf,
}

impl TestConfig {
    /// The tests' base: `device`, state in `dir/state`, the demo bundle on one engine
    /// thread, `broker`, events after two frames with a heartbeat each second, fast
    /// restarts and a 2 s stall timeout, no HTTP (so parallel tests never share a port).
    pub fn new(dir: &Path, broker: &str, device: &str) -> TestConfig {
        let mut config = Config { device_id: Some(device.into()), state_dir: dir.join("state"), ..Config::default() };
        config.engine.bundle = super::demo_bundle();
        config.engine.threads = 1;
        config.mqtt.url = broker.into();
        config.events.min_track_age = 2;
        config.events.heartbeat_s = 1.0;
        config.supervisor.backoff_initial_s = 0.2;
        config.supervisor.backoff_max_s = 1.0;
        config.supervisor.stall_timeout_s = 2.0;
        config.http.listen = String::new();
        TestConfig { config, dir: dir.to_path_buf() }
    }

    /// Serves `/metrics` and `/healthz` on `127.0.0.1:port`.
    pub fn http(mut self, port: u16) -> TestConfig {
        self.config.http.listen = format!("127.0.0.1:{port}");
        self
    }

    /// Adds camera `name` reading `uri`, with the daemon's defaults for the rest.
    pub fn camera(self, name: &str, uri: &str) -> TestConfig {
        self.camera_with(name, uri, |_| {})
    }

    /// Adds camera `name` reading `uri`, then lets `f` set the rest.
    pub fn camera_with(mut self, name: &str, uri: &str, f: impl FnOnce(&mut CameraConfig)) -> TestConfig {
        let mut camera = CameraConfig { uri: uri.into(), ..CameraConfig::default() };
        f(&mut camera);
        self.config.cameras.insert(name.into(), camera);
        self
    }

    /// Adds camera `name` playing `clip` in a loop at its own pace, as a live camera.
    pub fn looping_file(self, name: &str, clip: &Path) -> TestConfig {
        self.camera_with(name, &format!("file://{}", clip.display()), |c| c.looping = true)
    }

    /// Lets `f` change anything else.
    pub fn with(mut self, f: impl FnOnce(&mut Config)) -> TestConfig {
        f(&mut self.config);
        self
    }

    /// The TOML text: every key that differs from the daemon's default.
    pub fn to_toml(&self) -> String {
        let mut value = toml::Value::try_from(&self.config).expect("the config serializes");
        let defaults = toml::Value::try_from(Config::default()).expect("the defaults serialize");
        let camera = toml::Value::try_from(CameraConfig::default()).expect("a camera's defaults serialize");
        if let (Some(table), Some(defaults)) = (value.as_table_mut(), defaults.as_table()) {
            prune(table, defaults);
            if let Some(cameras) = table.get_mut("cameras").and_then(toml::Value::as_table_mut) {
                for (_, c) in cameras.iter_mut() {
                    let Some(c) = c.as_table_mut() else { continue };
                    prune(c, camera.as_table().expect("a table"));
                }
            }
        }
        toml::to_string(&value).expect("TOML text")
    }

    /// Writes it to `dir/clefd.toml`; returns the path.
    pub fn write(&self) -> PathBuf {
        let path = self.dir.join("clefd.toml");
        self.write_to(&path);
        path
    }

    /// Writes it to `path` (a reload writes over the file the daemon runs with).
    pub fn write_to(&self, path: &Path) {
        std::fs::write(path, self.to_toml()).expect("write config");
    }
}

/// Removes from `table` every key whose value is the default's, recursively.
fn prune(table: &mut toml::Table, defaults: &toml::Table) {
    table.retain(|key, value| match (value, defaults.get(key)) {
        (toml::Value::Table(t), Some(toml::Value::Table(d))) => {
            prune(t, d);
            !t.is_empty()
        }
        (v, Some(d)) => v != d,
        _ => true,
    });
}

/// [`TestConfig::new`] as text with the daemon's default HTTP listener, for tests that
/// add their own `[http]` and camera tables to it.
pub fn base_config(dir: &Path, broker: &str, device: &str) -> String {
    TestConfig::new(dir, broker, device).with(|c| c.http = Default::default()).to_toml()
}

/// Writes a config for one file camera `cam1` playing `clip` (device `testdev`, the
/// daemon's defaults otherwise), `extra` being more of the camera's keys as TOML lines;
/// returns its path.
pub fn write_config(dir: &Path, broker: &str, clip: &Path, extra: &str) -> PathBuf {
    let defaults = Config::default();
    let base = TestConfig::new(dir, broker, "testdev").with(|c| {
        c.engine.threads = defaults.engine.threads;
        c.supervisor = defaults.supervisor.clone();
        c.http = defaults.http.clone();
    });
    // The camera's table last, so `extra` belongs to it (the serializer orders tables
    // by name, so it is written here rather than by `to_toml`).
    let text = format!("{}[cameras.cam1]\nuri = \"file://{}\"\n{extra}\n", base.to_toml(), clip.display());
    let path = dir.join("clefd.toml");
    std::fs::write(&path, text).expect("write config");
    path
}
