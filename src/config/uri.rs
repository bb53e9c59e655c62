//! Camera URIs, parsed and checked without touching GStreamer, so `check-config` can
//! reject a bad camera before anything starts.

use std::path::PathBuf;

/// What a camera URI asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// `rtsp://` or `rtsps://`; credentials may be in the URI.
    Rtsp {
        /// The URI as given (passed to `rtspsrc`).
        location: String,
    },
    /// `file:///path/to/clip.mp4`.
    File {
        /// Absolute path of the file.
        path: PathBuf,
    },
    /// `test://` or `test://PATTERN` (a `videotestsrc` pattern such as `ball`).
    Test {
        /// videotestsrc pattern nickname.
        pattern: String,
    },
    /// `v4l2:///dev/videoN`, optionally `?format=mjpeg&width=1280&height=720&fps=30`.
    V4l2 {
        /// Device node.
        device: PathBuf,
        /// What to ask the device for.
        capture: Capture,
    },
    /// `csi://N`, optionally `?width=1920&height=1080&fps=30`: a Jetson CSI camera through
    /// `nvarguscamerasrc`.
    Csi {
        /// Sensor id.
        sensor: u32,
        /// Which sensor mode to ask for.
        capture: Capture,
    },
    /// `http(s)://` MJPEG stream.
    HttpMjpeg {
        /// The URL as given.
        location: String,
    },
}

/// What a capture device is asked for. Unset fields are left to negotiation, in which a
/// USB webcam usually offers its largest size first — often as raw YUYV at a few frames
/// per second, where its MJPEG mode gives 30: `format=mjpeg` asks for that.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    /// Pixel format on the wire.
    pub format: Option<CaptureFormat>,
    /// Frame width in pixels.
    pub width: Option<u32>,
    /// Frame height in pixels.
    pub height: Option<u32>,
    /// Frames per second.
    pub fps: Option<u32>,
}

/// A capture device's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Uncompressed frames (`video/x-raw`: YUYV, NV12, ...).
    Raw,
    /// Motion JPEG (`image/jpeg`), decoded by `jpegdec` (or NVIDIA's decoder on Jetson).
    Mjpeg,
}

impl Capture {
    /// Reads `format`, `width`, `height` and `fps` from a URI's query; `formats` says
    /// whether `format` is accepted (CSI sensors have one).
    fn from_query(parsed: &url::Url, uri: &str, formats: bool) -> Result<Capture, String> {
        let mut c = Capture::default();
        for (key, value) in parsed.query_pairs() {
            let number = || -> Result<u32, String> {
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|v| (1..=16_384).contains(v))
                    .ok_or_else(|| format!("'{uri}': {key}={value} is not a whole number from 1 to 16384"))
            };
            match key.as_ref() {
                "format" if formats => {
                    c.format = Some(match value.as_ref() {
                        "raw" => CaptureFormat::Raw,
                        "mjpeg" | "jpeg" => CaptureFormat::Mjpeg,
                        _ => return Err(format!("'{uri}': format={value} is not a capture format: use raw or mjpeg")),
                    })
                }
                "width" => c.width = Some(number()?),
                "height" => c.height = Some(number()?),
                "fps" => c.fps = Some(number()?),
                _ => {
                    let accepted = if formats { "format, width, height, fps" } else { "width, height, fps" };
                    return Err(format!("'{uri}': unknown option '{key}' (accepted: {accepted})"));
                }
            }
        }
        Ok(c)
    }

    /// The constraints as caps fields (`width=1280,height=720,framerate=30/1`), or "".
    pub fn fields(&self) -> String {
        let mut f = String::new();
        if let Some(w) = self.width {
            f += &format!(",width={w}");
        }
        if let Some(h) = self.height {
            f += &format!(",height={h}");
        }
        if let Some(fps) = self.fps {
            f += &format!(",framerate={fps}/1");
        }
        f
    }

    /// Whether nothing was asked for.
    pub fn is_empty(&self) -> bool {
        *self == Capture::default()
    }
}

