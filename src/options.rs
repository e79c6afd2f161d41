//! What loading a model takes: where its files come from ([`HubOptions`]) and how it is placed ([`LoadOptions`]:
//! those hub options plus device, dtype and quantization), with the parsers for their command-line spellings.
//! Plain data, compiled with or without the `hub` feature; `hub`, `pipeline`, `processor` and the examples read it.

use std::path::PathBuf;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// How `hub::resolve` finds a model: revision, cache, progress bars, token, endpoint and offline mode.
///
/// Unset values come from the environment (see `hub::HubEnv`). Also reachable as `altclip::hub::HubOptions` when
/// the `hub` feature is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Branch, tag, `refs/pr/N` or 40-hex commit hash. Default `main`.
    pub revision: String,
    /// The hub cache directory (the one holding `models--ORG--NAME`); default from the environment.
    pub cache_dir: Option<PathBuf>,
    /// Show download progress bars on stderr. Default `false` here; [`LoadOptions::default`] turns them on.
    pub progress: bool,
    /// Access token for private or gated repositories; default `HF_TOKEN`, then the token file
    /// `$HF_HOME/token` (`~/.cache/huggingface/token`) that `huggingface-cli login` writes.
    pub token: Option<String>,
    /// `Some(true)`: cache only, no network; `Some(false)`: online even if `HF_HUB_OFFLINE` is set;
    /// `None` (default): follow `HF_HUB_OFFLINE`.
    pub offline: Option<bool>,
    /// Hub endpoint, e.g. a mirror; default `HF_ENDPOINT`, then `https://huggingface.co`.
    pub endpoint: Option<String>,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            revision: "main".into(),
            cache_dir: None,
            progress: false,
            token: None,
            offline: None,
            endpoint: None,
        }
    }
}

impl HubOptions {
    /// Options with every default: revision `main`, cache and offline mode from the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the revision: branch, tag, `refs/pr/N` or commit hash.
    pub fn with_revision(mut self, revision: impl Into<String>) -> Self {
        self.revision = revision.into();
        self
    }

    /// Sets the hub cache directory (the one holding `models--ORG--NAME`).
    pub fn with_cache_dir(mut self, cache_dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(cache_dir.into());
        self
    }

    /// Shows or hides download progress bars.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// Sets the access token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Forces offline (`true`) or online (`false`) mode, overriding `HF_HUB_OFFLINE`.
    pub fn with_offline(mut self, offline: bool) -> Self {
        self.offline = Some(offline);
        self
    }

    /// Sets the hub endpoint (overriding `HF_ENDPOINT`).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }
}

/// Options for [`AltClip::from_pretrained`](crate::AltClip::from_pretrained) and
/// [`AltClip::from_dir`](crate::AltClip::from_dir): the hub options (for hub ids) and where and in
/// which precision the model runs.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// How a hub id is resolved (revision, cache, token, endpoint, offline mode, progress bars); unused for a
    /// local directory. BAAI/AltCLIP's `main` has only `pytorch_model.bin`; its safetensors copy is on
    /// `refs/pr/7`.
    pub hub: HubOptions,
    /// Device for weights and activations.
    pub device: Device,
    /// Weight and activation dtype (norms and softmax still accumulate in f32).
    pub dtype: DType,
    /// Quantize the encoder projections, each layer as it loads (see
    /// [`AltClipModel::from_dir_quantized`](crate::AltClipModel::from_dir_quantized)); `None` keeps `dtype`.
    pub quantization: Option<Quantization>,
}

impl Default for LoadOptions {
    /// [`HubOptions::default`] but with progress bars on (the one-call loader is usually interactive), CPU, f32,
    /// no quantization.
    fn default() -> Self {
        Self {
            hub: HubOptions::default().with_progress(true),
            device: Device::Cpu,
            dtype: DType::F32,
            quantization: None,
        }
    }
}

impl LoadOptions {
    /// Replaces the hub options as a whole (progress bars included: [`HubOptions::default`] has them off).
    pub fn with_hub(mut self, hub: HubOptions) -> Self {
        self.hub = hub;
        self
    }
    /// Sets the device.
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }
    /// Sets the dtype.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// Sets the weight quantization (see [`parse_quantization`]).
    pub fn with_quantization(mut self, quantization: Option<Quantization>) -> Self {
        self.quantization = quantization;
        self
    }
    /// Sets the hub revision ([`HubOptions::with_revision`] on [`LoadOptions::hub`]).
    pub fn with_revision(mut self, revision: impl Into<String>) -> Self {
        self.hub = self.hub.with_revision(revision);
        self
    }
    /// Sets the hub cache directory ([`HubOptions::with_cache_dir`] on [`LoadOptions::hub`]).
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.hub = self.hub.with_cache_dir(dir);
        self
    }
    /// Turns download progress bars on or off ([`HubOptions::with_progress`] on [`LoadOptions::hub`]).
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.hub = self.hub.with_progress(progress);
        self
    }
    /// Forces offline or online mode ([`HubOptions::with_offline`] on [`LoadOptions::hub`]).
    pub fn with_offline(mut self, offline: bool) -> Self {
        self.hub = self.hub.with_offline(offline);
        self
    }
}

