//! ONNX Runtime, loaded at run time (`load-dynamic`), and the models that run on it.
//!
//! The library is found in this order: `engine.onnxruntime` from the config, then
//! `ORT_DYLIB_PATH`, then the places the set-up and the packages install it. Loading
//! never panics: a missing or too-old library is an [`EngineError`] that says where we
//! looked and what to do.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use super::tensorrt::{self, TrtSettings};
pub use crate::config::Require;

/// Errors from loading ONNX Runtime or a model, or from running one.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No candidate path held a library.
    #[error(
        "ONNX Runtime library not found (looked in: {tried}); run `make setup`, or set engine.onnxruntime or ORT_DYLIB_PATH to libonnxruntime.so"
    )]
    LibraryNotFound {
        /// Paths tried, comma-separated.
        tried: String,
    },
    /// The library exists but could not be used (not ONNX Runtime, or too old).
    #[error("cannot use ONNX Runtime at {path}: {reason} (clefd needs ONNX Runtime 1.18 or newer)")]
    Library {
        /// The library path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A model file could not be loaded.
    #[error("model {model} ({path}): {reason}")]
    Model {
        /// Which model of the bundle (detector, vanilla, context_branch).
        model: String,
        /// The ONNX file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A model's tensor does not match what its manifest declares.
    #[error("model {model}: tensor '{tensor}' has shape {actual:?}, but the manifest expects {expected:?} (-1 = any)")]
    Shape {
        /// Which model.
        model: String,
        /// Tensor name.
        tensor: String,
        /// Shape from the manifest.
        expected: Vec<i64>,
        /// Shape in the ONNX graph (-1 = dynamic).
        actual: Vec<i64>,
    },
    /// A tensor the manifest names is not in the graph.
    #[error("model {model}: the manifest names {direction} '{tensor}', but the graph has {available:?}")]
    MissingTensor {
        /// Which model.
        model: String,
        /// `input` or `output`.
        direction: &'static str,
        /// The missing name.
        tensor: String,
        /// Names the graph does have.
        available: Vec<String>,
    },
    /// `engine.require` cannot be met: the models would run on a provider it rules out.
    #[error("engine.require = \"{require}\" cannot be met: {reason}")]
    Required {
        /// The requirement (`gpu`, `tensorrt`, `cuda`).
        require: &'static str,
        /// Which library, which providers it has, and what to install.
        reason: String,
    },
    /// A cache-only load ([`SessionOptions::cache_only`], `clefd doctor`) found no TensorRT
    /// engine for the model in the cache: building one takes minutes and writes the cache,
    /// which only `build-engines` (as the service's user) or the service's first start may do.
    #[error("engine not built yet for {model} on tensorrt: run `sudo -u clefd clefd build-engines`")]
    NotBuilt {
        /// Which model of the bundle.
        model: String,
    },
    /// Inference failed.
    #[error("model {model}: inference failed: {reason}")]
    Run {
        /// Which model.
        model: String,
        /// ONNX Runtime's message.
        reason: String,
    },
}

static ENVIRONMENT: OnceLock<(PathBuf, ort::environment::Environment)> = OnceLock::new();

/// Where the set-up and packages put the library, relative to the executable and the
/// working directory.
fn default_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            // target/{debug,release}/clefd (and target/*/deps/ for tests) → repo/.local/
            for up in [
                dir.join("../../.local/onnxruntime"),
                dir.join("../../../.local/onnxruntime"),
                dir.join("../lib/clefd"),
            ] {
                out.push(up.join("libonnxruntime.so"));
            }
        }
    }
    out.push(PathBuf::from(".local/onnxruntime/libonnxruntime.so"));
    out.push(PathBuf::from("/usr/lib/clefd/libonnxruntime.so"));
    out.push(PathBuf::from("/usr/local/lib/libonnxruntime.so"));
    out.push(PathBuf::from("/usr/lib/libonnxruntime.so"));
    out
}

