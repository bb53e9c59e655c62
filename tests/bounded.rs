//! Bounded by construction, measured on the real daemon: camera restarts by control
//! command leave RSS, threads and file descriptors where they were, and SIGTERM with 128
//! cameras stops well inside the unit's `TimeoutStopSec` (cameras stop together).
//!
//! `CLEFD_TEST_RESTARTS=N` runs N restarts instead of the default (`scripts/bounded.sh`).

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Broker, Consumer, Daemon};

const WAIT: Duration = Duration::from_secs(120);
/// The unit's `TimeoutStopSec`.
const TIMEOUT_STOP: Duration = Duration::from_secs(20);
/// One daemon at a time: each test loads the machine on its own.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// RSS (kB), threads and open file descriptors of process `pid`.
fn footprint(pid: u32) -> (u64, u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    (field("VmRSS:"), field("Threads:"), fds)
}

fn config(dir: &Path, broker: &Broker, cameras: &str, extra: &str) -> std::path::PathBuf {
    let text = common::base_config(dir, &broker.url(), "bounded") + extra + cameras;
    let path = dir.join("clefd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Sends a command and waits for its answer; whether it was accepted.
fn command(broker: &Broker, consumer: &Consumer, topic: &str, payload: &str) -> bool {
    let result = format!("{topic}/result");
    let before = consumer.on(&result).len();
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", topic, "-m", payload])
        .status()
        .expect("mosquitto_pub (mosquitto-clients) runs");
    assert!(status.success());
    consumer.wait_for(&format!("the answer to {payload}"), WAIT, |m| {
        m.iter().filter(|x| x.topic == result).count() > before
    });
    consumer.on(&result).pop().unwrap().body["ok"] == true
}

#[test]
fn camera_restarts_leave_rss_threads_and_fds_where_they_were() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let restarts: usize = std::env::var("CLEFD_TEST_RESTARTS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let cameras = "[cameras.a]\nuri = \"test://ball\"\nfps = 5\n[cameras.b]\nuri = \"test://ball\"\nfps = 5\n";
    let port = common::free_port();
    let cfg = config(dir.path(), &broker, cameras, &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    let text = std::fs::read_to_string(&cfg).unwrap().replace("[mqtt]\n", "[mqtt]\ncontrol = true\n");
    std::fs::write(&cfg, text).unwrap();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    consumer.wait_for("both cameras streaming", WAIT, |m| {
        ["a", "b"]
            .iter()
            .all(|c| m.iter().any(|x| x.topic == format!("clefd/bounded/{c}/state") && x.body["status"] == "streaming"))
    });
    // Each command changes b's plan, so b restarts (a new camera generation each time).
    let restart = |i: usize| {
        let threshold = if i % 2 == 0 { 0.55 } else { 0.6 };
        let payload = format!(r#"{{"score_threshold": {threshold}}}"#);
        assert!(command(&broker, &consumer, "clefd/bounded/b/set", &payload), "command {i} accepted");
    };
    // Warm-up: allocator arenas, GStreamer's registry and thread pools settle first.
    let warm_up = 10;
    for i in 0..warm_up {
        restart(i);
    }
    let start = footprint(daemon.pid());
    for i in warm_up..warm_up + restarts {
        restart(i);
    }
    consumer.wait_for("b streaming after the last restart", WAIT, |m| {
        m.iter().rev().find(|x| x.topic == "clefd/bounded/b/state").is_some_and(|x| x.body["status"] == "streaming")
    });
    // Exactly one of each per camera: nothing is left behind by the generations that stopped.
    let metrics =
        common::wait_http(port, "/metrics", "one slot, tracker and statistics per camera", WAIT, |_, body| {
            ["hub_slots", "trackers", "camera_statistics"]
                .iter()
                .all(|k| body.contains(&format!("clefd_pipeline_held{{kind=\"{k}\"}} 2\n")))
        });
    assert!(metrics.contains("clefd_camera_state"), "{metrics}");
    let end = footprint(daemon.pid());
    eprintln!(
        "after {warm_up} + {restarts} restarts: RSS {} -> {} kB, threads {} -> {}, fds {} -> {}",
        start.0, end.0, start.1, end.1, start.2, end.2
    );
    assert!(end.0 < start.0 + 8 * 1024, "RSS grew from {} to {} kB over {restarts} restarts", start.0, end.0);
    assert!(end.1 <= start.1 + 4, "threads grew from {} to {} over {restarts} restarts", start.1, end.1);
    assert!(end.2 <= start.2 + 4, "file descriptors grew from {} to {} over {restarts} restarts", start.2, end.2);
    assert!(daemon.stop(), "exit 0 on SIGTERM");
}

#[test]
fn sigterm_with_128_cameras_stops_inside_timeout_stop_sec() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cameras: String = (0..128).map(|i| format!("[cameras.c{i:03}]\nuri = \"test://ball\"\nfps = 1\n")).collect();
    let cfg = config(dir.path(), &broker, &cameras, &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    // At 1 fps on a loaded machine a camera is not stalled after 2 s without a frame.
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("stall_timeout_s = 2.0"), "the test config sets stall_timeout_s = 2.0:\n{text}");
    std::fs::write(&cfg, text.replace("stall_timeout_s = 2.0", "stall_timeout_s = 30.0")).unwrap();
    let log = dir.path().join("clefd.log");
    let mut daemon = Daemon::start(&cfg, &log);
    common::wait_http(port, "/healthz", "128 cameras streaming", Duration::from_secs(240), |_, body| {
        body.matches(r#""streaming""#).count() == 128
    });
    let asked = Instant::now();
    // systemd kills a unit still running at TimeoutStopSec: that is the deadline for the exit.
    let deadline = asked + TIMEOUT_STOP;
    common::signal(daemon.pid(), "TERM");
    while daemon.running() {
        assert!(Instant::now() < deadline, "still running at TimeoutStopSec after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("128 cameras stopped {:.2} s after SIGTERM", asked.elapsed().as_secs_f64());
    // The status of the exit just seen (kept by the child handle).
    assert!(daemon.stop(), "exit 0 after SIGTERM");
}
