//! The systemd side: the unit passes `systemd-analyze verify` and scores well on
//! `systemd-analyze security`; the notify protocol (READY, WATCHDOG only while frames
//! move, STOPPING) against a datagram socket set as NOTIFY_SOCKET.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn unit_with_binary(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(common::repo().join("systemd/clefd.service")).unwrap();
    let p = dir.join("clefd.service");
    std::fs::write(&p, text.replace("/usr/bin/clefd", env!("CARGO_BIN_EXE_clefd"))).unwrap();
    p
}

#[test]
fn the_jetson_drop_in_verifies_and_lets_the_gpu_and_csi_cameras_in() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_binary(dir.path());
    // The unit with its drop-in applied: sections may repeat, later settings add or win.
    let drop_in = std::fs::read_to_string(common::repo().join("systemd/jetson.conf")).unwrap();
    let text = std::fs::read_to_string(&unit).unwrap() + "\n" + &drop_in;
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("clefd.service:"), "systemd-analyze verify: {stderr}");
    for node in ["/dev/nvhost-ctrl-gpu", "/dev/nvmap", "/dev/nvgpu/igpu0/ctrl", "/dev/host1x-fence", "/dev/v4l2-nvdec"]
    {
        assert!(drop_in.contains(&format!("DeviceAllow={node} rw")), "{node} (JetPack 5 and 6)");
    }
    for line in ["ProcSubset=all", "PrivateTmp=no", "After=nvargus-daemon.service", "SupplementaryGroups=video render"]
    {
        assert!(drop_in.lines().any(|l| l == line), "{line}");
    }
}

#[test]
fn the_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_binary(dir.path());
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("clefd.service:"), "systemd-analyze verify: {stderr}");
    let out = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&unit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let score: f64 = text
        .split("Overall exposure level for clefd.service:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in: {text}"));
    assert!(score <= 4.0, "security exposure {score} > 4.0");
    let users = std::fs::read_to_string(common::repo().join("systemd/clefd.sysusers")).unwrap();
    assert!(users.contains("u clefd") && users.contains("m clefd video"));
}

type Log = common::NotifyLog;

fn wait_for(log: &Log, what: &str, timeout: Duration) -> Instant {
    common::notify_wait(log, what, timeout)
}

