//! Embedding many inputs in batches and writing them out — the `embed` tool's work, owned here so that every front
//! end (the example, a service, the Python binding) walks directories, shards and writes the same bytes: a streamed
//! JSON document, safetensors with metadata, `.npy`, or (feature `parquet`) Parquet streamed row group by row group
//! (`parquet.rs`); `shard.rs` splits an input list between jobs. Reached from the examples, the binding and user
//! code; uses [`AltClip`].
//!
//! The JSON document (a stable interface, keys in this order):
//! `{"model": "...", "dim": D, "images": [{"path": "...", "embedding": [...]}], "texts": [{"text": "...",
//! "embedding": [...]}], "logits_per_image": [[...]]}`, with `logits_per_image` only when there are both images
//! and texts. It is written row by row, never built as a JSON tree, so its memory is that of the embeddings.
//!
//! The Parquet files (feature `parquet`, `write_parquet`) have one row per input, in input order, failures
//! included: `path: utf8 not null` (images) or `text: utf8 not null` (texts); `embedding: fixed_size_list<float32,
//! D>` (null for an input that failed); `error: utf8` (the error's message, null when embedded). File key-value
//! metadata (also on the Arrow schema): `model` ([`AltClip::name`]) and `dim` (D, decimal).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::pipeline::AltClip;
use crate::prefetch::ImagePipeline;
use crate::processor::image::ImageInput;

#[cfg(feature = "parquet")]
mod parquet;
mod shard;

#[cfg(feature = "parquet")]
pub use self::parquet::{
    arrow_schema, write_parquet, InputKind, ParquetOptions, ParquetSummary, ParquetWriter, Row, DEFAULT_ROW_GROUP_SIZE,
};
pub use shard::Shard;

/// File extensions (lower case) [`collect_images`] takes from a directory.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Expands directories (recursively, sorted) into image files, by [`IMAGE_EXTENSIONS`]; files are taken as given.
/// A directory reached twice (symlink cycles, or two links to one directory) is walked once. An input that does
/// not exist, or a directory that cannot be read, is [`Error::Io`] naming it.
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        if meta.is_dir() {
            walk(p, &mut out, &mut seen)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>) -> Result<()> {
    let real = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    if !seen.insert(real) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect())
        .map_err(|e| Error::io(dir, e))?;
    entries.sort();
    for path in entries {
        // `is_dir` follows links; a dangling link with an image name is kept, to be reported when it fails to load.
        if path.is_dir() {
            walk(&path, out, seen)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// How [`embed_batches`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Images (and texts) per forward pass; memory is bounded by this, not by the number of inputs. Default 16.
    pub batch_size: usize,
    /// Fail on the first unreadable image instead of listing it in [`Embeddings::skipped`]. Default `false`.
    pub strict: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            batch_size: 16,
            strict: false,
        }
    }
}

/// The embeddings of a set of images and texts, as [`embed_batches`] computes them.
#[derive(Debug)]
pub struct Embeddings {
    /// Model id or directory ([`AltClip::name`]).
    pub model: String,
    /// Embedding width.
    pub dim: usize,
    /// The images that were embedded, in input order.
    pub image_paths: Vec<PathBuf>,
    /// (images, dim): L2-normalised `image_embeds`, f32; `None` without images.
    pub image_embeds: Option<Tensor>,
    /// The texts, in input order.
    pub texts: Vec<String>,
    /// (texts, dim): L2-normalised `text_embeds`, f32; `None` without texts.
    pub text_embeds: Option<Tensor>,
    /// (images, texts): `exp(logit_scale) · cosine` ([`AltClip::logits`]); only with both images and texts.
    pub logits_per_image: Option<Tensor>,
    /// Images that could not be read, with the error (empty in strict mode).
    pub skipped: Vec<(PathBuf, Error)>,
    /// Wall-clock seconds the images took (decode and model, pipelined); 0 without images.
    pub image_seconds: f64,
}

impl Embeddings {
    /// Images (embedded or skipped) per second of [`Embeddings::image_seconds`]; `None` without images.
    pub fn images_per_second(&self) -> Option<f64> {
        per_second(self.image_paths.len() + self.skipped.len(), self.image_seconds)
    }
}

/// `n / seconds`; `None` for no inputs (or no time).
fn per_second(n: usize, seconds: f64) -> Option<f64> {
    (n > 0 && seconds > 0.0).then(|| n as f64 / seconds)
}

