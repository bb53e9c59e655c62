//! A camera alone on its bundle's worker, restarted by a reload that also starts a new
//! worker for another bundle (whose last worker ended with its file): it must go on
//! being analysed, under one `clefd_frames_analysed_total` series. The path of torture
//! seed 12 step 78 (a device-wide command after the other bundle's file had ended). The
//! daemon was found to analyse the camera there: what failed was the torture's check,
//! which took the restarted camera's counter, counted again from zero by its new
//! generation, for one that did not grow (see `note_progress` in
//! `tests/torture/invariants.rs`). This test keeps the daemon's side of it true.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;

const WAIT: Duration = Duration::from_secs(90);

/// Every value `/metrics` shows for `camera`'s frames analysed (one per series).
fn analysed(port: u16, camera: &str) -> Vec<f64> {
    let (_, body) = common::http_get(port, "/metrics");
    let series = format!("clefd_frames_analysed_total{{camera=\"{camera}\"}}");
    body.lines().filter_map(|l| common::metrics::value(l, &series)).collect()
}

/// Waits until `camera` has exactly one frames-analysed series and it is above `above`;
/// panics after [`WAIT`] with what it saw.
fn wait_analysed_above(port: u16, camera: &str, above: f64, log: &std::path::Path) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = analysed(port, camera);
        if let [v] = seen[..]
            && v > above
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{camera}: frames analysed {seen:?}, expected one series above {above}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_lone_camera_restarted_while_another_bundles_worker_is_replaced_is_still_analysed() {
    let common::Bench { port, clip, dir, consumer, broker } = common::Bench::with_astronaut("clip.mp4", 2.0, 5);
    let context = common::repo().join("engines/context-bias-demo");
    let cfg = common::TestConfig::new(dir.path(), &broker.url(), "race")
        .with(|c| c.mqtt.control = true)
        .http(port)
        .camera_with("ball", "test://ball", |c| c.fps = Some(5.0))
        .camera_with("clip", &format!("file://{}", clip.display()), |c| {
            c.realtime = true;
            c.bundle = Some(context.clone());
        })
        .write();
    let log = dir.path().join("clefd.log");
    let daemon = Daemon::start(&cfg, &log);

    // Ball is analysed; clip has ended, and with it the context bundle's worker (joined).
    wait_analysed_above(port, "ball", 0.0, &log);
    common::wait_log(&log, "inference worker ended bundle=context-bias-demo", 1);
    let old = wait_analysed_above(port, "ball", 10.0, &log);

    // A device-wide command restarts both: the context bundle gets a new worker, ball a
    // new slot on its worker, where it is the only camera.
    let before = consumer.on("clefd/race/set/result").len();
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", "clefd/race/set"])
        .args(["-m", r#"{"score_threshold": 0.6}"#])
        .status()
        .expect("mosquitto_pub (mosquitto-clients) runs");
    assert!(status.success());
    consumer.wait_for("the answer to the device-wide command", WAIT, |m| {
        m.iter().filter(|x| x.topic == "clefd/race/set/result").count() > before
    });
    let answer = consumer.on("clefd/race/set/result").pop().unwrap().body;
    assert_eq!(answer["ok"], true, "{answer}");
    common::wait_log(&log, "control command applied", 1);
    // The path of the incident: the context bundle was loaded again for this reload.
    common::wait_log(&log, "loading bundles before switching cameras over bundles=1", 1);

    // The new generation counts from zero; it must count, and be the only series.
    let first = wait_analysed_above(port, "ball", -1.0, &log);
    let then = wait_analysed_above(port, "ball", first, &log);
    eprintln!("ball: frames analysed {old} before the restart; {first}, then {then} after it");
    assert!(daemon.stop());
}
