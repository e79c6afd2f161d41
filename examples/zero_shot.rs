//! Zero-shot image classification with AltCLIP, labels in any language.
//!
//! ```sh
//! cargo run --release --example zero_shot -- --image examples/images/cat.png --labels "cat,dog,猫,咖啡"
//! cargo run --release --example zero_shot -- --model-dir tests/fixtures/tiny_full \
//!     --image examples/images/cat.png --labels cat,coffee   # random-weight test model: smoke run only
//! ```

use std::io::Write;
use std::path::PathBuf;

use altclip::pipeline::{parse_device, parse_dtype};
use altclip::processor::image::ImageInput;
use altclip::zero_shot::{CHINESE_TEMPLATES, ENGLISH_TEMPLATES};
use altclip::{AltClip, LoadOptions, ZeroShotClassifier};
use anyhow::{bail, Context};
use clap::Parser;

/// Classify images against free-text labels (any language) with AltCLIP.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// Image files to classify.
    #[arg(long = "image", required = true, num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// Comma-separated labels, e.g. "cat,dog,猫".
    #[arg(long)]
    pub labels: String,
    /// Prompt template with `{}` for the label (repeatable); default: English and Chinese CLIP templates.
    #[arg(long = "template")]
    pub templates: Vec<String>,
    /// Hub model id.
    #[arg(long, default_value = "BAAI/AltCLIP", conflicts_with = "model_dir")]
    pub model: String,
    /// Local model directory (config.json, weights, tokenizer, preprocessor_config.json).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Hub revision (BAAI/AltCLIP's safetensors copy: refs/pr/7).
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// How many labels to show per image.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
}

/// Loads the model and prints a ranked table per image to `out`.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let labels: Vec<&str> = args.labels.split(',').map(str::trim).collect();
    if args.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let options = LoadOptions::default()
        .with_revision(args.revision.clone())
        .with_device(parse_device(&args.device)?)
        .with_dtype(parse_dtype(&args.dtype)?);
    let clip = match &args.model_dir {
        Some(dir) => AltClip::from_dir(dir, &options).with_context(|| format!("loading {}", dir.display()))?,
        None => AltClip::from_pretrained(&args.model, &options).with_context(|| format!("loading {}", args.model))?,
    };
    let classifier = if args.templates.is_empty() {
        let templates: Vec<&str> = ENGLISH_TEMPLATES.iter().chain(CHINESE_TEMPLATES).copied().collect();
        ZeroShotClassifier::new(&clip, &labels, &templates)?
    } else {
        ZeroShotClassifier::new(&clip, &labels, &args.templates)?
    };
    let inputs: Vec<ImageInput> = args.images.iter().map(|p| ImageInput::Path(p)).collect();
    let results = classifier.classify(&clip, &inputs)?;
    for (path, scores) in args.images.iter().zip(results) {
        writeln!(out, "{}", path.display())?;
        writeln!(
            out,
            "  {:>4}  {:<24} {:>11}  {:>8}",
            "rank", "label", "probability", "logit"
        )?;
        for (rank, s) in scores.iter().take(args.top_k).enumerate() {
            writeln!(
                out,
                "  {:>4}  {:<24} {:>11.4}  {:>8.3}",
                rank + 1,
                s.label,
                s.probability,
                s.logit
            )?;
        }
    }
    Ok(())
}

#[allow(dead_code)]
fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args, &mut std::io::stdout().lock()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
