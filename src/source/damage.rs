//! Telling a file that played to its end from one that stopped at damage: GStreamer ends
//! a truncated file, or one with garbage mid-way, with a plain end of stream and no error
//! (the demuxer stops where the data stops, the decoder skips what it cannot read).
//!
//! Two signs give it away, both read at the video decoder, so that neither the `fps` cap
//! (frames dropped after the decoder), a variable frame rate (no frame count is promised)
//! nor an audio track that runs longer than the video (the container's duration is the
//! longest track's) can make a whole file look damaged:
//! - frames lost in the decoder: well fewer frames came out of it than went in;
//! - video cut short: the last decoded frame ends well before the *video stream's* own end
//!   (its segment's stop, which the demuxer sets from the track's length). Where the
//!   container does not tell a track's length (Matroska), its duration stands for the
//!   video's only when the file has no other track, when GStreamer warned, or when the
//!   file ends before its container says it does (see [`super::truncated`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

/// Frames a file may lose and still count as whole: a tenth of them, and at least this
/// many (leading frames before the first keyframe, a last frame cut).
const SLACK_FRAMES: u64 = 3;

/// What the pad probes at the video decoder saw of a file's video.
#[derive(Default)]
pub(super) struct Watch {
    /// Encoded frames into the decoder, from the first keyframe on.
    into: AtomicU64,
    /// Decoded frames out of it.
    out: AtomicU64,
    /// The end (PTS + duration) of the last decoded frame, in ns; 0 for none.
    reached: AtomicU64,
    /// The video stream's own end, from its segment's stop, in ns; `u64::MAX` when unknown.
    video_end: AtomicU64,
    /// The demuxer, to count its streams.
    demuxer: Mutex<Option<gst::glib::WeakRef<gst::Element>>>,
    /// The file, to tell whether it ends before its container says it does.
    path: std::path::PathBuf,
}

impl Watch {
    /// Watches `pipeline`'s video decoder (the one `decodebin` picks, or the Jetson
    /// chain's named `hwdec`) and its demuxer, as it plays the file at `path`.
    pub(super) fn attach(pipeline: &gst::Pipeline, path: &std::path::Path) -> Arc<Watch> {
        let watch =
            Arc::new(Watch { video_end: AtomicU64::new(u64::MAX), path: path.to_path_buf(), ..Watch::default() });
        if let Some(dec) = pipeline.by_name(super::decoder::HARDWARE_DECODER_NAME) {
            watch.probe_decoder(&dec);
        }
        let w = watch.clone();
        pipeline.connect("deep-element-added", false, move |args| {
            let element = args.get(2).and_then(|v| v.get::<gst::Element>().ok())?;
            let klass = element.factory().and_then(|f| f.metadata("klass").map(|k| k.to_string())).unwrap_or_default();
            if klass.contains("Decoder") && klass.contains("Video") {
                w.probe_decoder(&element);
            } else if klass.contains("Demux") {
                if let Ok(mut d) = w.demuxer.lock() {
                    *d = Some(element.downgrade());
                }
            }
            None
        });
        watch
    }

