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
        _ if flow("not-linked") => reason += ": the stream has no video to analyse (audio only?)",
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