/// Loads ONNX Runtime once per process and returns the path it came from.
///
/// `configured` (from `engine.onnxruntime`) wins, then `ORT_DYLIB_PATH`; when either is
/// set, only that path is tried, so a typo is reported rather than silently ignored.
pub fn init(configured: Option<&Path>) -> Result<&'static Path, EngineError> {
    if let Some((path, _)) = ENVIRONMENT.get() {
        return Ok(path);
    }
    let explicit = configured.map(Path::to_path_buf).or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from));
    let candidates = match explicit {
        Some(p) => vec![p],
        None => default_candidates(),
    };
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        let tried = candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(EngineError::LibraryNotFound { tried });
    };
    let path = path.canonicalize().unwrap_or_else(|_| path.clone());
    let lib_err = |reason: String| EngineError::Library { path: path.display().to_string(), reason };
    let builder = ort::init_from(&path).map_err(|e| lib_err(e.to_string()))?;
    let env = builder.with_name("clefd").build().map_err(|e| lib_err(e.to_string()))?;
    let _ = ENVIRONMENT.set((path.clone(), env));
    tracing::info!(path = %path.display(), "loaded ONNX Runtime");
    Ok(ENVIRONMENT.get().map(|(p, _)| p.as_path()).unwrap_or(Path::new("")))
}

/// The loaded ONNX Runtime's version (`1.31.1`), as the library itself reports it
/// (`OrtGetApiBase()->GetVersionString()`); `None` before [`init`].
pub fn version() -> Option<String> {
    let (path, _) = ENVIRONMENT.get()?;
    // SAFETY: `path` is the ONNX Runtime library `init` loaded (opening it again only takes
    // a reference). `OrtGetApiBase` takes nothing and returns a pointer to a static table;
    // its `GetVersionString` returns a static NUL-terminated string, copied before the
    // reference is dropped.
    unsafe {
        let lib = libloading::Library::new(path).ok()?;
        let get: libloading::Symbol<'_, unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").ok()?;
        let base = get();
        if base.is_null() {
            return None;
        }
        let text = ((*base).GetVersionString)();
        (!text.is_null()).then(|| std::ffi::CStr::from_ptr(text).to_string_lossy().into_owned())
    }
}

/// How sessions are built: threads and execution providers.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    /// Intra-op threads; 0 picks the number of cores.
    pub threads: usize,
    /// Providers in order of preference: `tensorrt`, `cuda`, `cpu`. A model runs on the
    /// first that accepts it; without `cpu` in the list, no provider accepting it is an
    /// error rather than a silent fall back to the CPU.
    pub providers: Vec<String>,
    /// The provider a model must get (`engine.require`): the others in `providers` are
    /// not tried, and none accepting it is [`EngineError::Required`].
    pub require: Require,
    /// TensorRT engine cache folder.
    pub cache_dir: Option<PathBuf>,
    /// How TensorRT builds engines.
    pub tensorrt: TrtSettings,
    /// Use TensorRT only where its engine is already in the cache, and never write there:
    /// a missing engine is [`EngineError::NotBuilt`], not a build. For `clefd doctor`, which
    /// may run as root or as a user who cannot write the cache, next to a running service.
    pub cache_only: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            threads: 0,
            providers: vec!["cpu".into()],
            require: Require::Any,
            cache_dir: None,
            tensorrt: TrtSettings::default(),
            cache_only: false,
        }
    }
}

impl Default for TrtSettings {
    fn default() -> Self {
        TrtSettings { precision: super::tensorrt::Precision::Fp16, dla_core: None, batch_max: 16 }
    }
}

impl SessionOptions {
    /// Whether a GPU provider (TensorRT or CUDA) is asked for and present in this build of
    /// ONNX Runtime; [`init`] must have run.
    pub fn accelerated(&self) -> bool {
        self.providers.iter().any(|p| p != "cpu" && provider_in_build(p))
    }