/// The image pipeline of `options` for `clip`, after the checks every batch entry point makes: a usable batch size
/// (one check for images and texts alike: `chunks(0)` would panic on the texts) and something to embed.
fn checked_pipeline(
    clip: &AltClip,
    images: &[PathBuf],
    texts: &[String],
    options: &BatchOptions,
) -> Result<ImagePipeline> {
    let pipeline = ImagePipeline {
        batch_size: options.batch_size,
        depth: clip.image_pipeline().depth,
    };
    pipeline.validate()?;
    if images.is_empty() && texts.is_empty() {
        return Err(Error::invalid_argument(
            "inputs",
            "nothing to embed: give images and/or texts",
        ));
    }
    Ok(pipeline)
}

/// Embeds `texts` in chunks of `batch_size` ([`AltClip::embed_texts`]), handing each chunk and its (chunk, dim)
/// embeddings to `on_batch`.
fn text_batches(
    clip: &AltClip,
    texts: &[String],
    batch_size: usize,
    on_batch: &mut dyn FnMut(&[String], Tensor) -> Result<()>,
) -> Result<()> {
    for chunk in texts.chunks(batch_size) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        on_batch(chunk, clip.embed_texts(&refs)?)?;
    }
    Ok(())
}

/// Embeds `images` and `texts` in batches of `options.batch_size`, calling `on_progress` with the number of inputs
/// each batch finished. Images are decoded on all cores while the model runs the previous batch
/// ([`AltClip::embed_image_batches`]). An image that cannot be read is skipped and listed in
/// [`Embeddings::skipped`], or (strict) is the error returned.
pub fn embed_batches(
    clip: &AltClip,
    images: &[PathBuf],
    texts: &[String],
    options: &BatchOptions,
    on_progress: &mut dyn FnMut(usize),
) -> Result<Embeddings> {
    let pipeline = checked_pipeline(clip, images, texts, options)?;
    let images = image_batches(clip, images, pipeline, options.strict, on_progress)?;
    let mut text_rows = Vec::new();
    text_batches(clip, texts, options.batch_size, &mut |chunk, embeds| {
        text_rows.push(embeds);
        on_progress(chunk.len());
        Ok(())
    })?;
    let text_embeds = concat(&text_rows)?;
    let logits_per_image = match (&images.embeds, &text_embeds) {
        (Some(i), Some(t)) => Some(clip.logits(i, t)?),
        _ => None,
    };
    Ok(Embeddings {
        model: clip.name().to_string(),
        dim: clip.embedding_dim(),
        image_paths: images.paths,
        image_embeds: images.embeds,
        texts: texts.to_vec(),
        text_embeds,
        logits_per_image,
        skipped: images.skipped,
        image_seconds: images.seconds,
    })
}

/// The image half of [`embed_batches`].
struct ImageBatches {
    paths: Vec<PathBuf>,
    embeds: Option<Tensor>,
    skipped: Vec<(PathBuf, Error)>,
    seconds: f64,
}

