//! The crate's error type: every variant names the file, tensor, field or shape at fault.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in `altclip`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (config, index, preprocessor config) could not be parsed.
    #[error("invalid JSON in {what}: {source}")]
    Json {
        /// Which document (usually a file path).
        what: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// A configuration value cannot describe a working model.
    #[error("invalid config: {field}: {reason}")]
    InvalidConfig {
        /// The offending field, e.g. `text_config.hidden_size`.
        field: String,
        /// Why it is invalid.
        reason: String,
    },

    /// A directory holds no weight file this crate can read.
    #[error(
        "no weights found in {dir}: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )]
    NoWeights {
        /// The directory searched.
        dir: PathBuf,
    },

    /// A weight file could not be opened or is not in the format its name says.
    #[error("cannot read weight file {path}: {reason}")]
    WeightFile {
        /// The weight file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },

    /// A tensor the model needs is absent from the checkpoint, under either layer-naming scheme: the message
    /// names both (`encoder.layers.N` as the hub's checkpoints write it, `encoder.layer.N` as transformers 5 does).
    #[error("tensor `{name}` is missing from the checkpoint{}", scheme_twin_note(name))]
    MissingTensor {
        /// Full tensor name (as looked up, before scheme fall-backs).
        name: String,
    },

    /// A checkpoint tensor has a shape other than the config implies.
    #[error("tensor `{name}` has shape {got:?} in the checkpoint, but the config implies {expected:?}")]
    TensorShape {
        /// Full tensor name.
        name: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape found in the checkpoint.
        got: Vec<usize>,
    },

    /// A checkpoint tensor has a dtype that cannot hold weights (e.g. an integer tensor where floats belong).
    #[error("tensor `{name}` has dtype {dtype:?} in the checkpoint; a floating-point tensor is required")]
    TensorDType {
        /// Full tensor name.
        name: String,
        /// The dtype found.
        dtype: candle_core::DType,
    },

    /// A model input has the wrong rank, size or dtype.
    #[error("bad input `{input}`: {reason}")]
    BadInput {
        /// Which input (`input_ids`, `pixel_values`, ...).
        input: &'static str,
        /// What was wrong, with the shapes or dtypes involved.
        reason: String,
    },

    /// `pixel_values` have a spatial size other than the config's `image_size` and interpolation was not requested.
    #[error(
        "pixel_values are {got_h}x{got_w} but the model expects {expected}x{expected}; \
         pass interpolate_pos_encoding = true to accept other sizes"
    )]
    ImageSize {
        /// The configured `image_size`.
        expected: usize,
        /// Input height.
        got_h: usize,
        /// Input width.
        got_w: usize,
    },

    /// A token id lies outside the vocabulary.
    #[error("input_ids contains id {id}, outside the vocabulary of {vocab_size}")]
    TokenOutOfRange {
        /// The offending id.
        id: i64,
        /// The configured vocabulary size.
        vocab_size: usize,
    },

    /// An image could not be decoded (corrupt, truncated, unsupported format, or over the decoder limits).
    #[error("cannot decode image {input}: {source}")]
    ImageDecode {
        /// The image's path, or a description such as `<bytes #3>`.
        input: String,
        /// The decoder's error (`image::ImageError::Limits` for images over the size limits).
        #[source]
        source: image::ImageError,
    },

    /// An image or pixel buffer cannot be preprocessed (empty, mismatched buffer length, ...).
    #[error("invalid image {input}: {reason}")]
    InvalidImage {
        /// The image's path or description.
        input: String,
        /// What was wrong.
        reason: String,
    },

    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer error ({what}): {reason}")]
    Tokenizer {
        /// The file or operation involved.
        what: String,
        /// What went wrong.
        reason: String,
    },

    /// A model could not be fetched from the Hugging Face Hub: unknown repository or revision, a file the repository
    /// lacks, an authentication failure (private or gated repository) or a network error.
    #[error(
        "cannot fetch {}{repo} (revision `{revision}`) from the Hugging Face Hub: {reason}",
        .file.as_deref().map(|f| format!("`{f}` of ")).unwrap_or_default()
    )]
    Hub {
        /// The repository id, e.g. `BAAI/AltCLIP`.
        repo: String,
        /// The revision asked for (branch, tag, `refs/pr/N` or commit hash).
        revision: String,
        /// The file being fetched; `None` when the repository or revision itself failed.
        file: Option<String>,
        /// What went wrong, with the hub's own error code and message where it gave one.
        reason: String,
    },

    /// Offline mode (`HF_HUB_OFFLINE=1` or `HubOptions::with_offline(true)`) and a file is not in the local cache.
    #[error(
        "offline mode: `{file}` of {repo} (revision `{revision}`) is not in the Hugging Face cache at {cache_dir}; \
         run once online, or `huggingface-cli download {repo} --revision {revision}`, or pass a local model directory"
    )]
    OfflineMissing {
        /// The repository id.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The file (or files) missing.
        file: String,
        /// The hub cache directory searched (the one holding `models--ORG--NAME`).
        cache_dir: PathBuf,
    },

    /// A caller-supplied argument is unusable (no labels, duplicate labels, a template without `{}`, ...).
    #[error("invalid {argument}: {reason}")]
    InvalidArgument {
        /// Which argument.
        argument: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// A GPU device cannot be opened: no such GPU, no driver, or the backend not compiled in.
    #[error("cannot open device {device}: {reason}")]
    Device {
        /// The device asked for, e.g. `cuda:1`.
        device: String,
        /// The cause, from candle (e.g. the CUDA driver error).
        reason: String,
    },

    /// A tower loaded on first use could not be: its loading threads did not start or one panicked.
    #[error("cannot load the {tower} tower: {reason}")]
    TowerLoad {
        /// The tower's name in the checkpoint (`text_model`, `vision_model`).
        tower: &'static str,
        /// What went wrong.
        reason: String,
    },

    /// A Parquet file could not be written (the `parquet` feature's `export::ParquetWriter`).
    #[cfg(feature = "parquet")]
    #[error("cannot write Parquet file {path}: {source}")]
    Parquet {
        /// The file being written.
        path: PathBuf,
        /// The writer's error (I/O errors included).
        #[source]
        source: ::parquet::errors::ParquetError,
    },

    /// An error from the candle tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// [`Error::MissingTensor`]'s note on the other naming scheme's name, where the name has one.
fn scheme_twin_note(name: &str) -> String {
    crate::weights::layer_scheme_twin(name).map_or_else(String::new, |twin| format!(" (nor as `{twin}`)"))
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_argument(argument: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            argument,
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_input(input: &'static str, reason: impl Into<String>) -> Self {
        Error::BadInput {
            input,
            reason: reason.into(),
        }
    }

    pub(crate) fn tokenizer(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Tokenizer {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_image(input: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidImage {
            input: input.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn image_decode(input: impl Into<String>, source: image::ImageError) -> Self {
        Error::ImageDecode {
            input: input.into(),
            source,
        }
    }

    /// Names the file or input an error from a lower-level step belongs to: a tokenizer error's `what` becomes
    /// `what` (the old one is kept in front of the reason), an invalid image's input is replaced, and an invalid
    /// config's field is prefixed (`tokenizer_config.json: pad_token`). Other errors already name their source.
    pub(crate) fn naming(self, what: &str) -> Self {
        match self {
            Error::Tokenizer { what: inner, reason } => Error::tokenizer(what, format!("{inner}: {reason}")),
            Error::InvalidImage { reason, .. } => Error::invalid_image(what, reason),
            Error::InvalidConfig { field, reason } => Error::config(format!("{what}: {field}"), reason),
            other => other,
        }
    }
}