impl SourceSpec {
    /// Parses a camera URI; the error says what is wrong and what is accepted.
    pub fn parse(uri: &str) -> Result<SourceSpec, String> {
        let parsed = url::Url::parse(uri).map_err(|e| format!("'{uri}' is not a valid URI ({e})"))?;
        match parsed.scheme() {
            "rtsp" | "rtsps" => {
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(format!("'{uri}' has no host"));
                }
                Ok(SourceSpec::Rtsp { location: uri.to_string() })
            }
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|_| format!("'{uri}' is not a local file URI (use file:///absolute/path)"))?;
                if !path.is_file() {
                    return Err(format!("file {} does not exist", path.display()));
                }
                Ok(SourceSpec::File { path })
            }
            "test" => {
                let pattern = parsed.host_str().filter(|h| !h.is_empty()).unwrap_or("ball").to_string();
                Ok(SourceSpec::Test { pattern })
            }
            "v4l2" => {
                let device = PathBuf::from(parsed.path());
                if !parsed.path().starts_with("/dev/") {
                    return Err(format!("'{uri}' must name a device node, like v4l2:///dev/video0"));
                }
                Ok(SourceSpec::V4l2 { device, capture: Capture::from_query(&parsed, uri, true)? })
            }
            "csi" => {
                let sensor = parsed
                    .host_str()
                    .and_then(|h| h.parse().ok())
                    .ok_or_else(|| format!("'{uri}' must name a sensor id, like csi://0"))?;
                Ok(SourceSpec::Csi { sensor, capture: Capture::from_query(&parsed, uri, false)? })
            }
            "http" | "https" => Ok(SourceSpec::HttpMjpeg { location: uri.to_string() }),
            other => Err(format!(
                "unsupported scheme '{other}' in '{uri}': use rtsp://, file://, test://, v4l2://, csi:// or http(s)://"
            )),
        }
    }
}

impl SourceSpec {
    /// The same source with `password` (read from the camera's `password_file`) in its
    /// URI: for `rtsp://` and `http(s)://` cameras, whose URI names the user.
    pub fn with_password(&self, password: &str) -> Result<SourceSpec, String> {
        match self {
            SourceSpec::Rtsp { location } => Ok(SourceSpec::Rtsp { location: with_password(location, password)? }),
            SourceSpec::HttpMjpeg { location } => {
                Ok(SourceSpec::HttpMjpeg { location: with_password(location, password)? })
            }
            _ => Err("password_file is for rtsp:// and http(s):// cameras".into()),
        }
    }
}

/// Puts a password (read from a file, so it never sits in the config) into an
/// `rtsp://user@host/...` URI.
pub fn with_password(uri: &str, password: &str) -> Result<String, String> {
    let mut u = url::Url::parse(uri).map_err(|e| format!("'{uri}' is not a valid URI ({e})"))?;
    if u.username().is_empty() {
        return Err("a password_file needs a user name in the URI (rtsp://user@host/...)".into());
    }
    u.set_password(Some(password)).map_err(|_| format!("'{uri}' cannot carry a password"))?;
    Ok(u.to_string())
}

