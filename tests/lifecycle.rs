//! Camera lifecycles in the demo's layout (two cameras, two bundles), with a real broker,
//! real models and real GStreamer: the camera that is alone on its bundle comes back when
//! it is disabled and enabled again over MQTT, and when a reload removes and re-adds it.
//! Coming back means analysing frames again (its `/metrics` counter grows, its events and
//! `current` appear), while `/healthz` stays ok throughout. On the way, the states tell
//! the truth everywhere: a file that ends is `ended`, a disabled camera is listed as
//! `disabled` (and is no fault), systemd's `STATUS=` counts the cameras there are now;
//! and live-view seats come back when viewers go, even on a camera with no frames.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Broker, Consumer, Daemon};

const WAIT: Duration = Duration::from_secs(90);
const ALONE: &str = "context-bias";

/// The demo's two cameras, a file played once (`once`) and a camera that never delivers
/// a frame (`gate`); `with_alone` false leaves out the one alone on its bundle.
fn config(dir: &Path, broker: &Broker, port: u16, clip: &Path, with_alone: bool) -> PathBuf {
    let mut text = common::base_config(dir, &broker.url(), "life")
        .replace("[mqtt]\n", "[mqtt]\ncontrol = true\nhome_assistant = true\n");
    text += &common::http_section(port);
    text += &format!("[cameras.astronaut]\nuri = \"file://{}\"\nloop = true\nrealtime = true\n", clip.display());
    text += &format!("[cameras.once]\nuri = \"file://{}\"\nrealtime = true\n", clip.display());
    text += &format!("[cameras.gate]\nuri = \"rtsp://127.0.0.1:{}/stream\"\n", dead_port(dir));
    if with_alone {
        let repo = common::repo();
        text += &format!(
            "[cameras.{ALONE}]\nuri = \"file://{}\"\nloop = true\nrealtime = true\nbundle = \"{}\"\n",
            repo.join("assets/context-bias-anti.mp4").display(),
            repo.join("engines/context-bias-demo").display()
        );
    }
    common::write_toml(dir, &text)
}

/// A port nobody listens on, the same for every config written in `dir`.
fn dead_port(dir: &Path) -> u16 {
    let kept = dir.join("dead-port");
    std::fs::read_to_string(&kept).ok().and_then(|p| p.parse().ok()).unwrap_or_else(|| {
        let port = common::free_port();
        std::fs::write(&kept, port.to_string()).unwrap();
        port
    })
}

/// The first line of the answer to `GET /cameras/{camera}/live.mjpeg`, and the connection
/// (still open when it is a stream).
fn viewer(port: u16, camera: &str) -> (String, std::net::TcpStream) {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the HTTP listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /cameras/{camera}/live.mjpeg HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut line = String::new();
    let _ = std::io::BufReader::new(s.try_clone().unwrap()).read_line(&mut line);
    (line, s)
}

/// A metric series' value, if `/metrics` has it (`series` ends before the value).
fn metric(port: u16, series: &str) -> Option<f64> {
    let (_, body) = common::http_get(port, "/metrics");
    body.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse().ok())
}

/// `/healthz`'s JSON.
fn health(port: u16) -> serde_json::Value {
    serde_json::from_str(&common::http_get(port, "/healthz").1).unwrap_or_default()
}