    /// Lanes and intra-op threads per session for `lanes`/`threads` settings (0 = pick):
    /// on the CPU one lane per core (at most four: each lane holds its own sessions, about
    /// 10 MB) with one thread each, on a GPU one lane.
    pub fn lanes_and_threads(&self, lanes: usize, threads: usize) -> (usize, usize) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let lanes = match lanes {
            0 if self.accelerated() => 1,
            0 => cores.min(4),
            n => n,
        };
        let threads = match threads {
            0 if lanes > 1 => 1,
            0 => cores,
            n => n,
        };
        (lanes, threads)
    }
}

/// Whether this build of ONNX Runtime has the provider (`tensorrt`, `cuda`, `cpu`);
/// [`init`] must have run. Having it does not yet mean it accepts a given model.
/// A provider faked for the tests (`CLEFD_TEST_GPU_ON_CPU`, [`super::gpu_on_cpu`]) counts as built.
pub fn provider_in_build(name: &str) -> bool {
    match name {
        "tensorrt" | "cuda" if super::gpu_on_cpu::is_faked(name) => true,
        "tensorrt" => ep::TensorRT::is_available().unwrap_or(false),
        "cuda" => ep::CUDA::is_available().unwrap_or(false),
        "cpu" => true,
        _ => false,
    }
}

/// The GPU providers `CLEFD_TEST_GPU_ON_CPU` fakes on the CPU in this process (tests
/// only; empty for a service), warning once when any is: every report of where models run
/// is then untrue, and must say so.
pub fn faked_gpu_providers() -> &'static [String] {
    super::gpu_on_cpu::faked_providers()
}

/// Every execution provider this build of ONNX Runtime has, as it names them
/// (`TensorrtExecutionProvider`, `CPUExecutionProvider`); empty before [`init`].
pub fn providers_in_library() -> Vec<String> {
    if ENVIRONMENT.get().is_none() {
        return Vec::new();
    }
    let api = ort::api();
    let mut list: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut n: std::ffi::c_int = 0;
    // SAFETY: ONNX Runtime is loaded (checked above). `GetAvailableProviders` fills `list`
    // with `n` NUL-terminated strings it owns, copied here before
    // `ReleaseAvailableProviders` frees them; a failure's status is released unread.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut list, &mut n);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
            return Vec::new();
        }
        if list.is_null() {
            return Vec::new();
        }
        let names = (0..usize::try_from(n).unwrap_or(0))
            .map(|i| *list.add(i))
            .filter(|p| !p.is_null())
            .map(|p| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
            .collect();
        let status = (api.ReleaseAvailableProviders)(list, n);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
        }
        names
    }
}

/// Checks, before any model loads, that `engine.require` can be met by `providers` (the
/// config's list) in the loaded ONNX Runtime: a CPU build asked for the GPU is refused
/// here, naming the library, the providers it has and what to install.
pub fn check_required(require: Require, providers: &[String]) -> Result<(), EngineError> {
    if require == Require::Any {
        return Ok(());
    }
    let wanted: Vec<&str> = providers.iter().map(String::as_str).filter(|p| require.accepts(p)).collect();
    if wanted.iter().any(|p| provider_in_build(p)) {
        return Ok(());
    }
    Err(EngineError::Required { require: require.as_str(), reason: remedy(require, providers) })
}

/// The library, its providers and what to do when `require` cannot be met by `providers`:
/// another build when the library lacks the providers, or the libraries a provider needs
/// when the library has it but it failed at load (a GPU build on a machine without the
/// CUDA or TensorRT it was made for).
fn remedy(require: Require, providers: &[String]) -> String {
    remedy_with(require, providers, provider_in_build)
}

