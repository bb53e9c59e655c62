//! `clefd watch`: subscribe to a device's events and print one readable line each.
//! The demo uses it to show what consumers receive; it is also handy in the field.

use std::io::Write;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use clefd::eval::{ClipTruth, EventTally};
use clefd::mqtt::BrokerUrl;

/// What to watch and when to stop.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Broker.
    pub url: BrokerUrl,
    /// Topic prefix.
    pub prefix: String,
    /// Stop when this device publishes `offline` (a live message, not the retained one).
    pub until_offline: Option<String>,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// Stop after this long.
    pub timeout: Option<Duration>,
    /// Score the events of one camera against a rendered clip's ground truth.
    pub truth: Option<(String, ClipTruth)>,
    /// User name and password, for brokers that want them.
    pub credentials: Option<(String, String)>,
    /// `mqtts://`: the CA (and client certificate) to trust the broker with.
    pub tls: Option<clefd::mqtt::TlsFiles>,
}

/// Runs until a stop condition; returns the number of events printed.
pub async fn watch(opts: WatchOptions, out: &mut (impl Write + Send)) -> anyhow::Result<u64> {
    let (client, mut eventloop) = AsyncClient::new(mqtt_options(&opts)?, 16);
    client.subscribe(format!("{}/+/+/emotion", opts.prefix), QoS::AtLeastOnce).await?;
    client.subscribe(format!("{}/+/availability", opts.prefix), QoS::AtLeastOnce).await?;
    let deadline = opts.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut printed = 0u64;
    let mut tally = EventTally::default();
    let mut order = TimeOrder::default();
    writeln!(out, "{HEADER}")?;
    let mut retry = Retry { wait: RETRY_START, last_error: String::new() };
    loop {
        let polled = match deadline {
            Some(d) => match tokio::time::timeout_at(d, eventloop.poll()).await {
                Ok(p) => p,
                Err(_) => break,
            },
            None => eventloop.poll().await,
        };
        let publish = match polled {
            Ok(Event::Incoming(Packet::Publish(p))) => p,
            Ok(Event::Incoming(Packet::SubAck(ack))) if ack.pkid == 1 => {
                eprintln!("clefd watch: subscribed to {}/+/+/emotion on {}", opts.prefix, opts.url);
                continue;
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                retry.wait = RETRY_START;
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                retry.after(&opts.url, &e).await?;
                continue;
            }
        };
        match print(&publish, &opts, out, &mut tally, &mut order)? {
            Printed::Stop => break,
            Printed::Nothing => {}
            Printed::Event => {
                printed += 1;
                if opts.count.is_some_and(|c| printed >= c) {
                    break;
                }
            }
        }
    }
    let _ = client.disconnect().await;
    if let Some((camera, _)) = &opts.truth {
        print_tally(out, camera, &tally)?;
    }
    Ok(printed)
}

/// The client's options: id, keep-alive, credentials, TLS.
fn mqtt_options(opts: &WatchOptions) -> anyhow::Result<MqttOptions> {
    let id = format!("clefd-watch-{}", std::process::id());
    let mut mo = MqttOptions::new(id, &opts.url.host, opts.url.port);
    mo.set_keep_alive(Duration::from_secs(30));
    mo.set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some((user, password)) = &opts.credentials {
        mo.set_credentials(user, password);
    }
    match (&opts.tls, opts.url.tls) {
        (Some(files), true) => {
            mo.set_transport(clefd::mqtt::session::tls_transport(files));
        }
        (None, true) => anyhow::bail!("{} is mqtts://: give the CA that signed its certificate (--ca-file)", opts.url),
        (Some(_), false) => anyhow::bail!("--ca-file is for mqtts:// brokers, and {} is not one", opts.url),
        (None, false) => {}
    }
    Ok(mo)
}

const RETRY_START: Duration = Duration::from_millis(500);

/// Waiting out a broker that cannot be reached.
struct Retry {
    wait: Duration,
    /// Said once until it changes.
    last_error: String,
}

impl Retry {
    /// Waits before the next attempt; an error when retrying cannot help (refused
    /// credentials, TLS failures).
    async fn after(&mut self, url: &BrokerUrl, e: &rumqttc::ConnectionError) -> anyhow::Result<()> {
        let why = clefd::mqtt::session::describe_v311(e);
        if why.permanent {
            anyhow::bail!("broker {url}: {}", why.message);
        }
        if why.message != self.last_error {
            eprintln!("clefd watch: broker {url}: {}; retrying", why.message);
            self.last_error = why.message;
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Duration::from_secs(5));
        Ok(())
    }
}