/// Where to run: parsed from `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N` or `auto` (CUDA, then Metal, then CPU).
///
/// `cuda`/`metal` that cannot be opened (no GPU, ordinal past the last one, backend not compiled in) are an
/// [`Error::Device`]. `auto` tries each backend compiled in and falls back to the CPU, saying why on stderr.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    let (kind, ordinal) = match spec.split_once(':') {
        Some((k, n)) => {
            let n: usize = n.parse().map_err(|_| {
                Error::invalid_argument("device", format!("{spec:?}: the ordinal after ':' must be a number"))
            })?;
            (k.to_string(), n)
        }
        None => (spec.clone(), 0),
    };
    match kind.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "metal" => open_device(&kind, ordinal),
        "auto" | "best" => Ok(auto_device(ordinal)),
        _ => Err(Error::invalid_argument(
            "device",
            format!("{spec:?} (expected cpu, cuda, cuda:N, metal, metal:N or auto)"),
        )),
    }
}

/// Opens GPU `ordinal` of backend `kind` (`cuda` or `metal`), naming the device when it cannot.
fn open_device(kind: &str, ordinal: usize) -> Result<Device> {
    let opened = if kind == "cuda" {
        Device::new_cuda(ordinal)
    } else {
        Device::new_metal(ordinal)
    };
    opened.map_err(|e| {
        // The cause only: with RUST_BACKTRACE set candle appends a backtrace of its own internals.
        let cause = match e {
            candle_core::Error::WithBacktrace { inner, .. } => *inner,
            e => e,
        };
        Error::Device {
            device: format!("{kind}:{ordinal}"),
            reason: cause.to_string(),
        }
    })
}

/// `auto`: the first compiled-in backend whose device opens, else the CPU. `cuda_is_available` only says the
/// backend was compiled in, so a build with `cuda` on a machine without a GPU must try to open the device.
fn auto_device(ordinal: usize) -> Device {
    let compiled = [
        ("cuda", candle_core::utils::cuda_is_available()),
        ("metal", candle_core::utils::metal_is_available()),
    ];
    for (kind, _) in compiled.into_iter().filter(|&(_, compiled_in)| compiled_in) {
        match open_device(kind, ordinal) {
            Ok(device) => return device,
            Err(e) => eprintln!("altclip: device auto: {e}; using the CPU"),
        }
    }
    Device::Cpu
}

/// Parses `f32`, `f16` or `bf16` (also `float32`, `float16`, `bfloat16`).
pub fn parse_dtype(spec: &str) -> Result<DType> {
    match spec.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" | "float" => Ok(DType::F32),
        "f16" | "float16" | "half" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(Error::invalid_argument(
            "dtype",
            format!("{other:?} (expected f32, f16 or bf16)"),
        )),
    }
}

/// How the encoder layers' projections are stored and multiplied after loading ([`LoadOptions::quantization`],
/// [`AltClipModel::quantize`](crate::AltClipModel::quantize)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantization {
    /// Dynamic int8, as PyTorch's `quantize_dynamic` and ONNX Runtime's `MatMulInteger`: symmetric int8 weights
    /// per output channel, packed once; each GEMM's input rows quantized to u8 on the fly; i32 accumulation;
    /// dequantize and bias in f32. CPU, f32 models only. On AVX2 CPUs whose integer dot product is no faster than
    /// their f32 FMA (AMD Zen 1/2, Intel Haswell/Broadwell), the same int8 weights run weight-only instead: the f32
    /// kernel over them, dequantized as it goes, so int8 never runs slower than f32 (chosen by CPU model, never by
    /// timing; see BENCHMARKS.md).
    Int8,
    /// A GGML block format through candle's quantized matmul (e.g. `GgmlDType::Q8_0`, `GgmlDType::Q4K`).
    Ggml(GgmlDType),
}