/// [`remedy`] with the question "is this provider in the library's build?" given, so both
/// answers are tested on either build.
fn remedy_with(require: Require, providers: &[String], in_build: impl Fn(&str) -> bool) -> String {
    let wanted: Vec<&str> = providers.iter().map(String::as_str).filter(|p| require.accepts(p)).collect();
    if wanted.is_empty() {
        return format!("engine.providers ({}) lists no provider that meets it", providers.join(", "));
    }
    let library = ENVIRONMENT.get().map_or_else(|| "(not loaded)".into(), |(p, _)| p.display().to_string());
    let version = version().unwrap_or_else(|| "unknown version".into());
    let has = providers_in_library().join(", ");
    let in_build = wanted.iter().any(|p| in_build(p));
    let wanted = wanted.join(" or ");
    let fix = if in_build {
        format!(
            "the ONNX Runtime at {library} ({version}) has [{has}], but {wanted} could not load the model: install \
             the CUDA, cuDNN and TensorRT libraries that build was made for (on a Jetson: the JetPack it matches, \
             see README, Jetson; `ldd` on the libonnxruntime_providers_*.so beside it names a missing one), or \
             point engine.onnxruntime at a build made for this machine"
        )
    } else {
        format!(
            "the ONNX Runtime at {library} ({version}) has only [{has}], not {wanted}: install an ONNX Runtime build \
             with {wanted} (on a Jetson: see README, Jetson) and point engine.onnxruntime at its libonnxruntime.so"
        )
    };
    format!("{fix}; {}", allow_any())
}

/// How to run on what there is after all. The environment wins over the config file (the
/// Jetson drop-in sets `CLEFD__ENGINE__REQUIRE=gpu`), so a refusal under that variable
/// names the variable and how to override it for the service, not the file's key.
pub(crate) fn allow_any() -> String {
    allow_any_in(std::env::vars_os())
}

/// [`allow_any`] over `vars`. The config loader matches variable names as
/// `config::load::origin_of` does (any case, `-` as `_`), so this finds the variable the
/// same way and names it as it is spelt.
fn allow_any_in(vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>) -> String {
    const VAR: &str = "CLEFD__ENGINE__REQUIRE";
    let found = vars
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .find(|(k, _)| k.to_uppercase().replace('-', "_") == VAR);
    match found {
        Some((name, v)) => format!(
            "or, to run on what there is, set {name}=any: it is \"{v}\" in this environment, \
             which overrides engine.require in the config file (for the service: `systemctl edit clefd`, then \
             [Service] Environment={name}=any)"
        ),
        None => "or set engine.require = \"any\" in the config to run on what there is".into(),
    }
}

/// Why a GPU provider is refused by a CPU build of ONNX Runtime (PyPI's `onnxruntime`).
const NOT_IN_BUILD: &str = "not in this ONNX Runtime build (a CPU build: point engine.onnxruntime at a GPU build)";

/// Builds a session on `providers` (none: the CPU).
fn session(
    path: &Path,
    opts: &SessionOptions,
    providers: Vec<ep::ExecutionProviderDispatch>,
) -> Result<Session, String> {
    let threads =
        if opts.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { opts.threads };
    let (_, env) = ENVIRONMENT.get().ok_or_else(|| "ONNX Runtime is not loaded yet".to_string())?;
    Session::builder(env)
        .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All).map_err(Into::into))
        .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
        .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
        .and_then(|b| b.with_intra_op_spinning(false).map_err(Into::into))
        // Memory patterns pre-plan one arena block per input shape seen; batches vary in
        // size, so they cost memory for nothing (measured: -10 MB with one camera, -13 MB
        // with four, throughput unchanged).
        .and_then(|b| b.with_memory_pattern(false).map_err(Into::into))
        .and_then(|b| b.with_execution_providers(providers).map_err(Into::into))
        .and_then(|mut b| b.commit_from_file(path))
        .map_err(|e| e.to_string())
}

/// One model's TensorRT engine cache entry: its folder, keyed by everything that makes an
/// engine stale, and the optimisation profiles over its dynamic inputs.
struct CacheEntry {
    dir: PathBuf,
    profiles: Option<tensorrt::Profiles>,
}