/// What one message amounted to.
enum Printed {
    /// An event line.
    Event,
    /// Nothing counted (availability, a retained state).
    Nothing,
    /// The device went offline, as asked to wait for.
    Stop,
}

/// Prints one message: a device going on- or offline, or an event (scored against the
/// truth when it is the watched camera's).
fn print(
    publish: &rumqttc::Publish,
    opts: &WatchOptions,
    out: &mut impl Write,
    tally: &mut EventTally,
    order: &mut TimeOrder,
) -> anyhow::Result<Printed> {
    if publish.topic.ends_with("/availability") {
        let device = publish.topic.split('/').nth(1).unwrap_or_default();
        let state = String::from_utf8_lossy(&publish.payload);
        if !publish.retain {
            writeln!(out, "{device}: {state}")?;
            if state == "offline" && opts.until_offline.as_deref() == Some(device) {
                return Ok(Printed::Stop);
            }
        }
        return Ok(Printed::Nothing);
    }
    match serde_json::from_slice::<Value>(&publish.payload) {
        Ok(v) => match &opts.truth {
            Some((camera, truth)) if v.get("camera").and_then(Value::as_str) == Some(camera) => {
                writeln!(out, "{}", order.line(&v, score(&v, truth, tally)))?
            }
            _ => writeln!(out, "{}", order.line(&v, describe(&v)))?,
        },
        Err(e) => writeln!(out, "{}: unreadable event ({e})", publish.topic)?,
    }
    Ok(Printed::Event)
}

/// How often each view of the face was right, for the watched camera.
fn print_tally(out: &mut impl Write, camera: &str, tally: &EventTally) -> std::io::Result<()> {
    let pct = |n: u64| 100.0 * n as f64 / tally.events.max(1) as f64;
    writeln!(out, "tally for camera {camera}: {} events with a known expression", tally.events)?;
    writeln!(out, "  vanilla model alone  right {:>4} ({:5.1} %)", tally.vanilla, pct(tally.vanilla))?;
    writeln!(out, "  factual φ(Y_c,Y_e)   right {:>4} ({:5.1} %)", tally.factual, pct(tally.factual))?;
    writeln!(out, "  debiased (TIE)       right {:>4} ({:5.1} %)", tally.debiased, pct(tally.debiased))?;
    writeln!(out, "  debiased − factual: {:+.1} points", pct(tally.debiased) - pct(tally.factual))
}

fn label_values(map: Option<&Value>) -> Vec<(String, f64)> {
    map.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_f64().map(|f| (k.clone(), f))).collect())
        .unwrap_or_default()
}

fn argmax(values: &[(String, f64)]) -> Option<&str> {
    values.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|(k, _)| k.as_str())
}

/// Scores one event against the clip's truth at its frame: the raw per-frame decisions of
/// the vanilla model (`vanilla`), the factual φ(Y_c,Y_e) (`factual`) and the debiased TIE
/// (`debiased`).
pub fn score(v: &Value, truth: &ClipTruth, tally: &mut EventTally) -> String {
    let frame = v.get("frame").and_then(Value::as_u64).unwrap_or(0);
    let Some(expected) = truth.at(frame) else {
        return format!("{}  (no truth for frame {frame})", describe(v));
    };
    let vanilla = label_values(v.get("vanilla"));
    let factual = label_values(v.get("factual"));
    let debiased = label_values(v.get("debiased"));
    let (dv, df, dd) = (argmax(&vanilla), argmax(&factual), argmax(&debiased));
    tally.events += 1;
    tally.vanilla += u64::from(dv == Some(expected));
    tally.factual += u64::from(df == Some(expected));
    tally.debiased += u64::from(dd == Some(expected));
    let mark = |d: Option<&str>| if d == Some(expected) { "right" } else { "wrong" };
    format!(
        "{} track {:<3} {:<6} frame {frame:<4} truth {expected:<8} factual {:<8} ({})  debiased {:<8} ({})  vanilla {:<8}",
        v.get("camera").and_then(Value::as_str).unwrap_or("?"),
        v.get("track_id").and_then(Value::as_u64).unwrap_or(0),
        v.get("type").and_then(Value::as_str).unwrap_or("?"),
        df.unwrap_or("-"),
        mark(df),
        dd.unwrap_or("-"),
        mark(dd),
        dv.unwrap_or("-"),
    )
}

fn top(map: Option<&Value>) -> (String, f64) {
    map.and_then(Value::as_object)
        .and_then(|m| {
            m.iter().filter_map(|(k, v)| v.as_f64().map(|f| (k.clone(), f))).max_by(|a, b| a.1.total_cmp(&b.1))
        })
        .unwrap_or_default()
}

