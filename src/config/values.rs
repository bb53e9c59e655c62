//! The typed values a configuration holds: what a string in the file means once it has
//! been checked. Each type parses the config's spelling and says, in words, why a value
//! cannot be used. Pure: no GStreamer, no ONNX Runtime, no network.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Which software H.264 decoder a camera uses when no hardware decoder is installed.
///
/// libav (FFmpeg) is the fastest software decoder, but loading it maps FFmpeg and all it
/// links (x265, librsvg, flite, Vulkan, ...): about 30 MB of resident memory, once per
/// process. OpenH264 takes under 1 MB and is nearly as fast on Baseline-profile streams
/// (CAVLC: 1.0 against 0.77 ms for a 640×480 frame here), but 2–2.6× slower on Main and
/// High (CABAC: 3.5 against 1.4 ms for a 720p Main frame), the profiles most IP cameras
/// send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecoderChoice {
    /// NVIDIA's hardware decoder when installed; otherwise OpenH264 for Baseline-profile
    /// H.264 (lean and about as fast), libav for everything else (Main, High, High 4:4:4,
    /// 10-bit, H.265, ...), chosen per stream from the caps `h264parse` reports. On damaged
    /// data OpenH264 drops the frames it cannot decode where libav conceals the damage:
    /// nothing smeared reaches the models.
    #[default]
    Auto,
    /// libav for every stream (hardware decoders still win when installed).
    Libav,
    /// The CPU only, even where NVIDIA's or VA-API's decoders are installed: the `auto`
    /// rules for H.264 (OpenH264 or libav), `jpegdec` for MJPEG, and no `nvvidconv` after
    /// the decoder. The opt-out for a hardware decoder that misbehaves on one camera's
    /// stream (say, `nvjpegdec` on a Thor) while the others keep theirs.
    Software,
}

impl DecoderChoice {
    /// The config's spellings, in the order errors list them.
    pub const ALLOWED: &'static str = "auto, libav or software";

    /// Parses a config value (`auto`, `libav` or `software`).
    pub fn parse(s: &str) -> Option<DecoderChoice> {
        match s {
            "auto" => Some(DecoderChoice::Auto),
            "libav" => Some(DecoderChoice::Libav),
            "software" => Some(DecoderChoice::Software),
            _ => None,
        }
    }
}

/// How an RTSP camera's packets travel (`transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Interleaved in the RTSP connection: passes NAT and firewalls, never loses a packet.
    #[default]
    Tcp,
    /// RTP over UDP: less latency on a clean LAN, losses show as damaged frames.
    Udp,
}

impl Transport {
    /// Parses `tcp` or `udp`.
    pub fn parse(s: &str) -> Result<Transport, String> {
        match s {
            "tcp" => Ok(Transport::Tcp),
            "udp" => Ok(Transport::Udp),
            other => Err(format!("'{other}' is not a transport: use tcp or udp")),
        }
    }
}

/// An ONNX Runtime execution provider clefd knows how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// NVIDIA TensorRT (Jetson, dGPU): engines built once and cached.
    TensorRt,
    /// CUDA kernels, without TensorRT's engine build.
    Cuda,
    /// ONNX Runtime's own CPU kernels.
    Cpu,
}

impl Provider {
    /// Parses `tensorrt`, `cuda` or `cpu`.
    pub fn parse(s: &str) -> Result<Provider, String> {
        match s {
            "tensorrt" => Ok(Provider::TensorRt),
            "cuda" => Ok(Provider::Cuda),
            "cpu" => Ok(Provider::Cpu),
            other => Err(format!("unknown execution provider '{other}': use tensorrt, cuda or cpu")),
        }
    }

    /// The config's spelling, which the engine module matches on.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::TensorRt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }
}

/// Which execution provider the models must get (`engine.require`). ONNX Runtime falls
/// back to the CPU quietly when a GPU provider cannot load (20 times slower on a Jetson,
/// and no error): a fleet that needs the GPU says so here and clefd refuses to start
/// without it rather than run on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Require {
    /// Whatever `engine.providers` gets first (a fallback is logged as a warning).
    #[default]
    Any,
    /// TensorRT or CUDA.
    Gpu,
    /// TensorRT only.
    TensorRt,
    /// CUDA only.
    Cuda,
}

