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
}
