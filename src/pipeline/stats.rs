//! What a worker counts while it runs: frames, faces, events, per-stage time and latency
//! histograms, per bundle and per camera. Read live by the probe (metrics, watchdog) and
//! returned when the worker ends (the run summary, `clefd bench`).

use std::time::Duration;

/// How the worker batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batching {
    /// Most frames (cameras) per batch; 1 turns batching off.
    pub max_frames: usize,
    /// How long to wait for other cameras once one frame is ready.
    pub linger: Duration,
}

/// Time spent per stage, summed over a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTotals {
    /// Detection (letterbox, model, decode, NMS).
    pub detect: Duration,
    /// Crops, classifiers and CLEF.
    pub classify: Duration,
    /// Tracking, lifecycle and hand-off to the sink (includes waiting on it).
    pub publish: Duration,
    /// Frames the detector ran on (fewer than those analysed with `detect_every`).
    pub detected: u64,
    /// Faces the classifiers ran on (fewer than those analysed with `classify_every`).
    pub classified: u64,
}

/// Capture-to-decision latencies in 0.1 ms buckets up to 2 s: fixed memory however long
/// the run.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    buckets: Vec<u32>,
    count: u64,
    sum: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: vec![0; 20_001], count: 0, sum: 0.0 }
    }
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let i = ((d.as_secs_f64() * 10_000.0) as usize).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += d.as_secs_f64();
    }

    /// The observations recorded after `earlier` (a snapshot of this same histogram).
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        LatencyHistogram {
            buckets: self.buckets.iter().zip(&earlier.buckets).map(|(a, b)| a.saturating_sub(*b)).collect(),
            count: self.count.saturating_sub(earlier.count),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// Adds `other`'s observations to these.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.saturating_add(*b);
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of all observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum
    }

    /// Observations at or below `ms` milliseconds (a Prometheus `le` bucket).
    pub fn count_le(&self, ms: f64) -> u64 {
        let last = ((ms * 10.0).floor() as usize).min(self.buckets.len() - 1);
        self.buckets[..=last].iter().map(|&n| u64::from(n)).sum()
    }

    /// The `q` quantile (0..1) in milliseconds, 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let target = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= target {
                return i as f64 / 10.0;
            }
        }
        0.0
    }
}

/// One camera's share of a run.
#[derive(Debug, Clone, Default)]
pub struct CameraSummary {
    /// Camera name.
    pub name: String,
    /// Its hub slot: which camera generation these figures belong to.
    pub slot: usize,
    /// Frames analysed.
    pub frames: u64,
    /// Frames skipped because a newer one arrived first (latest frame wins).
    pub dropped: u64,
    /// Faces analysed.
    pub faces: u64,
    /// Frames dropped because inference failed on their batch (an engine error, or a
    /// lane that panicked).
    pub failed: u64,
    /// Capture to decision.
    pub latency: LatencyHistogram,
}

/// What one worker did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Bundle name.
    pub bundle: String,
    /// The execution provider its models run on (`tensorrt`, `cuda`, `cpu`).
    pub provider: String,
    /// Frames analysed.
    pub frames: u64,
    /// Frames cameras delivered but inference skipped (latest-frame-wins).
    pub dropped: u64,
    /// Faces analysed.
    pub faces: u64,
    /// Events emitted.
    pub events: u64,
    /// Batches run (one per detector-and-classifier pass over one or more frames).
    pub batches: u64,
    /// Inference lanes (batches that can be in flight at once).
    pub lanes: usize,
    /// Batches a lane panicked on (the lane went on; the frames were dropped).
    pub lane_panics: u64,
    /// Cameras the worker keeps a tracker for now (one per running camera).
    pub trackers: usize,
    /// Batches in flight right now.
    pub in_flight: usize,
    /// From the first to the last frame.
    pub elapsed: Duration,
    /// Per-stage totals.
    pub stages: StageTotals,
    /// Detection time per batch.
    pub detect_batches: LatencyHistogram,
    /// Classification time per batch.
    pub classify_batches: LatencyHistogram,
    /// Per camera.
    pub cameras: Vec<CameraSummary>,
}

impl RunSummary {
    /// A copy of everything but the per-camera statistics.
    pub fn clone_without_cameras(&self) -> RunSummary {
        RunSummary {
            bundle: self.bundle.clone(),
            provider: self.provider.clone(),
            detect_batches: self.detect_batches.clone(),
            classify_batches: self.classify_batches.clone(),
            cameras: Vec::new(),
            ..*self
        }
    }
}

/// Folds a finished worker's summary into its bundle's totals (per-camera figures are
/// let go): a run that starts many workers keeps one summary per bundle, not per worker.
pub(super) fn fold(totals: &mut std::collections::BTreeMap<String, RunSummary>, s: RunSummary) {
    let Some(t) = totals.get_mut(&s.bundle) else {
        totals.insert(s.bundle.clone(), RunSummary { cameras: Vec::new(), ..s });
        return;
    };
    t.frames += s.frames;
    t.dropped += s.dropped;
    t.faces += s.faces;
    t.events += s.events;
    t.batches += s.batches;
    t.lane_panics += s.lane_panics;
    t.elapsed += s.elapsed;
    t.stages.detect += s.stages.detect;
    t.stages.classify += s.stages.classify;
    t.stages.publish += s.stages.publish;
    t.stages.detected += s.stages.detected;
    t.stages.classified += s.stages.classified;
    t.detect_batches.merge(&s.detect_batches);
    t.classify_batches.merge(&s.classify_batches);
    (t.lanes, t.trackers, t.in_flight) = (s.lanes, 0, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.quantile_ms(0.5), 50.0);
        assert_eq!(h.quantile_ms(0.99), 99.0);
        h.record(Duration::from_secs(10));
        assert_eq!(h.quantile_ms(1.0), 2000.0, "overflow lands in the last bucket");
    }

    #[test]
    fn workers_fold_into_one_summary_per_bundle() {
        let mut totals = std::collections::BTreeMap::new();
        for (bundle, frames) in [("a", 3), ("b", 5), ("a", 4)] {
            let mut s = RunSummary { bundle: bundle.into(), frames, ..RunSummary::default() };
            s.detect_batches.record(Duration::from_millis(frames));
            s.cameras.push(CameraSummary { name: "cam".into(), ..CameraSummary::default() });
            fold(&mut totals, s);
        }
        assert_eq!(totals.len(), 2);
        let a = &totals["a"];
        assert_eq!((a.frames, a.detect_batches.count(), a.cameras.len()), (7, 2, 0));
        assert_eq!(a.detect_batches.quantile_ms(1.0), 4.0);
    }
}