/// The first line `clefd watch` prints: what each column of [`describe`] is.
pub const HEADER: &str =
    "TIME (UTC)      DEVICE/CAMERA TRACK TYPE   EMOTION   CONF  VANILLA [FACTUAL]  DEBIAS  BOX (x,y wxh)  SEQ";

/// Keeps the time column in order. Events arrive in the order clefd decided them, but an
/// `end` carries the capture time of the frame its track was last seen in, which can be
/// earlier than the lines before it: such a line shows the latest time printed so far and
/// its own capture time at the end (`seen …`), so the column never goes backwards.
#[derive(Debug, Default)]
pub struct TimeOrder {
    /// The latest capture time printed, and its time column.
    last: Option<(time::OffsetDateTime, String)>,
}

impl TimeOrder {
    /// `line` (whose first word is the time column) for event `v`, kept in order.
    pub fn line(&mut self, v: &Value, line: String) -> String {
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        let Some(ts) = v.get("ts").and_then(Value::as_str).and_then(|t| time::OffsetDateTime::parse(t, rfc3339).ok())
        else {
            return line;
        };
        let (column, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match &self.last {
            Some((last, shown)) if ts < *last => format!("{shown} {rest}  (seen {column})"),
            _ => {
                self.last = Some((ts, column.to_string()));
                line
            }
        }
    }
}

/// One line per event: time, camera, track, lifecycle step, decision, and what the vanilla
/// model (and, when debiasing, the factual ensemble) would have said.
pub fn describe(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (vanilla, vp) = top(v.get("vanilla"));
    let factual = match top(v.get("factual")) {
        (f, _) if f.is_empty() => String::new(),
        (f, fp) => format!("  factual {f} {fp:.2}"),
    };
    let ts = s("ts");
    let time = ts.split('T').nth(1).unwrap_or(&ts).trim_end_matches('Z');
    let bx = v.get("box");
    let coord = |k: &str| bx.and_then(|b| b.get(k)).and_then(Value::as_f64).unwrap_or(0.0);
    format!(
        "{time} {}/{} track {:<3} {:<6} {:<9} {:.2}  vanilla {vanilla} {vp:.2}{factual}  debias {}  box ({:.2},{:.2} {:.2}x{:.2})  seq {}",
        s("device"),
        s("camera"),
        n("track_id"),
        s("type"),
        s("emotion"),
        v.get("confidence").and_then(Value::as_f64).unwrap_or(0.0),
        s("debias"),
        coord("x"),
        coord("y"),
        coord("w"),
        coord("h"),
        n("seq"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_column_never_goes_backwards() {
        let ev = |ts: &str, kind: &str| serde_json::json!({"ts": ts, "type": kind, "device": "d", "camera": "c"});
        let mut order = TimeOrder::default();
        let times: Vec<String> = [
            ev("2026-01-01T10:00:01.5Z", "update"),
            ev("2026-01-01T10:00:02Z", "update"),
            ev("2026-01-01T10:00:01.25Z", "end"),
            ev("2026-01-01T10:00:03Z", "new"),
        ]
        .iter()
        .map(|v| order.line(v, describe(v)))
        .collect();
        let column: Vec<&str> = times.iter().map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(column, ["10:00:01.5", "10:00:02", "10:00:02", "10:00:03"], "{times:#?}");
        assert!(times[2].ends_with("(seen 10:00:01.25)") && times[2].contains(" end "), "{}", times[2]);
        assert!(!times[1].contains("seen"), "in order: as it was");
    }

    #[test]
    fn an_event_is_scored_on_its_frame_by_each_of_the_three_views() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truth.csv");
        std::fs::write(&path, "frame,label,x\n0,happy,1\n1,sad,1\n").unwrap();
        let truth = ClipTruth::read(&path).unwrap();
        // The TIE says sad; the scene pushes happy so hard that the factual says happy;
        // the vanilla model says happy too.
        let event = serde_json::json!({
            "camera": "c", "track_id": 3, "type": "new", "frame": 1,
            "vanilla": {"happy": 0.7, "sad": 0.3},
            "factual": {"happy": 0.6, "sad": 0.4},
            "debiased": {"happy": 0.1, "sad": 0.9},
            "context_bias": {"happy": -0.1, "sad": -2.0},
        });
        let mut tally = EventTally::default();
        let line = score(&event, &truth, &mut tally);
        assert!(line.contains("truth sad") && line.contains("factual happy"), "{line}");
        assert_eq!(tally, EventTally { events: 1, vanilla: 0, factual: 0, debiased: 1 });
        let late = serde_json::json!({"camera": "c", "frame": 9, "debiased": {"happy": 1.0}});
        assert!(score(&late, &truth, &mut tally).contains("no truth for frame 9"));
        assert_eq!(tally.events, 1);
    }
}
