//! The live view on the HTTP listener: an index of the cameras, the last analysed frame as
//! a JPEG of the stream's size with each face's box drawn where its event says, the same
//! as MJPEG, and viewers (many, or one that never reads) that do not slow analysis down.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Broker, Consumer, Daemon, http_get};

const WAIT: Duration = Duration::from_secs(60);

/// Frames of `hall` analysed so far.
fn analysed(port: u16) -> f64 {
    common::metric(port, "clefd_frames_analysed_total{camera=\"hall\"}").expect("hall's frames in /metrics")
}

/// Reads from a live stream until it has sent `parts` frames; how many it sent (0 when
/// it was turned away).
fn mjpeg_parts(port: u16, path: &str, parts: usize) -> usize {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (mut seen, mut buf, mut chunk) = (Vec::new(), 0, [0u8; 65536]);
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&chunk[..n]);
        buf = seen.windows(9).filter(|w| w == b"--frame\r\n").count();
        if buf >= parts {
            break;
        }
    }
    // Viewers beyond the limit are answered 503.
    let head = String::from_utf8_lossy(&seen[..seen.len().min(200)]).to_string();
    if head.contains("multipart/x-mixed-replace; boundary=frame") { buf } else { 0 }
}

#[test]
fn the_last_frame_is_shown_with_its_faces_and_viewers_do_not_slow_analysis() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("still.mp4");
    common::still_clip(&clip, 60);
    let port = common::free_port();
    let text = common::base_config(dir.path(), &broker.url(), "live")
        + &format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[cameras.hall]\nuri = \"file://{}\"\nloop = true\n",
            clip.display()
        );
    let cfg = dir.path().join("clefd.toml");
    std::fs::write(&cfg, text).unwrap();
    let daemon = Daemon::start(&cfg, &dir.path().join("clefd.log"));
    consumer.wait_for("an event with the face's box", WAIT, |m| m.iter().any(|x| x.topic.ends_with("/hall/emotion")));

    // The index lists the camera with its links.
    let (code, index) = http_get(port, "/");
    assert_eq!(code, 200, "{index}");
    assert!(index.contains("<td>hall</td>") && index.contains("/cameras/hall/live.mjpeg"), "{index}");
    assert_eq!(http_get(port, "/cameras/nosuch/latest.jpg").0, 404);

    // The last frame: a JPEG of the stream's size, the face's box drawn where the event
    // says it is (green, the colour of track 0), the face itself left alone.
    let jpeg = fetch(port, "/cameras/hall/latest.jpg");
    let path = dir.path().join("latest.jpg");
    std::fs::write(&path, &jpeg).unwrap();
    let picture = clefd::source::decode_image(&path).expect("a JPEG that decodes");
    assert_eq!((picture.width, picture.height), (640, 480));
    let event = consumer.on("/hall/emotion").pop().unwrap().body;
    assert_eq!(event["track_id"], 0, "{event}");
    let b = &event["box"];
    let (x, y) = (b["x"].as_f64().unwrap() * 640.0, b["y"].as_f64().unwrap() * 480.0);
    let (w, h) = (b["w"].as_f64().unwrap() * 640.0, b["h"].as_f64().unwrap() * 480.0);
    let px = |x: f64, y: f64| {
        let i = (y as usize * 640 + x as usize) * 3;
        [picture.data[i] as i32, picture.data[i + 1] as i32, picture.data[i + 2] as i32]
    };
    let green = |[r, g, b]: [i32; 3]| g > 150 && r < 110 && b < 110;
    // Within a few pixels: the frame shown and the event's may be a frame apart.
    let near = |ex: f64, ey: f64, dx: f64, dy: f64| (-4..=4).any(|k| green(px(ex + dx * k as f64, ey + dy * k as f64)));
    for (ex, ey, dx, dy) in
        [(x, y + h / 2.0, 1.0, 0.0), (x + w - 1.0, y + h / 2.0, 1.0, 0.0), (x + w / 2.0, y + h - 1.0, 0.0, 1.0)]
    {
        assert!(near(ex, ey, dx, dy), "the box edge near ({ex:.0}, {ey:.0}) is green: {:?}", px(ex, ey));
    }
    assert!(!green(px(x + w / 2.0, y + h / 2.0)), "inside the box: the face");

    // MJPEG: several parts.
    assert!(mjpeg_parts(port, "/cameras/hall/live.mjpeg", 3) >= 3);

    // What a viewer must not do, in counts: get more frames than its cap (MJPEG_FPS = 5
    // a second, while the file plays at 15), or hold analysis back (with 20 viewers at
    // once, those beyond the limit turned away, and one that never reads). Over the same
    // window, every frame a viewer got stands for at least two frames analysed.
    let before = analysed(port);
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(idle, "GET /cameras/hall/live.mjpeg HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let viewers: Vec<_> =
        (0..20).map(|_| std::thread::spawn(move || mjpeg_parts(port, "/cameras/hall/live.mjpeg", 10))).collect();
    let served: Vec<usize> = viewers.into_iter().map(|v| v.join().unwrap_or(0)).collect();
    let during = analysed(port) - before;
    assert!(served.iter().filter(|&&n| n >= 10).count() >= 5, "the seats available were served: {served:?}");
    let most = *served.iter().max().unwrap() as f64;
    assert!(during >= 2.0 * most, "{during} frames analysed while a viewer got {most} (at most 5 a second of 15)");
    drop(idle);
    assert!(daemon.stop());
}

/// GET `path`, expecting a JPEG.
fn fetch(port: u16, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("headers") + 4;
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.to_ascii_lowercase().contains("content-type: image/jpeg"),
        "{head}"
    );
    all[split..].to_vec()
}
