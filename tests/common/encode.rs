//! Clips GStreamer itself writes (a pipeline description run to its end), for tests that
//! need what the CLI's `make-clip` does not make: other encoders, containers, audio.

/// Runs the `gst-launch` style `description` until its end of stream (within `seconds`),
/// failing the test on an error message.
pub fn run_to_eos(description: &str, seconds: u64) {
    use gstreamer::prelude::*;
    gstreamer::init().expect("GStreamer initialises");
    let pipeline = gstreamer::parse::launch(description).expect("the pipeline description parses");
    pipeline.set_state(gstreamer::State::Playing).expect("the pipeline plays");
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let msg = bus
        .timed_pop_filtered(
            gstreamer::ClockTime::from_seconds(seconds),
            &[gstreamer::MessageType::Eos, gstreamer::MessageType::Error],
        )
        .expect("the pipeline ends in time");
    assert!(matches!(msg.view(), gstreamer::MessageView::Eos(_)), "{msg:?}");
    pipeline.set_state(gstreamer::State::Null).expect("the pipeline stops");
}
