//! Cameras that never stay down: an RTSP server that goes away and comes back, a server
//! that accepts the connection but sends nothing, bad cameras beside good ones, a camera
//! that sends audio too, and sources with no video at all.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::rtsp::RtspServer;
use common::{Consumer, Daemon, Received};

fn states(msgs: &[Received], camera: &str) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.topic.ends_with(&format!("/{camera}/state")))
        .filter_map(|m| m.body["status"].as_str().map(String::from))
        .collect()
}

fn events(msgs: &[Received], camera: &str) -> Vec<Received> {
    msgs.iter().filter(|m| m.topic.ends_with(&format!("/{camera}/emotion"))).cloned().collect()
}

#[test]
fn rtsp_camera_reconnects_after_the_server_restarts_and_events_resume() {
    let broker = common::Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 40.0, 15);
    let server = RtspServer::start(0, &clip);
    let port = server.port;
    let cfg = dir.path().join("clefd.toml");
    std::fs::write(
        &cfg,
        common::base_config(dir.path(), &broker.url(), "rtspdev")
            + &format!("[cameras.door]\nuri = \"rtsp://127.0.0.1:{port}/cam\"\n"),
    )
    .unwrap();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    let log = || std::fs::read_to_string(dir.path().join("clefd.log")).unwrap_or_default();

    consumer.wait_for("the camera streaming and an event", Duration::from_secs(30), |m| {
        states(m, "door").contains(&"streaming".to_string()) && !events(m, "door").is_empty()
    });
    server.stop();
    // Down long enough to be retried at least twice.
    consumer.wait_for("two reconnection attempts", Duration::from_secs(60), |m| {
        states(m, "door").iter().filter(|s| *s == "reconnecting" || *s == "stalled").count() >= 2
    });
    let server = RtspServer::start(port, &clip);
    let back = Instant::now();
    consumer.wait_for("streaming again and new events", Duration::from_secs(30), |m| {
        let s = states(m, "door");
        let last_down = s.iter().rposition(|x| x == "reconnecting" || x == "stalled").unwrap_or(0);
        s[last_down..].contains(&"streaming".to_string())
            && events(m, "door").iter().any(|e| e.at > back && e.body["type"] == "new")
    });
    assert!(daemon.stop(), "{}", log());
    server.stop();
    let evs = events(&consumer.messages(), "door");
    assert!(evs.iter().all(|e| e.body["emotion"] == "happy"), "{evs:?}");
    // The track of the first stream ended when the stream broke.
    assert!(evs.iter().any(|e| e.body["type"] == "end" && e.at < back), "an end event for the broken stream");
}

