//! Test harness: a real mosquitto on a free loopback port, synthesised clips, and
//! helpers to write configs and run the real `clefd` binary.
#![allow(dead_code)]

pub mod metrics;
pub mod not_run;
pub mod rtsp;
/// Synthetic clips: the CLI's `make-clip` code, shared with the tests.
#[path = "../../src/cmd/synth.rs"]
#[allow(dead_code)]
pub mod synth;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use synth::{ClipSpec, Sprite};

#[allow(unused_imports)]
pub use metrics::{metric, wait_metric};
pub use not_run::could_not_run;

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
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A mosquitto broker for one test; stopped on drop.
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Moved once to another port because the first was taken.
    moved: bool,
}

impl Broker {
    /// Starts mosquitto on a free loopback port and waits until it accepts connections.
    pub fn start() -> Broker {
        Broker::launch(free_port(), tempfile::tempdir().expect("tempdir"), false)
    }

    /// Like [`Broker::start`], but sessions and queued QoS 1 messages survive
    /// [`Broker::stop`] / [`Broker::restart`] (mosquitto persistence).
    pub fn start_persistent() -> Broker {
        Broker::launch(free_port(), tempfile::tempdir().expect("tempdir"), true)
    }

    fn launch(port: u16, dir: tempfile::TempDir, persistent: bool) -> Broker {
        let conf = dir.path().join("mosquitto.conf");
        let mut text = format!("listener {port} 127.0.0.1\nallow_anonymous true\n");
        if persistent {
            // mosquitto drops root privileges: let it write its database here.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777));
            text += &format!("persistence true\npersistence_location {}/\nautosave_interval 1\n", dir.path().display());
        } else {
            text += "persistence false\n";
        }
        std::fs::write(&conf, text).expect("write conf");
        let mut b = Broker { port, child: None, dir, moved: false };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            // Another test took the port between free_port() and mosquitto's bind: our
            // mosquitto exits at once. Move to a new port (a first start only).
            if let Ok(Some(_)) = child.try_wait() {
                assert!(self.child.is_none() && !self.moved, "mosquitto could not listen on port {}", self.port);
                let old = format!("listener {} ", self.port);
                self.port = free_port();
                let text = std::fs::read_to_string(&conf).unwrap().replace(&old, &format!("listener {} ", self.port));
                std::fs::write(&conf, text).unwrap();
                self.moved = true;
                return self.spawn();
            }
            assert!(Instant::now() < deadline, "mosquitto did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// Stops the broker cleanly (SIGTERM: a persistent broker saves its state).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Starts it again after [`Broker::stop`].
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The astronaut picture, decoded.
pub fn astronaut() -> clefd::image::RgbImage {
    clefd::source::decode_image(&repo().join("assets/astronaut.png")).expect("astronaut.png decodes")
}

/// Renders `frames` frames of the astronaut sitting still (640x480, 15 fps).
pub fn still_clip(path: &Path, frames: u32) {
    let image = astronaut();
    let still = Sprite { image, size: (360, 360), from: (140.0, 60.0), to: (140.0, 60.0), round_trips: 0.0 };
    let spec = ClipSpec { width: 640, height: 480, fps: 15, frames, sprites: vec![still] };
    synth::make_clip(&spec, path).expect("clip renders");
}

/// Renders `frames` frames of the astronaut crossing the frame once and leaving it
/// (640x480, 15 fps): looped, a new track begins on every pass.
pub fn passing_clip(path: &Path, frames: u32) {
    let image = astronaut();
    let passing = Sprite { image, size: (360, 360), from: (40.0, 60.0), to: (2000.0, 60.0), round_trips: 0.5 };
    let spec = ClipSpec { width: 640, height: 480, fps: 15, frames, sprites: vec![passing] };
    synth::make_clip(&spec, path).expect("clip renders");
}

/// Renders a clip of the astronaut sliding left and right.
pub fn astronaut_clip(path: &Path, seconds: f32, fps: u32) {
    let image = astronaut();
    let spec = ClipSpec {
        width: 640,
        height: 480,
        fps,
        frames: (seconds * fps as f32) as u32,
        sprites: vec![Sprite { image, size: (360, 360), from: (40.0, 60.0), to: (240.0, 60.0), round_trips: 1.0 }],
    };
    synth::make_clip(&spec, path).expect("clip renders");
}

/// A file camera played once, as fast as it decodes, at `width`, with `decoder`.
pub fn file_camera(
    name: &str,
    clip: &Path,
    width: u32,
    decoder: clefd::source::DecoderChoice,
) -> clefd::source::CameraOptions {
    clefd::source::CameraOptions {
        name: name.into(),
        spec: clefd::source::SourceSpec::File { path: clip.to_path_buf() },
        width,
        looping: false,
        realtime: false,
        fps_cap: None,
        rtsp_udp: false,
        rtsp_latency_ms: 0,
        decoder_threads: 1,
        decoder,
    }
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
    let copy = std::fs::read_to_string(repo().join("tests/schema/emotion-event-v2.schema.json"))
        .expect("schema copy is committed");
    if let Ok(shared) = std::fs::read_to_string(repo().join("../shared/schema/emotion-event-v2.schema.json")) {
        assert_eq!(shared, copy, "tests/schema/ is out of date with shared/schema/: copy it again");
        return shared;
    }
    copy
}

/// One message a consumer received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Topic.
    pub topic: String,
    /// Payload as JSON (or a JSON string for plain text).
    pub body: serde_json::Value,
    /// Whether the broker delivered it as a retained message.
    pub retained: bool,
    /// The payload as received (for binary payloads such as snapshots).
    pub payload: Vec<u8>,
}

/// The `seq` of every event `device` sent in `msgs`, in arrival order.
pub fn seqs(msgs: &[Received], device: &str) -> Vec<u64> {
    let prefix = format!("clefd/{device}/");
    msgs.iter()
        .filter(|m| m.topic.starts_with(&prefix) && m.topic.ends_with("/emotion"))
        .filter_map(|m| m.body["seq"].as_u64())
        .collect()
}

/// A subscriber to every topic (`#`) that records everything in the background.
pub struct Consumer {
    log: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Consumer {
    /// Subscribes and returns once the broker has acknowledged the subscription.
    pub fn start(port: u16) -> Consumer {
        Consumer::launch(port, None)
    }

    /// A consumer with a persistent session under `client_id`: with a persistent broker,
    /// QoS 1 messages published while it was away are delivered when it comes back.
    pub fn start_persistent(port: u16, client_id: &str) -> Consumer {
        Consumer::launch(port, Some(client_id.to_string()))
    }

    fn launch(port: u16, persistent_id: Option<String>) -> Consumer {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (l, s) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let id = persistent_id.clone().unwrap_or_else(|| format!("consumer-{}", free_port()));
                let mut opts = MqttOptions::new(id, "127.0.0.1", port);
                opts.set_clean_session(persistent_id.is_none());
                opts.set_max_packet_size(1 << 20, 1 << 20);
                let (client, mut lp) = AsyncClient::new(opts, 64);
                client.subscribe("#", QoS::AtLeastOnce).await.unwrap();
                while !s.load(std::sync::atomic::Ordering::SeqCst) {
                    match tokio::time::timeout(Duration::from_millis(100), lp.poll()).await {
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                            let _ = ready_tx.send(());
                        }
                        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) if !ack.session_present => {
                            // A broker that lost our session: subscribe again.
                            let _ = client.try_subscribe("#", QoS::AtLeastOnce);
                        }
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                            let text = String::from_utf8_lossy(&p.payload).to_string();
                            let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                            l.lock().unwrap().push(Received {
                                at: Instant::now(),
                                topic: p.topic.clone(),
                                body,
                                retained: p.retain,
                                payload: p.payload.to_vec(),
                            });
                        }
                        Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                        _ => {}
                    }
                }
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("subscribed");
        Consumer { log, stop, thread: Some(thread) }
    }

