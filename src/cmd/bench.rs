//! `clefd bench`: how fast the whole pipeline runs on this machine, and how close it
//! comes to the models' own limit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clefd::engine::runtime::{self, SessionOptions};
use clefd::engine::{Bundle, ClefPlacement};
use clefd::pipeline::analyze::Analyzer;
use clefd::pipeline::lanes::LanePool;
use clefd::pipeline::{EventSink, Output, Pipeline, RunSummary};

use super::cpu::{ThreadTimes, per_frame_line};

mod delivery;

/// Options of `clefd bench`, as the command line gives them.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchOptions {
    /// Number of cameras.
    #[arg(long, default_value_t = 1)]
    pub cameras: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Run only the models on the clip's decoded frames in a tight loop: the ceiling the
    /// pipeline's throughput is measured against. For a bundle with a fused graph, runs
    /// it with CLEF in the graph and on the host in turn, and compares them.
    #[arg(long)]
    pub model_only: bool,
    /// State the pipeline's throughput as a share of the models' own limit: PAIRS
    /// alternating runs of `--model-only` and `--unpaced` (this machine's speed drifts,
    /// so pairs are compared, not runs), and the median share [PAIRS: 3].
    #[arg(long, value_name = "PAIRS", num_args = 0..=1, default_missing_value = "3",
          value_parser = clap::value_parser!(u32).range(1..=20), conflicts_with_all = ["model_only", "unpaced"])]
    pub share: Option<u32>,
    /// One frame per inference run instead of one batch across cameras.
    #[arg(long)]
    pub no_batching: bool,
    /// Decode as fast as possible (latest frame wins) instead of pacing each camera
    /// at the clip's 30 fps like a live camera.
    #[arg(long)]
    pub unpaced: bool,
    /// H.264 decoder: auto (a hardware decoder where installed, else OpenH264 for
    /// Baseline-profile streams and libav for the rest) or libav (libav for every
    /// stream: about a quarter less CPU on Baseline too, ~30 MB more memory).
    #[arg(long, default_value = "auto", value_parser = ["auto", "libav"])]
    pub decoder: String,
    /// Cameras' working `width`: wider frames are scaled down to it, narrower ones kept
    /// (4096 keeps every stream at its own size and skips the scaler).
    #[arg(long, default_value_t = clefd::config::DEFAULT_WIDTH,
          value_parser = clap::value_parser!(u32).range(32..=4096))]
    pub width: u32,
    /// Engine bundle [default: engines/face-fer2013 here, else the installed one in
    /// /usr/share/clefd/engines].
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Picture drawn into the synthetic clip [default: assets/astronaut.png here, else
    /// /usr/share/clefd/assets/astronaut.png].
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Play this recording instead (any file GStreamer decodes, e.g. your camera's
    /// stream saved with `gst-launch-1.0 rtspsrc location=... ! rtph264depay ! h264parse
    /// ! mp4mux ! filesink location=cam.mp4 -e`): figures for your own streams.
    #[arg(long, value_name = "FILE")]
    pub clip: Option<PathBuf>,
    /// libonnxruntime.so to use.
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
    /// Measure MQTT delivery instead: events through the spool to this broker.
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// With --mqtt: how many events.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Run the pipeline once per value of the cameras' `detect_every` (e.g. 1,2,3,5) and
    /// compare frames/s and CPU per frame side by side.
    #[arg(long, value_name = "N,...", value_delimiter = ',',
          value_parser = clap::value_parser!(u32).range(1..=30), conflicts_with_all = ["model_only", "share", "mqtt"])]
    pub detect_every: Vec<u32>,
}

impl BenchOptions {
    /// The bundle to run: the one named, else the one that ships.
    fn bundle(&self) -> PathBuf {
        self.bundle.clone().unwrap_or_else(|| shipped("engines/face-fer2013"))
    }

    /// The picture for the synthetic clip: the one named, else the astronaut that ships.
    fn image(&self) -> PathBuf {
        self.image.clone().unwrap_or_else(|| shipped("assets/astronaut.png"))
    }
}

/// A file that ships with clefd: `relative` under the current directory (a checkout),
/// else where the package installs it (`/usr/share/clefd`).
pub fn shipped(relative: &str) -> PathBuf {
    let here = PathBuf::from(relative);
    if here.exists() { here } else { Path::new("/usr/share/clefd").join(relative) }
}