impl CacheEntry {
    /// The entry of `path` under `opts` (its inputs read from a CPU session); reads only.
    fn of(name: &str, path: &Path, opts: &SessionOptions) -> Result<CacheEntry, String> {
        let probe = session(path, &SessionOptions { threads: 1, ..opts.clone() }, Vec::new())?;
        let inputs: Vec<(String, Vec<i64>)> = probe
            .inputs()
            .iter()
            .map(|i| {
                (
                    i.name().to_string(),
                    i.dtype().tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default(),
                )
            })
            .collect();
        let profiles = tensorrt::profiles(&inputs, opts.tensorrt.batch_max)?;
        let digest = super::sha256_hex(&std::fs::read(path).map_err(|e| e.to_string())?);
        let key = tensorrt::cache_key(&digest, &opts.tensorrt, profiles.as_ref(), &tensorrt::this_machine());
        let base = opts.cache_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("clefd-engine-cache"));
        Ok(CacheEntry { dir: base.join(format!("{name}-{key}")), profiles })
    }

    /// Whether an engine was built into the entry (a folder with something in it).
    fn built(&self) -> bool {
        std::fs::read_dir(&self.dir).is_ok_and(|mut d| d.next().is_some())
    }

    /// Makes sure the entry's folder exists, saying whether TensorRT will build (minutes):
    /// `true` when it will.
    fn prepare(&self, model: &str) -> Result<bool, String> {
        if self.built() {
            tracing::info!(model, cache = %self.dir.display(), "engine cache hit");
            return Ok(false);
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create the engine cache {}: {e}", self.dir.display()))?;
        tracing::info!(model, cache = %self.dir.display(), "building a TensorRT engine (the first start on this machine can take minutes)");
        Ok(true)
    }
}

/// TensorRT for one model: optimisation profiles over its dynamic inputs and engines cached
/// under a key of everything that makes them stale. With `faked` (the tests' hook, no
/// TensorRT), the entry is made as TensorRT would make it and a stand-in file is left in
/// it, so the cache's hits, misses and writes are those of a GPU.
fn tensorrt_provider(name: &str, path: &Path, opts: &SessionOptions, faked: bool) -> Result<ep::TensorRT, String> {
    use ort::ep::ArbitrarilyConfigurableExecutionProvider;
    let entry = CacheEntry::of(name, path, opts)?;
    if entry.prepare(name)? && faked {
        std::fs::write(entry.dir.join("gpu_on_cpu.engine"), b"CLEFD_TEST_GPU_ON_CPU stand-in\n")
            .map_err(|e| format!("cannot write the engine cache {}: {e}", entry.dir.display()))?;
    }
    let mut trt = ep::TensorRT::default();
    for (k, v) in tensorrt::provider_options(&opts.tensorrt, entry.profiles.as_ref(), &entry.dir) {
        trt = trt.with_arbitrary_config(k, v);
    }
    Ok(trt)
}

/// Under [`SessionOptions::cache_only`], whether TensorRT may load `path`: only from an
/// engine already in the cache; an entry that cannot even be computed is left to the load.
fn check_built(name: &str, path: &Path, opts: &SessionOptions) -> Result<(), EngineError> {
    match CacheEntry::of(name, path, opts) {
        Ok(entry) if !entry.built() => Err(EngineError::NotBuilt { model: name.into() }),
        _ => Ok(()),
    }
}

/// Logs a provider's refusal once per process and reason (every lane of every bundle
/// would repeat it).
fn log_refusal(provider: &str, reason: &str) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let key = format!("{provider}: {reason}");
    let Ok(mut seen) = SEEN.lock() else { return };
    if !seen.contains(&key) {
        tracing::info!(provider, reason, "execution provider refused; trying the next one in engine.providers");
        seen.push(key);
    }
}

