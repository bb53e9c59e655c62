//! What an RTSP camera's `rtspsrc` is told: where to connect, who to log in as, and
//! which of the camera's streams to set up.

use gstreamer as gst;
use gstreamer::prelude::*;

/// Points `rtspsrc` at `location`. rtspsrc does not undo a URI's percent-escapes in the
/// user name and password (a password with '@', ':', '/' or '%' must be escaped to sit in
/// a URI), so they are handed over decoded, as properties.
pub(super) fn configure(rtspsrc: &gst::Element, location: &str) {
    let (location, login) = split_login(location);
    rtspsrc.set_property("location", location);
    if let Some((user, password)) = login {
        rtspsrc.set_property("user-id", user);
        rtspsrc.set_property("user-pw", password);
    }
    only_video_streams(rtspsrc);
}

/// `location` without its user name and password, and those two percent-decoded.
fn split_login(location: &str) -> (String, Option<(String, String)>) {
    let Ok(mut u) = url::Url::parse(location) else { return (location.to_string(), None) };
    if u.username().is_empty() {
        return (location.to_string(), None);
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let login = (decode(u.username()), decode(u.password().unwrap_or("")));
    let _ = u.set_username("");
    let _ = u.set_password(None);
    (u.to_string(), Some(login))
}

/// Has `rtspsrc` set up only the camera's video streams. Many IP cameras also send audio
/// (and some list it first): set up, it costs the camera's bandwidth and our CPU, and its
/// pad, if it came first, would take the one link to `decodebin` that the video needs.
fn only_video_streams(rtspsrc: &gst::Element) {
    rtspsrc.connect("select-stream", false, |args| {
        let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
        let media = caps.as_ref().and_then(|c| c.structure(0)).and_then(|s| s.get::<String>("media").ok());
        // A stream that says nothing of its media is given a chance.
        Some(media.is_none_or(|m| m == "video").to_value())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_leave_the_location_decoded() {
        let (location, login) = split_login("rtsp://viewer:p%40ss%3Aw%2Frd%20%251@10.0.0.2:554/s?x=1");
        assert_eq!(location, "rtsp://10.0.0.2:554/s?x=1");
        assert_eq!(login, Some(("viewer".into(), "p@ss:w/rd %1".into())));
        assert_eq!(split_login("rtsp://10.0.0.2/s"), ("rtsp://10.0.0.2/s".into(), None));
        let (_, user_only) = split_login("rtsp://admin@10.0.0.2/s");
        assert_eq!(user_only, Some(("admin".into(), String::new())));
    }
}
