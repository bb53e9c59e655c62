//! `clefd watch`: subscribe to a device's events and print one readable line each.
//! The demo uses it to show what consumers receive; it is also handy in the field.

use std::io::Write;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use super::BrokerUrl;

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
}

/// Runs until a stop condition; returns the number of events printed.
pub async fn watch(opts: WatchOptions, out: &mut (impl Write + Send)) -> anyhow::Result<u64> {
    let id = format!("clefd-watch-{}", std::process::id());
    let mut mo = MqttOptions::new(id, &opts.url.host, opts.url.port);
    mo.set_keep_alive(Duration::from_secs(30));
    mo.set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut eventloop) = AsyncClient::new(mo, 16);
    client.subscribe(format!("{}/+/+/emotion", opts.prefix), QoS::AtLeastOnce).await?;
    client.subscribe(format!("{}/+/availability", opts.prefix), QoS::AtLeastOnce).await?;
    let deadline = opts.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut printed = 0u64;
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
            Ok(_) => continue,
            Err(e) => {
                eprintln!("clefd watch: broker {}: {e}; retrying", opts.url);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if publish.topic.ends_with("/availability") {
            let device = publish.topic.split('/').nth(1).unwrap_or_default();
            let state = String::from_utf8_lossy(&publish.payload);
            if !publish.retain {
                writeln!(out, "{device}: {state}")?;
                if state == "offline" && opts.until_offline.as_deref() == Some(device) {
                    break;
                }
            }
            continue;
        }
        match serde_json::from_slice::<Value>(&publish.payload) {
            Ok(v) => writeln!(out, "{}", describe(&v))?,
            Err(e) => writeln!(out, "{}: unreadable event ({e})", publish.topic)?,
        }
        printed += 1;
        if opts.count.is_some_and(|c| printed >= c) {
            break;
        }
    }
    let _ = client.disconnect().await;
    Ok(printed)
}

fn top(map: Option<&Value>) -> (String, f64) {
    map.and_then(Value::as_object)
        .and_then(|m| {
            m.iter().filter_map(|(k, v)| v.as_f64().map(|f| (k.clone(), f))).max_by(|a, b| a.1.total_cmp(&b.1))
        })
        .unwrap_or_default()
}

/// One line per event: time, camera, track, lifecycle step, decision, factual view.
pub fn describe(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (factual, fp) = top(v.get("factual"));
    let ts = s("ts");
    let time = ts.split('T').nth(1).unwrap_or(&ts).trim_end_matches('Z');
    let bx = v.get("box");
    let coord = |k: &str| bx.and_then(|b| b.get(k)).and_then(Value::as_f64).unwrap_or(0.0);
    format!(
        "{time} {}/{} track {:<3} {:<6} {:<9} {:.2}  factual {factual} {fp:.2}  debias {}  box ({:.2},{:.2} {:.2}x{:.2})  seq {}",
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
