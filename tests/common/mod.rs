//! Test harness: a real mosquitto on a free loopback port, synthesised clips, and
//! helpers to write configs and run the real `clefd` binary.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use clefd::synth::{ClipSpec, Sprite};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The demo bundle.
pub fn demo_bundle() -> PathBuf {
    repo().join("engines/face-fer2013")
}

/// The built `clefd` binary.
pub fn clefd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_clefd"))
}

/// Runs clefd with arguments, capturing output.
pub fn run_clefd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = clefd();
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("clefd runs")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A mosquitto broker for one test; killed on drop.
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts mosquitto on a free loopback port and waits until it accepts connections.
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .expect("write conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker {
            port,
            child,
            _dir: dir,
        }
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The astronaut picture, decoded.
pub fn astronaut() -> clefd::image::RgbImage {
    clefd::source::decode_image(&repo().join("assets/astronaut.png"))
        .expect("astronaut.png decodes")
}

/// Renders a clip of the astronaut sliding left and right.
pub fn astronaut_clip(path: &Path, seconds: f32, fps: u32) {
    let image = astronaut();
    let spec = ClipSpec {
        width: 640,
        height: 480,
        fps,
        frames: (seconds * fps as f32) as u32,
        sprites: vec![Sprite {
            image,
            size: (360, 360),
            from: (40.0, 60.0),
            to: (240.0, 60.0),
            round_trips: 1.0,
        }],
    };
    clefd::synth::make_clip(&spec, path).expect("clip renders");
}

/// Writes a config for one file camera and returns its path.
pub fn write_config(dir: &Path, broker: &str, clip: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "device_id = \"testdev\"\nstate_dir = \"{state}\"\n[engine]\nbundle = \"{bundle}\"\n[mqtt]\nurl = \"{broker}\"\n[events]\nmin_track_age = 2\nheartbeat_s = 1.0\n[cameras.cam1]\nuri = \"file://{clip}\"\n{extra}\n",
        state = dir.join("state").display(),
        bundle = demo_bundle().display(),
        clip = clip.display(),
    );
    let path = dir.join("clefd.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The event schema: the project's shared contract (`../shared/schema`) when it is beside
/// the checkout, else the committed copy, which must not drift from it.
pub fn event_schema() -> String {
    let copy = std::fs::read_to_string(repo().join("tests/schema/emotion-event.schema.json"))
        .expect("schema copy is committed");
    if let Ok(shared) =
        std::fs::read_to_string(repo().join("../shared/schema/emotion-event.schema.json"))
    {
        assert_eq!(
            shared, copy,
            "tests/schema/ is out of date with shared/schema/: copy it again"
        );
        return shared;
    }
    copy
}
