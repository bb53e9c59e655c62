//! What a network camera's source element (`rtspsrc`, `souphttpsrc`) is told: where to
//! connect, who to log in as, and, for RTSP, which of the camera's streams to set up.

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::config::uri::split_login;

/// Points `src` at `location`. Neither `rtspsrc` nor `souphttpsrc` undoes a URI's
/// percent-escapes in the user name and password (a password with '@', ':', '/' or '%'
/// must be escaped to sit in a URI), so they are handed over decoded, as properties.
pub(super) fn point_at(src: &gst::Element, location: &str) {
    let (location, login) = split_login(location);
    src.set_property("location", location);
    if let Some((user, password)) = login {
        src.set_property("user-id", user);
        src.set_property("user-pw", password);
    }
}

/// Has `rtspsrc` set up only the camera's video streams. Many IP cameras also send audio
/// (and some list it first): set up, it costs the camera's bandwidth and our CPU, and its
/// pad, if it came first, would take the one link to `decodebin` that the video needs.
pub(super) fn only_video_streams(rtspsrc: &gst::Element) {
    rtspsrc.connect("select-stream", false, |args| {
        let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
        let media = caps.as_ref().and_then(|c| c.structure(0)).and_then(|s| s.get::<String>("media").ok());
        // A stream that says nothing of its media is given a chance.
        Some(media.is_none_or(|m| m == "video").to_value())
    });
}
