//! Pictures decoded from a file outside any camera: a still for `clefd explain`, and the
//! first frames of a clip for `clefd bench --model-only` (so the models run on exactly
//! what the pipeline's decoder hands them).

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::Frame;
use super::camera::{SourceError, init};
use super::frame::frame_from_sample;
use crate::image::RgbImage;

/// Decodes a still image (PNG, JPEG, ...) to RGB with GStreamer, for `clefd explain`.
pub fn decode_image(path: &std::path::Path) -> Result<RgbImage, SourceError> {
    let frames = decode(path, "RGB", 1)?;
    let perr = |reason: &str| SourceError::File { path: path.display().to_string(), reason: reason.into() };
    let frame = frames.first().ok_or_else(|| perr("no picture"))?;
    let view = frame.view().ok_or_else(|| perr("decoded buffer is too small"))?;
    Ok(view.to_rgb())
}

/// The first `count` frames of a video file, in I420 and scaled down to at most `width`
/// as cameras deliver them (fewer if the file is shorter).
pub fn decode_video_frames(path: &std::path::Path, count: usize, width: u32) -> Result<Vec<Frame>, SourceError> {
    decode(path, &format!("I420,width=[16,{width}],pixel-aspect-ratio=1/1"), count)
}

fn decode(path: &std::path::Path, caps: &str, count: usize) -> Result<Vec<Frame>, SourceError> {
    init()?;
    let perr = |reason: String| SourceError::File { path: path.display().to_string(), reason };
    if !path.is_file() {
        return Err(perr("file does not exist".into()));
    }
    let pipeline = gst::parse::launch(&format!(
        "filesrc name=src ! decodebin ! videoscale ! videoconvert ! video/x-raw,format={caps} ! appsink name=sink sync=false max-buffers={count}"
    ))
    .map_err(|e| perr(e.to_string()))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| perr("not a pipeline".into()))?;
    let src = pipeline.by_name("src").ok_or_else(|| perr("no source".into()))?;
    src.set_property("location", path.display().to_string());
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| perr("no appsink".into()))?;
    pipeline.set_state(gst::State::Playing).map_err(|_| perr("cannot start decoding".into()))?;
    let mut frames = Vec::with_capacity(count);
    while frames.len() < count {
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) else { break };
        let frame = frame_from_sample(&sample, frames.len() as u64)
            .ok_or_else(|| perr(format!("decoded picture is not {caps}")))?;
        frames.push(frame);
    }
    let bus_error = pipeline.bus().and_then(|b| b.pop_filtered(&[gst::MessageType::Error])).map(|m| match m.view() {
        gst::MessageView::Error(e) => e.error().to_string(),
        _ => String::new(),
    });
    let _ = pipeline.set_state(gst::State::Null);
    if frames.is_empty() {
        return Err(perr(format!("cannot decode: {}", bus_error.unwrap_or_else(|| "no picture".into()))));
    }
    Ok(frames)
}
