//! `clefd bench --mqtt`: delivery alone, events through the spool to a broker, QoS 1,
//! acknowledged.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn sample_event(i: u64) -> clefd::events::EmotionEvent {
    use clefd::events::*;
    let labels: Vec<String> =
        ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"].map(String::from).to_vec();
    let p = [0.01, 0.01, 0.01, 0.9, 0.03, 0.02, 0.02];
    EmotionEvent {
        schema: SCHEMA,
        kind: EventType::Update,
        device: "bench".into(),
        camera: "cam0".into(),
        track_id: i / 10,
        track_uid: format!("bench-cam0-{}", i / 10),
        track_started: rfc3339(std::time::SystemTime::now()),
        seq: 0,
        ts: rfc3339(std::time::SystemTime::now()),
        frame: i,
        frame_size: FrameSize { width: 1280, height: 720 },
        bbox: NormBox { x: 0.3, y: 0.2, w: 0.1, h: 0.15 },
        detector_score: 0.9,
        emotion: "happy".into(),
        confidence: 0.9,
        active: None,
        scores: LabelValues::new(&labels, &p),
        vanilla: LabelValues::new(&labels, &p),
        factual: None,
        debias: Debias::Off,
        debiased: None,
        context_bias: None,
        bundle: BundleRef { name: "bench".into(), sha256: "0".repeat(64) },
        latency_ms: 5.0,
        snapshot: None,
    }
}

/// Pushes `n` events through the spool to the broker at `url` (QoS 1) and times it.
pub(super) fn mqtt(url: &str, n: u64) -> anyhow::Result<ExitCode> {
    use clefd::mqtt::{BrokerUrl, Outgoing, Publisher, PublisherConfig};
    let dir = std::env::temp_dir().join(format!("clefd-bench-mqtt-{}", std::process::id()));
    let spool = clefd::mqtt::spool::Spool::open(&dir.join("spool"), 256 << 20)?;
    let seq = clefd::events::seq::SeqCounter::open(&dir.join("seq"), spool.next_seq())?;
    let cfg = PublisherConfig {
        url: BrokerUrl::parse(url).map_err(anyhow::Error::msg)?,
        client_id: format!("clefd-bench-{}", std::process::id()),
        prefix: "clefd".into(),
        device: "bench".into(),
        keep_alive: Duration::from_secs(30),
        credentials: None,
        flush_timeout: Duration::from_secs(60),
        tls: None,
        reconnect_max: Duration::from_secs(30),
        protocol: clefd::mqtt::Protocol::V311,
        commands: None,
        event_expiry_s: None,
        stuck_after: clefd::mqtt::progress::STUCK_AFTER,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (acked, secs) = rt.block_on(async move {
        let publisher = Publisher::new(cfg, seq, spool);
        let stats = publisher.stats();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let task = tokio::spawn(publisher.run(rx));
        while !stats.connected.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let start = Instant::now();
        for i in 0..n {
            if tx.send(Outgoing::Analysis(clefd::pipeline::Output::Event(Box::new(sample_event(i))))).await.is_err() {
                break;
            }
        }
        while stats.acked.load(Ordering::Relaxed) < n && start.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        drop(tx);
        let _ = task.await;
        (stats.acked.load(Ordering::Relaxed), secs)
    });
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "mqtt: {acked}/{n} events spooled (fsync per group), sent QoS 1 and acknowledged in {secs:.2} s: {:.0} events/s",
        acked as f64 / secs
    );
    Ok(ExitCode::SUCCESS)
}
