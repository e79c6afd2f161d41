//! Embeds images (files, or directories walked recursively) and/or texts in batches; writes JSON, safetensors or
//! npy.
//!
//! ```sh
//! cargo run --release --example embed -- --image examples/images --text "a cat" --text "一只猫" --output out.json
//! ```
//!
//! JSON output (stable interface): `{"model": "...", "dim": D, "images": [{"path": "...", "embedding": [...]}],
//! "texts": [{"text": "...", "embedding": [...]}], "logits_per_image": [[...]]}` — embeddings are the
//! L2-normalised `image_embeds` / `text_embeds` of `AltClipModel::forward`, in input order; `logits_per_image`
//! only when both images and texts are given. safetensors: tensors `image_embeds`, `text_embeds`,
//! `logits_per_image` with metadata `model`, `images` and `texts` (JSON lists). npy: `--output` is required; with
//! only images or only texts it holds that matrix, with both it is used as a stem for `<stem>.images.npy` and
//! `<stem>.texts.npy`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use altclip::processor::image::ImageInput;
use altclip::retrieval::save_f32_safetensors;
use anyhow::{bail, Context};
use candle_core::Tensor;
use clap::{Parser, ValueEnum};

#[path = "common/model_args.rs"]
mod model_args;
use model_args::ModelArgs;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON document (stdout when no --output).
    Json,
    /// safetensors with metadata.
    Safetensors,
    /// NumPy .npy.
    Npy,
}

/// Embed images and texts with AltCLIP.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image file or directory (walked recursively); repeatable.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// Text to embed; repeatable.
    #[arg(long = "text")]
    pub texts: Vec<String>,
    /// Images (and texts) per forward pass; memory is bounded by this, not by the number of files.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Output file (JSON goes to stdout when absent).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Fail on the first unreadable image instead of reporting and skipping it.
    #[arg(long)]
    pub strict: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Expands directories (recursively, sorted) into image files; files are taken as given. A directory reached
