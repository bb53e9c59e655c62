//! What kind of Jetson this is, from the files JetPack installs: the L4T release
//! (`/etc/nv_tegra_release`), the board (`/proc/device-tree/model`), CUDA's version and
//! whether the DLA compiler is there. Read under a root (`CLEFD_SYSROOT`, default `/`) so
//! the tests can lay out a Jetson's files on a machine that is none; `doctor` reports
//! them, `run` refuses an `engine.dla_core` the libraries cannot serve, and the cameras
//! pick the elements that work on this Jetson ([`VideoPlatform`]).

use std::path::{Path, PathBuf};

/// Where the facts are read: `CLEFD_SYSROOT` (tests), else `/`.
pub fn root() -> PathBuf {
    std::env::var_os("CLEFD_SYSROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// `path` (absolute) under `root`.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// An L4T release: `R36 (release), REVISION: 4.3` is 36.4.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L4t {
    /// The major release (35, 36, 38, 39).
    pub major: u32,
    /// The revision after it (`4.3`).
    pub revision: String,
}

impl L4t {
    /// Parses `/etc/nv_tegra_release`'s first line.
    pub fn parse(text: &str) -> Option<L4t> {
        let line = text.lines().find(|l| l.contains("(release)"))?;
        let major = line.split_whitespace().find_map(|w| w.strip_prefix('R')?.parse().ok())?;
        let revision = line
            .split(',')
            .find_map(|part| part.trim().strip_prefix("REVISION:"))
            .map(|r| r.trim().to_string())
            .unwrap_or_default();
        Some(L4t { major, revision })
    }

    /// The JetPack it belongs to and what clefd makes of it.
    pub fn jetpack(&self) -> &'static str {
        match self.major {
            ..=34 => "JetPack 4 or older (Ubuntu 18.04): not supported, clefd needs glibc 2.31",
            35 => "JetPack 5 (Xavier, Orin; Ubuntu 20.04)",
            36 => "JetPack 6 (Orin; Ubuntu 22.04)",
            38 => "JetPack 7 (Thor; Ubuntu 24.04, CUDA 13)",
            39 => "JetPack 7.2 (Orin and Thor; Ubuntu 24.04, CUDA 13, no DLA compiler)",
            _ => "newer than this clefd knows: report what doctor says",
        }
    }

    /// Whether it uses the server-style GPU driver (`/dev/nvidia0`, `nvidia-uvm`, ...):
    /// JetPack 7 on.
    pub fn server_style_gpu(&self) -> bool {
        self.major >= 38
    }
}

/// The L4T release under `root`, if this is a Jetson.
pub fn l4t(root: &Path) -> Option<L4t> {
    L4t::parse(&std::fs::read_to_string(under(root, "/etc/nv_tegra_release")).ok()?)
}

/// The board's name (`NVIDIA Jetson AGX Thor Developer Kit`).
pub fn board(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(under(root, "/proc/device-tree/model")).ok()?;
    Some(text.trim_end_matches('\0').trim().to_string()).filter(|s| !s.is_empty())
}

/// Whether the board is a Jetson Thor: its video engines differ (no MJPEG in
/// `nvv4l2decoder`).
pub fn is_thor(root: &Path) -> bool {
    board(root).is_some_and(|b| b.contains("Thor"))
}

/// CUDA's version: `version.json` (CUDA 11.1 on), else `version.txt`.
pub fn cuda(root: &Path) -> Option<String> {
    let dir = under(root, "/usr/local/cuda");
    if let Ok(text) = std::fs::read_to_string(dir.join("version.json")) {
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        return v.get("cuda")?.get("version")?.as_str().map(str::to_string);
    }
    let text = std::fs::read_to_string(dir.join("version.txt")).ok()?;
    text.split_whitespace().last().map(str::to_string)
}

/// Whether a CUDA version is 13 or newer (JetPack 7): ONNX Runtime must be built for it.
pub fn cuda_major(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// Device nodes through which the GPU is reached: JetPack 5 and 6 (nvhost, nvgpu),
/// JetPack 7's server-style driver (nvidia*, nvsciipc), both (nvmap, host1x fences, DRM).
/// `doctor` lists those it sees; the Jetson drop-in must allow each.
pub const GPU_NODES: [&str; 11] = [
    "/dev/nvhost-ctrl-gpu",
    "/dev/nvgpu/igpu0/ctrl",
    "/dev/nvidia0",
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-modeset",
    "/dev/nvmap",
    "/dev/host1x-fence",
    "/dev/nvsciipc",
    "/dev/v4l2-nvdec",
    "/dev/dri",
];

/// Which of NVIDIA's video elements work here: Thor's video engines and camera stack
/// differ from the Jetsons before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoPlatform {
    /// Not a Jetson: GStreamer's own elements.
    Generic,
    /// Xavier or Orin (JetPack 5, 6, 7.2): `nvv4l2decoder` and Argus (`nvarguscamerasrc`).
    Jetson,
    /// Jetson Thor (JetPack 7): `nvv4l2decoder` decodes no MJPEG (NVIDIA's Jetson Linux
    /// 38.2 API reference), JPEG goes through nvJPEG (`nvjpegdec`, CUDA 13's
    /// `libnvjpeg.so.13`), and cameras come through SIPL (GMSL, Camera over Ethernet),
    /// with Argus kept without new features.
    Thor,
}