/// The daemon of one test, killed when the test ends however it ends: a failed assertion
/// must not leave a daemon behind holding the test run's output open.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }

    /// Waits for the daemon to exit by itself.
    fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        self.0.take().expect("the daemon is still ours").wait_with_output()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run_notified(dir: &Path, extra_env: &[(&str, &str)], port: u16) -> (KillOnDrop, Log, common::Broker) {
    let broker = common::Broker::start();
    let clip = dir.join("clip.mp4");
    common::astronaut_clip(&clip, 3.0, 15);
    let cfg = dir.join("clefd.toml");
    std::fs::write(
        &cfg,
        common::base_config(dir, &broker.url(), "sd")
            + &format!(
                "[http]\nlisten = \"127.0.0.1:{port}\"\n[cameras.cam]\nuri = \"file://{}\"\nloop = true\n",
                clip.display()
            ),
    )
    .unwrap();
    let sock = dir.join("notify.sock");
    let log = common::notify_listen(&sock);
    let mut cmd = common::clefd();
    cmd.args(["run", "--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(std::fs::File::create(dir.join("clefd.log")).unwrap());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = KillOnDrop(Some(cmd.spawn().unwrap()));
    (child, log, broker)
}

fn watchdogs_after(log: &Log, a: Instant) -> usize {
    log.lock().unwrap().iter().filter(|(t, m)| m == "WATCHDOG=1" && *t >= a).count()
}

#[test]
fn ready_watchdog_status_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let (child, log, _broker) = run_notified(dir.path(), &[], common::free_port());
    let ready = wait_for(&log, "READY=1", Duration::from_secs(60));
    // While the models load (a first TensorRT build takes minutes), systemd is asked for time.
    let extended = wait_for(&log, "EXTEND_TIMEOUT_USEC=", Duration::from_secs(1));
    assert!(extended <= ready, "EXTEND_TIMEOUT_USEC comes while starting, before READY");
    let streaming = wait_for(&log, "STATUS=1/1 cameras streaming", Duration::from_secs(60));
    // Counted, not timed: pings keep coming while frames flow.
    let deadline = Instant::now() + Duration::from_secs(60);
    while watchdogs_after(&log, streaming) < 4 {
        assert!(Instant::now() < deadline, "no WATCHDOG=1 pings while frames flow");
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    wait_for(&log, "STOPPING=1", Duration::from_secs(10));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
}

#[test]
fn a_hung_inference_stage_stops_the_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    // Inference takes the first frame and then hangs for longer than the test.
    let (_child, log, _broker) = run_notified(dir.path(), &[("CLEFD_TEST_INFERENCE_DELAY_MS", "600000")], port);
    wait_for(&log, "READY=1", Duration::from_secs(60));
    common::wait_log(&dir.path().join("clefd.log"), "inference is not taking frames", 1);
    let stuck = Instant::now();
    // The daemon's own clock: /healthz reports the hang once it has lasted 10 s, naming the
    // camera whose analysis stopped rather than blaming "inference".
    common::wait_http(port, "/healthz", "the hang reported", Duration::from_secs(60), |code, body| {
        code == 503 && body.contains("analysis of cam has not taken a frame")
    });
    let pings = watchdogs_after(&log, stuck);
    assert!(pings <= 1, "no WATCHDOG=1 while inference is stuck (one may have been on its way): {pings}");
}

use common::http_get;

#[test]
fn metrics_pass_promtool_and_healthz_tells_the_truth() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 3.0, 15);
    let port = common::free_port();
    let dead = common::free_port();
    let cfg = dir.path().join("clefd.toml");
    let base = common::base_config(dir.path(), &broker.url(), "web");
    std::fs::write(
        &cfg,
        format!(
            "{base}[http]\nlisten = \"127.0.0.1:{port}\"\n[cameras.cam]\nuri = \"file://{}\"\nloop = true\n",
            clip.display()
        ),
    )
    .unwrap();
    let daemon = common::Daemon::start(&cfg, &dir.path().join("a.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = &mut s;
            let (code, body) = http_get(port, "/metrics");
            if code == 200
                && body.contains("clefd_frames_analysed_total{camera=\"cam\"}")
                && body.contains("clefd_camera_streaming{camera=\"cam\"} 1")
            {
                break body;
            }
        }
        assert!(Instant::now() < deadline, "metrics never showed the camera streaming");
        std::thread::sleep(Duration::from_millis(300));
    };
    if let Err(e) = common::promtool_check(&metrics) {
        panic!("promtool: {e}\n{metrics}");
    }
    // Dashboards' series: events by camera, step and emotion; camera state; versions.
    let labelled = common::wait_http(port, "/metrics", "labelled event counts", Duration::from_secs(60), |_, b| {
        b.contains("clefd_events_total{camera=\"cam\",type=\"new\",emotion=\"")
    });
    common::promtool_check(&labelled).unwrap_or_else(|e| panic!("promtool: {e}\n{labelled}"));
    assert!(labelled.contains("clefd_camera_state{camera=\"cam\",state=\"streaming\"} 1"), "{labelled}");
    assert!(labelled.contains("clefd_camera_state{camera=\"cam\",state=\"failed\"} 0"), "{labelled}");
    assert!(
        labelled.contains(&format!("clefd_build_info{{version=\"{}\",onnxruntime=\"1.", env!("CARGO_PKG_VERSION"))),
        "{labelled}"
    );
    // Every metric the Grafana dashboard queries is one clefd exports.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::repo().join("contrib/grafana/clefd.json")).unwrap())
            .unwrap();
    let queried = common::dashboard_metrics(&dashboard);
    assert!(queried.len() >= 20, "{queried:?}");
    let exported: std::collections::BTreeSet<&str> =
        labelled.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let missing: Vec<&String> = queried.iter().filter(|m| !exported.contains(m.as_str())).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics clefd does not export: {missing:?}");
    let build = metrics.lines().find(|l| l.starts_with("clefd_build_info{")).unwrap_or_default();
    assert!(build.contains("provider=\"cpu\""), "the best provider of this ONNX Runtime: {build}");
    for name in [
        "clefd_capture_to_decision_seconds_bucket",
        "clefd_inference_seconds_count",
        "clefd_frames_dropped_total",
        "clefd_spool_events",
        "clefd_mqtt_events_acked_total",
        "clefd_inference_lanes{bundle=\"face-fer2013\"} ",
        "clefd_inference_batches_in_flight{bundle=\"face-fer2013\"} ",
        "clefd_bundle_provider_info{bundle=\"face-fer2013\",provider=\"cpu\"} 1",
        "clefd_camera_decoder_info{camera=\"cam\",decoder=\"",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let (code, body) = http_get(port, "/healthz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\"") && body.contains("\"cam\":\"streaming\""), "{body}");
    assert_eq!(http_get(port, "/nope").0, 404);
    assert!(daemon.stop());

    // A camera that fails beside one that streams: its series say so, promtool-clean.
    let corrupt = dir.path().join("corrupt.mp4");
    std::fs::write(&corrupt, b"\x00\x00\x00\x18ftypmp42 this is not a video at all").unwrap();
    let port = common::free_port();
    std::fs::write(
        &cfg,
        format!(
            "{base}[http]\nlisten = \"127.0.0.1:{port}\"\n[cameras.cam]\nuri = \"file://{}\"\nloop = true\n[cameras.broken]\nuri = \"file://{}\"\n",
            clip.display(),
            corrupt.display()
        ),
    )
    .unwrap();
    let daemon = common::Daemon::start(&cfg, &dir.path().join("c.log"));
    let failed = common::wait_http(port, "/metrics", "the broken camera failed", Duration::from_secs(60), |_, b| {
        b.contains("clefd_camera_state{camera=\"broken\",state=\"failed\"} 1")
            && b.contains("clefd_camera_streaming{camera=\"cam\"} 1")
    });
    common::promtool_check(&failed).unwrap_or_else(|e| panic!("promtool with a failed camera: {e}\n{failed}"));
    assert!(daemon.stop());

    // A device whose only camera cannot connect is not healthy, and says why.
    let port = common::free_port();
    std::fs::write(
        &cfg,
        format!("{base}[http]\nlisten = \"127.0.0.1:{port}\"\n[cameras.cam]\nuri = \"rtsp://127.0.0.1:{dead}/x\"\n"),
    )
    .unwrap();
    let daemon = common::Daemon::start(&cfg, &dir.path().join("b.log"));
    common::wait_http(port, "/healthz", "503 with the reason", Duration::from_secs(30), |code, body| {
        code == 503 && body.contains("no camera is streaming")
    });
    assert!(daemon.stop());
}
