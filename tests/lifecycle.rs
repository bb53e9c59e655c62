//! Camera lifecycles in the demo's layout (two cameras, two bundles), with a real broker,
//! real models and real GStreamer: the camera that is alone on its bundle comes back when
//! it is disabled and enabled again over MQTT, and when a reload removes and re-adds it.
//! Coming back means analysing frames again (its `/metrics` counter grows, its events and
//! `current` appear), while `/healthz` stays ok throughout.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Broker, Consumer, Daemon};

const WAIT: Duration = Duration::from_secs(90);
const ALONE: &str = "context-bias";

/// The demo's two cameras; `with_alone` false leaves out the one alone on its bundle.
fn config(dir: &Path, broker: &Broker, port: u16, clip: &Path, with_alone: bool) -> PathBuf {
    let mut text = common::base_config(dir, &broker.url(), "life").replace("[mqtt]\n", "[mqtt]\ncontrol = true\n");
    text += &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n");
    text += &format!("[cameras.astronaut]\nuri = \"file://{}\"\nloop = true\nrealtime = true\n", clip.display());
    if with_alone {
        let repo = common::repo();
        text += &format!(
            "[cameras.{ALONE}]\nuri = \"file://{}\"\nloop = true\nrealtime = true\nbundle = \"{}\"\n",
            repo.join("assets/context-bias-anti.mp4").display(),
            repo.join("engines/context-bias-demo").display()
        );
    }
    let path = dir.join("clefd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `clefd_frames_analysed_total` of `camera`, if `/metrics` has the series.
fn analysed(port: u16, camera: &str) -> Option<u64> {
    let (_, body) = common::http_get(port, "/metrics");
    let series = format!("clefd_frames_analysed_total{{camera=\"{camera}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.trim().parse::<f64>().ok()).map(|v| v as u64)
}

/// Waits until `camera` has analysed `more` frames beyond what it had at the call (a
/// series that is absent counts as none), checking `/healthz` on the way.
fn analyses_again(port: u16, camera: &str, more: u64, what: &str) {
    let from = analysed(port, camera).unwrap_or(0);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = analysed(port, camera);
        if now.is_some_and(|n| n >= from + more) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {camera} analysed {now:?} frames, {from} before");
        std::thread::sleep(Duration::from_millis(300));
    }
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

#[test]
fn the_camera_alone_on_its_bundle_comes_back_after_disable_and_after_a_reload() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("astronaut.mp4");
    common::astronaut_clip(&clip, 4.0, 15);
    let port = common::free_port();
    let cfg = config(dir.path(), &broker, port, &clip, true);
    let log = dir.path().join("clefd.log");
    let daemon = Daemon::start(&cfg, &log);
    analyses_again(port, ALONE, 10, "at start");
    analyses_again(port, "astronaut", 10, "at start");
    healthy(port, "at start");

    // Off and on again over MQTT.
    let mark = consumer.messages().len();
    let answer = command(&broker, &consumer, &format!("clefd/life/{ALONE}/set"), r#"{"enabled": false}"#);
    assert_eq!(answer["ok"], true, "{answer}");
    status_after(&consumer, ALONE, mark, "disabled");
    analyses_again(port, "astronaut", 10, "while the other is disabled");
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
    assert!(daemon.stop(), "clefd exits 0 on SIGTERM");
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
