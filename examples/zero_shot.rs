//! Zero-shot image classification with AltCLIP, labels in any language.
//!
//! ```sh
//! cargo run --release --example zero_shot -- --image examples/images/cat.png --labels "cat,dog,猫,咖啡"
//! cargo run --release --example zero_shot -- --model-dir tests/fixtures/tiny_full \
//!     --image examples/images/cat.png --labels cat,coffee   # random-weight test model: smoke run only
//! ```

use std::io::Write;
use std::path::PathBuf;

use altclip::processor::image::ImageInput;
use altclip::zero_shot::{CHINESE_TEMPLATES, ENGLISH_TEMPLATES};
use altclip::ZeroShotClassifier;
use anyhow::bail;
use clap::Parser;

#[path = "common/model_args.rs"]
mod model_args;
use model_args::ModelArgs;

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
    #[command(flatten)]
    pub model: ModelArgs,
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
    let clip = args.model.load(true)?;
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