impl VideoPlatform {
    /// The platform under `root`: Thor by its board name or by L4T R38 (Thor only);
    /// a Jetson by `/etc/nv_tegra_release`; else generic.
    pub fn detect(root: &Path) -> VideoPlatform {
        match l4t(root) {
            _ if is_thor(root) => VideoPlatform::Thor,
            Some(release) if release.major == 38 => VideoPlatform::Thor,
            Some(_) => VideoPlatform::Jetson,
            None => VideoPlatform::Generic,
        }
    }

    /// This machine's platform, read once per process (under [`root`]).
    pub fn current() -> VideoPlatform {
        static CURRENT: std::sync::OnceLock<VideoPlatform> = std::sync::OnceLock::new();
        *CURRENT.get_or_init(|| VideoPlatform::detect(&root()))
    }
}

/// Where JetPack puts the DLA compiler TensorRT needs for `engine.dla_core`.
const DLA_DIRS: [&str; 4] = [
    "/usr/lib/aarch64-linux-gnu/tegra",
    "/usr/lib/aarch64-linux-gnu/nvidia",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/local/cuda/lib64",
];

/// The DLA compiler library, where installed (JetPack 7.2 ships none).
pub fn dla_compiler(root: &Path) -> Option<PathBuf> {
    DLA_DIRS.iter().map(|d| under(root, d).join("libnvdla_compiler.so")).find(|p| p.exists())
}

/// Why `engine.dla_core` cannot be used here, if it cannot.
pub fn dla_refusal(root: &Path, core: u32) -> Option<String> {
    if dla_compiler(root).is_some() {
        return None;
    }
    Some(format!(
        "engine.dla_core = {core}, but libnvdla_compiler.so is not installed (looked in {}): only Xavier and \
         Orin AGX/NX have a DLA, and JetPack 7.2 ships no DLA compiler; remove engine.dla_core to run TensorRT \
         on the GPU",
        DLA_DIRS.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l4t_releases_parse_and_name_their_jetpack() {
        let jp6 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8\n";
        assert_eq!(L4t::parse(jp6), Some(L4t { major: 36, revision: "4.3".into() }));
        let thor = L4t::parse("# R38 (release), REVISION: 2.0, GCID: 1, BOARD: generic, EABI: aarch64").unwrap();
        assert!(thor.jetpack().contains("JetPack 7 (Thor") && thor.server_style_gpu());
        let orin7 = L4t::parse("# R39 (release), REVISION: 2.0").unwrap();
        assert!(orin7.jetpack().contains("7.2") && orin7.server_style_gpu());
        assert!(!L4t::parse("# R35 (release), REVISION: 6.0").unwrap().server_style_gpu());
        assert_eq!(L4t::parse("garbage"), None);
        assert_eq!(cuda_major("13.0.48"), Some(13));
    }

    /// A Jetson's files under a fresh root: the release line and, if given, the board.
    fn jetson(release: Option<&str>, board: Option<&str>) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        if let Some(release) = release {
            std::fs::create_dir_all(root.path().join("etc")).expect("mkdir");
            std::fs::write(root.path().join("etc/nv_tegra_release"), format!("# {release}, GCID: 1, BOARD: generic\n"))
                .expect("write");
        }
        if let Some(board) = board {
            std::fs::create_dir_all(root.path().join("proc/device-tree")).expect("mkdir");
            std::fs::write(root.path().join("proc/device-tree/model"), format!("{board}\0")).expect("write");
        }
        root
    }

    #[test]
    fn the_video_platform_follows_the_release_and_the_board() {
        let cases = [
            (None, None, VideoPlatform::Generic),
            (Some("R35 (release), REVISION: 6.0"), Some("NVIDIA Jetson AGX Orin"), VideoPlatform::Jetson),
            (Some("R36 (release), REVISION: 4.3"), None, VideoPlatform::Jetson),
            // R38 is Thor's alone, with or without a board name.
            (Some("R38 (release), REVISION: 2.0"), None, VideoPlatform::Thor),
            (Some("R38 (release), REVISION: 2.0"), Some("NVIDIA Jetson AGX Thor Developer Kit"), VideoPlatform::Thor),
            // JetPack 7.2 brings Orin too: the board decides.
            (Some("R39 (release), REVISION: 2.0"), Some("NVIDIA Jetson AGX Orin"), VideoPlatform::Jetson),
            (Some("R39 (release), REVISION: 2.0"), Some("NVIDIA Jetson AGX Thor Developer Kit"), VideoPlatform::Thor),
        ];
        for (release, board, want) in cases {
            let root = jetson(release, board);
            assert_eq!(VideoPlatform::detect(root.path()), want, "{release:?} {board:?}");
        }
    }
}
