//! The HTTP side door speaks HTTP as browsers, image cards and scrapers expect: query
//! strings ignored, `HEAD` answered, 405 with `Allow`, nothing cacheable, `Retry-After`
//! on every 503, keep-alive, an index that refreshes itself from `/api/state`; and its
//! privacy controls: credentials on every route but `/healthz` (Basic and bearer, read
//! again when their file changes), faces blurred in the pictures served; and its bounds:
//! viewer seats given back whatever the camera does, idle, oversized and trickled
//! requests that never keep `/healthz` out.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use clefd::service::server::MAX_CONNECTIONS;
use common::{Broker, Consumer, Daemon, wait_http};

const WAIT: Duration = Duration::from_secs(60);

/// One answer: status code, head (lower-cased names), body.
struct Answer {
    code: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    /// A header's value, if the answer has it.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// Sends `method path` with `headers` (and `Connection: close`), reads the whole answer.
fn ask(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    ask_within(port, method, path, headers, Duration::from_secs(20))
}

/// [`ask`], giving up on the answer (status 0) after `within`.
fn ask_within(port: u16, method: &str, path: &str, headers: &[(&str, &str)], within: Duration) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the HTTP listener");
    s.set_read_timeout(Some(within)).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    parse(&all)
}

fn parse(all: &[u8]) -> Answer {
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").map_or(all.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Answer { code, head, body: all[split..].to_vec() }
}

/// Opens a live stream and reads its status line; the connection stays open.
fn viewer(port: u16, path: &str) -> (Answer, TcpStream) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the HTTP listener");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head += &line;
    }
    (parse(format!("{head}\r\n").as_bytes()), s)
}

/// A daemon whose `hall` camera plays the still astronaut, with `http` lines added to
/// its `[http]` table; its HTTP port once `/healthz` says it is healthy.
fn daemon(dir: &Path, broker: &Broker, device: &str, http: &str) -> (Daemon, u16) {
    daemon_with(dir, broker, device, http, "")
}

/// [`daemon`], with more camera tables (`cameras`) after `hall`'s.
fn daemon_with(dir: &Path, broker: &Broker, device: &str, http: &str, cameras: &str) -> (Daemon, u16) {
    let clip = dir.join("still.mp4");
    if !clip.exists() {
        common::still_clip(&clip, 60);
    }
    let port = common::free_port();
    let text = common::base_config(dir, &broker.url(), device)
        + &format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n{http}\n[cameras.hall]\nuri = \"file://{}\"\nloop = true\n{cameras}",
            clip.display()
        );
    let cfg = dir.join(format!("{device}.toml"));
    std::fs::write(&cfg, text).unwrap();
    let daemon = Daemon::start(&cfg, &dir.join(format!("{device}.log")));
    wait_http(port, "/healthz", "a healthy daemon", WAIT, |code, _| code == 200);
    (daemon, port)
}