/// Many IP cameras send audio too, and some list it first. Only the video stream is set
/// up: the camera streams, and no audio is asked of the camera.
#[test]
fn an_rtsp_camera_with_its_audio_track_first_streams_its_video() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 4.0, 15);
    let server = RtspServer::serve(
        0,
        format!(
            "( audiotestsrc is-live=true ! audioconvert ! audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay0 \
               filesrc location={} ! qtdemux ! h264parse ! rtph264pay name=pay1 pt=96 config-interval=1 )",
            clip.display()
        ),
    );
    let opts = clefd::source::CameraOptions {
        spec: clefd::source::SourceSpec::parse(&format!("rtsp://127.0.0.1:{}/cam", server.port)).unwrap(),
        ..common::file_camera("door", &clip, 320, clefd::source::DecoderChoice::Auto)
    };
    let frames = Arc::new(AtomicUsize::new(0));
    let counted = frames.clone();
    let (end_tx, end_rx) = std::sync::mpsc::channel();
    let camera = clefd::source::Camera::start(
        opts,
        move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        },
        move |ended| {
            let _ = end_tx.send(ended);
        },
    )
    .expect("the camera starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while frames.load(Ordering::SeqCst) < 10 && Instant::now() < deadline {
        if let Ok(ended) = end_rx.try_recv() {
            panic!("the camera ended before its video came: {ended:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(frames.load(Ordering::SeqCst) >= 10, "video frames arrive");
    assert!(camera.decoder().is_some_and(|d| d.contains("264")), "the video stream reached the decoder");
    assert_eq!(server.setups.load(Ordering::SeqCst), 1, "only the video stream was set up");
    camera.stop();
    server.stop();
}

/// How a camera that never delivers a frame ends, in words.
fn failure_of(spec: clefd::source::SourceSpec) -> String {
    let dir = tempfile::tempdir().unwrap();
    let opts = clefd::source::CameraOptions {
        spec,
        ..common::file_camera("cam", dir.path(), 320, clefd::source::DecoderChoice::Auto)
    };
    let (end_tx, end_rx) = std::sync::mpsc::channel();
    let camera = clefd::source::Camera::start(
        opts,
        |_| panic!("no frame expected"),
        move |ended| {
            let _ = end_tx.send(ended);
        },
    );
    let ended = match camera {
        Err(e) => return e.to_string(),
        Ok(_camera) => end_rx.recv_timeout(Duration::from_secs(20)).expect("the camera ends"),
    };
    format!("{ended:?}")
}

/// An audio-only RTSP stream, an audio file and a text file each fail their camera with
/// words that say what is wrong, not only GStreamer's.
#[test]
fn sources_without_video_are_explained() {
    let server = RtspServer::serve(
        0,
        "( audiotestsrc is-live=true ! audioconvert ! audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay0 )"
            .into(),
    );
    let spec = clefd::source::SourceSpec::parse(&format!("rtsp://127.0.0.1:{}/cam", server.port)).unwrap();
    let why = failure_of(spec);
    assert!(why.contains("the camera offers no video stream"), "an audio-only RTSP stream: {why}");
    server.stop();

    let dir = tempfile::tempdir().unwrap();
    let audio = dir.path().join("audio.ogg");
    let made = std::process::Command::new("gst-launch-1.0")
        .args(["-q", "audiotestsrc", "num-buffers=20", "!", "vorbisenc", "!", "oggmux", "!", "filesink"])
        .arg(format!("location={}", audio.display()))
        .status()
        .unwrap();
    assert!(made.success());
    let why = failure_of(clefd::source::SourceSpec::File { path: audio });
    assert!(why.contains("the stream has no video to analyse (audio only?)"), "an audio file: {why}");
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "not a video at all\n".repeat(100)).unwrap();
    let why = failure_of(clefd::source::SourceSpec::File { path: text });
    assert!(why.contains("this is not a video clefd can read"), "a text file: {why}");
}

/// A camera that asks for a password gets it, even one with characters a URI must
/// escape, from the URI or from the daemon's `password_file`. A wrong password, a wrong
/// path and a closed port each fail with words that say which.
#[test]
fn a_protected_rtsp_camera_opens_with_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 4.0, 15);
    let password = "p@ss:w/rd %1";
    let launch = format!(
        "( filesrc location={} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )",
        clip.display()
    );
    let server = RtspServer::serve_to(0, launch, Some(("viewer", password)));
    let at = |password: &str| {
        let uri = clefd::source::with_password(&format!("rtsp://viewer@127.0.0.1:{}/cam", server.port), password);
        clefd::source::SourceSpec::parse(&uri.unwrap()).unwrap()
    };
    let opts = clefd::source::CameraOptions {
        spec: at(password),
        ..common::file_camera("door", &clip, 320, Default::default())
    };
    let frames = Arc::new(AtomicUsize::new(0));
    let counted = frames.clone();
    let camera = clefd::source::Camera::start(
        opts,
        move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        },
        |_| {},
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while frames.load(Ordering::SeqCst) < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(frames.load(Ordering::SeqCst) >= 5, "the right password opens the stream");
    camera.stop();
    // The daemon, with the password in a file (as written by an editor: newline at the end).
    let broker = common::Broker::start();
    let consumer = Consumer::start(broker.port);
    std::fs::write(dir.path().join("door-password"), format!("{password}\n")).unwrap();
    let cfg = dir.path().join("clefd.toml");
    std::fs::write(
        &cfg,
        common::base_config(dir.path(), &broker.url(), "authdev")
            + &format!(
                "[cameras.door]\nuri = \"rtsp://viewer@127.0.0.1:{}/cam\"\npassword_file = \"{}\"\n",
                server.port,
                dir.path().join("door-password").display()
            ),
    )
    .unwrap();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    consumer.wait_for("the protected camera streaming", Duration::from_secs(30), |m| {
        states(m, "door").contains(&"streaming".to_string())
    });
    assert!(daemon.stop());

    let why = failure_of(at("wrong"));
    assert!(why.contains("the camera refused the user name and password"), "{why}");
    assert!(!why.contains("wrong"), "the password stays out of the message: {why}");
    let path = clefd::source::SourceSpec::parse(&format!("rtsp://127.0.0.1:{}/nope", server.port)).unwrap();
    let why = failure_of(path);
    assert!(why.contains("the camera has no stream at this path"), "{why}");
    server.stop();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let why = failure_of(clefd::source::SourceSpec::parse(&format!("rtsp://127.0.0.1:{closed}/cam")).unwrap());
    assert!(why.contains("cannot connect (is the camera on, and are the host and port right?)"), "{why}");
}