/// Says, as a warning and once per process (every start), that models run on `provider`
/// because the providers before it in `engine.providers` refused: ONNX Runtime's own
/// fallback to the CPU is silent, and a GPU that quietly went away costs 20 times the
/// time per frame.
fn warn_fallback(provider: &str, refused: &[String]) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    if refused.is_empty() {
        return;
    }
    let key = format!("{provider}|{}", refused.join("; "));
    let Ok(mut warned) = WARNED.lock() else { return };
    if !warned.contains(&key) {
        tracing::warn!(
            provider,
            refused = %refused.join("; "),
            "models fell back to {provider}: set engine.require = \"gpu\" to refuse to start instead, or list only \
             the providers you mean in engine.providers"
        );
        warned.push(key);
    }
}

/// Whether a model takes any batch size or a fixed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchDim {
    /// The graph's batch dimension is symbolic.
    Dynamic,
    /// The graph only takes this many samples per run.
    Fixed(usize),
}

/// One loaded ONNX model, with the name it goes by in errors.
pub struct Model {
    name: String,
    session: Session,
    provider: String,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Model {
    /// Loads `path` on the first provider in `opts.providers` that accepts it (registered
    /// with `error_on_failure`, so a refusal is seen, logged with ONNX Runtime's reason, and
    /// the next provider tried); ONNX Runtime must have been [`init`]ialised.
    pub fn load(name: &str, path: &Path, opts: &SessionOptions) -> Result<Model, EngineError> {
        let err = |reason: String| EngineError::Model { model: name.into(), path: path.display().to_string(), reason };
        let mut refused = Vec::new();
        for provider in &opts.providers {
            if !opts.require.accepts(provider) {
                refused.push(format!("{provider}: ruled out by engine.require = \"{}\"", opts.require.as_str()));
                continue;
            }
            if provider == "tensorrt" && opts.cache_only && provider_in_build(provider) {
                check_built(name, path, opts)?;
            }
            let attempt = match provider.as_str() {
                "cpu" => session(path, opts, Vec::new()),
                "tensorrt" if super::gpu_on_cpu::is_faked(provider) => {
                    tensorrt_provider(name, path, opts, true).and_then(|_| session(path, opts, Vec::new()))
                }
                "cuda" if super::gpu_on_cpu::is_faked(provider) => session(path, opts, Vec::new()),
                "cuda" | "tensorrt" if !provider_in_build(provider) => Err(NOT_IN_BUILD.into()),
                "cuda" => session(path, opts, vec![ep::CUDA::default().build().error_on_failure()]),
                "tensorrt" => tensorrt_provider(name, path, opts, false)
                    .and_then(|trt| session(path, opts, vec![trt.build().error_on_failure()])),
                other => Err(format!("unknown execution provider '{other}'")),
            };
            match attempt {
                Ok(session) => {
                    tracing::debug!(model = name, provider = %provider, "model loaded");
                    warn_fallback(provider, &refused);
                    return Ok(Model { name: name.into(), session, provider: provider.clone() });
                }
                Err(reason) => {
                    log_refusal(provider, &reason);
                    refused.push(format!("{provider}: {reason}"));
                }
            }
        }
        let reason = format!("no execution provider asked for (engine.providers) accepted it: {}", refused.join("; "));
        if opts.require != Require::Any {
            return Err(EngineError::Required {
                require: opts.require.as_str(),
                reason: format!(
                    "model {name} ({}): {reason}; {}",
                    path.display(),
                    remedy(opts.require, &opts.providers)
                ),
            });
        }
        Err(err(reason))
    }

    /// The execution provider the model runs on (`tensorrt`, `cuda` or `cpu`).
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The model's name in error messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn dims(&self, direction: &'static str, tensor: &str) -> Result<Vec<i64>, EngineError> {
        let outlets = if direction == "input" { self.session.inputs() } else { self.session.outputs() };
        let outlet = outlets.iter().find(|o| o.name() == tensor).ok_or_else(|| EngineError::MissingTensor {
            model: self.name.clone(),
            direction,
            tensor: tensor.into(),
            available: outlets.iter().map(|o| o.name().to_string()).collect(),
        })?;
        Ok(outlet.dtype().tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default())
    }

