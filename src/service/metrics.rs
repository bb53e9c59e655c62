//! `/metrics`: what [`Health`] knows, as Prometheus metric families built on each scrape
//! from the live state (so a camera a reload removed has no series left, and a changed one
//! appears once) and written by the `prometheus` crate's text encoder, which owns the
//! exposition format: names, types, label escaping.
//!
//! Histograms are read in place under their worker's lock and reduced to the twelve
//! Prometheus buckets; nothing the frame path keeps is copied whole.

use std::sync::atomic::Ordering;

use prometheus::TextEncoder;
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

use super::http::Health;
use crate::pipeline::LatencyHistogram;
use crate::source::CameraState;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Latency bucket bounds in milliseconds.
const BOUNDS_MS: [f64; 12] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

/// Every camera state, for the labelled state gauge (1 for the current one, 0 for the rest).
const STATES: [CameraState; 7] = [
    CameraState::Starting,
    CameraState::Streaming,
    CameraState::Reconnecting,
    CameraState::Stalled,
    CameraState::Failed,
    CameraState::Disabled,
    CameraState::Ended,
];

/// Label names and values of one series.
type Labels = Vec<(&'static str, String)>;

/// The families of one scrape, in the order they are added.
#[derive(Default)]
struct Families(Vec<MetricFamily>);

impl Families {
    fn add(&mut self, name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) {
        // The encoder refuses a family without series (no camera yet, say): leave it out.
        if metrics.is_empty() {
            return;
        }
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        f.set_metric(metrics);
        self.0.push(f);
    }

    fn gauges(&mut self, name: &str, help: &str, series: impl IntoIterator<Item = (Labels, f64)>) {
        let metrics = series
            .into_iter()
            .map(|(labels, v)| {
                let mut g = Gauge::default();
                g.set_value(v);
                let mut m = metric(labels);
                m.set_gauge(g);
                m
            })
            .collect();
        self.add(name, help, MetricType::GAUGE, metrics);
    }

    fn counters(&mut self, name: &str, help: &str, series: impl IntoIterator<Item = (Labels, u64)>) {
        let metrics = series
            .into_iter()
            .map(|(labels, v)| {
                let mut c = Counter::default();
                c.set_value(v as f64);
                let mut m = metric(labels);
                m.set_counter(c);
                m
            })
            .collect();
        self.add(name, help, MetricType::COUNTER, metrics);
    }

    fn encode(self) -> String {
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.0, &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

fn metric(labels: Labels) -> Metric {
    let pairs = labels
        .into_iter()
        .map(|(k, v)| {
            let mut p = LabelPair::default();
            p.set_name(k.to_string());
            p.set_value(v);
            p
        })
        .collect();
    Metric::from_label(pairs)
}

/// One histogram series: the latencies reduced to the Prometheus buckets.
fn histogram(labels: Labels, h: &LatencyHistogram) -> Metric {
    let mut hist = Histogram::default();
    hist.set_sample_count(h.count());
    hist.set_sample_sum(h.sum_seconds());
    hist.set_bucket(
        BOUNDS_MS
            .iter()
            .map(|&ms| {
                let mut b = Bucket::default();
                b.set_upper_bound(ms / 1000.0);
                b.set_cumulative_count(h.count_le(ms));
                b
            })
            .collect(),
    );
    let mut m = metric(labels);
    m.set_histogram(hist);
    m
}

fn camera(name: &str) -> Labels {
    vec![("camera", name.to_string())]
}

/// The Prometheus exposition of everything `h` knows.
pub fn render(h: &Health) -> String {
    let mut f = Families::default();
    build_info(&mut f);
    heap(&mut f);
    cameras(&mut f, h);
    frame_path(&mut f, h);
    let events = h.probe.guard(&h.events, "the event counts").clone();
    f.counters(
        "clefd_events_total",
        "Emotion events produced, by camera, lifecycle step and emotion.",
        events.into_iter().map(|((camera, kind, emotion), n)| {
            (vec![("camera", camera), ("type", kind.to_string()), ("emotion", emotion)], n)
        }),
    );
    publishing(&mut f, h);
    f.0.extend(super::history_page::metric_families());
    snapshots(&mut f, h);
    f.encode()
}

/// `clefd_build_info`: versions and the best execution provider this ONNX Runtime has.
fn build_info(f: &mut Families) {
    use crate::engine::runtime::{provider_in_build, version};
    let provider = ["tensorrt", "cuda"].into_iter().find(|p| provider_in_build(p)).unwrap_or("cpu");
    let labels = vec![
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("onnxruntime", version().unwrap_or_else(|| "unknown".into())),
        ("provider", provider.to_string()),
    ];
    f.gauges(
        "clefd_build_info",
        "Always 1: the clefd and ONNX Runtime versions, and the best provider.",
        [(labels, 1.0)],
    );
}

/// `clefd_heap_in_use_bytes` (glibc only): a leak shows there before it shows in RSS. The
/// figure is cached (at most `heap::REFRESH` old): a scrape never walks the arenas itself.
fn heap(f: &mut Families) {
    if let Some(bytes) = super::heap::recent_in_use_bytes() {
        f.gauges(
            "clefd_heap_in_use_bytes",
            "Bytes of heap in use (glibc's mallinfo2, mmapped blocks included; sampled at most every 10 s): unlike RSS, \
             not what the allocator keeps.",
            [(Vec::new(), bytes as f64)],
        );
    }
}

/// What each camera reports: state, fps, restarts, the decoder it got.
fn cameras(f: &mut Families, h: &Health) {
    let cams = h.states();
    f.gauges(
        "clefd_camera_state",
        "1 for the state each camera is in, 0 for the others.",
        cams.iter().flat_map(|(name, st)| {
            STATES.iter().map(move |s| {
                (
                    vec![("camera", name.clone()), ("state", s.as_str().to_string())],
                    f64::from(u8::from(st.status == *s)),
                )
            })
        }),
    );
    f.gauges(
        "clefd_camera_streaming",
        "1 while the camera delivers frames.",
        cams.iter().map(|(name, st)| (camera(name), f64::from(u8::from(st.status == CameraState::Streaming)))),
    );
    f.gauges(
        "clefd_camera_fps",
        "Frames per second the camera delivers.",
        cams.iter().map(|(n, st)| (camera(n), st.fps)),
    );
    f.counters(
        "clefd_camera_restarts_total",
        "Times the camera was restarted after a failure or stall.",
        cams.iter().map(|(n, st)| (camera(n), st.restarts)),
    );
    f.gauges(
        "clefd_camera_decoder_info",
        "Always 1: the video decoder each camera got, and whether it is NVIDIA's hardware or software.",
        cams.iter().filter_map(|(name, st)| {
            let decoder = st.decoder.clone()?;
            let path = if decoder.starts_with("nv") || decoder.contains("v4l2") { "hardware" } else { "software" };
            Some((vec![("camera", name.clone()), ("decoder", decoder), ("path", path.to_string())], 1.0))
        }),
    );
}

/// What the inference workers did, per camera and per bundle.
fn frame_path(f: &mut Families, h: &Health) {
    let (mut analysed, mut dropped, mut faces, mut latency) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut inference, mut lanes, mut in_flight, mut providers) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut panics = Vec::new();
    h.probe.visit(|s, cams| {
        for c in cams {
            let name = &c.summary.name;
            analysed.push((camera(name), c.summary.frames));
            dropped.push((vec![("camera", name.clone()), ("reason", "latest_frame_wins".to_string())], c.dropped));
            dropped
                .push((vec![("camera", name.clone()), ("reason", "inference_failed".to_string())], c.summary.failed));
            faces.push((camera(name), c.summary.faces));
            latency.push(histogram(camera(name), &c.summary.latency));
        }
        let bundle = |stage: &str| vec![("bundle", s.bundle.clone()), ("stage", stage.to_string())];
        inference.push(histogram(bundle("detect"), &s.detect_batches));
        inference.push(histogram(bundle("classify"), &s.classify_batches));
        lanes.push((vec![("bundle", s.bundle.clone())], s.lanes as f64));
        panics.push((vec![("bundle", s.bundle.clone())], s.lane_panics));
        in_flight.push((vec![("bundle", s.bundle.clone())], s.in_flight as f64));
        providers.push((vec![("bundle", s.bundle.clone()), ("provider", s.provider.clone())], 1.0));
    });
    let cams = h.states();
    for (name, st) in &cams {
        dropped.push((vec![("camera", name.clone()), ("reason", "fps_cap".to_string())], st.dropped_fps_cap));
    }
    f.counters("clefd_frames_analysed_total", "Frames that went through detection and classification.", analysed);
    f.counters("clefd_frames_dropped_total", "Frames dropped before inference, by reason.", dropped);
    f.counters("clefd_faces_total", "Faces analysed.", faces);
    f.add(
        "clefd_capture_to_decision_seconds",
        "From frame capture to the decision on it.",
        MetricType::HISTOGRAM,
        latency,
    );
    f.add("clefd_inference_seconds", "Model time per batch, by stage.", MetricType::HISTOGRAM, inference);
    f.counters(
        "clefd_lane_panics_total",
        "Batches an inference lane panicked on (the lane goes on; their frames are dropped).",
        panics,
    );
    f.counters(
        "clefd_worker_failures_total",
        "Inference workers that ended abnormally (a panic outside the lanes, their sink or lanes gone); their cameras moved to a new worker.",
        [(Vec::new(), h.probe.worker_failures())],
    );
    f.gauges(
        "clefd_pipeline_held",
        "Per-camera state the frame path holds (one of each per running camera; more is a leak).",
        h.probe.held().into_iter().map(|(kind, n)| (vec![("kind", kind.to_string())], n as f64)),
    );
    f.gauges("clefd_inference_lanes", "Inference lanes: batches a bundle can analyse at once.", lanes);
    f.gauges("clefd_inference_batches_in_flight", "Batches being analysed right now.", in_flight);
    f.gauges("clefd_bundle_provider_info", "Always 1: the execution provider each bundle's models run on.", providers);
    f.gauges(
        "clefd_engine_acceptance",
        "Always 1: whether each model reproduced its bundle's golden vectors on a provider and precision (result accepted, rejected or unverified).",
        crate::engine::acceptance::records().into_iter().map(|r| {
            let labels = vec![
                ("bundle", r.bundle),
                ("model", r.model),
                ("provider", r.provider),
                ("precision", r.precision),
                ("result", r.result.to_string()),
            ];
            (labels, 1.0)
        }),
    );
}

/// Snapshots lost on the way to their folder (when snapshots go to one): the files a `new`
/// event may name but that were never written. The writer encodes the crops it is handed,
/// so a slow encode fills its queue as a slow disk does.
fn snapshots(f: &mut Families, h: &Health) {
    let Some(places) = h.snapshots.as_ref().filter(|p| p.dir.is_some()) else { return };
    let none = Vec::<(&'static str, String)>::new;
    f.counters(
        "clefd_snapshots_dropped_total",
        "Snapshots not written because the writer was behind (a slow or hung folder, or slow JPEG encoding of large \
         crops).",
        [(none(), places.dropped.load(Ordering::Relaxed))],
    );
    f.counters(
        "clefd_snapshots_failed_total",
        "Snapshots for the folder that could not be encoded or written (folder missing or read-only, disk full).",
        [(none(), places.failed.load(Ordering::Relaxed))],
    );
}

/// Delivery to the broker and the spool.
fn publishing(f: &mut Families, h: &Health) {
    let p = &h.publish;
    let none = || Vec::<(&'static str, String)>::new();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    f.counters("clefd_mqtt_events_acked_total", "Events the broker acknowledged.", [(none(), load(&p.acked))]);
    f.counters("clefd_mqtt_events_sent_total", "Events sent, re-sends included.", [(none(), load(&p.sent))]);
    f.counters(
        "clefd_mqtt_events_dropped_total",
        "Events dropped because the spool was full.",
        [(none(), load(&p.dropped))],
    );
    f.counters(
        "clefd_events_lost_total",
        "Events lost because the disk refused them (full, read-only, too many open files).",
        [(none(), load(&p.failed))],
    );
    f.counters(
        "clefd_spool_corrupt_records_total",
        "Spooled events skipped at start: bad checksum.",
        [(none(), load(&p.corrupt))],
    );
    let writable = f64::from(u8::from(p.problem().is_none()));
    f.gauges("clefd_spool_writable", "0 while the spool or the sequence file cannot be written.", [(none(), writable)]);
    f.gauges("clefd_spool_events", "Events waiting in the spool for the broker.", [(none(), load(&p.spooled) as f64)]);
    let connected = f64::from(u8::from(p.connected.load(Ordering::Relaxed)));
    f.gauges("clefd_mqtt_connected", "1 while connected to the broker.", [(none(), connected)]);
    f.counters("clefd_mqtt_connects_total", "Successful connections to the broker.", [(none(), load(&p.connects))]);
    let ready = f64::from(u8::from(p.control_is_ready()));
    f.gauges(
        "clefd_mqtt_control_ready",
        "1 while the control connection is up and the broker granted both its subscriptions: commands sent meanwhile are answered. Always 0 when mqtt.control is off.",
        [(none(), ready)],
    );
    f.counters(
        "clefd_mqtt_control_subscribes_total",
        "Times the broker granted both control subscriptions (once per connection). Stays 0 when mqtt.control is off.",
        [(none(), load(&p.control_subscribes))],
    );
    let stuck = f64::from(u8::from(p.delivery.stuck_for().is_some()));
    f.gauges(
        "clefd_mqtt_delivery_stuck",
        "1 while events wait and the broker has acknowledged none (or refused every one) for mqtt.delivery_stuck_s, however the connection flaps.",
        [(none(), stuck)],
    );
    f.counters(
        "clefd_mqtt_connect_failures_total",
        "Failed or lost connections to the broker, by reason.",
        p.delivery.failures().into_iter().map(|(reason, n)| (vec![("reason", reason.to_string())], n)),
    );
    f.counters(
        "clefd_mqtt_events_refused_total",
        "Events the broker acknowledged with an MQTT 5 refusal (ACL, quota), by reason: lost, never re-sent.",
        p.delivery.refusals().into_iter().map(|(reason, n)| (vec![("reason", reason.to_string())], n)),
    );
}