impl Require {
    /// Parses `any`, `gpu`, `tensorrt` or `cuda`.
    pub fn parse(s: &str) -> Result<Require, String> {
        match s {
            "any" => Ok(Require::Any),
            "gpu" => Ok(Require::Gpu),
            "tensorrt" => Ok(Require::TensorRt),
            "cuda" => Ok(Require::Cuda),
            other => Err(format!("'{other}' is not a requirement: use any, gpu, tensorrt or cuda")),
        }
    }

    /// The config's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Require::Any => "any",
            Require::Gpu => "gpu",
            Require::TensorRt => "tensorrt",
            Require::Cuda => "cuda",
        }
    }

    /// Whether a model running on `provider` (`tensorrt`, `cuda`, `cpu`) meets it.
    pub fn accepts(self, provider: &str) -> bool {
        match self {
            Require::Any => true,
            Require::Gpu => matches!(provider, "tensorrt" | "cuda"),
            Require::TensorRt => provider == "tensorrt",
            Require::Cuda => provider == "cuda",
        }
    }
}

/// The arithmetic TensorRT builds engines in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Precision {
    /// Half precision: about twice FP32's speed on Jetson GPUs, scores within rounding.
    #[default]
    Fp16,
    /// Full precision.
    Fp32,
    /// 8-bit integers with FP16 fallback, calibrated by the table in the given file.
    Int8 {
        /// TensorRT calibration table (as written by TensorRT or ONNX Runtime's tools).
        calibration_table: PathBuf,
    },
}

impl Precision {
    /// Parses `engine.precision` (`fp16`, `fp32`, `int8`); int8 needs its table.
    pub fn parse(name: &str, calibration_table: Option<&Path>) -> Result<Precision, String> {
        match (name, calibration_table) {
            ("fp16", _) => Ok(Precision::Fp16),
            ("fp32", _) => Ok(Precision::Fp32),
            ("int8", Some(t)) => Ok(Precision::Int8 { calibration_table: t.to_path_buf() }),
            ("int8", None) => Err("int8 needs engine.int8_calibration_table (a TensorRT calibration table)".into()),
            (other, _) => Err(format!("'{other}' is not a precision: use fp16, fp32 or int8")),
        }
    }

    /// The config's spelling, also part of the engine cache key.
    pub fn name(&self) -> &'static str {
        match self {
            Precision::Fp16 => "fp16",
            Precision::Fp32 => "fp32",
            Precision::Int8 { .. } => "int8",
        }
    }
}

/// Which MQTT protocol version to speak (`mqtt.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// MQTT 3.1.1: what every broker speaks.
    #[default]
    V311,
    /// MQTT 5: session expiry, reason codes on refusals and acknowledgements.
    V5,
}

impl Protocol {
    /// Reads the config's spelling: "3.1.1" or "5".
    pub fn parse(s: &str) -> Result<Protocol, String> {
        match s.trim() {
            "3.1.1" => Ok(Protocol::V311),
            "5" | "5.0" => Ok(Protocol::V5),
            other => Err(format!("'{other}' is not an MQTT version clefd speaks: use \"3.1.1\" or \"5\"")),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::V311 => "MQTT 3.1.1",
            Protocol::V5 => "MQTT 5",
        })
    }
}

/// A broker address from `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port (1883, or 8883 for TLS, unless given).
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub fn parse(s: &str) -> Result<BrokerUrl, String> {
        let u = url::Url::parse(s).map_err(|e| format!("'{s}' is not a valid URL ({e}); expected mqtt://host:port"))?;
        let tls = match u.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!("unsupported scheme '{other}' in '{s}': use mqtt:// or mqtts://"));
            }
        };
        let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("'{s}' has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Ok(BrokerUrl { host, port: u.port().unwrap_or(if tls { 8883 } else { 1883 }), tls })
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", if self.tls { "mqtts" } else { "mqtt" }, self.host, self.port)
    }
}

/// An area of the frame: a rectangle `[x, y, w, h]` or a polygon `[[x, y], ...]`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum Area {
    /// `[x, y, w, h]`, normalised.
    Rect([f32; 4]),
    /// Corners in order, normalised; at least three.
    Polygon(Vec<[f32; 2]>),
}

