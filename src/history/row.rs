//! One event as the history keeps it: the columns the page and the API filter and
//! aggregate on, and the JSON exactly as consumers received it.

use crate::events::{EmotionEvent, LabelValues};

/// One kept event.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The per-device sequence number the event was published with.
    pub seq: u64,
    /// Camera name.
    pub camera: String,
    /// Capture time, unix milliseconds (the camera's clock: what the API filters and the
    /// page charts on).
    pub ts_ms: i64,
    /// When the history was handed the event, unix milliseconds by this host's clock: what
    /// `retain_h` prunes on, so a camera whose clock is off neither keeps events for ever
    /// nor loses them at once.
    pub recv_ms: i64,
    /// Lifecycle step (`new`, `update`, `end`).
    pub kind: &'static str,
    /// The decided (debiased when debias is on) emotion.
    pub emotion: String,
    /// Whether debiasing changed the factual decision; `None` when debias is off.
    pub changed: Option<bool>,
    /// The track, unique across restarts, for counting faces.
    pub track_uid: String,
    /// The event's JSON as published.
    pub payload: String,
}

impl Row {
    /// The row of `event`, published as `payload`. A capture time that does not parse
    /// (never from clefd) is kept as now, so the event is still pruned in time.
    pub fn from_event(event: &EmotionEvent, payload: &[u8]) -> Row {
        let ts_ms = time::OffsetDateTime::parse(&event.ts, &time::format_description::well_known::Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or_else(|_| super::now_ms());
        Row {
            seq: event.seq,
            camera: event.camera.clone(),
            ts_ms,
            recv_ms: super::now_ms(),
            kind: event.kind.as_str(),
            emotion: event.emotion.clone(),
            changed: event.factual.as_ref().map(|f| top(f) != Some(event.emotion.as_str())),
            track_uid: event.track_uid.clone(),
            payload: String::from_utf8_lossy(payload).into_owned(),
        }
    }

    /// Bytes it adds to the file, about (its text and the columns beside it).
    pub fn size(&self) -> usize {
        self.payload.len() + self.camera.len() + self.emotion.len() + self.track_uid.len() + 48
    }
}

/// The label with the highest value (the factual decision).
fn top(values: &LabelValues) -> Option<&str> {
    values.0.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|(l, _)| l.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Debias, EventType};

    #[test]
    fn a_changed_decision_is_the_factual_top_label_differing_from_the_emotion() {
        let mut e = EmotionEvent::for_test("door", 3, EventType::Update, "Happy", 0.8);
        e.seq = 41;
        e.ts = "2026-12-07T00:00:01.500Z".into();
        assert_eq!(Row::from_event(&e, b"{}").changed, None, "debias off: nothing to change");
        e.debias = Debias::On;
        let labels = ["Happy".to_string(), "Sad".to_string()];
        e.factual = Some(LabelValues::new(&labels, &[0.3, 0.7]));
        let row = Row::from_event(&e, b"{\"seq\":41}");
        assert_eq!(row.changed, Some(true));
        assert_eq!((row.seq, row.ts_ms, row.kind), (41, 1_796_601_601_500, "update"));
        assert_eq!(row.payload, "{\"seq\":41}");
        e.factual = Some(LabelValues::new(&labels, &[0.9, 0.1]));
        assert_eq!(Row::from_event(&e, b"{}").changed, Some(false));
    }
}