impl Quantization {
    /// Refuses a quantization that runs slower than f32 on `device`'s hardware, naming the measurement: on the
    /// CPU, the GGML formats need AVX-512 VNNI (measured on AVX2 alone: Q8_0 ~7× and Q4K 2–3× slower than f32;
    /// on AVX-512 VNNI Q8_0 0.83–1.41× PyTorch f32, see BENCHMARKS.md). [`AltClip`](crate::AltClip) and the tools
    /// ask this before quantizing; [`AltClipModel::quantize`](crate::AltClipModel::quantize) does not.
    pub fn check_speed(self, device: &Device) -> Result<()> {
        match self {
            Self::Ggml(dtype) if device.is_cpu() && !crate::kernels::cpu::has_vnni512() => {
                Err(Error::invalid_argument(
                    "quantization",
                    format!(
                        "{dtype:?} runs several times slower than f32 on this CPU (candle's GGML kernels need \
                         AVX-512 VNNI to be fast; measured on AVX2: Q8_0 ~7x, Q4K 2-3x slower): use int8, or none"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Parses a weight quantization for [`LoadOptions::quantization`]: `none`, `int8` (also `i8`), or a GGML format:
/// `q8_0`, `q4k` (also `q4_k`), `q6k`, `q5k`, `q4_0`.
pub fn parse_quantization(spec: &str) -> Result<Option<Quantization>> {
    let ggml = |d| Ok(Some(Quantization::Ggml(d)));
    match spec.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "none" | "" | "f32" => Ok(None),
        "int8" | "i8" => Ok(Some(Quantization::Int8)),
        "q8_0" | "q8" => ggml(GgmlDType::Q8_0),
        "q4k" | "q4_k" => ggml(GgmlDType::Q4K),
        "q5k" | "q5_k" => ggml(GgmlDType::Q5K),
        "q6k" | "q6_k" => ggml(GgmlDType::Q6K),
        "q4_0" => ggml(GgmlDType::Q4_0),
        other => Err(Error::invalid_argument(
            "quantization",
            format!("{other:?} (expected none, int8, q8_0, q6k, q5k, q4k or q4_0)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_options_keep_one_copy_of_the_hub_options() {
        // Same defaults as before the hub options moved in: revision main, progress on, offline from the env.
        let d = LoadOptions::default();
        assert_eq!(d.hub, HubOptions::new().with_progress(true));
        assert_eq!((d.dtype, d.quantization), (DType::F32, None));
        let o = LoadOptions::default()
            .with_revision("refs/pr/7")
            .with_cache_dir("/c")
            .with_offline(true)
            .with_progress(false);
        let want = HubOptions::new()
            .with_revision("refs/pr/7")
            .with_cache_dir("/c")
            .with_offline(true);
        assert_eq!(o.hub, want);
        assert_eq!(LoadOptions::default().with_hub(want.clone()).hub, want);
    }

    #[test]
    fn specs_parse_or_name_the_argument() {
        assert!(matches!(parse_device("CPU"), Ok(Device::Cpu)));
        assert!(matches!(
            parse_device("tpu"),
            Err(Error::InvalidArgument { argument: "device", .. })
        ));
        assert!(matches!(
            parse_device("cuda:x"),
            Err(Error::InvalidArgument { argument: "device", .. })
        ));
        // No machine has 1000 GPUs; without the backend compiled in the reason says so.
        for spec in ["cuda:999", "metal:999"] {
            match parse_device(spec) {
                Err(Error::Device { device, reason }) => assert!(device == spec && !reason.is_empty(), "{reason}"),
                other => panic!("{spec}: {other:?}"),
            }
        }
        assert_eq!(parse_dtype(" bfloat16 ").unwrap(), DType::BF16);
        assert!(matches!(
            parse_dtype("f8"),
            Err(Error::InvalidArgument { argument: "dtype", .. })
        ));
        assert_eq!(
            parse_quantization("Q4-K").unwrap(),
            Some(Quantization::Ggml(GgmlDType::Q4K))
        );
        assert_eq!(parse_quantization("INT8").unwrap(), Some(Quantization::Int8));
        assert_eq!(parse_quantization("none").unwrap(), None);
        assert!(parse_quantization("q3").is_err());
    }

    #[test]
    fn auto_and_cuda_without_a_gpu() {
        // On a GPU-less machine (incl. a `cuda` build run against scripts/cuda's driver stub) `auto` is the CPU and
        // `cuda` is a typed error naming cuda:0; with a GPU both open it.
        match parse_device("cuda") {
            Ok(device) => assert!(device.is_cuda()),
            Err(Error::Device { device, reason }) => {
                assert_eq!(device, "cuda:0", "{reason}");
                assert!(!parse_device("auto").unwrap().is_cuda());
            }
            Err(other) => panic!("{other:?}"),
        }
        assert!(parse_device(" Auto ").is_ok());
    }

    #[test]
    fn ggml_formats_are_refused_where_they_run_slower_than_f32() {
        assert!(Quantization::Int8.check_speed(&Device::Cpu).is_ok());
        let vnni = crate::kernels::cpu::has_vnni512();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4K] {
            match Quantization::Ggml(dtype).check_speed(&Device::Cpu) {
                Ok(()) => assert!(vnni, "{dtype:?} allowed without AVX-512 VNNI"),
                Err(Error::InvalidArgument {
                    argument: "quantization",
                    reason,
                }) => {
                    assert!(!vnni, "{dtype:?} refused with AVX-512 VNNI");
                    assert!(
                        reason.contains(&format!("{dtype:?}")) && reason.contains("int8"),
                        "{reason}"
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
        println!("this CPU has AVX-512 VNNI: {vnni}");
    }
}