#[test]
fn the_side_door_answers_as_browsers_and_scrapers_expect() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port) = daemon(dir.path(), &broker, "door", "");

    // Query strings are ignored on every route (image cards add `?t=` to bust caches),
    // and nothing the side door answers may be cached.
    for path in ["/?x=1", "/healthz?t=1", "/metrics?y", "/api/state?t=2", "/cameras/hall/latest.jpg?t=123"] {
        let a = ask(port, "GET", path, &[]);
        assert_eq!(a.code, 200, "{path}: {}", a.head);
        assert_eq!(a.header("cache-control"), Some("no-store"), "{path}: {}", a.head);
    }
    let jpeg = ask(port, "GET", "/cameras/hall/latest.jpg?t=123", &[]);
    assert_eq!(jpeg.header("content-type"), Some("image/jpeg"));
    assert_eq!(&jpeg.body[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
    assert_eq!(ask(port, "GET", "/cameras/nosuch/latest.jpg?t=1", &[]).code, 404);
    assert_eq!(ask(port, "GET", "/nope?x", &[]).code, 404);

    // HEAD: the GET's head, no body.
    for (path, kind) in [("/metrics", "text/plain"), ("/cameras/hall/latest.jpg", "image/jpeg"), ("/", "text/html")] {
        let a = ask(port, "HEAD", path, &[]);
        assert_eq!(a.code, 200, "HEAD {path}: {}", a.head);
        assert!(a.header("content-type").is_some_and(|t| t.starts_with(kind)), "HEAD {path}: {}", a.head);
        assert!(a.body.is_empty(), "HEAD {path} has no body: {} bytes", a.body.len());
    }
    // Other methods: 405, saying which are allowed.
    for (method, path) in [("POST", "/metrics"), ("DELETE", "/"), ("PUT", "/cameras/hall/latest.jpg?t=1")] {
        let a = ask(port, method, path, &[]);
        assert_eq!(a.code, 405, "{method} {path}: {}", a.head);
        let allow = a.header("allow").unwrap_or_default().to_ascii_uppercase();
        assert!(allow.contains("GET") && allow.contains("HEAD"), "{method} {path}: {}", a.head);
    }

    // Keep-alive: two requests on one connection, both answered.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /api/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut both = String::new();
    let _ = s.read_to_string(&mut both);
    assert_eq!(both.matches("HTTP/1.1 200 OK").count(), 2, "{both}");

    // The index reads on a phone and refreshes its states from /api/state.
    let index = String::from_utf8(ask(port, "GET", "/", &[]).body).unwrap();
    assert!(index.contains("<meta name=\"viewport\" content=\"width=device-width"), "{index}");
    assert!(index.contains("@media") || index.contains("auto-fill"), "a layout that follows the width: {index}");
    assert!(index.contains("fetch(\"/api/state\"") && index.contains("setTimeout(refresh"), "{index}");
    let state: serde_json::Value = serde_json::from_slice(&ask(port, "GET", "/api/state", &[]).body).unwrap();
    assert_eq!(state["status"], "ok", "{state}");
    assert_eq!(state["cameras"][0]["name"], "hall", "{state}");
    assert_eq!(state["cameras"][0]["state"], "streaming", "{state}");

    // Viewer seats: eight watch, the ninth is told when to come back; a seat given back
    // is taken again.
    let seats: Vec<_> = (0..8).map(|_| viewer(port, "/cameras/hall/live.mjpeg?t=1")).collect();
    for (a, _) in &seats {
        assert_eq!(a.code, 200, "{}", a.head);
        assert_eq!(a.header("cache-control"), Some("no-store"), "{}", a.head);
    }
    let (ninth, _) = viewer(port, "/cameras/hall/live.mjpeg");
    assert_eq!(ninth.code, 503, "{}", ninth.head);
    assert!(ninth.header("retry-after").is_some_and(|s| s.parse::<u32>().is_ok_and(|s| s > 0)), "{}", ninth.head);
    // None of the eight reads: once their connections are full, each is dropped and its
    // seat given back, though it never closes its end.
    wait_seat(port);
    drop(seats);
    assert!(daemon.stop());
}

/// Waits until a live view gets a seat again; its connection.
fn wait_seat(port: u16) -> TcpStream {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (a, s) = viewer(port, "/cameras/hall/live.mjpeg");
        if a.code == 200 {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "the seats of gone viewers never came back: {}", a.head);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads a live stream until a whole JPEG has come; the JPEG.
fn first_jpeg(s: &mut TcpStream) -> Vec<u8> {
    let (mut seen, mut chunk) = (Vec::new(), [0u8; 65536]);
    loop {
        let start = seen.windows(3).position(|w| w == [0xFF, 0xD8, 0xFF]);
        if let Some(start) = start
            && let Some(len) = seen[start..].windows(2).position(|w| w == [0xFF, 0xD9])
        {
            return seen[start..start + len + 2].to_vec();
        }
        let n = s.read(&mut chunk).unwrap_or(0);
        assert!(n > 0, "the stream ended before a whole picture: {} bytes", seen.len());
        seen.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn viewers_who_leave_a_camera_that_sends_nothing_give_their_seats_back() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // `off` is disabled: it never sends a frame.
    let off = "[cameras.off]\nuri = \"test://ball\"\nenabled = false\n";
    let (daemon, port) = daemon_with(dir.path(), &broker, "seats", "", off);
    // Eight viewers take every seat watching `off`, then go (they close their end).
    let seats: Vec<_> = (0..8).map(|_| viewer(port, "/cameras/off/live.mjpeg")).collect();
    for (a, _) in &seats {
        assert_eq!(a.code, 200, "{}", a.head);
    }
    assert_eq!(viewer(port, "/cameras/hall/live.mjpeg").0.code, 503, "every seat is taken");
    drop(seats);
    // Their seats come back: a viewer of `hall` gets frames.
    let mut s = wait_seat(port);
    let picture = decoded(&first_jpeg(&mut s), dir.path(), "hall.jpg");
    assert_eq!((picture.width, picture.height), (640, 480), "hall's frame");
    drop(s);
    // A viewer who stays is told what `off` shows: a small picture saying it sends nothing.
    let (a, mut s) = viewer(port, "/cameras/off/live.mjpeg");
    assert_eq!(a.code, 200, "{}", a.head);
    let picture = decoded(&first_jpeg(&mut s), dir.path(), "off.jpg");
    assert!(picture.width < 640, "a placeholder, not a frame: {} wide", picture.width);
    drop(s);
    assert!(daemon.stop());
}

/// The picture a JPEG holds (written to `dir/name` to decode it).
fn decoded(jpeg: &[u8], dir: &Path, name: &str) -> clefd::image::RgbImage {
    let path = dir.join(name);
    std::fs::write(&path, jpeg).unwrap();
    clefd::source::decode_image(&path).expect("a JPEG that decodes")
}

#[test]
fn credentials_guard_every_route_but_healthz_and_an_unhealthy_one_says_when_to_retry() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let basic = dir.path().join("basic");
    std::fs::write(&basic, "ada:correct horse\n").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0k3n-5ecret\n").unwrap();
    let b64 = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
    let guarded = ["/", "/api/state", "/metrics", "/cameras/hall/latest.jpg", "/cameras/hall/live.mjpeg"];

    let (basic_daemon, port) =
        daemon(dir.path(), &broker, "basic", &format!("[http.auth]\nbasic_file = \"{}\"", basic.display()));
    assert_eq!(ask(port, "GET", "/healthz", &[]).code, 200, "/healthz needs no credentials");
    for path in guarded {
        let a = ask(port, "GET", path, &[]);
        assert_eq!(a.code, 401, "{path}: {}", a.head);
        assert!(a.header("www-authenticate").is_some_and(|c| c.starts_with("Basic realm=")), "{}", a.head);
        let wrong = b64("ada:wrong horse");
        assert_eq!(ask(port, "GET", path, &[("Authorization", &wrong)]).code, 401, "{path} with a wrong password");
    }
    let right = b64("ada:correct horse");
    for path in ["/", "/api/state", "/metrics", "/cameras/hall/latest.jpg?t=5"] {
        let a = ask(port, "GET", path, &[("Authorization", &right)]);
        assert_eq!(a.code, 200, "{path} with the credentials: {}", a.head);
    }
    let (stream, _) = viewer(port, "/cameras/hall/live.mjpeg");
    assert_eq!(stream.code, 401, "a live view without credentials: {}", stream.head);
    assert!(basic_daemon.stop());

    // A bearer token, for scrapers; and an unhealthy daemon (its camera never connects)
    // says when to ask again, credentials or not.
    let port = common::free_port();
    let text = common::base_config(dir.path(), &broker.url(), "bearer")
        + &format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[http.auth]\ntoken_file = \"{}\"\n[cameras.gone]\nuri = \"rtsp://127.0.0.1:9/none\"\n",
            token.display()
        );
    let cfg = dir.path().join("bearer.toml");
    std::fs::write(&cfg, text).unwrap();
    let bearer_daemon = Daemon::start(&cfg, &dir.path().join("bearer.log"));
    wait_http(port, "/healthz", "an unhealthy daemon", WAIT, |code, _| code == 503);
    let health = ask(port, "GET", "/healthz", &[]);
    assert_eq!(health.code, 503, "{}", health.head);
    assert!(health.header("retry-after").is_some_and(|s| s.parse::<u32>().is_ok_and(|s| s > 0)), "{}", health.head);
    assert_eq!(health.header("cache-control"), Some("no-store"), "{}", health.head);
    for path in ["/metrics", "/api/state", "/"] {
        let a = ask(port, "GET", path, &[]);
        assert_eq!(a.code, 401, "{path}: {}", a.head);
        assert!(a.header("www-authenticate").is_some_and(|c| c.starts_with("Bearer realm=")), "{}", a.head);
        assert_eq!(ask(port, "GET", path, &[("Authorization", "Bearer t0k3n-5ecreT")]).code, 401, "{path}");
        assert_eq!(ask(port, "GET", path, &[("Authorization", &b64("ada:correct horse"))]).code, 401, "{path}");
        let a = ask(port, "GET", path, &[("Authorization", "Bearer t0k3n-5ecret")]);
        assert_eq!(a.code, 200, "{path} with the token: {}", a.head);
    }
    // A rotated token takes effect without a restart; the old one is refused after.
    std::fs::write(&token, "n3w-t0k3n\n").unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while ask(port, "GET", "/metrics", &[("Authorization", "Bearer n3w-t0k3n")]).code != 200 {
        assert!(std::time::Instant::now() < deadline, "the new token was never taken");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ask(port, "GET", "/metrics", &[("Authorization", "Bearer t0k3n-5ecret")]).code, 401, "the old token");
    // Rotated again to a token of the same length, its time stamp set back to the old
    // one's (a copy that keeps times, or two writes within one tick): taken all the same.
    let stamp = std::fs::metadata(&token).and_then(|m| m.modified()).unwrap();
    let set_back = |stamp| std::fs::File::options().write(true).open(&token).and_then(|f| f.set_modified(stamp));
    std::fs::write(&token, "n3w-t0k3X\n").unwrap();
    set_back(stamp).unwrap();
    let until = |bearer: &str, code: u16, what: &str| {
        let deadline = std::time::Instant::now() + WAIT;
        while ask(port, "GET", "/metrics", &[("Authorization", bearer)]).code != code {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    until("Bearer n3w-t0k3X", 200, "a same-length token with the old time stamp was never taken");
    assert_eq!(ask(port, "GET", "/metrics", &[("Authorization", "Bearer n3w-t0k3n")]).code, 401, "revoked");
    // Emptied, or gone: every guarded route is closed, to the last token too.
    std::fs::write(&token, "").unwrap();
    until("Bearer n3w-t0k3X", 401, "an emptied credentials file left the routes open");
    std::fs::remove_file(&token).unwrap();
    std::thread::sleep(auth_look_twice());
    assert_eq!(ask(port, "GET", "/metrics", &[("Authorization", "Bearer n3w-t0k3X")]).code, 401, "no file: closed");
    // Put back as it was (content and time stamp): open again.
    std::fs::write(&token, "n3w-t0k3X\n").unwrap();
    set_back(stamp).unwrap();
    until("Bearer n3w-t0k3X", 200, "the restored credentials file was never taken");
    assert!(bearer_daemon.stop());
}

/// Long enough for the credentials to be read again at least once.
fn auth_look_twice() -> Duration {
    clefd::service::auth::LOOK_EVERY * 2
}

/// Pixel variance of the (decoded) JPEG's luma inside `[x0, y0, x1, y1)`.
fn variance(jpeg: &[u8], dir: &Path, name: &str, [x0, y0, x1, y1]: [usize; 4]) -> f64 {
    let path = dir.join(name);
    std::fs::write(&path, jpeg).unwrap();
    let picture = clefd::source::decode_image(&path).expect("a JPEG that decodes");
    let luma: Vec<f64> = (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (y, x)))
        .map(|(y, x)| {
            let i = (y * picture.width + x) * 3;
            0.299 * f64::from(picture.data[i])
                + 0.587 * f64::from(picture.data[i + 1])
                + 0.114 * f64::from(picture.data[i + 2])
        })
        .collect();
    let mean = luma.iter().sum::<f64>() / luma.len() as f64;
    luma.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / luma.len() as f64
}

#[test]
fn faces_are_blurred_in_the_pictures_served_and_nowhere_else() {
    let broker = Broker::start();
    let consumer = Consumer::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    // Two daemons on the same still clip: faces shown, and faces blurred.
    let (shown_daemon, shown) = daemon(dir.path(), &broker, "shown", "");
    let (blurred_daemon, blurred) = daemon(dir.path(), &broker, "blurred", "blur_faces = true");
    consumer.wait_for("events of both", WAIT, |m| {
        ["/shown/hall/emotion", "/blurred/hall/emotion"].iter().all(|t| m.iter().any(|x| x.topic.ends_with(t)))
    });
    // The analysis is unchanged: the same face, found where it is.
    let event = |t: &str| consumer.on(t).pop().unwrap().body;
    let (a, b) = (event("/shown/hall/emotion"), event("/blurred/hall/emotion"));
    let coord = |e: &serde_json::Value, k: &str, scale: f64| e["box"][k].as_f64().unwrap() * scale;
    for (k, scale) in [("x", 640.0), ("y", 480.0), ("w", 640.0), ("h", 480.0)] {
        assert!((coord(&a, k, scale) - coord(&b, k, scale)).abs() < 4.0, "box {k}: {a}\n{b}");
    }
    // Inside the face's box (its middle, away from the drawn edges), on the same frame:
    // the blurred picture keeps little of the face's detail.
    let (x, y, w, h) = (coord(&a, "x", 640.0), coord(&a, "y", 480.0), coord(&a, "w", 640.0), coord(&a, "h", 480.0));
    let inner = [(x + w * 0.2) as usize, (y + h * 0.2) as usize, (x + w * 0.8) as usize, (y + h * 0.8) as usize];
    let on = variance(&ask(blurred, "GET", "/cameras/hall/latest.jpg", &[]).body, dir.path(), "on.jpg", inner);
    let off = variance(&ask(shown, "GET", "/cameras/hall/latest.jpg", &[]).body, dir.path(), "off.jpg", inner);
    eprintln!("luma variance inside the face box: {off:.0} shown, {on:.0} blurred");
    assert!(on * 4.0 < off, "blurred {on:.0} against {off:.0} shown");
    // The live view is blurred too: its first part.
    let (head, mut s) = viewer(blurred, "/cameras/hall/live.mjpeg");
    assert_eq!(head.code, 200, "{}", head.head);
    // A whole JPEG: its start, then its end (the reader above may have taken the start
    // of the first part).
    let (mut seen, mut chunk) = (Vec::new(), [0u8; 65536]);
    let whole = |seen: &[u8]| {
        let start = seen.windows(3).position(|w| w == [0xFF, 0xD8, 0xFF])?;
        Some((start, start + seen[start..].windows(2).position(|w| w == [0xFF, 0xD9])? + 2))
    };
    let (start, end) = loop {
        if let Some(found) = whole(&seen) {
            break found;
        }
        let n = s.read(&mut chunk).unwrap_or(0);
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&chunk[..n]);
    };
    let live = variance(&seen[start..end], dir.path(), "live.jpg", inner);
    assert!(live * 4.0 < off, "live view: {live:.0} against {off:.0} shown");
    drop(s);
    assert!(shown_daemon.stop());
    assert!(blurred_daemon.stop());
}

/// Shorter than the server's deadline for a request head (5 s): an answer within it did
/// not wait for idle connections to time out.
const PROMPT: Duration = Duration::from_secs(4);

#[test]
fn clients_that_send_nothing_too_much_or_too_slowly_never_keep_healthz_out() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port) = daemon(dir.path(), &broker, "crowd", "");

    // Ten times the connection slots (32), connected and silent: every slot taken and a
    // long queue behind them. /healthz is answered at once all the same.
    // A live viewer, there first, is answering a request all along: never evicted.
    let (a, mut watching) = viewer(port, "/cameras/hall/live.mjpeg");
    assert_eq!(a.code, 200, "{}", a.head);
    first_jpeg(&mut watching);
    let idle: Vec<TcpStream> = (0..320).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let asked = std::time::Instant::now();
    let a = ask_within(port, "GET", "/healthz", &[], PROMPT);
    eprintln!("/healthz behind 320 idle connections: {} in {:?}", a.code, asked.elapsed());
    assert_eq!(a.code, 200, "/healthz behind 320 idle connections: {}", a.head);
    // The viewer still gets pictures after the flood (its connection was kept): what was
    // sent before is drained first, so the picture read is a new one.
    watching.set_nonblocking(true).unwrap();
    let mut chunk = [0u8; 65536];
    loop {
        match watching.read(&mut chunk) {
            Ok(0) => panic!("the viewer's connection was closed by the flood"),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("the viewer's connection broke in the flood: {e}"),
        }
    }
    watching.set_nonblocking(false).unwrap();
    let picture = decoded(&first_jpeg(&mut watching), dir.path(), "after-flood.jpg");
    assert_eq!((picture.width, picture.height), (640, 480), "hall's frame after the flood");
    drop((idle, watching));

    // A head over 8 KiB is refused (431, or the connection closed); the server serves on.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let big = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    let _ = s.write_all(big.as_bytes());
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let refused = parse(&answer);
    assert!(refused.code == 431 || answer.is_empty(), "a 9 KB head: {}", refused.head);
    assert_eq!(ask(port, "GET", "/healthz", &[]).code, 200, "after a head too large");

    // A head trickled a byte at a time, slower than its deadline allows, is cut before it
    // is whole; others are served meanwhile.
    let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: {}\r\n\r\n", "b".repeat(150));
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut sent = 0;
    let cut = loop {
        assert!(sent < head.len(), "the whole head went through a byte every 100 ms: never cut");
        if slow.write_all(&head.as_bytes()[sent..sent + 1]).is_err() {
            break "write refused";
        }
        sent += 1;
        match slow.read(&mut [0u8; 512]) {
            Ok(0) => break "closed",
            Ok(_) => break "answered",
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break "reset",
        }
        if sent == 10 {
            let a = ask_within(port, "GET", "/healthz", &[], PROMPT);
            assert_eq!(a.code, 200, "/healthz while a head trickles in: {}", a.head);
        }
    };
    eprintln!("a trickled head: {cut} after {sent} of {} bytes", head.len());
    assert!(sent < head.len(), "cut only once whole ({cut})");
    assert_eq!(ask(port, "GET", "/healthz", &[]).code, 200, "after a trickled head");
    assert!(daemon.stop());
}