    /// Everything so far.
    pub fn messages(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Messages on topics ending with `suffix`.
    pub fn on(&self, suffix: &str) -> Vec<Received> {
        self.messages().into_iter().filter(|m| m.topic.ends_with(suffix)).collect()
    }

    /// The `seq` of every event `device` sent, in arrival order (duplicates included).
    pub fn seqs(&self, device: &str) -> Vec<u64> {
        seqs(&self.messages(), device)
    }

    /// Waits until `pred` holds on the messages, or panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.messages()) {
                return;
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self.messages().iter().map(|m| format!("{} {}", m.topic, m.body)).collect();
                panic!("timed out waiting for {what}; saw:\n{}", seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running `clefd run`, stopped with SIGTERM on drop.
pub struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    /// Starts `clefd run --config PATH` with its log in `log`.
    pub fn start(config: &Path, log: &Path) -> Daemon {
        let mut cmd = clefd();
        cmd.args(["run", "--config", config.to_str().unwrap()]);
        Daemon::spawn(cmd, log)
    }

    /// Starts `cmd` (clefd itself, or a wrapper that execs it: `unshare`, `prlimit`) with
    /// its log in `log`; SIGTERM reaches clefd.
    pub fn spawn(mut cmd: Command, log: &Path) -> Daemon {
        let child = cmd.env_remove("RUST_LOG").stderr(std::fs::File::create(log).unwrap()).spawn().unwrap();
        Daemon { child: Some(child) }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits; returns whether it exited 0.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Base config text for a device with the demo bundle, fast backoff and stall detection.
pub fn base_config(dir: &Path, broker: &str, device: &str) -> String {
    format!(
        "device_id = \"{device}\"\nstate_dir = \"{state}\"\n[engine]\nbundle = \"{bundle}\"\nthreads = 1\n[mqtt]\nurl = \"{broker}\"\n[events]\nmin_track_age = 2\nheartbeat_s = 1.0\n[supervisor]\nbackoff_initial_s = 0.2\nbackoff_max_s = 1.0\nstall_timeout_s = 2.0\n",
        state = dir.join("state").display(),
        bundle = demo_bundle().display(),
    )
}

/// GET over plain HTTP/1.1: the status code and the body (0 and "" when nobody answers).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Polls `GET path` until `pred(code, body)` holds; returns the body, or panics after
/// `timeout` with the last answer.
pub fn wait_http(port: u16, path: &str, what: &str, timeout: Duration, pred: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, body) = http_get(port, path);
        if pred(code, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last answer {code}:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `promtool`: the set-up's copy, else one on PATH.
pub fn promtool() -> PathBuf {
    let local = repo().join(".local/bin/promtool");
    if local.exists() { local } else { "promtool".into() }
}

/// Runs `promtool check metrics` on an exposition; `Err` with promtool's words.
pub fn promtool_check(metrics: &str) -> Result<(), String> {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (make setup extracts it)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Messages a test's stand-in for systemd received on `NOTIFY_SOCKET`, with their time.
pub type NotifyLog = std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>;

/// Binds a notify socket at `path` and records every datagram until the log is dropped.
pub fn notify_listen(path: &Path) -> NotifyLog {
    let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let log: NotifyLog = std::sync::Arc::default();
    let l = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = sock.recv(&mut buf) {
                l.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
            if std::sync::Arc::strong_count(&l) == 1 {
                return;
            }
        }
    });
    log
}

/// Waits until a notify message contains `what`; returns when it came.
pub fn notify_wait(log: &NotifyLog, what: &str, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((t, _)) = log.lock().unwrap().iter().find(|(_, m)| m.contains(what)) {
            return *t;
        }
        assert!(
            Instant::now() < deadline,
            "no {what}: {:?}",
            log.lock().unwrap().iter().map(|(_, m)| m.clone()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a signal by name (`TERM`, `HUP`, ...) to a process.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status();
}

/// Waits until the file at `path` (a log) holds `what` at least `n` times; returns its text.
pub fn wait_log(path: &Path, what: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.matches(what).count() >= n {
            return text;
        }
        assert!(Instant::now() < deadline, "no {n}x '{what}' in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a hardware H.264 decoder is installed: decodebin prefers it, so assertions on
/// the software decoder's name do not apply on such a machine (they are skipped, saying so).
pub fn hardware_decoder_installed() -> bool {
    gstreamer::init().unwrap();
    let found = ["nvv4l2decoder", "nvh264dec", "nvh264sldec", "v4l2h264dec", "vah264dec", "vaapih264dec"]
        .iter()
        .find(|n| gstreamer::ElementFactory::find(n).is_some());
    if let Some(name) = found {
        eprintln!("{name} is installed: it decodes H.264 here, so the software decoder's name is not checked");
    }
    found.is_some()
}

/// The metric names a Grafana dashboard's queries use (`clefd_…` words in every `expr`).
pub fn dashboard_metrics(dashboard: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let mut rest = expr;
            while let Some(at) = rest.find("clefd_") {
                let word: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + word.len()..];
                names.insert(word);
            }
        }
    }
    names
}
