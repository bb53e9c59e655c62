//! Why a camera failed, in words a user can act on: GStreamer's message and the element
//! it came from, then what it most likely means for this kind of source (a wrong password
//! or path, a stream without video, a device that is not plugged in, a mode it lacks).

use gstreamer as gst;
use gstreamer::prelude::*;

use super::SourceSpec;

/// A pipeline error in words: GStreamer's message, the element it came from, what it
/// means (recognised by the error's domain and code, which do not depend on the locale
/// GStreamer's messages are translated to), and advice for the source kind.
pub(super) fn error_reason(e: &gst::message::Error, spec: &SourceSpec) -> String {
    let src = e.src().map(|s| s.path_string().to_string()).unwrap_or_default();
    let mut reason = format!("{} (from {src})", e.error());
    let from_rtspsrc = e.src().is_some_and(|s| s.type_().name() == "GstRTSPSrc");
    let from_network = from_rtspsrc || e.src().is_some_and(|s| s.type_().name() == "GstSoupHTTPSrc");
    let flow = |name: &str| e.debug().is_some_and(|d| d.contains(name));
    match e.error().kind::<gst::ResourceError>() {
        Some(gst::ResourceError::NotAuthorized) if from_network => {
            reason += ": the camera refused the user name and password (check them in the URI or the password_file)"
        }
        Some(gst::ResourceError::NotFound) if from_network => {
            reason += ": the camera has no stream at this path (check the URI's path in the camera's manual or its ONVIF profile)"
        }
        Some(gst::ResourceError::OpenRead | gst::ResourceError::OpenReadWrite) if from_network => {
            reason += ": cannot connect (is the camera on, and are the host and port right?)"
        }
        _ => {}
    }
    match e.error().kind::<gst::StreamError>() {
        Some(gst::StreamError::CodecNotFound) if from_rtspsrc => {
            reason += ": the camera offers no video stream (clefd sets up only video: is this an audio-only URL?)"
        }
        Some(gst::StreamError::WrongType | gst::StreamError::TypeNotFound) => {
            reason += ": this is not a video clefd can read"
        }
        _ if flow("not-linked") || flow(NO_VIDEO) => reason += ": the stream has no video to analyse (audio only?)",
        _ if flow("not-negotiated") => {
            reason += ": the source does not offer the format asked for, or none that can be used"
        }
        _ => {}
    }
    if let Some(advice) = advice(spec) {
        reason += &format!(" — {advice}");
    }
    reason
}

/// The debug text of the error [`fail_without_video`] posts.
const NO_VIDEO: &str = "clefd: the decoder exposed no video stream";

/// Fails the pipeline, on its bus, when the decoder (the element named `dec`) has exposed
/// all its streams and none is video (an audio file, an audio-only URL).
///
/// GStreamer's own "not-linked" error says so too, but not always: `decodebin` withholds
/// its children's errors while it tries out a new element, and one that comes in that
/// window is dropped, leaving a pipeline that neither plays nor fails. Posted straight on
/// the bus, this one cannot be withheld.
pub(super) fn fail_without_video(pipeline: &gst::Pipeline) {
    let (Some(dec), Some(bus)) = (pipeline.by_name("dec"), pipeline.bus()) else { return };
    dec.connect("no-more-pads", false, move |args| {
        let dec = args.first().and_then(|v| v.get::<gst::Element>().ok())?;
        let video = dec.src_pads().iter().any(|pad| {
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            caps.structure(0).is_some_and(|s| s.name().starts_with("video/") || s.name().starts_with("image/"))
        });
        if !video {
            let error = gst::message::Error::builder(gst::StreamError::Demux, "the stream has no video")
                .src(&dec)
                .debug(NO_VIDEO)
                .build();
            let _ = bus.post(error);
        }
        None
    });
}

/// Words that help with a failed start or a failed negotiation, per source kind.
pub(super) fn advice(spec: &SourceSpec) -> Option<String> {
    match spec {
        SourceSpec::V4l2 { device, .. } if !device.exists() => Some(format!(
            "{} does not exist: is the camera plugged in? `ls /dev/video*` lists the devices",
            device.display()
        )),
        SourceSpec::V4l2 { device, capture } => Some(format!(
            "check that the clefd user is in the 'video' group{}",
            if capture.is_empty() {
                String::new()
            } else {
                format!(
                    " and that the device offers the mode asked for (`v4l2-ctl --list-formats-ext -d {}`)",
                    device.display()
                )
            }
        )),
        SourceSpec::Csi { sensor, capture } if !capture.is_empty() => Some(format!(
            "check that sensor {sensor} has a mode of that size and rate (`nvarguscamerasrc` lists them at start)"
        )),
        _ => None,
    }
}