/// `clefd_frames_analysed_total` of `camera`, if `/metrics` has the series.
fn analysed(port: u16, camera: &str) -> Option<u64> {
    let (_, body) = common::http_get(port, "/metrics");
    let series = format!("clefd_frames_analysed_total{{camera=\"{camera}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.trim().parse::<f64>().ok()).map(|v| v as u64)
}

/// Waits until `camera` has analysed `more` frames beyond what it had at the call (a
/// series that is absent counts as none).
fn analyses_again(port: u16, camera: &str, more: u64, what: &str) {
    let from = analysed(port, camera).unwrap_or(0);
    let series = format!("clefd_frames_analysed_total{{camera=\"{camera}\"}}");
    let what = format!("{what}: {camera} to analyse {more} frames beyond {from}");
    common::wait_metric(port, &series, &what, WAIT, |n| n as u64 >= from + more);
}

/// `/healthz` answers 200 and `ok`.
fn healthy(port: u16, when: &str) {
    let (code, body) = common::http_get(port, "/healthz");
    assert_eq!(code, 200, "{when}: /healthz {body}");
    assert!(body.contains(r#""status":"ok""#), "{when}: /healthz {body}");
}

/// Sends `payload` on `topic` and returns the answer on `…/result`.
fn command(broker: &Broker, consumer: &Consumer, topic: &str, payload: &str) -> serde_json::Value {
    let result = format!("{topic}/result");
    let before = consumer.on(&result).len();
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", topic, "-m", payload])
        .status()
        .expect("mosquitto_pub (mosquitto-clients) runs");
    assert!(status.success(), "mosquitto_pub {topic}");
    consumer.wait_for(&format!("the answer to {payload}"), WAIT, |m| {
        m.iter().filter(|x| x.topic == result).count() > before
    });
    consumer.on(&result).pop().unwrap().body
}

/// Waits for an emotion event and a `current` summary of `camera` after message `mark`.
fn events_after(consumer: &Consumer, camera: &str, mark: usize, what: &str) {
    let (emotion, current) = (format!("clefd/life/{camera}/emotion"), format!("clefd/life/{camera}/current"));
    consumer.wait_for(what, WAIT, |m| {
        let after = || m.iter().skip(mark);
        after().any(|x| x.topic == emotion) && after().any(|x| x.topic == current && x.body.is_object())
    });
}

fn status_after(consumer: &Consumer, camera: &str, mark: usize, status: &str) {
    let topic = format!("clefd/life/{camera}/state");
    consumer.wait_for(&format!("{camera} {status}"), WAIT, |m| {
        m.iter().skip(mark).any(|x| x.topic == topic && x.body["status"] == status)
    });
}

/// Whether `m` is an empty payload on one of `camera`'s Home Assistant discovery configs.
fn discovery_gone(m: &common::Received, camera: &str) -> bool {
    let object = camera.replace('-', "_");
    m.topic.starts_with("homeassistant/")
        && m.topic.ends_with("/config")
        && (m.topic.contains(camera) || m.topic.contains(&object))
        && m.payload.is_empty()
}

/// After message `mark`, `camera` was disabled: its state says `disabled` and is never
/// emptied, and its `current` is emptied only once `disabled` was said and its discovery
/// config removed (a consumer never parses an empty payload).
fn disabled_in_order(consumer: &Consumer, camera: &str, mark: usize) {
    let (state, current) = (format!("clefd/life/{camera}/state"), format!("clefd/life/{camera}/current"));
    consumer.wait_for(&format!("{camera}: disabled, discovery gone, current emptied"), WAIT, |m| {
        let after = || m.iter().skip(mark);
        after().any(|x| x.topic == state && x.body["status"] == "disabled")
            && after().any(|x| discovery_gone(x, camera))
            && after().any(|x| x.topic == current && x.payload.is_empty())
    });
    let after: Vec<_> = consumer.messages().into_iter().skip(mark).collect();
    let said = after.iter().position(|x| x.topic == state && x.body["status"] == "disabled").unwrap();
    let forgotten = after.iter().position(|x| discovery_gone(x, camera)).unwrap();
    let emptied = after.iter().position(|x| x.topic == current && x.payload.is_empty()).unwrap();
    let topics: Vec<_> = after.iter().map(|x| (&x.topic, x.payload.len())).collect();
    assert!(!after.iter().any(|x| x.topic == state && x.payload.is_empty()), "{camera}'s state emptied: {topics:?}");
    assert!(said < emptied && forgotten < emptied, "{camera}'s current emptied first: {topics:?}");
}

#[test]
fn the_camera_alone_on_its_bundle_comes_back_after_disable_and_after_a_reload() {
    let common::Bench { port, clip, dir, consumer, broker } = common::Bench::with_astronaut("astronaut.mp4", 4.0, 15);
    let cfg = config(dir.path(), &broker, port, &clip, true);
    let sock = dir.path().join("notify.sock");
    let notes = common::notify_listen(&sock);
    let (daemon, log) = common::run_daemon(&cfg, &[("NOTIFY_SOCKET", sock.to_str().unwrap())]);
    analyses_again(port, ALONE, 10, "at start");
    analyses_again(port, "astronaut", 10, "at start");
    healthy(port, "at start");

    // Live-view seats: every viewer of a camera without frames goes; the seats come back.
    let seats: Vec<_> = (0..8).map(|_| viewer(port, "gate")).collect();
    assert!(seats.iter().all(|(line, _)| line.contains("200")), "{:?}", seats.iter().map(|s| &s.0).collect::<Vec<_>>());
    let (ninth, _) = viewer(port, "astronaut");
    assert!(ninth.contains("503"), "a ninth viewer waits: {ninth}");
    drop(seats);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (line, _) = viewer(port, "astronaut");
        if line.contains("200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the seats of viewers gone never came back: {line}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A file that ends says so, in its retained state, /healthz and /metrics.
    status_after(&consumer, "once", 0, "ended");
    let ended = r#"clefd_camera_state{camera="once",state="ended"} "#;
    common::wait_http(port, "/metrics", "once ended in /metrics", WAIT, |_, b| b.contains(&format!("{ended}1")));
    assert_eq!(health(port)["cameras"]["once"], "ended");
    healthy(port, "with a file ended");

    // Off and on again over MQTT.
    let mark = consumer.messages().len();
    let before_off = notes.lock().unwrap().len();
    let answer = command(&broker, &consumer, &format!("clefd/life/{ALONE}/set"), r#"{"enabled": false}"#);
    assert_eq!(answer["ok"], true, "{answer}");
    status_after(&consumer, ALONE, mark, "disabled");
    disabled_in_order(&consumer, ALONE, mark);
    analyses_again(port, "astronaut", 10, "while the other is disabled");
    // Listed as disabled everywhere, and no fault; systemd counts the cameras there are.
    let disabled = format!(r#"clefd_camera_state{{camera="{ALONE}",state="disabled"}} "#);
    assert_eq!(metric(port, &disabled), Some(1.0), "{disabled} in /metrics");
    assert_eq!(health(port)["cameras"][ALONE], "disabled");
    let (_, index) = common::http_get(port, "/");
    assert!(index.contains(&format!("<td>{ALONE}</td><td>disabled</td>")), "{index}");
    healthy(port, "with a camera disabled");
    let deadline = std::time::Instant::now() + WAIT;
    while !notes.lock().unwrap()[before_off..].iter().any(|(_, m)| m.contains("STATUS=") && m.contains("/3 cameras")) {
        assert!(std::time::Instant::now() < deadline, "no STATUS= of 3 cameras after one of 4 was disabled");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mark = consumer.messages().len();
    let answer = command(&broker, &consumer, &format!("clefd/life/{ALONE}/set"), r#"{"enabled": null}"#);
    assert_eq!(answer["ok"], true, "{answer}");
    analyses_again(port, ALONE, 20, "enabled again over MQTT");
    events_after(&consumer, ALONE, mark, "events and current of the camera enabled again");
    healthy(port, "after enabling again");

    // Removed and re-added by SIGHUP.
    config(dir.path(), &broker, port, &clip, false);
    common::signal(daemon.pid(), "HUP");
    common::wait_log(&log, "configuration reloaded", 1);
    analyses_again(port, "astronaut", 10, "with the other removed");
    healthy(port, "with the other removed");
    let mark = consumer.messages().len();
    config(dir.path(), &broker, port, &clip, true);
    common::signal(daemon.pid(), "HUP");
    common::wait_log(&log, "configuration reloaded", 2);
    analyses_again(port, ALONE, 20, "re-added by a reload");
    events_after(&consumer, ALONE, mark, "events and current of the camera re-added");
    analyses_again(port, "astronaut", 10, "beside the camera re-added");
    healthy(port, "after the reload");

    // Disabled, then removed by SIGHUP: forgotten everywhere, retained state included.
    let answer = command(&broker, &consumer, &format!("clefd/life/{ALONE}/set"), r#"{"enabled": false}"#);
    assert_eq!(answer["ok"], true, "{answer}");
    common::wait_http(port, "/healthz", "disabled in /healthz", WAIT, |_, b| {
        b.contains(&format!(r#""{ALONE}":"disabled""#))
    });
    let mark = consumer.messages().len();
    config(dir.path(), &broker, port, &clip, false);
    common::signal(daemon.pid(), "HUP");
    common::wait_log(&log, "configuration reloaded", 3);
    let state = format!("clefd/life/{ALONE}/state");
    consumer.wait_for("the removed camera's retained state cleared", WAIT, |m| {
        m.iter().skip(mark).any(|x| x.topic == state && x.payload.is_empty())
    });
    assert!(health(port)["cameras"].get(ALONE).is_none(), "{}", health(port));
    let (_, metrics) = common::http_get(port, "/metrics");
    assert!(!metrics.contains(&format!(r#"camera="{ALONE}""#)), "{metrics}");
    let (_, index) = common::http_get(port, "/");
    assert!(!index.contains(&format!("<td>{ALONE}</td>")), "{index}");
    healthy(port, "after the disabled camera was removed");
    assert!(daemon.stop(), "clefd exits 0 on SIGTERM");
    let statuses: Vec<String> = notes.lock().unwrap().iter().map(|(_, m)| m.clone()).collect();
    for line in statuses.iter().flat_map(|m| m.lines()).filter_map(|l| l.strip_prefix("STATUS=")) {
        let counts = line.split(' ').next().unwrap_or_default();
        let (up, of) = counts.split_once('/').unwrap_or_default();
        assert!(up.parse::<u32>().unwrap_or(99) <= of.parse::<u32>().unwrap_or(0), "STATUS={line}");
    }
}

/// A picture whose pixels cannot be read without a panic (`None`), or the astronaut.
struct Fragile(Option<std::sync::Arc<clefd::image::RgbImage>>);

impl clefd::pipeline::lanes::Picture for Fragile {
    fn picture(&self) -> Option<clefd::image::ImageView<'_>> {
        match &self.0 {
            Some(image) => Some(image.view()),
            None => panic!("a picture that panics when read"),
        }
    }
}

#[test]
fn a_lane_that_panics_is_counted_its_batch_comes_back_failed_and_the_lane_goes_on() {
    use clefd::engine::runtime::{self, SessionOptions};
    runtime::init(None).expect("ONNX Runtime (run scripts/setup.sh)");
    let opts = SessionOptions { threads: 1, ..SessionOptions::default() };
    let bundle = clefd::engine::Bundle::load(&common::demo_bundle(), &opts).expect("demo bundle");
    let analyzer = clefd::pipeline::analyze::Analyzer::new(bundle, 16);
    let mut pool = clefd::pipeline::lanes::LanePool::start("panics", vec![analyzer], 16, std::sync::Arc::new(|| {}))
        .expect("the lane starts");
    let astronaut = std::sync::Arc::new(common::astronaut());
    pool.submit(vec![(0, Fragile(Some(astronaut.clone())))]);
    pool.submit(vec![(0, Fragile(None)), (1, Fragile(Some(astronaut.clone())))]);
    pool.submit(vec![(0, Fragile(Some(astronaut)))]);
    let mut results = Vec::new();
    while let Some(finished) = pool.wait_finished() {
        results.push((finished.frames.len(), finished.result.map(|(faces, _)| faces.len()).map_err(|e| e.to_string())));
    }
    assert_eq!(results.len(), 3, "every batch comes back, in order: {results:?}");
    assert!(matches!(results[0], (1, Ok(_))), "{results:?}");
    assert_eq!(results[1].0, 2, "the failed batch's frames come back, to be counted as dropped");
    let err = results[1].1.clone().expect_err("the batch the lane panicked on failed");
    assert!(err.contains("panicked") && err.contains("panics when read"), "{err}");
    assert_eq!(results[2], results[0], "the lane goes on after the panic, as before it: {results:?}");
    assert_eq!(pool.panics(), 1);
}

/// A file run whose camera alone on its bundle has ended still ends by itself after a
/// SIGHUP: the reload starts no worker for a bundle no camera starts on (one would wait
/// for a camera for ever, and so would the run).
#[test]
fn a_file_run_ends_by_itself_after_a_reload() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (short, long) = (dir.path().join("short.mp4"), dir.path().join("long.mp4"));
    common::astronaut_clip(&short, 1.0, 10);
    common::astronaut_clip(&long, 12.0, 10);
    let mut text = common::base_config(dir.path(), &broker.url(), "life");
    text += &format!(
        "[cameras.short]\nuri = \"file://{}\"\nrealtime = true\nbundle = \"{}\"\n",
        short.display(),
        common::repo().join("engines/context-bias-demo").display()
    );
    text += &format!("[cameras.long]\nuri = \"file://{}\"\nrealtime = true\n", long.display());
    let (mut daemon, log) = common::run_daemon(&common::write_toml(dir.path(), &text), &[]);
    common::wait_log(&log, "camera ended; its tracks are closed", 1);
    common::signal(daemon.pid(), "HUP");
    common::wait_log(&log, "configuration reloaded", 1);
    let deadline = std::time::Instant::now() + WAIT;
    while daemon.running() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(std::time::Instant::now() < deadline, "the file run did not end after its files did:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("reload: loading bundles"), "a bundle was loaded for no camera:\n{text}");
}

/// A file run with a camera that is configured but disabled, and `mqtt.control` off (a
/// fleet dropped a disabled camera into `cameras.d`): nothing can ever enable that camera,
/// so the run ends, exit 0, when its files do. It used to wait for ever.
#[test]
fn a_file_run_with_a_disabled_camera_and_no_control_ends_with_its_files() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("short.mp4");
    common::astronaut_clip(&clip, 1.0, 10);
    let mut text = common::base_config(dir.path(), &broker.url(), "life");
    assert!(!text.contains("control = true"), "the test needs mqtt.control off:\n{text}");
    text += &format!("[cameras.once]\nuri = \"file://{}\"\nrealtime = true\n", clip.display());
    text += "[cameras.spare]\nuri = \"test://smpte\"\nenabled = false\n";
    let cfg = common::write_toml(dir.path(), &text);
    let log = dir.path().join("clefd.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child =
        common::clefd().arg("run").arg("--config").arg(&cfg).env_remove("RUST_LOG").stderr(file).spawn().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the file run did not end after its file did:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "the file run ended with {status}:\n{text}");
    assert!(text.contains("camera ended; its tracks are closed"), "the file did not play to its end:\n{text}");
}

/// A reload that leaves no camera usable (here: its password file is not text) lists the
/// camera as `failed`, with why, in its retained state, `/healthz` and `STATUS=`: the
/// daemon does not carry on as an empty, healthy one.
#[test]
fn a_reload_that_leaves_no_usable_camera_is_a_fault() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("astronaut.mp4");
    common::astronaut_clip(&clip, 4.0, 15);
    let port = common::free_port();
    let write = |camera: &str| {
        let mut text = common::base_config(dir.path(), &broker.url(), "life");
        text += &(common::http_section(port) + "[cameras.astronaut]\n" + camera);
        common::write_toml(dir.path(), &text)
    };
    let cfg = write(&format!("uri = \"file://{}\"\nloop = true\nrealtime = true\n", clip.display()));
    let sock = dir.path().join("notify.sock");
    let notes = common::notify_listen(&sock);
    let (daemon, log) = common::run_daemon(&cfg, &[("NOTIFY_SOCKET", sock.to_str().unwrap())]);
    analyses_again(port, "astronaut", 5, "at start");
    healthy(port, "at start");
    let mark = consumer.messages().len();
    // The config checks pass (the file is there), but no password can be read from it.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, [0xff, 0xfe, 0x00]).unwrap();
    let rtsp = format!("rtsp://viewer@127.0.0.1:{}/stream", dead_port(dir.path()));
    write(&format!("uri = \"{rtsp}\"\npassword_file = \"{}\"\n", secret.display()));
    common::signal(daemon.pid(), "HUP");
    common::wait_log(&log, "configuration reloaded", 1);
    status_after(&consumer, "astronaut", mark, "failed");
    common::wait_http(port, "/healthz", "/healthz 503 with no usable camera", WAIT, |code, _| code == 503);
    assert_eq!(health(port)["cameras"]["astronaut"], "failed");
    let deadline = std::time::Instant::now() + WAIT;
    while !notes.lock().unwrap().iter().any(|(_, m)| m.contains("STATUS=0/1 cameras streaming, 1 failed")) {
        assert!(std::time::Instant::now() < deadline, "no STATUS= with the camera failed: {:?}", notes.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(daemon);
}

/// Starts the demo's two cameras (`astronaut` and the one alone on its bundle, both files
/// looped in real time) with `fault` injected into the first inference worker to take its
/// fifth batch (`CLEFD_TEST_WORKER_FAULT`); the daemon, its port and its log.
fn faulty_daemon(dir: &Path, broker: &Broker, fault: &str) -> (Daemon, u16, PathBuf) {
    daemon_with(dir, broker, &[("CLEFD_TEST_WORKER_FAULT", fault)])
}

/// The demo's two cameras (as [`faulty_daemon`]) with the test hooks of `env`.
fn daemon_with(dir: &Path, broker: &Broker, env: &[(&str, &str)]) -> (Daemon, u16, PathBuf) {
    let clip = dir.join("astronaut.mp4");
    common::astronaut_clip(&clip, 4.0, 15);
    let port = common::free_port();
    let repo = common::repo();
    let mut text = common::base_config(dir, &broker.url(), "life");
    text += &common::http_section(port);
    text += &format!("[cameras.astronaut]\nuri = \"file://{}\"\nloop = true\nrealtime = true\n", clip.display());
    text += &format!(
        "[cameras.{ALONE}]\nuri = \"file://{}\"\nloop = true\nrealtime = true\nbundle = \"{}\"\n",
        repo.join("assets/context-bias-anti.mp4").display(),
        repo.join("engines/context-bias-demo").display()
    );
    let (daemon, log) = common::run_daemon(&common::write_toml(dir, &text), env);
    (daemon, port, log)
}

/// After an inference worker ended abnormally: it is counted, and both cameras (the one
/// on the failed worker's bundle included) analyse frames again, on a new worker.
fn every_camera_analyses_again(port: u16, log: &Path, what: &str) {
    common::wait_log(log, "the inference worker ended abnormally", 1);
    common::wait_http(port, "/metrics", "the worker failure counted", WAIT, |_, b| {
        b.lines().any(|l| l == "clefd_worker_failures_total 1")
    });
    analyses_again(port, ALONE, 20, what);
    analyses_again(port, "astronaut", 20, what);
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(text.contains("the camera starts again on a new one"), "no camera moved to a new worker:\n{text}");
    healthy(port, what);
}

/// A worker that panics outside its lanes (in tracking, lifecycle or the sink) is reaped:
/// its cameras start again on a new worker instead of feeding a hub nobody reads while
/// their state says `streaming`.
#[test]
fn a_worker_that_panics_outside_its_lanes_is_replaced_and_its_cameras_come_back() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port, log) = faulty_daemon(dir.path(), &broker, "panic:5");
    every_camera_analyses_again(port, &log, "after a worker panicked");
    assert!(daemon.stop(), "clefd exits 0 on SIGTERM");
}

/// A worker that stops as if its sink or its lanes were gone (no panic, no `Done`) is
/// reaped in the same way.
#[test]
fn a_worker_that_stops_without_being_told_is_replaced_and_its_cameras_come_back() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port, log) = faulty_daemon(dir.path(), &broker, "stop:5");
    every_camera_analyses_again(port, &log, "after a worker stopped");
    assert!(daemon.stop(), "clefd exits 0 on SIGTERM");
}

/// One worker hangs (inference that never returns) while the other bundle's worker goes
/// on: `/healthz` fails naming the camera whose analysis stopped, and only that one, not
/// a camera whose frames merely wait their turn on a busy worker that still progresses
/// (progress is judged per worker). SIGTERM still stops clefd cleanly.
#[test]
fn health_names_only_the_camera_whose_worker_hangs() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // A slow but progressing worker for `astronaut`: its frames wait most of the time.
    let env = [
        ("CLEFD_TEST_WORKER_FAULT", "wedge:5"),
        ("CLEFD_TEST_WORKER_FAULT_BUNDLE", "context-bias-demo"),
        ("CLEFD_TEST_INFERENCE_DELAY_MS", "100"),
    ];
    let (daemon, port, log) = daemon_with(dir.path(), &broker, &env);
    common::wait_log(&log, "the inference worker hangs", 1);
    let stalled = |_: u16, body: &str| body.contains("has not taken a frame");
    common::wait_http(port, "/healthz", "/healthz: an analysis has stopped", WAIT, |code, body| {
        code == 503 && stalled(code, body)
    });
    // Several looks: the healthy camera's frame waits in most of them.
    for _ in 0..8 {
        let (code, body) = common::http_get(port, "/healthz");
        assert_eq!(code, 503, "{body}");
        let reason = health(port)["reason"].as_str().unwrap_or_default().to_string();
        assert!(reason.starts_with(&format!("analysis of {ALONE} has not taken a frame")), "{reason}");
        assert!(!reason.contains("astronaut"), "a camera still analysed is named as stopped: {reason}");
        std::thread::sleep(Duration::from_millis(250));
    }
    analyses_again(port, "astronaut", 5, "beside the hung worker");
    assert!(daemon.stop(), "clefd exits 0 on SIGTERM with a hung worker");
}

/// A camera that really delivers 12 fps (a 12 fps file in real time, `fps = 12`) but is
/// analysed at about 4 (`CLEFD_TEST_INFERENCE_DELAY_MS`: latest frame wins drops the
/// rest) is degraded: `/healthz` 503 naming the camera and the analysed rate.
#[test]
fn a_camera_analysed_far_below_what_it_delivers_is_degraded() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("twelve.mp4");
    common::astronaut_clip(&clip, 4.0, 12);
    let port = common::free_port();
    let mut text = common::base_config(dir.path(), &broker.url(), "life");
    text += &common::http_section(port);
    text +=
        &format!("[cameras.twelve]\nuri = \"file://{}\"\nloop = true\nrealtime = true\nfps = 12.0\n", clip.display());
    let env = [("CLEFD_TEST_INFERENCE_DELAY_MS", "250")];
    let (daemon, _log) = common::run_daemon(&common::write_toml(dir.path(), &text), &env);
    common::wait_http(port, "/healthz", "/healthz degraded by the slow analysis", WAIT, |code, body| {
        code == 503 && body.contains("far below")
    });
    let reason = health(port)["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.starts_with("cameras far below their configured fps: twelve ("), "{reason}");
    assert!(reason.ends_with("fps analysed)"), "the analysed rate is the one that is low: {reason}");
    assert!(analysed(port, "twelve").is_some_and(|n| n > 0), "the camera is analysed, slowly");
    assert!(daemon.stop(), "clefd exits 0 on SIGTERM");
}

/// A bundle whose every worker fails (here each stops at its fifth batch) is given up
/// after five failures: its camera is reported `failed` with why in its retained state
/// (not left `streaming` while nothing analyses it), and the run ends non-zero.
#[test]
fn a_bundle_whose_workers_keep_failing_leaves_its_camera_failed_not_streaming() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, _, _) = faulty_daemon(dir.path(), &broker, "stops:5");
    consumer.wait_for("a camera failed after its workers kept failing", WAIT, |m| {
        m.iter().any(|x| x.topic.ends_with("/state") && x.body["status"] == "failed")
    });
    let failed = consumer.messages().into_iter().find(|x| x.topic.ends_with("/state") && x.body["status"] == "failed");
    let body = failed.map(|x| x.body).unwrap_or_default();
    let reason = body["last_error"].as_str().unwrap_or_default();
    assert!(reason.contains("ended abnormally 5 times"), "{body}");
    let deadline = std::time::Instant::now() + WAIT;
    while daemon.running() {
        assert!(std::time::Instant::now() < deadline, "the run did not end after giving up");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!daemon.stop(), "giving up makes the run exit non-zero");
}

/// A file with garbage mid-way, played once: GStreamer ends it with a plain end of stream
/// at the damage, and clefd reports it `failed` with why in its retained state, not
/// `ended` as if it had played whole; the run then exits non-zero.
#[test]
fn a_file_damaged_mid_way_is_failed_with_the_reason_not_ended() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("damaged.mp4");
    common::astronaut_clip(&clip, 6.0, 15);
    // Seeded garbage over the middle of the video data (the index at the end stays whole).
    let mut bytes = std::fs::read(&clip).unwrap();
    let (from, to) = (bytes.len() * 3 / 10, bytes.len() * 7 / 10);
    let mut x: u32 = 0x2545_f491;
    for b in &mut bytes[from..to] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(&clip, bytes).unwrap();
    let mut text = common::base_config(dir.path(), &broker.url(), "life");
    text += &format!("[cameras.damaged]\nuri = \"file://{}\"\n", clip.display());
    let (daemon, _log) = common::run_daemon(&common::write_toml(dir.path(), &text), &[]);
    let topic = "clefd/life/damaged/state";
    consumer.wait_for("the damaged file's final state", WAIT, |m| {
        m.iter().any(|x| x.topic == topic && (x.body["status"] == "failed" || x.body["status"] == "ended"))
    });
    let last = consumer.on(topic).into_iter().rev().find(|x| x.body["status"] != "streaming").unwrap().body;
    assert_eq!(last["status"], "failed", "a damaged file is not `ended`: {last}");
    let reason = last["last_error"].as_str().unwrap_or_default();
    assert!(reason.contains("damaged or truncated") && reason.contains("frames"), "{last}");
    // Its only camera is over: the run ends, and not as a success.
    let mut daemon = daemon;
    let deadline = std::time::Instant::now() + WAIT;
    while daemon.running() {
        assert!(std::time::Instant::now() < deadline, "the run did not end after its file did");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!daemon.stop(), "a damaged file makes the run exit non-zero");
}

/// Writes a 2 s, 15 fps video with a 4.6 s audio track muxed by `mux` (the container's
/// duration is the audio's), with GStreamer itself.
fn video_with_longer_audio(path: &Path, mux: &str, audio_encoder: &str) {
    video_with_audio(path, mux, audio_encoder, 30, 200);
}

/// Writes `frames` frames of 15 fps video and `buffers` buffers of 1024 audio samples
/// (44.1 kHz) muxed by `mux`, with GStreamer itself.
fn video_with_audio(path: &Path, mux: &str, audio_encoder: &str, frames: u32, buffers: u32) {
    let desc = format!(
        "videotestsrc num-buffers={frames} ! video/x-raw,framerate=15/1,width=320,height=240 ! x264enc ! h264parse ! \
         queue ! {mux} name=m ! filesink location={} audiotestsrc num-buffers={buffers} samplesperbuffer=1024 ! \
         audio/x-raw,rate=44100 ! audioconvert ! {audio_encoder} ! queue ! m.",
        path.display()
    );
    common::encode::run_to_eos(&desc, 60);
}

/// A Matroska file with an audio track, cut short (a copy interrupted half-way): GStreamer
/// ends it with a plain end of stream and no warning, and Matroska gives the video no
/// length of its own; that the file ends before its Segment does gives it away: `failed`
/// with why, not `ended`.
#[test]
fn a_truncated_matroska_file_with_audio_is_failed_not_ended() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let mkv = dir.path().join("cut.mkv");
    // 6 s of video, 2 s of audio: the container's 6 s are the video's.
    video_with_audio(&mkv, "matroskamux", "vorbisenc", 90, 86);
    let bytes = std::fs::read(&mkv).unwrap();
    std::fs::write(&mkv, &bytes[..bytes.len() / 2]).unwrap();
    let text = common::base_config(dir.path(), &broker.url(), "life")
        + &format!("[cameras.cut]\nuri = \"file://{}\"\n", mkv.display());
    let (daemon, log) = common::run_daemon(&common::write_toml(dir.path(), &text), &[]);
    let topic = "clefd/life/cut/state";
    consumer.wait_for("the cut file's final state", WAIT, |m| {
        m.iter().any(|x| x.topic == topic && (x.body["status"] == "failed" || x.body["status"] == "ended"))
    });
    let last = consumer.on(topic).into_iter().rev().find(|x| x.body["status"] != "streaming").unwrap().body;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(last["status"], "failed", "a truncated Matroska file is not `ended`: {last}\n{text}");
    let reason = last["last_error"].as_str().unwrap_or_default();
    assert!(reason.contains("damaged or truncated"), "{last}");
    // Told by the Segment's size, not by a GStreamer warning (which would be appended to
    // the reason in parentheses, and logged).
    assert!(!reason.contains(" ("), "the verdict leaned on a GStreamer warning: {reason}");
    assert!(!text.contains("GStreamer warning"), "GStreamer warned about the cut file:\n{text}");
    drop(daemon);
}

/// Whole files end `ended`, not `failed`, where a frame count from the container's
/// duration and nominal frame rate would call them short: an MP4 and a Matroska file whose
/// audio runs 2.6 s past their video, and a clip played under an `fps` cap well below its
/// own rate. The run then exits 0.
#[test]
fn whole_files_with_a_longer_audio_track_or_under_an_fps_cap_are_ended_not_failed() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let (mp4, mkv, capped) = (dir.path().join("av.mp4"), dir.path().join("av.mkv"), dir.path().join("capped.mp4"));
    video_with_longer_audio(&mp4, "mp4mux", "avenc_aac");
    video_with_longer_audio(&mkv, "matroskamux", "vorbisenc");
    common::astronaut_clip(&capped, 4.0, 15);
    let mut text = common::base_config(dir.path(), &broker.url(), "life");
    text += &format!("[cameras.mp4]\nuri = \"file://{}\"\n", mp4.display());
    text += &format!("[cameras.mkv]\nuri = \"file://{}\"\n", mkv.display());
    text += &format!("[cameras.capped]\nuri = \"file://{}\"\nrealtime = true\nfps = 3.0\n", capped.display());
    let (mut daemon, _log) = common::run_daemon(&common::write_toml(dir.path(), &text), &[]);
    for camera in ["mp4", "mkv", "capped"] {
        let topic = format!("clefd/life/{camera}/state");
        consumer.wait_for(&format!("{camera}'s final state"), WAIT, |m| {
            m.iter().any(|x| x.topic == topic && (x.body["status"] == "failed" || x.body["status"] == "ended"))
        });
        let last = consumer.on(&topic).into_iter().rev().find(|x| x.body["status"] != "streaming").unwrap().body;
        assert_eq!(last["status"], "ended", "{camera}: a whole file is `ended`: {last}");
    }
    let deadline = std::time::Instant::now() + WAIT;
    while daemon.running() {
        assert!(std::time::Instant::now() < deadline, "the run did not end after its files did");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(daemon.stop(), "whole files make the run exit 0");
}

/// The `fps` cap is a maximum, not a target: a 2 fps file played in real time under
/// `fps = 12` streams at its own rate, and `/healthz` stays ok over more than a whole
/// health window (it once went 503 "far below its configured fps"). Disabling that camera
/// on purpose is no fault either. (A camera analysed far below what it delivers is
/// `a_camera_analysed_far_below_what_it_delivers_is_degraded`; the target's choice is
/// `service::probe`'s unit tests.)
#[test]
fn health_is_ok_for_a_slow_native_camera_under_a_higher_fps_cap_and_once_it_is_disabled() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("slow.mp4");
    common::astronaut_clip(&clip, 8.0, 2);
    let port = common::free_port();
    let mut text =
        common::base_config(dir.path(), &broker.url(), "life").replace("[mqtt]\n", "[mqtt]\ncontrol = true\n");
    text += &common::http_section(port);
    text += &format!("[cameras.slow]\nuri = \"file://{}\"\nloop = true\nrealtime = true\nfps = 12.0\n", clip.display());
    text += &format!("[cameras.uncapped]\nuri = \"file://{}\"\nloop = true\nrealtime = true\n", clip.display());
    let (daemon, _log) = common::run_daemon(&common::write_toml(dir.path(), &text), &[]);
    // 30 frames analysed at 2 fps span 15 s, more than a health window (10 s); /healthz
    // is never degraded on the way.
    let deadline = std::time::Instant::now() + WAIT;
    while analysed(port, "slow").is_none_or(|n| n < 30) {
        let (code, body) = common::http_get(port, "/healthz");
        assert!(!body.contains("far below"), "a 2 fps camera under fps = 12 is healthy: {code} {body}");
        assert!(std::time::Instant::now() < deadline, "the slow camera analysed {:?} frames", analysed(port, "slow"));
        std::thread::sleep(Duration::from_millis(300));
    }
    healthy(port, "a 2 fps camera under fps = 12, over a whole health window");
    let answer = command(&broker, &consumer, "clefd/life/slow/set", r#"{"enabled": false}"#);
    assert_eq!(answer["ok"], true, "{answer}");
    common::wait_http(port, "/healthz", "/healthz lists the slow camera disabled", WAIT, |code, body| {
        code == 200 && body.contains("disabled")
    });
    healthy(port, "with the slow camera disabled");
    assert_eq!(health(port)["cameras"]["slow"], "disabled");
    drop(daemon);
}