/// `location` without its user name and password, and those two percent-decoded: the
/// RTSP source takes them as properties, so they never appear in its logs.
pub fn split_login(location: &str) -> (String, Option<(String, String)>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_goes_into_rtsp_and_http_uris_only() {
        let rtsp = SourceSpec::parse("rtsp://viewer@cam.local/stream").unwrap();
        let SourceSpec::Rtsp { location } = rtsp.with_password("p@ss").unwrap() else { panic!("still rtsp") };
        assert_eq!(location, "rtsp://viewer:p%40ss@cam.local/stream");
        let http = SourceSpec::parse("http://viewer@cam.local/video.mjpg").unwrap();
        assert!(
            matches!(http.with_password("x").unwrap(), SourceSpec::HttpMjpeg { location } if location.contains("viewer:x@"))
        );
        assert!(SourceSpec::parse("test://ball").unwrap().with_password("x").is_err());
        assert!(
            SourceSpec::parse("rtsp://cam.local/stream").unwrap().with_password("x").unwrap_err().contains("user name")
        );
    }

    #[test]
    fn logins_leave_the_location_decoded() {
        let (location, login) = split_login("rtsp://viewer:p%40ss%3Aw%2Frd%20%251@10.0.0.2:554/s?x=1");
        assert_eq!(location, "rtsp://10.0.0.2:554/s?x=1");
        assert_eq!(login, Some(("viewer".into(), "p@ss:w/rd %1".into())));
        assert_eq!(split_login("rtsp://10.0.0.2/s"), ("rtsp://10.0.0.2/s".into(), None));
        let (_, user_only) = split_login("http://admin@10.0.0.2/s");
        assert_eq!(user_only, Some(("admin".into(), String::new())));
    }

    #[test]
    fn parses_each_kind() {
        assert_eq!(SourceSpec::parse("test://").unwrap(), SourceSpec::Test { pattern: "ball".into() });
        assert_eq!(SourceSpec::parse("test://smpte").unwrap(), SourceSpec::Test { pattern: "smpte".into() });
        assert!(matches!(SourceSpec::parse("rtsp://user:pw@10.0.0.2:554/s").unwrap(), SourceSpec::Rtsp { .. }));
        assert_eq!(SourceSpec::parse("csi://1").unwrap(), SourceSpec::Csi { sensor: 1, capture: Capture::default() });
        assert_eq!(
            SourceSpec::parse("v4l2:///dev/video2").unwrap(),
            SourceSpec::V4l2 { device: "/dev/video2".into(), capture: Capture::default() }
        );
    }

    #[test]
    fn capture_options_ask_the_device_for_a_mode() {
        let SourceSpec::V4l2 { capture, .. } =
            SourceSpec::parse("v4l2:///dev/video0?format=mjpeg&width=1280&height=720&fps=30").unwrap()
        else {
            panic!("not v4l2")
        };
        assert_eq!(capture.format, Some(CaptureFormat::Mjpeg));
        assert_eq!(capture.fields(), ",width=1280,height=720,framerate=30/1");
        let SourceSpec::Csi { capture, .. } = SourceSpec::parse("csi://0?width=1920&height=1080").unwrap() else {
            panic!("not csi")
        };
        assert_eq!(capture.fields(), ",width=1920,height=1080");
        assert!(SourceSpec::parse("v4l2:///dev/video0?format=h265").unwrap_err().contains("use raw or mjpeg"));
        assert!(SourceSpec::parse("v4l2:///dev/video0?width=0").unwrap_err().contains("width=0 is not a whole number"));
        assert!(SourceSpec::parse("v4l2:///dev/video0?size=big").unwrap_err().contains("unknown option 'size'"));
        assert!(SourceSpec::parse("csi://0?format=raw").unwrap_err().contains("accepted: width, height, fps"));
    }

    #[test]
    fn passwords_from_files_go_into_the_uri() {
        assert_eq!(with_password("rtsp://cam@10.0.0.2/s", "p@ss word").unwrap(), "rtsp://cam:p%40ss%20word@10.0.0.2/s");
        assert!(with_password("rtsp://10.0.0.2/s", "x").unwrap_err().contains("user name"));
    }

    #[test]
    fn rejects_bad_uris_with_reasons() {
        assert!(SourceSpec::parse("ftp://x").unwrap_err().contains("unsupported scheme"));
        assert!(SourceSpec::parse("file:///no/such/clip.mp4").unwrap_err().contains("does not exist"));
        assert!(SourceSpec::parse("not a uri").unwrap_err().contains("not a valid URI"));
        assert!(SourceSpec::parse("csi://x").unwrap_err().contains("sensor id"));
    }
}