/// twice (symlink cycles, or two links to one directory) is walked once.
pub fn collect_images(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>) -> anyhow::Result<()> {
        let real = std::fs::canonicalize(dir).with_context(|| format!("cannot read directory {}", dir.display()))?;
        if !seen.insert(real) {
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read directory {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list directory {}", dir.display()))?;
        entries.sort();
        for path in entries {
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
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for p in inputs {
        if p.is_dir() {
            walk(p, &mut out, &mut seen)?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("no such file or directory: {}", p.display());
        }
    }
    Ok(out)
}

/// The embeddings computed by [`embed`].
pub struct Embeddings {
    /// Model id or directory.
    pub model: String,
    /// Embedding width.
    pub dim: usize,
    /// Images that were embedded, in input order.
    pub image_paths: Vec<PathBuf>,
    /// (images, dim).
    pub image_embeds: Option<Tensor>,
    /// Texts in input order.
    pub texts: Vec<String>,
    /// (texts, dim).
    pub text_embeds: Option<Tensor>,
    /// Images that could not be read, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// The model's `exp(logit_scale)`.
    pub logit_scale: f32,
}

/// Loads the model and embeds everything in batches.
pub fn embed(args: &Args) -> anyhow::Result<Embeddings> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.images.is_empty() && args.texts.is_empty() {
        bail!("nothing to embed: give --image and/or --text");
    }
    let paths = collect_images(&args.images)?;
    if !args.images.is_empty() && paths.is_empty() {
        bail!("no image files found under the given --image paths");
    }
    let clip = args.model.load(!args.quiet)?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new((paths.len() + args.texts.len()) as u64)
    };
    let mut image_paths = Vec::new();
    let mut image_rows = Vec::new();
    let mut skipped = Vec::new();
    for chunk in paths.chunks(args.batch_size) {
        let inputs: Vec<ImageInput> = chunk.iter().map(|p| ImageInput::Path(p)).collect();
        let result = clip.embed_images_partial(&inputs)?;
        for (i, err) in result.failed {
            if args.strict {
                bail!("{err}");
            }
            eprintln!("skipping {}: {err}", chunk[i].display());
            skipped.push((chunk[i].clone(), err.to_string()));
        }
        if let Some(e) = result.embeddings {
            image_rows.push(e);
            image_paths.extend(result.ok.iter().map(|&i| chunk[i].clone()));
        }
        bar.inc(chunk.len() as u64);
    }
    let mut text_rows = Vec::new();
    for chunk in args.texts.chunks(args.batch_size) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        text_rows.push(clip.embed_texts(&refs)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let cat = |rows: Vec<Tensor>| -> anyhow::Result<Option<Tensor>> {
        Ok(if rows.is_empty() {
            None
        } else {
            Some(Tensor::cat(&rows, 0)?)
        })
    };
    Ok(Embeddings {
        model: clip.name().to_string(),
        dim: clip.embedding_dim(),
        image_paths,
        image_embeds: cat(image_rows)?,
        texts: args.texts.clone(),
        text_embeds: cat(text_rows)?,
        skipped,
        logit_scale: clip.model().logit_scale()?,
    })
}

impl Embeddings {
    /// `scale · image_embeds · text_embedsᵀ`, as AltCLIP's `logits_per_image`.
    fn logits_per_image(&self, scale: f32) -> anyhow::Result<Option<Tensor>> {
        match (&self.image_embeds, &self.text_embeds) {
            (Some(i), Some(t)) => Ok(Some((i.matmul(&t.t()?)? * f64::from(scale))?)),
            _ => Ok(None),
        }
    }

    /// The documented JSON document.
    pub fn to_json(&self, logit_scale: f32) -> anyhow::Result<serde_json::Value> {
        let rows = |t: &Option<Tensor>| -> anyhow::Result<Vec<Vec<f32>>> {
            Ok(match t {
                Some(t) => t.to_vec2()?,
                None => Vec::new(),
            })
        };
        let images: Vec<serde_json::Value> = self
            .image_paths
            .iter()
            .zip(rows(&self.image_embeds)?)
            .map(|(p, e)| serde_json::json!({"path": p.display().to_string(), "embedding": e}))
            .collect();
        let texts: Vec<serde_json::Value> = self
            .texts
            .iter()
            .zip(rows(&self.text_embeds)?)
            .map(|(t, e)| serde_json::json!({"text": t, "embedding": e}))
            .collect();
        let mut doc = serde_json::json!({"model": self.model, "dim": self.dim, "images": images, "texts": texts});
        if let Some(logits) = self.logits_per_image(logit_scale)? {
            doc["logits_per_image"] = serde_json::to_value(logits.to_vec2::<f32>()?)?;
        }
        Ok(doc)
    }

    /// Streams the documented JSON document to `w` row by row — the same bytes as serialising [`Self::to_json`],
    /// without building a JSON tree of every embedding (several times the embeddings' own size) first.
    pub fn write_json(&self, logit_scale: f32, w: &mut dyn Write) -> anyhow::Result<()> {
        fn row(w: &mut dyn Write, values: &[f32]) -> anyhow::Result<()> {
            w.write_all(b"[")?;
            for (k, &v) in values.iter().enumerate() {
                if k > 0 {
                    w.write_all(b",")?;
                }
                // As `serde_json::Value` holds it: f64 (non-finite as null).
                serde_json::to_writer(&mut *w, &f64::from(v))?;
            }
            w.write_all(b"]")?;
            Ok(())
        }
        fn rows<S: serde::Serialize>(
            w: &mut dyn Write,
            t: &Option<Tensor>,
            labels: &[S],
            key: &str,
        ) -> anyhow::Result<()> {
            w.write_all(b"[")?;
            if let Some(t) = t {
                for (i, label) in labels.iter().enumerate().take(t.dim(0)?) {
                    if i > 0 {
                        w.write_all(b",")?;
                    }
                    write!(w, "{{\"{key}\":")?;
                    serde_json::to_writer(&mut *w, label)?;
                    w.write_all(b",\"embedding\":")?;
                    row(w, &t.get(i)?.to_vec1::<f32>()?)?;
                    w.write_all(b"}")?;
                }
            }
            w.write_all(b"]")?;
            Ok(())
        }
        let paths: Vec<String> = self.image_paths.iter().map(|p| p.display().to_string()).collect();
        w.write_all(b"{\"model\":")?;
        serde_json::to_writer(&mut *w, &self.model)?;
        write!(w, ",\"dim\":{},\"images\":", self.dim)?;
        rows(w, &self.image_embeds, &paths, "path")?;
        w.write_all(b",\"texts\":")?;
        rows(w, &self.text_embeds, &self.texts, "text")?;
        if let Some(logits) = self.logits_per_image(logit_scale)? {
            w.write_all(b",\"logits_per_image\":[")?;
            for i in 0..logits.dim(0)? {
                if i > 0 {
                    w.write_all(b",")?;
                }
                row(w, &logits.get(i)?.to_vec1::<f32>()?)?;
            }
            w.write_all(b"]")?;
        }
        w.write_all(b"}")?;
        Ok(())
    }
}

/// Embeds and writes the output; returns the embeddings for callers that want them.
pub fn run(args: &Args, stdout: &mut dyn Write) -> anyhow::Result<Embeddings> {
    if args.format == Format::Npy && args.output.is_none() {
        bail!("--format npy needs --output");
    }
    if let Some(out) = &args.output {
        // Fail before the work if the output cannot be created.
        std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
    }
    let emb = embed(args)?;
    let scale = emb.logit_scale;
    match args.format {
        Format::Json => match &args.output {
            Some(path) => {
                let write = || -> anyhow::Result<()> {
                    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
                    emb.write_json(scale, &mut file)?;
                    file.flush()?;
                    Ok(())
                };
                write().with_context(|| format!("cannot write {}", path.display()))?;
            }
            None => {
                let mut out = std::io::BufWriter::new(&mut *stdout);
                emb.write_json(scale, &mut out)?;
                writeln!(out)?;
                out.flush()?;
            }
        },
        Format::Safetensors => {
            let path = args
                .output
                .clone()
                .unwrap_or_else(|| PathBuf::from("embeddings.safetensors"));
            let logits = emb.logits_per_image(scale)?;
            let mut tensors: Vec<(&str, &Tensor)> = Vec::new();
            if let Some(t) = &emb.image_embeds {
                tensors.push(("image_embeds", t));
            }
            if let Some(t) = &emb.text_embeds {
                tensors.push(("text_embeds", t));
            }
            if let Some(t) = &logits {
                tensors.push(("logits_per_image", t));
            }
            let paths: Vec<String> = emb.image_paths.iter().map(|p| p.display().to_string()).collect();
            let metadata: HashMap<String, String> = [
                ("model".to_string(), emb.model.clone()),
                ("images".to_string(), serde_json::to_string(&paths)?),
                ("texts".to_string(), serde_json::to_string(&emb.texts)?),
            ]
            .into();
            save_f32_safetensors(&tensors, metadata, &path)?;
        }
        Format::Npy => {
            let out = args.output.clone().unwrap_or_default();
            match (&emb.image_embeds, &emb.text_embeds) {
                (Some(i), Some(t)) => {
                    i.write_npy(out.with_extension("images.npy"))?;
                    t.write_npy(out.with_extension("texts.npy"))?;
                }
                (Some(e), None) | (None, Some(e)) => e.write_npy(&out)?,
                (None, None) => bail!("no image could be read"),
            }
        }
    }
    Ok(emb)
}

#[allow(dead_code)]
fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args, &mut std::io::stdout().lock()) {
        Ok(emb) => {
            if !emb.skipped.is_empty() {
                eprintln!("{} image(s) could not be read and were skipped", emb.skipped.len());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