/// Counts what the pipeline emits instead of publishing it, and notes each camera's
/// decoder from its states.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>, Arc<Mutex<HashMap<String, String>>>);

impl EventSink for Counter {
    fn emit(&mut self, output: Output) -> bool {
        match output {
            Output::Event(_) => {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
            Output::CameraState(status) => {
                if let (Some(decoder), Ok(mut decoders)) = (status.decoder, self.1.lock()) {
                    decoders.insert(status.camera, decoder);
                }
            }
            Output::CameraRemoved(_) | Output::Snapshot(_) => {}
        }
        true
    }
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Sessions as the daemon builds them by default (so `--model-only` runs on the same
/// providers, lanes and threads as the pipeline).
fn engine_options() -> SessionOptions {
    let providers = clefd::config::default_providers().iter().map(|p| p.as_str().to_string()).collect();
    SessionOptions { providers, ..SessionOptions::default() }
}

/// Runs the benchmark and prints its report.
pub fn bench(o: &BenchOptions) -> anyhow::Result<ExitCode> {
    clefd::service::init_logging("warn");
    anyhow::ensure!(
        (1..=64).contains(&o.cameras) && (0.5..=3600.0).contains(&o.seconds),
        "--cameras must be 1..64 and --seconds 0.5..3600"
    );
    runtime::init(o.onnxruntime.as_deref())?;
    if let Some((url, n)) = o.mqtt.as_ref().map(|url| (url, &o.events)) {
        return delivery::mqtt(url, *n);
    }
    let dir = std::env::temp_dir().join(format!("clefd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let clip = match &o.clip {
        Some(path) if path.is_file() => std::fs::canonicalize(path).context("--clip"),
        Some(path) => Err(anyhow::anyhow!("--clip {}: no such file", path.display())),
        None => render_clip(o, &dir),
    };
    let result = clip.and_then(|clip| match o.share {
        Some(pairs) => share(o, &clip, &dir, pairs),
        None if o.model_only => compare_clef_placements(o, &clip),
        None if o.detect_every.len() > 1 => compare_cadences(o, &clip, &dir),
        None => pipeline(o, &clip, &dir, true).map(|_| ExitCode::SUCCESS),
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The pipeline's faces/s as a share of the models' own limit, over `pairs` alternating
/// runs of each (this machine's speed drifts between runs; within a pair it mostly does
/// not), and the median share.
fn share(o: &BenchOptions, clip: &Path, dir: &Path, pairs: u32) -> anyhow::Result<ExitCode> {
    let unpaced = BenchOptions { unpaced: true, ..o.clone() };
    let mut shares = Vec::new();
    for pair in 1..=pairs {
        println!("pair {pair} of {pairs}");
        let models = model_only(o, clip, false, ClefPlacement::Engine)?.faces_per_s;
        let whole = pipeline(&unpaced, clip, dir, false)?.faces_per_s;
        anyhow::ensure!(models > 0.0, "the models found no face in the clip's first frames: no share to state");
        shares.push(whole / models);
        println!("  share {:.2} ({whole:.1} / {models:.1} faces/s)\n", whole / models);
    }
    let listed: Vec<String> = shares.iter().map(|s| format!("{s:.2}")).collect();
    shares.sort_by(f64::total_cmp);
    println!(
        "share of --model-only: median {:.2} (pairs: {}); peak RSS of the whole run {:.1} MB",
        median(&shares),
        listed.join(", "),
        peak_rss_mb()
    );
    Ok(ExitCode::SUCCESS)
}

/// The middle of `sorted` (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Renders the benchmark clip (640x480 H.264, 30 fps, 10 s) into `dir`, in a child
/// process so that the encoder's memory does not count as ours.
fn render_clip(o: &BenchOptions, dir: &Path) -> anyhow::Result<PathBuf> {
    let clip = dir.join("clip.mp4");
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["make-clip", "--seconds", "10", "--fps", "30", "--scale", "0.75", "--image"])
        .arg(o.image())
        .arg("--out")
        .arg(&clip)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "could not render the benchmark clip");
    Ok(clip)
}

/// `--model-only`: the models alone; for a bundle with a fused graph, with CLEF in the graph
/// and on the host in turn (three alternating runs each, as this machine's speed drifts),
/// and the ratio of their classify time per face.
fn compare_clef_placements(o: &BenchOptions, clip: &Path) -> anyhow::Result<ExitCode> {
    let manifest = clefd::engine::manifest::Manifest::load(&o.bundle())?;
    if manifest.fused.is_none() {
        model_only(o, clip, true, ClefPlacement::Engine)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut ratios = Vec::new();
    for round in 1..=3 {
        println!("round {round} of 3: CLEF in the fused graph, then on the host");
        let fused = model_only(o, clip, false, ClefPlacement::Engine)?;
        let host = model_only(o, clip, round == 3, ClefPlacement::Host)?;
        ratios.push(fused.classify_per_face.as_secs_f64() / host.classify_per_face.as_secs_f64().max(1e-12));
    }
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "classify time per face, fused graph / host CLEF: median {:.2} (rounds: {})",
        median(&ratios),
        listed.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// What one `--model-only` run measured.
struct ModelOnly {
    faces_per_s: f64,
    /// Crops, classifiers and CLEF, per face.
    classify_per_face: Duration,
}

/// The models alone, as the pipeline runs them (same lanes, threads and batch size), on
/// the clip's first frames as its decoder gives them (one per camera, decoded once): the
/// ceiling for the pipeline's throughput. `rss` adds the peak-memory line to the report.
fn model_only(o: &BenchOptions, clip: &Path, rss: bool, placement: ClefPlacement) -> anyhow::Result<ModelOnly> {
    let defaults = engine_options();
    let (lane_count, threads) = defaults.lanes_and_threads(0, 0);
    let opts = SessionOptions { threads, ..defaults };
    let mut analyzers = Vec::new();
    for _ in 0..lane_count {
        let bundle = Bundle::load_placed(&o.bundle(), &opts, placement)
            .with_context(|| format!("loading {}", o.bundle().display()))?;
        analyzers.push(Analyzer::new(bundle, 16));
    }
    let per_run = if o.no_batching { 1 } else { 16 };
    let clef = match analyzers.first().map(|a| (a.debias(), a.fused())) {
        Some((true, true)) => "CLEF in the fused graph",
        Some((true, false)) => "CLEF on the host",
        _ => "no CLEF (debias off)",
    };
    let mut lanes: LanePool<Arc<clefd::source::Frame>> =
        LanePool::start("infer-bench", analyzers, per_run, Arc::new(|| {}))?;
    // One frame per camera per batch, as the pipeline's hub hands them out, with every
    // lane kept busy.
    let width = o.width;
    let images: Vec<_> =
        clefd::source::decode_video_frames(clip, o.cameras, width)?.into_iter().map(Arc::new).collect();
    anyhow::ensure!(images.len() == o.cameras, "{} has fewer than {} frames", clip.display(), o.cameras);
    let batch = || images.iter().cloned().enumerate().collect::<Vec<_>>();
    let (mut frames, mut faces, mut detect, mut classify) = (0u64, 0u64, Duration::ZERO, Duration::ZERO);
    // The same warm-up as the pipeline gets, then the measured window.
    let warm_up_ends = Instant::now() + WARM_UP;
    let mut window: Option<(Instant, ThreadTimes)> = None;
    loop {
        match &window {
            None if Instant::now() >= warm_up_ends => {
                (frames, faces, detect, classify) = (0, 0, Duration::ZERO, Duration::ZERO);
                window = Some((Instant::now(), ThreadTimes::now()));
            }
            Some((start, _)) if start.elapsed().as_secs_f64() >= o.seconds => break,
            _ => {}
        }
        // As the pipeline's worker does: a batch for every free lane, and one queued.
        while lanes.has_free_lane() || lanes.has_room_to_queue() {
            lanes.submit(batch());
        }
        match lanes.try_finished() {
            Some(done) => {
                let (out, t) = done.result?;
                frames += out.len() as u64;
                faces += out.iter().map(|f| f.len() as u64).sum::<u64>();
                detect += t.detect;
                classify += t.classify;
            }
            None => anyhow::ensure!(lanes.wait_any(), "the inference lanes stopped"),
        }
    }
    let Some((start, cpu_before)) = window else { anyhow::bail!("the measured window never opened") };
    let cpu = ThreadTimes::now().since(&cpu_before);
    let wall = start.elapsed();
    let secs = wall.as_secs_f64();
    println!(
        "model-only: {} camera frame(s) per batch at width {width}, {lane_count} lane(s) of {threads} thread(s), batching {}, {clef}",
        o.cameras,
        if o.no_batching { "off" } else { "on" }
    );
    println!("  frames/s {:.1}   faces/s {:.1}", frames as f64 / secs, faces as f64 / secs);
    println!(
        "  per frame: detect {:.2} ms, classify {:.2} ms; per face: classify {:.3} ms",
        ms(detect, frames),
        ms(classify, frames),
        ms(classify, faces)
    );
    println!("{}", per_frame_line(&cpu, frames, wall));
    if rss {
        println!("  peak RSS {:.1} MB", peak_rss_mb());
    }
    Ok(ModelOnly { faces_per_s: faces as f64 / secs, classify_per_face: classify.div_f64(faces.max(1) as f64) })
}

fn ms(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1000.0 / n.max(1) as f64
}

/// The daemon's settings for the benchmark's cameras, written as a config file and loaded
/// like any other, so every default is the daemon's.
fn bench_settings(o: &BenchOptions, clip: &Path, dir: &Path) -> anyhow::Result<clefd::config::Settings> {
    // Relative paths in a config file are relative to its folder: write them absolute.
    let quoted = |p: &Path| {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        toml::Value::String(p.display().to_string()).to_string()
    };
    let mut text = format!(
        "device_id = \"bench\"\nstate_dir = {}\n[engine]\nbundle = {}\nbatching = {}\n",
        quoted(&dir.join("state")),
        quoted(&o.bundle()),
        !o.no_batching
    );
    if let Some(ort) = &o.onnxruntime {
        text += &format!("onnxruntime = {}\n", quoted(ort));
    }
    for i in 0..o.cameras {
        text += &format!(
            "[cameras.cam{i}]\nuri = {}\nloop = true\nrealtime = {}\ndecoder = {}\nwidth = {}\ndetect_every = {}\n",
            toml::Value::String(format!("file://{}", std::path::absolute(clip)?.display())),
            !o.unpaced,
            toml::Value::String(o.decoder.clone()),
            o.width,
            o.detect_every.first().copied().unwrap_or(1)
        );
    }
    let path = dir.join("bench.toml");
    std::fs::write(&path, text)?;
    clefd::config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `--detect-every 1,2,3,5`: the pipeline once per value, then frames/s and CPU per frame
/// side by side, as ratios to the first value's.
fn compare_cadences(o: &BenchOptions, clip: &Path, dir: &Path) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for &n in &o.detect_every {
        println!("detect_every = {n}");
        let run = BenchOptions { detect_every: vec![n], ..o.clone() };
        rows.push((n, pipeline(&run, clip, dir, false)?));
        println!();
    }
    let Some((first_n, first)) = rows.first().map(|(n, f)| (*n, f.clone())) else { return Ok(ExitCode::SUCCESS) };
    println!("detect_every  frames/s  CPU ms/frame  frames/s ratio  CPU/frame ratio (to detect_every = {first_n})");
    for (n, f) in &rows {
        println!(
            "{n:>12}  {:>8.1}  {:>12.2}  {:>14.2}  {:>15.2}",
            f.frames_per_s,
            f.cpu_ms_per_frame,
            f.frames_per_s / first.frames_per_s.max(1e-9),
            f.cpu_ms_per_frame / first.cpu_ms_per_frame.max(1e-9)
        );
    }
    println!("peak RSS of the whole run {:.1} MB", peak_rss_mb());
    Ok(ExitCode::SUCCESS)
}

/// What one pipeline run measured, all cameras together.
#[derive(Debug, Clone)]
struct Figures {
    faces_per_s: f64,
    frames_per_s: f64,
    /// CPU time of every thread of the process, per frame analysed.
    cpu_ms_per_frame: f64,
}

/// Runs the whole pipeline with events counted; `rss` adds the peak-memory line to the
/// report.
fn pipeline(o: &BenchOptions, clip: &Path, dir: &Path, rss: bool) -> anyhow::Result<Figures> {
    let settings = bench_settings(o, clip, dir)?;
    let (options, _) = super::options::pipeline_options(&settings);
    let counter = Counter::default();
    let pipeline = Pipeline::start(options, counter.clone())?;
    let control = pipeline.control();
    let probe = pipeline.probe();
    // Measured in steady state: models are loaded, and cameras get a second to start.
    std::thread::sleep(WARM_UP);
    let (before, cpu_before, started) = (probe.summaries(), ThreadTimes::now(), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(o.seconds));
    let (after, cpu, wall) = (probe.summaries(), ThreadTimes::now().since(&cpu_before), started.elapsed());
    control.stop();
    let _ = pipeline.wait();
    let secs = wall.as_secs_f64();
    let (lanes, threads) = engine_options().lanes_and_threads(0, 0);
    println!(
        "pipeline: {} camera(s), {} ({}), width {}, {} decoder, {lanes} lane(s) of {threads} thread(s), batching {}, {:.0} s after {:.0} s of warm-up",
        o.cameras,
        o.clip.as_ref().map_or("640x480 H.264 clip at 30 fps".into(), |c| c.display().to_string()),
        if o.unpaced { "decoded as fast as possible" } else { "paced like a live camera" },
        o.width,
        o.decoder,
        if o.no_batching { "off" } else { "on" },
        secs,
        WARM_UP.as_secs_f64()
    );
    let decoders = counter.1.lock().map(|d| d.clone()).unwrap_or_default();
    let (mut faces, mut frames) = (0u64, 0u64);
    for s in after.iter().map(|a| window(before.iter().find(|b| b.bundle == a.bundle), a)) {
        for c in &s.cameras {
            println!(
                "  {:<6} fps {:>6.1}  faces/s {:>6.1}  latency p50 {:>6.1} ms  p99 {:>6.1} ms  dropped {}  decoder {}",
                c.name,
                c.frames as f64 / secs,
                c.faces as f64 / secs,
                c.latency.quantile_ms(0.5),
                c.latency.quantile_ms(0.99),
                c.dropped,
                decoders.get(&c.name).map_or("?", String::as_str)
            );
        }
        println!(
            "  total  fps {:>6.1}  faces/s {:>6.1}  events {}",
            s.frames as f64 / secs,
            s.faces as f64 / secs,
            counter.0.load(Ordering::Relaxed)
        );
        println!(
            "  per frame: detect {:.2} ms, classify {:.2} ms, track+events {:.3} ms; {:.2} frames per batch",
            ms(s.stages.detect, s.frames),
            ms(s.stages.classify, s.frames),
            ms(s.stages.publish, s.frames),
            s.frames as f64 / s.batches.max(1) as f64
        );
        println!(
            "  detector on {} of {} frames, classifiers on {} of {} faces",
            s.stages.detected, s.frames, s.stages.classified, s.faces
        );
        println!("{}", per_frame_line(&cpu, s.frames, wall));
        faces += s.faces;
        frames += s.frames;
    }
    if rss {
        println!("  peak RSS {:.1} MB", peak_rss_mb());
    }
    let cpu_total: f64 = cpu.iter().map(|(_, t)| t.as_secs_f64()).sum();
    Ok(Figures {
        faces_per_s: faces as f64 / secs,
        frames_per_s: frames as f64 / secs,
        cpu_ms_per_frame: cpu_total * 1000.0 / frames.max(1) as f64,
    })
}

/// How long cameras run before the measured window opens.
const WARM_UP: Duration = Duration::from_secs(1);

/// What a worker did between two snapshots of its statistics.
fn window(before: Option<&RunSummary>, after: &RunSummary) -> RunSummary {
    let Some(b) = before else { return after.clone() };
    let mut s = after.clone();
    s.frames -= b.frames.min(s.frames);
    s.faces -= b.faces.min(s.faces);
    s.dropped -= b.dropped.min(s.dropped);
    s.batches -= b.batches.min(s.batches);
    s.stages.detect = s.stages.detect.saturating_sub(b.stages.detect);
    s.stages.classify = s.stages.classify.saturating_sub(b.stages.classify);
    s.stages.publish = s.stages.publish.saturating_sub(b.stages.publish);
    s.stages.detected -= b.stages.detected.min(s.stages.detected);
    s.stages.classified -= b.stages.classified.min(s.stages.classified);
    for c in &mut s.cameras {
        if let Some(cb) = b.cameras.iter().find(|cb| cb.name == c.name) {
            c.frames -= cb.frames.min(c.frames);
            c.faces -= cb.faces.min(c.faces);
            c.dropped -= cb.dropped.min(c.dropped);
            c.latency = c.latency.since(&cb.latency);
        }
    }
    s
}
