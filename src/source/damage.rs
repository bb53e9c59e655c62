//! Telling a file that played to its end from one that stopped at damage: GStreamer ends
//! a truncated MP4, or one with garbage mid-way, with a plain end of stream and no error
//! (the demuxer stops where the data stops, the decoder skips what it cannot read). The
//! frames delivered are then well short of what the file's duration and frame rate
//! promise, and that is what gives it away.

use gstreamer as gst;
use gstreamer::prelude::*;

/// Frames a file may fall short of its promise by and still count as whole: a tenth of
/// them, and at least this many (rounding of durations, a last frame cut).
const SLACK_FRAMES: f64 = 3.0;

/// Why a file that reached its end of stream after `delivered` frames is damaged, if it
/// is: `None` when it delivered about what it promised, or when it promises nothing
/// (unknown duration, variable frame rate). `warning` is the last GStreamer warning seen,
/// the decoder's own words when it had any.
pub(super) fn verdict(pipeline: &gst::Pipeline, delivered: u64, warning: Option<&str>) -> Option<String> {
    let duration = pipeline.query_duration::<gst::ClockTime>()?;
    let sink = pipeline.by_name("sink")?.static_pad("sink")?;
    let caps = sink.current_caps()?;
    let rate = caps.structure(0)?.get::<gst::Fraction>("framerate").ok()?;
    let mut fps = f64::from(rate.numer()) / f64::from(rate.denom().max(1));
    // Behind an `fps` cap the frames are at most its rate, whatever the caps say.
    if let Some(cap) = pipeline.by_name("rate").map(|r| r.property::<i32>("max-rate")) {
        fps = fps.min(f64::from(cap));
    }
    short_by(duration.seconds_f64(), fps, delivered).map(|expected| {
        let mut reason = format!(
            "the file is damaged or truncated: it ended after {delivered} of the {expected} frames its length \
             ({:.1} s at {fps:.0} fps) promises",
            duration.seconds_f64()
        );
        if let Some(w) = warning {
            reason += &format!(" ({w})");
        }
        reason
    })
}

/// The frames a file of `seconds` at `fps` promises, when `delivered` falls well short.
fn short_by(seconds: f64, fps: f64, delivered: u64) -> Option<u64> {
    if !(fps > 0.0 && seconds > 0.0) {
        return None;
    }
    let expected = seconds * fps;
    let slack = (expected * 0.1).max(SLACK_FRAMES);
    ((delivered as f64) + slack < expected).then_some(expected.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::short_by;

    #[test]
    fn only_a_file_well_short_of_its_promise_is_damaged() {
        assert_eq!(short_by(6.0, 15.0, 55), Some(90), "truncated at 60 %");
        assert_eq!(short_by(6.0, 15.0, 89), None, "a last frame cut is no damage");
        assert_eq!(short_by(1.0, 15.0, 13), None, "rounding on a short clip");
        assert_eq!(short_by(6.0, 0.0, 0), None, "variable frame rate: no promise");
        assert_eq!(short_by(0.0, 15.0, 0), None, "unknown length: no promise");
    }
}
