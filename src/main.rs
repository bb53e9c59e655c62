//! The `clefd` command line: the daemon and the tools around it.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// clefd turns camera streams into debiased emotion events.
///
/// Each camera is decoded by GStreamer; faces are found and classified by the ONNX
/// models of an engine bundle; CLEF's counterfactual inference removes the bias the
/// scene puts on the estimate; events go to an MQTT broker.
#[derive(Parser, Debug)]
#[command(name = "clefd", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon: stream every enabled camera and publish events until stopped
    /// (SIGTERM/SIGINT) or, for files without `loop`, until every stream has ended.
    /// Exit codes: 0 when asked to stop (or every camera was a file that ended), 78
    /// (EX_CONFIG) for an invalid configuration, 69 (EX_UNAVAILABLE) when what it requires
    /// cannot be had (engine.require's provider: missing, failing to load the models or
    /// failing engine acceptance; engine.dla_core's DLA compiler), 1 for any other failure.
    Run {
        /// Main config file; `cameras.d/*.toml` beside it are read too, and
        /// CLEFD__SECTION__KEY environment variables override keys.
        #[arg(long, short, default_value = "/etc/clefd/clefd.toml")]
        config: PathBuf,
    },
    /// Check the configuration (files, keys, URIs, bundles) without starting anything.
    /// Exits 0 when valid; otherwise prints one line per problem (file: key: reason)
    /// and exits 78 (EX_CONFIG; `run` exits 78 for an invalid configuration too).
    CheckConfig {
        /// Main config file.
        #[arg(long, short, default_value = "/etc/clefd/clefd.toml")]
        config: PathBuf,
    },
    /// Load every bundle's models as the daemon will, so TensorRT builds and caches its
    /// engines now (minutes on a Jetson) rather than at the first start; a later start
    /// logs "engine cache hit". Run it as the service's user (`sudo -u clefd`), so the cache
    /// stays the service's. Exits 0 when every bundle is ready, 69 when what
    /// engine.require or engine.dla_core needs cannot be had (as `run`; with several
    /// bundles, 69 when any is unmet), 78 when the config is invalid, 1 when a bundle cannot
    /// load or fails engine acceptance for another reason (where `run` exits 78). With
    /// --if-gpu and no GPU provider in ONNX Runtime it checks nothing and exits 0.
    BuildEngines {
        /// Main config file.
        #[arg(long, short, default_value = "/etc/clefd/clefd.toml")]
        config: PathBuf,
        /// Do nothing (exit 0) when the ONNX Runtime the config names has no GPU provider:
        /// what the package runs on install, so a CPU-only install spends no time here.
        #[arg(long)]
        if_gpu: bool,
    },
    /// One screen for a bug report, and a health check: clefd, ONNX Runtime (version, API
    /// floor, providers, engine.require) and which provider each bundle would use, the
    /// Jetson release (L4T, JetPack, CUDA, DLA), GStreamer and NVIDIA's elements, GPU
    /// device nodes this process sees, the engine cache; then the broker (connected with
    /// the configured credentials and TLS), http.listen (can be bound, or a clefd serves
    /// there), state_dir and the spool (writable, with room) and, with --cameras, each
    /// camera (opened until its first frame). Exit codes: 0 when everything the config asks
    /// for can work ("verdict ok"), 1 when something cannot (listed last, with what to
    /// do), 78 when the config itself is invalid.
    Doctor {
        /// Main config file.
        #[arg(long, short, default_value = "/etc/clefd/clefd.toml")]
        config: PathBuf,
        /// Also open each enabled camera and wait for its first frame (up to 15 s each).
        #[arg(long)]
        cameras: bool,
    },
    /// Run a bundle on one still image and print what every model and CLEF say about
    /// each face, as JSON: for checking a bundle by hand.
    Explain {
        /// Engine bundle folder (holds manifest.toml).
        #[arg(long)]
        bundle: PathBuf,
        /// Image file (PNG, JPEG, ...).
        #[arg(long)]
        image: PathBuf,
        /// libonnxruntime.so to use (default: ORT_DYLIB_PATH, then the set-up's copy).
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
    },
    /// Find faces in still pictures with a bundle's detector, exactly as the daemon does,
    /// and print one JSON line per picture: {"image", "width", "height", "faces":
    /// [{"box_px": [x, y, w, h], "score"}]}, best first. The CLEF kit crops datasets
    /// without face boxes (CAER-S) with it. Exits 1 if a picture could not be read (its
    /// line says why).
    Faces {
        /// Engine bundle folder whose detector to use.
        #[arg(long)]
        bundle: PathBuf,
        /// Pictures (PNG, JPEG, ...).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// libonnxruntime.so to use (default: ORT_DYLIB_PATH, then the set-up's copy).
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
    },
    /// Score a bundle on a labelled dataset (DIR/index.csv: file,label,x,y,w,h and the
    /// pictures), through the daemon's own preprocessing, models and CLEF. Prints the
    /// accuracy (mAP for multi-label bundles) of the vanilla model alone, of the factual
    /// φ(Y_c,Y_e) and of the debiased TIE, and confusion matrices.
    Eval {
        /// Engine bundle folder (holds manifest.toml).
        #[arg(long)]
        bundle: PathBuf,
        /// Dataset folder (holds index.csv); caer-s:DIR for CAER-S as distributed
        /// (train/ and test/, one folder per class; test/ is scored, faces found by the
        /// bundle's detector, pictures without one counted and left out); emotic:DIR for
        /// EMOTIC (Annotations/Annotations.mat, or mat2py.py's emotic_pre/test.csv; the
        /// test split is scored, each annotated body as the daemon's body box).
        #[arg(long)]
        dataset: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// libonnxruntime.so to use (default: ORT_DYLIB_PATH, then the set-up's copy).
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
    },
    /// Subscribe to a broker and print each emotion event as one readable line. With
    /// --config it logs in as the daemon does (broker, prefix, user name, password file,
    /// TLS files from the config); refused credentials or TLS end it with the reason.
    Watch(cmd::watch::WatchArgs),
    /// Measure throughput on this machine: N cameras playing a synthetic clip of a face
    /// for S seconds (after 1 s of warm-up), events counted instead of published. Prints
    /// per-camera fps, faces/s, capture-to-decision latency (p50/p99), drops, per-stage
    /// time, CPU time per frame by stage (inference, decoding, tracking) and peak memory;
    /// `--model-only` runs the models alone, `--share` compares the two.
    Bench(cmd::bench::BenchOptions),
    /// Render a synthetic H.264 clip of a picture moving over a plain background
    /// (the demo video and test clips are made this way).
    MakeClip {
        /// The picture (e.g. a face).
        #[arg(long)]
        image: PathBuf,
        /// Output .mp4 file.
        #[arg(long)]
        out: PathBuf,
        /// Length in seconds.
        #[arg(long, default_value_t = 6.0)]
        seconds: f64,
        /// Frames per second.
        #[arg(long, default_value_t = 15)]
        fps: u32,
        /// Frame size, WIDTHxHEIGHT.
        #[arg(long, default_value = "640x480")]
        size: String,
        /// Drawn picture height as a share of the frame height.
        #[arg(long, default_value_t = 0.75)]
        scale: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => cmd::run::run(&config),
        Command::CheckConfig { config } => cmd::check_config(&config),
        Command::Doctor { config, cameras } => cmd::doctor::doctor(&config, cameras),
        Command::BuildEngines { config, if_gpu } => cmd::engines::build_engines(&config, if_gpu),
        Command::Explain { bundle, image, onnxruntime } => {
            cmd::explain::explain(&bundle, &image, onnxruntime.as_deref())
        }
        Command::Faces { bundle, images, onnxruntime } => cmd::faces::faces(&bundle, &images, onnxruntime.as_deref()),
        Command::Eval { bundle, dataset, json, onnxruntime } => {
            cmd::eval::eval(&bundle, &dataset, onnxruntime.as_deref(), json)
        }
        Command::Watch(args) => cmd::watch::watch(args),
        Command::Bench(options) => cmd::bench::bench(&options),
        Command::MakeClip { image, out, seconds, fps, size, scale } => {
            cmd::make_clip(&image, &out, seconds, fps, &size, scale)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clefd: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