impl Area {
    /// Whether the normalised point `(x, y)` lies inside (even-odd rule for polygons).
    pub fn contains(&self, x: f32, y: f32) -> bool {
        match self {
            Area::Rect([rx, ry, w, h]) => x >= *rx && x <= rx + w && y >= *ry && y <= ry + h,
            Area::Polygon(points) => {
                let mut inside = false;
                let mut j = points.len().wrapping_sub(1);
                for (i, &[xi, yi]) in points.iter().enumerate() {
                    let [xj, yj] = points[j];
                    if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                        inside = !inside;
                    }
                    j = i;
                }
                inside
            }
        }
    }

    /// Why this area cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let in_unit = |v: f32| (0.0..=1.0).contains(&v);
        match self {
            Area::Rect(r) if !r.iter().all(|v| in_unit(*v)) || r[2] <= 0.0 || r[3] <= 0.0 => {
                Some(format!("rectangle {r:?}: x, y, w, h must be within 0..1, w and h above 0"))
            }
            Area::Rect(r) if r[0] + r[2] > 1.0 + 1e-6 || r[1] + r[3] > 1.0 + 1e-6 => {
                Some(format!("rectangle {r:?}: must lie inside the frame (x + w and y + h at most 1)"))
            }
            Area::Polygon(p) if p.len() < 3 => Some(format!("polygon {p:?}: needs at least three corners")),
            Area::Polygon(p) if !p.iter().flatten().all(|v| in_unit(*v)) => {
                Some(format!("polygon {p:?}: corners must be within 0..1 (normalised to the frame)"))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_parse_the_configs_spelling_and_say_what_is_accepted() {
        assert_eq!(DecoderChoice::parse("auto"), Some(DecoderChoice::Auto));
        assert_eq!(DecoderChoice::parse("libav"), Some(DecoderChoice::Libav));
        assert_eq!(DecoderChoice::parse("software"), Some(DecoderChoice::Software));
        assert_eq!(DecoderChoice::parse("ffmpeg"), None);
        assert_eq!(DecoderChoice::parse("Software"), None, "spelled as the config reference spells it");
        assert_eq!(Transport::parse("udp"), Ok(Transport::Udp));
        assert!(Transport::parse("TCP").unwrap_err().contains("use tcp or udp"));
        for p in [Provider::TensorRt, Provider::Cuda, Provider::Cpu] {
            assert_eq!(Provider::parse(p.as_str()), Ok(p));
        }
        assert!(Provider::parse("rocm").unwrap_err().contains("unknown execution provider 'rocm'"));
        assert_eq!(Protocol::parse(" 5 "), Ok(Protocol::V5));
        assert_eq!(Protocol::parse("3.1.1"), Ok(Protocol::V311));
        assert!(Protocol::parse("4").is_err());
    }

    #[test]
    fn int8_needs_its_calibration_table() {
        assert_eq!(Precision::parse("fp32", None), Ok(Precision::Fp32));
        assert!(Precision::parse("int8", None).unwrap_err().contains("int8_calibration_table"));
        let table = Path::new("/x/calib.table");
        assert_eq!(
            Precision::parse("int8", Some(table)),
            Ok(Precision::Int8 { calibration_table: table.to_path_buf() })
        );
        assert_eq!(Precision::parse("int8", Some(table)).map(|p| p.name()), Ok("int8"));
        assert!(Precision::parse("bf16", None).unwrap_err().contains("not a precision"));
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerUrl::parse("mqtt://127.0.0.1:18830").unwrap(),
            BrokerUrl { host: "127.0.0.1".into(), port: 18830, tls: false }
        );
        assert_eq!(BrokerUrl::parse("mqtts://broker").unwrap().port, 8883);
        assert!(BrokerUrl::parse("http://x").unwrap_err().contains("unsupported scheme"));
        assert!(BrokerUrl::parse("nonsense").is_err());
    }

    #[test]
    fn a_polygon_is_inside_by_the_even_odd_rule() {
        // An L shape: the notch at the top right is outside.
        let l = Area::Polygon(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]);
        assert!(l.contains(0.25, 0.25));
        assert!(l.contains(0.75, 0.75));
        assert!(!l.contains(0.75, 0.25));
    }

    #[test]
    fn areas_outside_the_frame_are_refused_with_a_reason() {
        assert!(Area::Rect([0.5, 0.5, 0.6, 0.1]).problem().unwrap().contains("inside the frame"));
        assert!(Area::Rect([0.5, 0.5, 0.5, 0.1]).problem().is_none());
        assert!(Area::Rect([0.0, 0.0, 0.0, 0.5]).problem().is_some());
        assert!(Area::Rect([-0.1, 0.0, 0.5, 0.5]).problem().unwrap().contains("within 0..1"));
        assert!(Area::Polygon(vec![[0.0, 0.0], [1.0, 1.0]]).problem().unwrap().contains("three corners"));
        assert!(Area::Polygon(vec![[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]).problem().is_some());
        assert!(Area::Polygon(vec![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).problem().is_none());
    }
}
