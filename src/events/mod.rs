//! Emotion events as consumers see them (`clefd.emotion/2`), the per-track lifecycle that
//! decides when to emit one, and the persisted per-device sequence number. The event's JSON
//! Schema is derived from these types ([`event_schema`]); `tests/schema.rs` holds it to the
//! shared contract consumers rely on.

pub mod current;
pub mod lifecycle;
pub mod seq;

use schemars::JsonSchema;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// The schema identifier every event carries.
pub const SCHEMA: &str = "clefd.emotion/2";

/// Lifecycle step of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// First confident estimate for a track.
    New,
    /// The debiased emotion changed (after hysteresis) or the heartbeat elapsed.
    Update,
    /// The track was lost; repeats the last estimate.
    End,
}

impl EventType {
    /// The name on the wire (`new`, `update`, `end`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::New => "new",
            EventType::Update => "update",
            EventType::End => "end",
        }
    }
}

/// Label → value, serialised as a JSON object in label order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelValues(pub Vec<(String, f32)>);

impl LabelValues {
    /// Pairs `labels` with `values` (same order).
    pub fn new(labels: &[String], values: &[f32]) -> LabelValues {
        LabelValues(labels.iter().cloned().zip(values.iter().copied()).collect())
    }

    /// The value of `label`, if present.
    pub fn get(&self, label: &str) -> Option<f32> {
        self.0.iter().find(|(l, _)| l == label).map(|(_, v)| *v)
    }
}

impl JsonSchema for LabelValues {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LabelValues".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "object", "additionalProperties": { "type": "number" } })
    }
}

impl Serialize for LabelValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Face box normalised to the frame (0..1, origin top-left).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
pub struct NormBox {
    /// Left.
    pub x: f32,
    /// Top.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
}

/// The stream's size in pixels as the camera sends it (before scaling), so a consumer can
/// turn a normalised box into pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub struct FrameSize {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Which bundle made the estimate.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct BundleRef {
    /// Bundle name.
    pub name: String,
    /// sha256 of its manifest.
    pub sha256: String,
}

/// Whether the decision was made on the TIE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Debias {
    /// The bundle has a context branch; decisions use the TIE.
    On,
    /// No context branch; decisions use the vanilla scores.
    Off,
}

/// One `clefd.emotion/2` event. CLEF's three views of a face are named apart: `vanilla`
/// (the emotion model alone, Y_e), `factual` (the context-aware ensemble φ(Y_c, Y_e), bias
/// included) and `debiased` (the TIE, factual minus what the context alone pushes).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct EmotionEvent {
    /// Always [`SCHEMA`].
    #[schemars(extend("const" = SCHEMA))]
    pub schema: &'static str,
    /// Lifecycle step.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Device id.
    pub device: String,
    /// Camera name.
    pub camera: String,
    /// Track id, stable per camera within a run.
    pub track_id: u64,
    /// Unique across restarts and cameras: `{run}-{camera}-{track_id}`.
    pub track_uid: String,
    /// RFC 3339 UTC capture time of the track's first analysed frame.
    pub track_started: String,
    /// Per-device sequence number, stamped by the publisher.
    pub seq: u64,
    /// RFC 3339 UTC capture time.
    pub ts: String,
    /// Frame index within the stream.
    pub frame: u64,
    /// The stream's own size.
    pub frame_size: FrameSize,
    /// Face box.
    #[serde(rename = "box")]
    pub bbox: NormBox,
    /// Detector score.
    pub detector_score: f32,
    /// Decided label.
    pub emotion: String,
    /// Smoothed score of `emotion`.
    pub confidence: f32,
    /// Multi-label bundles only: labels above threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<String>")]
    pub active: Option<Vec<String>>,
    /// Smoothed scores the decision was made on.
    pub scores: LabelValues,
    /// The vanilla model alone (softmax or sigmoid of Y_e), unsmoothed.
    pub vanilla: LabelValues,
    /// Softmax or sigmoid of φ(Y_c, Y_e), unsmoothed; null when debias is off.
    #[schemars(required, extend("type" = ["object", "null"]))]
    pub factual: Option<LabelValues>,
    /// Whether the TIE was used.
    pub debias: Debias,
    /// Raw TIE per label, or null when debias is off.
    #[schemars(required, extend("type" = ["object", "null"]))]
    pub debiased: Option<LabelValues>,
    /// φ(Y_c, Y_e*) per label, or null when debias is off.
    #[schemars(required, extend("type" = ["object", "null"]))]
    pub context_bias: Option<LabelValues>,
    /// Bundle identity.
    pub bundle: BundleRef,
    /// Capture to publish hand-off, in milliseconds.
    pub latency_ms: f64,
    /// `new` events with snapshots on (`[snapshots]`): where the face's picture went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRef>,
}

/// Where a track's snapshot (a JPEG of the face, taken on its `new` event) can be found.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SnapshotRef {
    /// The retained MQTT topic holding the camera's latest snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The file it was written to (the folder keeps only the newest ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[cfg(test)]
impl EmotionEvent {
    /// A minimal event for unit tests of what consumes events.
    pub(crate) fn for_test(camera: &str, track_id: u64, kind: EventType, emotion: &str, confidence: f32) -> Self {
        EmotionEvent {
            schema: SCHEMA,
            kind,
            device: "dev".into(),
            camera: camera.into(),
            track_id,
            track_uid: format!("test-{camera}-{track_id}"),
            track_started: String::new(),
            seq: 0,
            ts: String::new(),
            frame: 0,
            frame_size: FrameSize { width: 640, height: 480 },
            bbox: NormBox { x: 0.0, y: 0.0, w: 0.1, h: 0.1 },
            detector_score: 0.9,
            emotion: emotion.into(),
            confidence,
            active: None,
            scores: LabelValues::default(),
            vanilla: LabelValues::default(),
            factual: None,
            debias: Debias::Off,
            debiased: None,
            context_bias: None,
            bundle: BundleRef { name: "b".into(), sha256: String::new() },
            latency_ms: 0.0,
            snapshot: None,
        }
    }
}

/// The JSON Schema of [`EmotionEvent`], derived from the Rust types that serialise it.
pub fn event_schema() -> serde_json::Value {
    schemars::schema_for!(EmotionEvent).to_value()
}

/// This process's run, as it appears in `track_uid`: its start time in milliseconds since
/// 1970, in base 36 (so a restart, even within the same second, never repeats a uid).
pub fn run_id() -> &'static str {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        base36(ms)
    })
}

fn base36(mut n: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// RFC 3339 UTC (`2026-11-25T19:12:50.123Z`): the `ts` of an event.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    // Always three digits of milliseconds: consumers (and the tests) compare these
    // strings, and "…58.5Z" would sort after "…58.566Z".
    let dt = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_three_digits_of_milliseconds_and_sort_as_text() {
        let at = |ms: u64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_633_718_000 + ms);
        assert_eq!(rfc3339(at(500)), "2025-12-02T00:01:58.500Z");
        assert_eq!(rfc3339(at(0)), "2025-12-02T00:01:58.000Z");
        assert!(rfc3339(at(500)) < rfc3339(at(566)));
    }

    #[test]
    fn base36_is_short_and_exact() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(1_764_600_000_000), "min9a22o");
        assert!(!run_id().is_empty() && run_id() == run_id(), "one id per process");
    }
}