#[test]
fn a_silent_server_stalls_the_camera_and_it_is_restarted() {
    let broker = common::Broker::start();
    let consumer = Consumer::start(broker.port);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            a.fetch_add(1, Ordering::SeqCst);
            held.push(conn); // accept, say nothing, keep it open
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("clefd.toml");
    std::fs::write(
        &cfg,
        common::base_config(dir.path(), &broker.url(), "stalldev")
            + &format!("[cameras.mute]\nuri = \"rtsp://127.0.0.1:{port}/x\"\n"),
    )
    .unwrap();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    consumer.wait_for("stalled, then started again", Duration::from_secs(30), |m| {
        let s = states(m, "mute");
        s.iter().any(|x| x == "stalled") && accepted.load(Ordering::SeqCst) >= 2
    });
    let st: Vec<_> = consumer.on("/mute/state");
    let stalled = st.iter().find(|m| m.body["status"] == "stalled").unwrap();
    assert!(stalled.body["last_error"].as_str().unwrap().contains("no frame for 2.0 s"), "{}", stalled.body);
    assert!(daemon.stop());
}

#[test]
fn bad_cameras_do_not_disturb_good_ones() {
    let broker = common::Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 4.0, 15);
    let corrupt = dir.path().join("corrupt.mp4");
    std::fs::write(&corrupt, b"\x00\x00\x00\x18ftypmp42 this is not a video at all, just bytes").unwrap();
    let closed_port = common::free_port();
    let mut text = common::base_config(dir.path(), &broker.url(), "multi");
    for good in ["good1", "good2"] {
        text += &format!("[cameras.{good}]\nuri = \"file://{}\"\nloop = true\n", clip.display());
    }
    text += &format!("[cameras.unreachable]\nuri = \"rtsp://127.0.0.1:{closed_port}/nothing\"\n");
    text += &format!("[cameras.corrupt]\nuri = \"file://{}\"\n", corrupt.display());
    // A USB camera that is unplugged: retried (it may come back), with the reason in words.
    text += "[cameras.unplugged]\nuri = \"v4l2:///dev/video-clefd-test?format=mjpeg&fps=30\"\n";
    let cfg = dir.path().join("clefd.toml");
    std::fs::write(&cfg, text).unwrap();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    // Counted, not timed: each good camera keeps making events (heartbeat 1 s) while the
    // bad ones fail or retry on their own.
    consumer.wait_for("every camera's outcome", Duration::from_secs(120), |m| {
        let retried = |cam: &str| {
            m.iter()
                .filter(|x| x.topic.ends_with(&format!("/{cam}/state")) && x.body["status"] == "reconnecting")
                .count()
        };
        states(m, "corrupt").contains(&"failed".to_string())
            && retried("unreachable") >= 2
            && retried("unplugged") >= 1
            && ["good1", "good2"].iter().all(|g| events(m, g).len() >= 6)
    });
    let log = std::fs::read_to_string(dir.path().join("clefd.log")).unwrap_or_default();
    assert!(daemon.stop(), "{log}");
    let msgs = consumer.messages();
    assert!(log.contains("video decoder chosen camera=good1 decoder="), "the decoder choice is logged: {log}");
    assert!(states(&msgs, "corrupt").contains(&"failed".to_string()), "{:?}", states(&msgs, "corrupt"));
    let unreachable: Vec<_> = consumer.on("/unreachable/state");
    assert!(unreachable.iter().filter(|m| m.body["status"] == "reconnecting").count() >= 2, "retried with backoff");
    assert!(unreachable.last().unwrap().body["restarts"].as_u64().unwrap() >= 2);
    let unplugged = consumer.on("/unplugged/state");
    let last = unplugged.last().expect("the unplugged camera reports its state");
    assert_eq!(last.body["status"], "reconnecting");
    let error = last.body["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("/dev/video-clefd-test does not exist: is the camera plugged in?"), "{error}");
    for good in ["good1", "good2"] {
        let fps: Vec<f64> =
            consumer.on(&format!("/{good}/state")).iter().filter_map(|m| m.body["fps"].as_f64()).collect();
        assert!(fps.iter().any(|&f| f > 0.0), "{good} reports its rate: {fps:?}");
        let states = consumer.on(&format!("/{good}/state"));
        // OpenH264 here; a machine with a hardware H.264 decoder names that one.
        assert!(
            states.iter().any(|m| m.body["decoder"].as_str().is_some_and(|d| d.contains("264"))),
            "{good}'s state names its decoder: {:?}",
            states.last().map(|m| &m.body)
        );
    }
    assert!(last.body.get("decoder").is_none(), "a camera that never started has no decoder");
}