    fn probe_decoder(self: &Arc<Watch>, dec: &gst::Element) {
        if let Some(pad) = dec.static_pad("sink") {
            let w = self.clone();
            // Frames before the first keyframe (a file cut mid-way through a group of
            // pictures) cannot be decoded by any decoder: they are no loss.
            let keyed = std::sync::atomic::AtomicBool::new(false);
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                    if !b.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                        keyed.store(true, Ordering::Relaxed);
                    }
                    if keyed.load(Ordering::Relaxed) {
                        w.into.fetch_add(1, Ordering::Relaxed);
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
        if let Some(pad) = dec.static_pad("src") {
            let w = self.clone();
            pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => {
                        w.out.fetch_add(1, Ordering::Relaxed);
                        if let Some(pts) = b.pts() {
                            let end = pts + b.duration().unwrap_or(gst::ClockTime::ZERO);
                            w.reached.fetch_max(end.nseconds(), Ordering::Relaxed);
                        }
                    }
                    Some(gst::PadProbeData::Event(e)) => {
                        if let gst::EventView::Segment(s) = e.view() {
                            if let Ok(seg) = s.segment().clone().downcast::<gst::ClockTime>() {
                                let stop = seg.stop().map_or(u64::MAX, gst::ClockTime::nseconds);
                                w.video_end.store(stop, Ordering::Relaxed);
                            }
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            });
        }
    }

    /// Why a file that reached its end of stream is damaged, if it is (`None` when it
    /// played whole, or when nothing tells). `warning` is the last GStreamer warning seen.
    pub(super) fn verdict(&self, pipeline: &gst::Pipeline, warning: Option<&str>) -> Option<String> {
        let streams = self
            .demuxer
            .lock()
            .ok()
            .and_then(|d| d.as_ref().and_then(|w| w.upgrade()))
            .map_or(1, |d| d.src_pads().len());
        let video_end = match self.video_end.load(Ordering::Relaxed) {
            u64::MAX => None,
            ns => Some(ns),
        };
        let seen = Seen {
            into: self.into.load(Ordering::Relaxed),
            out: self.out.load(Ordering::Relaxed),
            reached: self.reached.load(Ordering::Relaxed),
            video_end,
            container: pipeline.query_duration::<gst::ClockTime>().map(gst::ClockTime::nseconds),
            only_video: streams <= 1,
            warned: warning.is_some(),
            // Read only now, at the end (a few hundred bytes), and only where it matters.
            cut: video_end.is_none() && streams > 1 && super::truncated::matroska_cut_short(&self.path),
        };
        judge(&seen).map(|mut reason| {
            if let Some(w) = warning {
                reason += &format!(" ({w})");
            }
            reason
        })
    }
}

/// The figures a verdict is made from (times in ns).
#[derive(Debug, Clone, Copy)]
struct Seen {
    into: u64,
    out: u64,
    reached: u64,
    video_end: Option<u64>,
    container: Option<u64>,
    only_video: bool,
    warned: bool,
    /// The file ends before its container says it does.
    cut: bool,
}

fn judge(s: &Seen) -> Option<String> {
    let lost = s.into.saturating_sub(s.out);
    if s.into > 0 && lost > (s.into / 10).max(SLACK_FRAMES) {
        return Some(format!(
            "the file is damaged or truncated: the decoder could decode only {} of its {} frames",
            s.out, s.into
        ));
    }
    // The video's own end; the container's length only where it can only be the video's.
    let end = s.video_end.or(s.container.filter(|_| s.only_video || s.warned || s.cut))?;
    let slack = (end / 10).max(500_000_000);
    (s.out > 0 && s.reached + slack < end).then(|| {
        format!(
            "the file is damaged or truncated: its frames stop at {:.1} s of the {:.1} s its video runs",
            s.reached as f64 / 1e9,
            end as f64 / 1e9
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{Seen, judge};

    const S: u64 = 1_000_000_000;
    fn whole() -> Seen {
        Seen {
            into: 90,
            out: 90,
            reached: 6 * S + S / 7,
            video_end: Some(6 * S + S / 7),
            container: Some(6 * S),
            only_video: true,
            warned: false,
            cut: false,
        }
    }

    #[test]
    fn a_whole_file_is_not_damaged_whatever_its_tracks_rate_or_cap() {
        assert_eq!(judge(&whole()), None);
        // An audio track that runs on: the container says 10 s, the video's segment 6.
        assert_eq!(judge(&Seen { container: Some(10 * S), only_video: false, ..whole() }), None);
        // Matroska: no track length, a longer audio track, no warning: nothing tells.
        assert_eq!(judge(&Seen { video_end: None, container: Some(10 * S), only_video: false, ..whole() }), None);
        // Leading frames before the first keyframe dropped, a last frame cut.
        assert_eq!(judge(&Seen { out: 87, reached: 6 * S, ..whole() }), None);
        // Variable frame rate, or an `fps` cap: counts are taken at the decoder, the
        // frame rate plays no part.
        assert_eq!(judge(&Seen { into: 40, out: 40, ..whole() }), None);
        // Nothing known at all.
        assert_eq!(judge(&Seen { video_end: None, container: None, ..whole() }), None);
    }

    #[test]
    fn frames_lost_in_the_decoder_or_a_video_cut_short_is_damage() {
        let garbage = judge(&Seen { out: 54, ..whole() }).unwrap();
        assert!(garbage.contains("damaged or truncated") && garbage.contains("54 of its 90 frames"), "{garbage}");
        let cut = judge(&Seen { into: 13, out: 13, reached: S, ..whole() }).unwrap();
        assert!(cut.contains("stop at 1.0 s of the 6.1 s"), "{cut}");
        // Matroska, video only: the container's length is the video's.
        assert!(judge(&Seen { into: 16, out: 16, reached: S, video_end: None, ..whole() }).is_some());
        // Matroska with audio: only with a warning.
        let mkv = Seen { into: 16, out: 16, reached: S, video_end: None, only_video: false, ..whole() };
        assert_eq!(judge(&mkv), None);
        assert!(judge(&Seen { warned: true, ..mkv }).is_some());
        // ... or when the file ends before its Segment does.
        assert!(judge(&Seen { cut: true, ..mkv }).is_some());
    }
}