/// A client on a narrow link: a receive buffer of a few KiB and small segments, so the
/// daemon's kernel holds about 100 KiB of a response for it and hyper the rest.
fn narrow_client(port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    let int = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `socket` returns a new descriptor that the `TcpStream` owns from here on;
    // the options and the address are plain values alive for each call, of the sizes given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "a socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        for (level, name, value) in
            [(libc::SOL_SOCKET, libc::SO_RCVBUF, 4096), (libc::IPPROTO_TCP, libc::TCP_MAXSEG, 536)]
        {
            let rc = libc::setsockopt(fd, level, name, (&raw const value).cast(), int);
            assert_eq!(rc, 0, "socket option {name}: {}", std::io::Error::last_os_error());
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::connect(fd, (&raw const addr).cast(), size);
        assert_eq!(rc, 0, "the HTTP listener: {}", std::io::Error::last_os_error());
        stream
    }
}

/// Descriptors the process `pid` has open.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A newcomer evicts the oldest connection answering no request, and a download whose body
/// hyper has let go of looks like one: evicted, it must still finish. Before the fix the
/// clients evicted in a flood while sending their heads took every "finish your response"
/// leave and kept it until their heads timed out (5 s), so a download evicted then was cut.
#[test]
fn a_slow_download_evicted_in_a_flood_of_trickling_clients_is_finished() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // A camera of 1920x1080 noise: its picture is a JPEG of about a megabyte, far more than
    // the sockets between the daemon and a narrow client hold.
    let clip = dir.path().join("snow.avi");
    common::encode::run_to_eos(
        &format!(
            "videotestsrc pattern=snow num-buffers=4 ! video/x-raw,width=1920,height=1080,framerate=2/1 \
             ! jpegenc quality=85 ! avimux ! filesink location={}",
            clip.display()
        ),
        60,
    );
    let snow = format!("[cameras.snow]\nuri = \"file://{}\"\nloop = true\nwidth = 1920\n", clip.display());
    let (daemon, port) = daemon_with(dir.path(), &broker, "download", "", &snow);
    let path = "/cameras/snow/latest.jpg";
    let deadline = std::time::Instant::now() + WAIT;
    let picture = loop {
        let a = ask(port, "GET", path, &[]);
        if a.code == 200 {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "no picture of the snow camera: {}", a.head);
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(picture.body.len() > 512 * 1024, "a picture larger than the sockets hold: {} bytes", picture.body.len());
    let before = descriptors(daemon.pid());
    // A client that sends the start of a head, and no more.
    let trickling = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the HTTP listener");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").expect("part of a head");
        s
    };

    // First wave, twice the slots: the second half evicts the first. (Each half is
    // followed by a question, taken after all of them: answered, every one had its turn.)
    let mut first: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| trickling()).collect();
    assert_eq!(ask(port, "GET", "/healthz", &[]).code, 200, "/healthz after the first half");
    first.extend((0..MAX_CONNECTIONS).map(|_| trickling()));
    assert_eq!(ask(port, "GET", "/healthz", &[]).code, 200, "/healthz after the first wave");

    // The download: its head is read, the rest comes as slowly as its narrow link takes it
    // (fast enough that the daemon never finds it stalled), until it is told it was evicted;
    // then it takes the rest as fast as it can.
    let mut s = narrow_client(port);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).unwrap_or(0), 1, "the download's head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = parse(&head);
    assert_eq!(head.code, 200, "{}", head.head);
    let length: usize = head.header("content-length").and_then(|v| v.parse().ok()).expect("a length");
    let (evicted, told) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let (mut body, mut chunk, mut at_eviction) = (Vec::new(), [0u8; 2048], None);
        loop {
            if at_eviction.is_none() && told.try_recv().is_ok() {
                at_eviction = Some(body.len());
            }
            let n = s.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                return (at_eviction, body);
            }
            body.extend_from_slice(&chunk[..n]);
            if at_eviction.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });

    // Second wave, as many as the slots: each evicts the oldest connection answering no
    // request, the download among them (its body was let go of once queued).
    let second: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| trickling()).collect();
    // Taken after all of them: answered, all 32 had their slots, so the download was evicted.
    assert_eq!(ask(port, "GET", "/healthz", &[]).code, 200, "/healthz after the second wave");
    let during = descriptors(daemon.pid());
    // (A download cut in the flood has ended already: it is told nothing.)
    let _ = evicted.send(());
    let (at_eviction, body) = reader.join().unwrap();
    eprintln!(
        "download of {length} bytes: {at_eviction:?} read when evicted, {} in all; descriptors {before} before the flood, {during} during",
        body.len()
    );
    assert_eq!(body.len(), length, "the whole picture, though evicted in the flood");
    let at_eviction = at_eviction.expect("the download was still going when the flood was over");
    assert!(at_eviction + 256 * 1024 < length, "mid-response when evicted: {at_eviction} of {length} bytes read");
    assert!(body.starts_with(&[0xFF, 0xD8]) && body.ends_with(&[0xFF, 0xD9]), "a whole JPEG");
    // Bounded: the slots' connections and the download finishing, none of the evicted
    // trickling ones (a little room for what the daemon opens meanwhile).
    assert!(during <= before + MAX_CONNECTIONS + 1 + 4, "{during} descriptors during the flood, {before} before");
    drop((first, second));
    assert!(daemon.stop());
}