#[test]
fn an_fps_cap_limits_the_rate_and_counts_its_drops() {
    let broker = common::Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("clefd.toml");
    std::fs::write(
        &cfg,
        common::base_config(dir.path(), &broker.url(), "capped") + "[cameras.cam]\nuri = \"test://ball\"\nfps = 5\n",
    )
    .unwrap();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    consumer.wait_for("a state report with fps and fps-cap drops", Duration::from_secs(20), |m| {
        m.iter().any(|x| {
            x.topic == "clefd/capped/cam/state"
                && x.body["dropped_fps_cap"].as_u64().unwrap_or(0) > 20
                && x.body["fps"].as_f64().unwrap_or(0.0) > 0.0
        })
    });
    assert!(daemon.stop());
    let last = consumer.on("/cam/state").into_iter().rfind(|m| m.body["fps"].as_f64().unwrap_or(0.0) > 0.0).unwrap();
    let fps = last.body["fps"].as_f64().unwrap();
    assert!((3.0..=7.0).contains(&fps), "30 fps source capped at 5: {fps}");
}

/// Serves the astronaut as an MJPEG stream (multipart/x-mixed-replace), as IP cameras do,
/// at about 10 frames per second to every client.
fn serve_mjpeg(jpeg: Vec<u8>) -> u16 {
    serve_mjpeg_to(jpeg, None)
}

