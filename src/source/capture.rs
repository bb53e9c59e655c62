//! What follows a capture device (`v4l2://`): the mode asked for. (What to tell the user
//! when the device is missing or lacks that mode is in `diagnose`.)

use super::{Capture, CaptureFormat};

/// What follows a capture device: a caps filter asking for the configured mode (both wire
/// formats when only a size or rate is given), then `decodebin` (`jpegdec` for MJPEG,
/// nothing for raw frames).
pub(super) fn capture_chain(capture: &Capture) -> String {
    let fields = capture.fields();
    let caps = match capture.format {
        Some(CaptureFormat::Mjpeg) => format!("image/jpeg{fields}"),
        Some(CaptureFormat::Raw) => format!("video/x-raw{fields}"),
        None if fields.is_empty() => return "decodebin name=dec".into(),
        None => format!("video/x-raw{fields};image/jpeg{fields}"),
    };
    format!("capsfilter caps=\"{caps}\" ! decodebin name=dec")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceSpec;
    use crate::source::diagnose::{advice, error_reason};
    use crate::source::frame::frame_from_sample;
    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app as gst_app;

    /// Runs `device ! capture_chain(capture) ! RGB appsink`, with `device` standing in for
    /// a V4L2 camera's output; returns the first frame's size or the error in words.
    fn through_capture_chain(device: &str, capture: &Capture) -> Result<(usize, usize), String> {
        gst::init().unwrap();
        let desc = format!(
            "{device} ! {} ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false",
            capture_chain(capture)
        );
        let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
        let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let spec = SourceSpec::V4l2 { device: "/dev/null".into(), capture: capture.clone() };
        let bus = pipeline.bus().unwrap();
        let (mut sample, mut error) = (None, None);
        for _ in 0..100 {
            sample = sink.try_pull_sample(gst::ClockTime::from_mseconds(100));
            error = bus.pop_filtered(&[gst::MessageType::Error]).map(|m| match m.view() {
                gst::MessageView::Error(e) => error_reason(e, &spec),
                _ => unreachable!(),
            });
            if sample.is_some() || error.is_some() {
                break;
            }
        }
        pipeline.set_state(gst::State::Null).unwrap();
        match (sample, error) {
            (_, Some(error)) => Err(error),
            (Some(s), None) => frame_from_sample(&s, 0).map(|f| (f.width, f.height)).ok_or_else(|| "not RGB".into()),
            (None, None) => Err("no frame and no error".into()),
        }
    }

    const MJPEG_720P: &str =
        "videotestsrc num-buffers=5 ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1 ! jpegenc";
    const YUYV_VGA: &str = "videotestsrc num-buffers=5 ! video/x-raw,format=YUY2,width=640,height=480,framerate=30/1";

    #[test]
    fn mjpeg_and_raw_devices_give_rgb_frames() {
        let mjpeg =
            Capture { format: Some(CaptureFormat::Mjpeg), width: Some(1280), fps: Some(30), ..Capture::default() };
        assert_eq!(through_capture_chain(MJPEG_720P, &mjpeg), Ok((1280, 720)));
        assert_eq!(through_capture_chain(MJPEG_720P, &Capture::default()), Ok((1280, 720)));
        let sized = Capture { width: Some(640), height: Some(480), ..Capture::default() };
        assert_eq!(through_capture_chain(YUYV_VGA, &sized), Ok((640, 480)), "size only: raw or MJPEG");
        let raw = Capture { format: Some(CaptureFormat::Raw), ..Capture::default() };
        assert_eq!(through_capture_chain(YUYV_VGA, &raw), Ok((640, 480)));
    }

    #[test]
    fn a_mode_the_device_lacks_is_explained() {
        let mjpeg_720 = Capture { format: Some(CaptureFormat::Mjpeg), width: Some(1920), ..Capture::default() };
        let err = through_capture_chain(MJPEG_720P, &mjpeg_720).unwrap_err();
        assert!(err.contains("does not offer the format asked for"), "{err}");
        assert!(err.contains("v4l2-ctl --list-formats-ext -d /dev/null"), "{err}");
    }

    #[test]
    fn a_missing_device_is_named() {
        let spec = SourceSpec::V4l2 { device: "/dev/video-unplugged".into(), capture: Capture::default() };
        let advice = advice(&spec).unwrap();
        assert!(advice.contains("/dev/video-unplugged does not exist: is the camera plugged in?"), "{advice}");
    }
}