    /// Checks a tensor against the manifest's shape. `-1` in `expected` means any size;
    /// `-1` in the graph (a dynamic dimension) matches anything. Returns the graph's
    /// batch dimension.
    pub fn check(&self, direction: &'static str, tensor: &str, expected: &[i64]) -> Result<BatchDim, EngineError> {
        let actual = self.dims(direction, tensor)?;
        let fits =
            actual.len() == expected.len() && actual.iter().zip(expected).all(|(&a, &e)| a < 0 || e < 0 || a == e);
        if !fits {
            return Err(EngineError::Shape {
                model: self.name.clone(),
                tensor: tensor.into(),
                expected: expected.to_vec(),
                actual,
            });
        }
        Ok(match actual.first() {
            Some(&n) if n > 0 => BatchDim::Fixed(n as usize),
            _ => BatchDim::Dynamic,
        })
    }

    /// Runs the model on `inputs` (name, shape, data) and copies out the named outputs.
    pub fn run(&mut self, inputs: &[(&str, &[i64], &[f32])], outputs: &[&str]) -> Result<Vec<Vec<f32>>, EngineError> {
        let run_err = |reason: String| EngineError::Run { model: self.name.clone(), reason };
        let mut values = Vec::with_capacity(inputs.len());
        for (name, shape, data) in inputs {
            let tensor = TensorRef::from_array_view((shape.to_vec(), *data)).map_err(|e| run_err(e.to_string()))?;
            values.push((std::borrow::Cow::Borrowed(*name), ort::session::SessionInputValue::from(tensor)));
        }
        let name = self.name.clone();
        let results =
            self.session.run(values).map_err(|e| EngineError::Run { model: name.clone(), reason: e.to_string() })?;
        let mut out = Vec::with_capacity(outputs.len());
        for o in outputs {
            let value = results
                .get(*o)
                .ok_or_else(|| EngineError::Run { model: name.clone(), reason: format!("no output '{o}'") })?;
            let (_, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| EngineError::Run { model: name.clone(), reason: e.to_string() })?;
            out.push(data.to_vec());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)> {
        list.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn the_override_is_found_in_any_case_and_named_as_spelt() {
        // The config loader takes `clefd__engine__require` too; the advice names that spelling.
        let text = allow_any_in(vars(&[("PATH", "/bin"), ("clefd__engine__require", "gpu")]));
        assert!(text.contains("set clefd__engine__require=any: it is \"gpu\" in this environment"), "{text}");
        assert!(text.contains("Environment=clefd__engine__require=any"), "{text}");
        let text = allow_any_in(vars(&[("CLEFD__ENGINE__REQUIRE", "cuda")]));
        assert!(text.contains("set CLEFD__ENGINE__REQUIRE=any: it is \"cuda\""), "{text}");
        let text = allow_any_in(vars(&[("CLEFD__ENGINE__REQUIRES", "cuda")]));
        assert!(text.contains("engine.require = \"any\" in the config"), "{text}");
    }

    #[test]
    fn the_remedy_says_which_libraries_to_install_when_the_build_has_the_provider() {
        let providers = vec!["tensorrt".to_string(), "cuda".to_string(), "cpu".to_string()];
        let has = remedy_with(Require::Gpu, &providers, |p| p == "cuda");
        assert!(has.contains("could not load the model: install the CUDA, cuDNN and TensorRT libraries"), "{has}");
        assert!(!has.contains("has only"), "{has}");
        let lacks = remedy_with(Require::Gpu, &providers, |_| false);
        assert!(lacks.contains("has only [") && lacks.contains("not tensorrt or cuda"), "{lacks}");
        let none = remedy_with(Require::TensorRt, &["cpu".to_string()], |_| true);
        assert!(none.contains("engine.providers (cpu) lists no provider that meets it"), "{none}");
    }

    fn demo_model() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("engines/face-fer2013/fer2013_mini_xception.onnx")
    }

    /// Whether this ONNX Runtime is a GPU build: the tests hold on both, each checking
    /// what that build must do.
    fn gpu_build() -> bool {
        provider_in_build("tensorrt") || provider_in_build("cuda")
    }

    #[test]
    fn a_provider_onnx_runtime_refuses_is_reported_not_swallowed() {
        init(None).expect("the set-up's ONNX Runtime (make setup)");
        // Asked for TensorRT alone: it runs there, or an error names it; never a silent
        // fall back to the CPU.
        let only = SessionOptions { providers: vec!["tensorrt".into()], ..Default::default() };
        match Model::load("vanilla", &demo_model(), &only) {
            Ok(m) => assert_eq!(m.provider(), "tensorrt", "loaded, so on TensorRT"),
            Err(e) if provider_in_build("tensorrt") => assert!(e.to_string().contains("tensorrt: "), "{e}"),
            Err(e) => assert!(e.to_string().contains("tensorrt: not in this ONNX Runtime build"), "{e}"),
        }
        if !provider_in_build("tensorrt") {
            // Registered with error_on_failure, the CPU build's refusal reaches us.
            let trt = ep::TensorRT::default().build().error_on_failure();
            let refused = session(&demo_model(), &SessionOptions::default(), vec![trt]).unwrap_err();
            assert!(!refused.is_empty());
        }
        // With the CPU after it: the model runs on the first that takes it, the CPU when the
        // build has neither GPU provider.
        let chain =
            SessionOptions { providers: vec!["tensorrt".into(), "cuda".into(), "cpu".into()], ..Default::default() };
        let got = Model::load("vanilla", &demo_model(), &chain).unwrap();
        assert!(provider_in_build(got.provider()), "{}", got.provider());
        if !gpu_build() {
            assert_eq!(got.provider(), "cpu");
        }
    }

    #[test]
    fn a_required_gpu_is_refused_by_a_cpu_build_with_the_library_and_its_providers() {
        init(None).expect("the set-up's ONNX Runtime (make setup)");
        let has = providers_in_library();
        assert!(has.iter().any(|p| p == "CPUExecutionProvider"), "{has:?}");
        let all: Vec<String> = ["tensorrt", "cuda", "cpu"].map(String::from).to_vec();
        assert!(check_required(Require::Any, &all).is_ok());
        // A requirement no listed provider meets is refused on any build.
        let e = check_required(Require::Gpu, &["cpu".to_string()]).unwrap_err().to_string();
        assert!(e.contains("engine.providers (cpu) lists no provider that meets it"), "{e}");
        for require in [Require::Gpu, Require::TensorRt, Require::Cuda] {
            let in_build = ["tensorrt", "cuda"].iter().any(|p| require.accepts(p) && provider_in_build(p));
            match check_required(require, &all) {
                Ok(()) => assert!(in_build, "{require:?} met without the provider"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(!in_build, "{require:?} refused though the build has it: {e}");
                    assert!(e.contains(&format!("engine.require = \"{}\"", require.as_str())), "{e}");
                    assert!(
                        e.contains("libonnxruntime") && e.contains("CPUExecutionProvider"),
                        "library and list: {e}"
                    );
                    assert!(e.contains("engine.onnxruntime"), "says what to do: {e}");
                }
            }
        }
        // The models themselves: the CPU is not tried when a GPU is required.
        let gpu = SessionOptions { providers: all.clone(), require: Require::Gpu, ..Default::default() };
        match Model::load("vanilla", &demo_model(), &gpu) {
            Ok(m) => assert!(gpu_build() && m.provider() != "cpu", "{}", m.provider()),
            Err(e) => {
                assert!(matches!(e, EngineError::Required { .. }), "{e}");
                assert!(e.to_string().contains("cpu: ruled out by engine.require"), "{e}");
                assert!(e.to_string().contains("CPUExecutionProvider"), "names the providers: {e}");
            }
        }
    }
}
