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
    /// `v4l2:///dev/videoN`.
    V4l2 {
        /// Device node.
        device: PathBuf,
    },
    /// `csi://N`: a Jetson CSI camera through `nvarguscamerasrc`.
    Csi {
        /// Sensor id.
        sensor: u32,
    },
    /// `http(s)://` MJPEG stream.
    HttpMjpeg {
        /// The URL as given.
        location: String,
    },
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
                Ok(SourceSpec::V4l2 { device })
            }
            "csi" => {
                let sensor = parsed
                    .host_str()
                    .and_then(|h| h.parse().ok())
                    .ok_or_else(|| format!("'{uri}' must name a sensor id, like csi://0"))?;
                Ok(SourceSpec::Csi { sensor })
            }
            "http" | "https" => Ok(SourceSpec::HttpMjpeg { location: uri.to_string() }),
            other => Err(format!(
                "unsupported scheme '{other}' in '{uri}': use rtsp://, file://, test://, v4l2://, csi:// or http(s)://"
            )),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert_eq!(SourceSpec::parse("test://").unwrap(), SourceSpec::Test { pattern: "ball".into() });
        assert_eq!(SourceSpec::parse("test://smpte").unwrap(), SourceSpec::Test { pattern: "smpte".into() });
        assert!(matches!(SourceSpec::parse("rtsp://user:pw@10.0.0.2:554/s").unwrap(), SourceSpec::Rtsp { .. }));
        assert_eq!(SourceSpec::parse("csi://1").unwrap(), SourceSpec::Csi { sensor: 1 });
        assert_eq!(SourceSpec::parse("v4l2:///dev/video2").unwrap(), SourceSpec::V4l2 { device: "/dev/video2".into() });
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