/// Standard base64 (for HTTP basic authentication).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ABC[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// As [`serve_mjpeg`], answering 401 to requests without basic authentication as `login`
/// (`user:password`), when given.
fn serve_mjpeg_to(jpeg: Vec<u8>, login: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let jpeg = Arc::new(jpeg);
    let expected = login.map(|l| format!("authorization: basic {}", base64(l.as_bytes())).to_lowercase());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let jpeg = jpeg.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let n = conn.read(&mut request).unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..n]).to_lowercase();
                if expected.is_some_and(|e| !request.lines().any(|l| l.trim() == e)) {
                    let _ = conn.write_all(
                        b"HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\nContent-Length: 0\r\n\r\n",
                    );
                    return;
                }
                let head = "HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n";
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                loop {
                    let part = format!("--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len());
                    let sent = conn
                        .write_all(part.as_bytes())
                        .and_then(|_| conn.write_all(&jpeg))
                        .and_then(|_| conn.write_all(b"\r\n"));
                    if sent.is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
    port
}

#[test]
fn an_http_mjpeg_camera_streams_and_produces_events() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg_path = dir.path().join("astronaut.jpg");
    let png = common::repo().join("assets/astronaut.png");
    let made = std::process::Command::new("gst-launch-1.0")
        .args(["-q", "filesrc", &format!("location={}", png.display()), "!", "pngdec", "!", "videoconvert"])
        .args(["!", "jpegenc", "!", "filesink", &format!("location={}", jpeg_path.display())])
        .status()
        .unwrap();
    assert!(made.success(), "gst-launch-1.0 encodes the test JPEG");
    let port = serve_mjpeg(std::fs::read(&jpeg_path).unwrap());
    let broker = common::Broker::start();
    let consumer = Consumer::start(broker.port);
    let cfg = dir.path().join("clefd.toml");
    std::fs::write(
        &cfg,
        common::base_config(dir.path(), &broker.url(), "mjpegdev")
            + &format!("[cameras.ipcam]\nuri = \"http://127.0.0.1:{port}/video.mjpg\"\n"),
    )
    .unwrap();
    let log = dir.path().join("clefd.log");
    let daemon = Daemon::start(&cfg, &log);
    consumer.wait_for("streaming and an event", Duration::from_secs(30), |m| {
        states(m, "ipcam").iter().any(|s| s == "streaming") && !events(m, "ipcam").is_empty()
    });
    let ev = &events(&consumer.messages(), "ipcam")[0];
    assert_eq!(ev.body["emotion"], "happy", "{}", ev.body);
    assert!(daemon.stop(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
}

/// An MJPEG camera behind basic authentication opens with a password that a URI must
/// escape, and a wrong one is named as such.
#[test]
fn a_protected_http_mjpeg_camera_opens_with_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg_path = dir.path().join("frame.jpg");
    let made = std::process::Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "num-buffers=1", "!", "video/x-raw,width=320,height=240", "!", "jpegenc"])
        .args(["!", "filesink", &format!("location={}", jpeg_path.display())])
        .status()
        .unwrap();
    assert!(made.success(), "gst-launch-1.0 encodes the test JPEG");
    let port = serve_mjpeg_to(std::fs::read(&jpeg_path).unwrap(), Some("viewer:p@ss:w/rd %1"));
    let at = |password: &str| {
        let uri = clefd::source::with_password(&format!("http://viewer@127.0.0.1:{port}/video.mjpg"), password);
        clefd::source::SourceSpec::parse(&uri.unwrap()).unwrap()
    };
    let opts = clefd::source::CameraOptions {
        spec: at("p@ss:w/rd %1"),
        ..common::file_camera("ipcam", &jpeg_path, 320, Default::default())
    };
    let frames = Arc::new(AtomicUsize::new(0));
    let counted = frames.clone();
    let camera = clefd::source::Camera::start(
        opts,
        move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        },
        |_| {},
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while frames.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(frames.load(Ordering::SeqCst) >= 3, "the right password opens the stream");
    camera.stop();
    let why = failure_of(at("wrong"));
    assert!(why.contains("the camera refused the user name and password"), "{why}");
    // The daemon, with the password in a file.
    let broker = common::Broker::start();
    let consumer = Consumer::start(broker.port);
    std::fs::write(dir.path().join("ipcam-password"), "p@ss:w/rd %1\n").unwrap();
    let cfg = dir.path().join("clefd.toml");
    std::fs::write(
        &cfg,
        common::base_config(dir.path(), &broker.url(), "authdev")
            + &format!(
                "[cameras.ipcam]\nuri = \"http://viewer@127.0.0.1:{port}/video.mjpg\"\npassword_file = \"{}\"\n",
                dir.path().join("ipcam-password").display()
            ),
    )
    .unwrap();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    consumer.wait_for("the protected MJPEG camera streaming", Duration::from_secs(30), |m| {
        states(m, "ipcam").contains(&"streaming".to_string())
    });
    assert!(daemon.stop());
}

/// An RTSP camera analysed at a smaller width: each frame knows the stream's own size (an
/// event's `frame_size`) and is dated no later than its delivery.
#[test]
fn rtsp_frames_carry_the_streams_own_size_and_a_capture_time() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    common::astronaut_clip(&clip, 3.0, 10);
    let server = RtspServer::start(0, &clip);
    let opts = common::rtsp::camera_options("late", server.port, 320);
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let camera = clefd::source::Camera::start(
        opts,
        move |f| {
            let _ = tx.try_send((std::time::SystemTime::now().duration_since(f.wall).is_ok(), f.source_size, f.width));
        },
        |_| {},
    )
    .expect("camera starts");
    for _ in 0..5 {
        let (dated_before, size, width) = rx.recv_timeout(Duration::from_secs(30)).expect("frames arrive");
        assert!(dated_before, "a frame dated after its delivery");
        assert_eq!((size, width), ((640, 480), 320), "the stream's own size, analysed at 320");
    }
    camera.stop();
    server.stop();
}
