//! SIGHUP reload: one camera changed, one added, one untouched; the untouched camera
//! never pauses, and a broken config is rejected while everything keeps running.

mod common;

use std::time::{Duration, Instant};

fn frames(port: u16, camera: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let key = format!("clefd_frames_analysed_total{{camera=\"{camera}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok())
}

fn write(dir: &std::path::Path, base: &str, port: u16, cameras: &str) -> std::path::PathBuf {
    let p = dir.join("clefd.toml");
    std::fs::write(&p, format!("{base}[http]\nlisten = \"127.0.0.1:{port}\"\n{cameras}")).unwrap();
    p
}

fn hup(d: &common::Daemon) {
    std::process::Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap();
}

/// Samples camera `a`'s frame counter for `dur`; returns the longest time it stood still.
fn longest_pause(port: u16, dur: Duration) -> Duration {
    let end = Instant::now() + dur;
    let (mut last, mut since, mut worst) = (frames(port, "a"), Instant::now(), Duration::ZERO);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        let now = frames(port, "a");
        if now > last {
            last = now;
            since = Instant::now();
        }
        worst = worst.max(since.elapsed());
    }
    worst
}

#[test]
fn reload_restarts_only_what_changed_and_rejects_a_broken_config() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let base = common::base_config(dir.path(), &broker.url(), "reload");
    let cfg =
        write(dir.path(), &base, port, "[cameras.a]\nuri = \"test://ball\"\n[cameras.b]\nuri = \"test://smpte\"\n");
    let log = dir.path().join("clefd.log");
    let daemon = common::Daemon::start(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while frames(port, "a").unwrap_or(0) < 10 || frames(port, "b").unwrap_or(0) < 10 {
        assert!(Instant::now() < deadline, "cameras did not start");
        std::thread::sleep(Duration::from_millis(200));
    }

    write(
        dir.path(),
        &base,
        port,
        "[cameras.a]\nuri = \"test://ball\"\n[cameras.b]\nuri = \"test://snow\"\n[cameras.c]\nuri = \"test://ball\"\n",
    );
    hup(&daemon);
    let pause = longest_pause(port, Duration::from_secs(4));
    assert!(pause < Duration::from_millis(600), "the unchanged camera paused for {pause:?}");
    assert!(frames(port, "c").unwrap_or(0) > 10, "the added camera streams");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("configuration reloaded") && text.contains("added=[\"c\"]") && text.contains("changed=[\"b\"]"),
        "{text}"
    );
    assert!(
        text.contains("stopping camera (reload) camera=b") && !text.contains("stopping camera (reload) camera=a"),
        "{text}"
    );

    std::fs::write(&cfg, "[cameras.a\nthis is not toml").unwrap();
    hup(&daemon);
    let pause = longest_pause(port, Duration::from_secs(2));
    assert!(pause < Duration::from_millis(600), "a broken config must not disturb anything ({pause:?})");
    let before_c = frames(port, "c").unwrap_or(0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(frames(port, "c").unwrap_or(0) > before_c, "all cameras keep running");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("reload rejected") && text.contains("the running one stays"), "{text}");
    assert!(daemon.stop(), "{text}");
}

fn seqs(c: &common::Consumer, device: &str) -> Vec<u64> {
    c.messages()
        .iter()
        .filter(|m| m.topic.starts_with(&format!("clefd/{device}/")) && m.topic.ends_with("/emotion"))
        .filter_map(|m| m.body["seq"].as_u64())
        .collect()
}

#[test]
fn reload_moves_to_a_new_broker_and_new_engine_settings_without_losing_an_event() {
    let (a, b) = (common::Broker::start(), common::Broker::start());
    let (at_a, at_b) = (common::Consumer::start(a.port), common::Consumer::start(b.port));
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 4.0, 15);
    let camera = format!("[cameras.door]\nuri = \"file://{}\"\nloop = true\n", clip.display());
    let base = |broker: &str, engine: &str| {
        common::base_config(dir.path(), broker, "moving")
            .replace("heartbeat_s = 1.0", "heartbeat_s = 0.2")
            .replace("threads = 1\n", &format!("threads = 1\n{engine}"))
    };
    let port = common::free_port();
    let cfg = write(dir.path(), &base(&a.url(), ""), port, &camera);
    let log = dir.path().join("clefd.log");
    let daemon = common::Daemon::start(&cfg, &log);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    at_a.wait_for("events at the first broker", Duration::from_secs(30), |_| seqs(&at_a, "moving").len() >= 5);

    write(dir.path(), &base(&b.url(), "batch_max = 4\n"), port, &camera);
    hup(&daemon);
    at_b.wait_for("events at the new broker", Duration::from_secs(30), |_| seqs(&at_b, "moving").len() >= 5);
    assert!(daemon.stop(), "{}", text());

    let mut all: Vec<u64> = seqs(&at_a, "moving").into_iter().chain(seqs(&at_b, "moving")).collect();
    all.sort_unstable();
    all.dedup();
    let last = *all.last().unwrap();
    assert_eq!(all, (0..=last).collect::<Vec<_>>(), "every seq reached one of the brokers\n{}", text());
    assert!(
        at_a.messages().iter().any(|m| m.topic == "clefd/moving/availability" && m.body == "offline" && !m.retained),
        "the old broker hears `offline`"
    );
    let t = text();
    assert!(t.contains("MQTT settings changed: reconnecting with the new ones"), "{t}");
    assert!(t.contains("workers_restarted=true"), "engine settings applied: {t}");
    assert!(!t.contains("take effect at the next restart"), "{t}");
}

#[test]
fn with_watch_config_a_camera_file_dropped_into_cameras_d_starts_without_a_signal() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let base = format!("watch_config = true\n{}", common::base_config(dir.path(), &broker.url(), "watching"));
    let cfg = write(dir.path(), &base, port, "[cameras.a]\nuri = \"test://ball\"\n");
    let log = dir.path().join("clefd.log");
    let daemon = common::Daemon::start(&cfg, &log);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while frames(port, "a").unwrap_or(0) < 10 {
        assert!(Instant::now() < deadline, "camera a did not start\n{}", text());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::create_dir_all(dir.path().join("cameras.d")).unwrap();
    std::fs::write(dir.path().join("cameras.d/b.toml"), "uri = \"test://smpte\"\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while frames(port, "b").unwrap_or(0) < 5 {
        assert!(Instant::now() < deadline, "the dropped-in camera did not start\n{}", text());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(text().contains("configuration files changed: reloading"), "{}", text());
    assert!(daemon.stop(), "{}", text());
}