/// The images through [`AltClip::embed_image_batches`] with `pipeline`; `strict` makes the first unreadable
/// image the error.
fn image_batches(
    clip: &AltClip,
    images: &[PathBuf],
    pipeline: ImagePipeline,
    strict: bool,
    on_progress: &mut dyn FnMut(usize),
) -> Result<ImageBatches> {
    let (mut paths, mut rows, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let inputs: Vec<ImageInput> = images.iter().map(|p| ImageInput::Path(p)).collect();
    let started = Instant::now();
    clip.embed_image_batches(&inputs, pipeline, &mut |batch| {
        let done = batch.ok.len() + batch.failed.len();
        for (i, err) in batch.failed {
            if strict {
                return Err(err);
            }
            skipped.push((images[i].clone(), err));
        }
        rows.extend(batch.embeddings);
        paths.extend(batch.ok.iter().map(|&i| images[i].clone()));
        on_progress(done);
        Ok(())
    })?;
    Ok(ImageBatches {
        paths,
        embeds: concat(&rows)?,
        skipped,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn concat(rows: &[Tensor]) -> Result<Option<Tensor>> {
    Ok(if rows.is_empty() {
        None
    } else {
        Some(Tensor::cat(rows, 0)?)
    })
}

/// The output formats: [`Embeddings::save`] writes the first three, `write_parquet` (feature `parquet`) Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The JSON document of the [module docs](self).
    Json,
    /// Tensors `image_embeds`, `text_embeds`, `logits_per_image`; metadata `model`, `images`, `texts` (JSON lists).
    Safetensors,
    /// NumPy `.npy`: one matrix, or `<stem>.images.npy` and `<stem>.texts.npy` when there are both.
    Npy,
    /// Parquet, one row per input (errors included), streamed while embedding by [`write_parquet`] (not
    /// [`Embeddings::save`], which has only the embedded rows); feature `parquet`.
    #[cfg(feature = "parquet")]
    Parquet,
}

impl std::str::FromStr for Format {
    type Err = Error;

    /// `json`, `safetensors`, `npy` or (feature `parquet`) `parquet`; `parquet` without the feature is an error
    /// that says so.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "safetensors" => Ok(Self::Safetensors),
            "npy" => Ok(Self::Npy),
            #[cfg(feature = "parquet")]
            "parquet" => Ok(Self::Parquet),
            #[cfg(not(feature = "parquet"))]
            "parquet" => Err(Error::invalid_argument(
                "format",
                "parquet output is not compiled in: build altclip with `--features parquet`",
            )),
            other => Err(Error::invalid_argument(
                "format",
                format!("{other:?} (expected json, safetensors, npy or parquet)"),
            )),
        }
    }
}

impl Format {
    /// The files that writing this format to `path` creates, for inputs with images and/or texts: `path`, or for
    /// npy and parquet with both `<stem>.images.<ext>` and `<stem>.texts.<ext>` beside it, images first (npy:
    /// `path` alone for the texts when no image could be read).
    pub fn output_files(self, path: &Path, has_images: bool, has_texts: bool) -> Vec<PathBuf> {
        let ext = match self {
            Format::Json | Format::Safetensors => return vec![path.to_path_buf()],
            Format::Npy => "npy",
            #[cfg(feature = "parquet")]
            Format::Parquet => "parquet",
        };
        let (images, texts) = kind_paths(path, ext, has_images, has_texts);
        images.into_iter().chain(texts).collect()
    }
}

/// Where images and texts go (`None`: that kind is absent): `path` for one kind; for both,
/// `<stem>.images.<ext>` and `<stem>.texts.<ext>` beside it.
fn kind_paths(path: &Path, ext: &str, has_images: bool, has_texts: bool) -> (Option<PathBuf>, Option<PathBuf>) {
    match (has_images, has_texts) {
        (true, true) => (
            Some(path.with_extension(format!("images.{ext}"))),
            Some(path.with_extension(format!("texts.{ext}"))),
        ),
        (images, texts) => (images.then(|| path.to_path_buf()), texts.then(|| path.to_path_buf())),
    }
}

/// Creates (truncates) `path`, so that an output that cannot be written fails before the work, as [`Error::Io`].
pub fn check_writable(path: &Path) -> Result<()> {
    std::fs::File::create(path).map(drop).map_err(|e| Error::io(path, e))
}

/// Writes bytes to the output named `target`, as [`Error::Io`] naming it.
struct Out<'a> {
    w: &'a mut dyn Write,
    target: &'a Path,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.w.write_all(bytes).map_err(|e| Error::io(self.target, e))
    }

    /// `value` as serde_json writes it (strings escaped; `f64` shortest round-trip, non-finite as `null`).
    fn json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let text = serde_json::to_string(value).map_err(|source| Error::Json {
            what: format!("output {}", self.target.display()),
            source,
        })?;
        self.put(text.as_bytes())
    }

    /// `[v0,v1,...]`, each value as the f64 a `serde_json::Value` holds (the embed tool's bytes since 0.1).
    fn row(&mut self, values: &[f32]) -> Result<()> {
        self.put(b"[")?;
        for (k, &v) in values.iter().enumerate() {
            if k > 0 {
                self.put(b",")?;
            }
            self.json(&f64::from(v))?;
        }
        self.put(b"]")
    }

    /// `[{"<key>":<label>,"embedding":[...]},...]` over the rows of `t` (`[]` for `None`).
    fn labelled_rows<S: serde::Serialize>(&mut self, t: Option<&Tensor>, labels: &[S], key: &str) -> Result<()> {
        self.put(b"[")?;
        if let Some(t) = t {
            for (i, label) in labels.iter().enumerate().take(t.dim(0)?) {
                if i > 0 {
                    self.put(b",")?;
                }
                self.put(format!("{{\"{key}\":").as_bytes())?;
                self.json(label)?;
                self.put(b",\"embedding\":")?;
                self.row(&t.get(i)?.to_dtype(DType::F32)?.to_vec1::<f32>()?)?;
                self.put(b"}")?;
            }
        }
        self.put(b"]")
    }
}

impl Embeddings {
    fn path_strings(&self) -> Vec<String> {
        self.image_paths.iter().map(|p| p.display().to_string()).collect()
    }

    /// Streams the JSON document of the [module docs](self) to `w`, keys in the documented order, row by row;
    /// `target` names the output in errors (a file, or e.g. `<stdout>`).
    pub fn write_json(&self, w: &mut dyn Write, target: &Path) -> Result<()> {
        let mut out = Out { w, target };
        out.put(b"{\"model\":")?;
        out.json(&self.model)?;
        out.put(format!(",\"dim\":{},\"images\":", self.dim).as_bytes())?;
        out.labelled_rows(self.image_embeds.as_ref(), &self.path_strings(), "path")?;
        out.put(b",\"texts\":")?;
        out.labelled_rows(self.text_embeds.as_ref(), &self.texts, "text")?;
        if let Some(logits) = &self.logits_per_image {
            out.put(b",\"logits_per_image\":[")?;
            for i in 0..logits.dim(0)? {
                if i > 0 {
                    out.put(b",")?;
                }
                out.row(&logits.get(i)?.to_dtype(DType::F32)?.to_vec1::<f32>()?)?;
            }
            out.put(b"]")?;
        }
        out.put(b"}")
    }

    /// Writes the JSON document to the file `path` (no trailing newline).
    pub fn save_json(&self, path: &Path) -> Result<()> {
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut w = std::io::BufWriter::new(file);
        self.write_json(&mut w, path)?;
        w.flush().map_err(|e| Error::io(path, e))
    }

    /// Writes the embeddings (and logits) as f32 safetensors with metadata `model`, `images` and `texts`.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(&str, &Tensor)> = Vec::new();
        let named = [
            ("image_embeds", &self.image_embeds),
            ("text_embeds", &self.text_embeds),
            ("logits_per_image", &self.logits_per_image),
        ];
        for (name, t) in named {
            if let Some(t) = t {
                tensors.push((name, t));
            }
        }
        let list = |what: &str, items: &[String]| {
            serde_json::to_string(items).map_err(|source| Error::Json {
                what: format!("{what} metadata of {}", path.display()),
                source,
            })
        };
        let metadata: HashMap<String, String> = [
            ("model".to_string(), self.model.clone()),
            ("images".to_string(), list("images", &self.path_strings())?),
            ("texts".to_string(), list("texts", &self.texts)?),
        ]
        .into();
        save_f32_safetensors(&tensors, metadata, path)
    }

    /// Writes `.npy`: the one matrix at `path`, or with both images and texts `<stem>.images.npy` and
    /// `<stem>.texts.npy` beside it. Nothing embedded (every image unreadable) is an error.
    pub fn save_npy(&self, path: &Path) -> Result<()> {
        let write = |t: &Tensor, p: &Path| {
            t.write_npy(p).map_err(|e| match e {
                candle_core::Error::Io(source) => Error::io(p, source),
                other => other.into(),
            })
        };
        let (images, texts) = (&self.image_embeds, &self.text_embeds);
        if images.is_none() && texts.is_none() {
            return Err(Error::invalid_argument(
                "images",
                "no image could be read: nothing to write",
            ));
        }
        let (image_path, text_path) = kind_paths(path, "npy", images.is_some(), texts.is_some());
        for (t, p) in [(images, image_path), (texts, text_path)] {
            if let (Some(t), Some(p)) = (t, p) {
                write(t, &p)?;
            }
        }
        Ok(())
    }

    /// Writes `path` in `format`.
    pub fn save(&self, format: Format, path: &Path) -> Result<()> {
        match format {
            Format::Json => self.save_json(path),
            Format::Safetensors => self.save_safetensors(path),
            Format::Npy => self.save_npy(path),
            #[cfg(feature = "parquet")]
            Format::Parquet => Err(Error::invalid_argument(
                "format",
                "parquet has a row per input, failures included, which `Embeddings` does not keep: write it while \
                 embedding with `export::write_parquet`",
            )),
        }
    }
}

/// Writes tensors as f32 safetensors with string metadata (candle's own writer has no metadata).
pub fn save_f32_safetensors(
    tensors: &[(&str, &Tensor)],
    metadata: HashMap<String, String>,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    let file_err = |reason: String| Error::WeightFile {
        path: path.into(),
        reason,
    };
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((*name, t.dims().to_vec(), bytes));
    }
    let mut views = Vec::with_capacity(buffers.len());
    for (name, shape, bytes) in &buffers {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
            .map_err(|e| file_err(e.to_string()))?;
        views.push((*name, view));
    }
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(source) => Error::io(path, source),
        other => file_err(other.to_string()),
    })
}
