//! Embeds images (files, or directories walked recursively) and/or texts in batches; writes JSON, safetensors or
//! npy (the formats of `altclip::export`, whose docs give the JSON document's keys). Images are decoded on all
//! cores while the model runs the previous batch (`--prefetch`); the images/s goes to stderr.
//!
//! ```sh
//! cargo run --release --example embed -- --image examples/images --text "a cat" --text "一只猫" --output out.json
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use altclip::export::{self, BatchOptions, Embeddings, Format};
use anyhow::{bail, Context};
use clap::Parser;

#[path = "common/model_args.rs"]
mod model_args;
use model_args::ModelArgs;

/// Embed images and texts with AltCLIP.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Image file or directory (walked recursively); repeatable.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// Text to embed; repeatable.
    #[arg(long = "text")]
    texts: Vec<String>,
    /// Images (and texts) per forward pass; memory is bounded by this, not by the number of files.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Batches decoded ahead of the model (on all cores, while it runs); 0 decodes and runs in turn.
    #[arg(long, default_value_t = 2)]
    prefetch: usize,
    /// Output format: json, safetensors or npy.
    #[arg(long, default_value = "json")]
    format: Format,
    /// Output file (JSON goes to stdout when absent; safetensors to embeddings.safetensors).
    #[arg(long, required_if_eq("format", "npy"))]
    output: Option<PathBuf>,
    /// Fail on the first unreadable image instead of reporting and skipping it.
    #[arg(long)]
    strict: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Embeds and writes the output (JSON without `--output` to `stdout`).
fn run(args: &Args, stdout: &mut dyn Write) -> anyhow::Result<Embeddings> {
    if let Some(out) = &args.output {
        // Before the work.
        export::check_writable(out).with_context(|| format!("cannot write {}", out.display()))?;
    }
    let paths = export::collect_images(&args.images)?;
    if !args.images.is_empty() && paths.is_empty() {
        bail!("no image files found under the given --image paths");
    }
    let pipeline = altclip::ImagePipeline {
        batch_size: usize::try_from(args.batch_size)?,
        depth: args.prefetch,
    };
    let clip = args.model.load(!args.quiet)?.with_image_pipeline(pipeline);
    let bar = match args.quiet {
        true => indicatif::ProgressBar::hidden(),
        false => indicatif::ProgressBar::new((paths.len() + args.texts.len()) as u64),
    };
    let options = BatchOptions {
        batch_size: pipeline.batch_size,
        strict: args.strict,
    };
    let emb = export::embed_batches(&clip, &paths, &args.texts, &options, &mut |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    for (path, err) in &emb.skipped {
        eprintln!("skipping {}: {err}", path.display());
    }
    if let Some(rate) = emb.images_per_second() {
        eprintln!(
            "{} image(s) in {:.2} s: {rate:.1} images/s (batch {}, prefetch {})",
            emb.image_paths.len() + emb.skipped.len(),
            emb.image_seconds,
            pipeline.batch_size,
            pipeline.depth
        );
    }
    match (&args.output, args.format) {
        (Some(path), format) => emb.save(format, path)?,
        (None, Format::Json) => {
            let mut out = std::io::BufWriter::new(stdout);
            emb.write_json(&mut out, Path::new("<stdout>"))?;
            writeln!(out)?;
            out.flush()?;
        }
        (None, format) => emb.save(format, Path::new("embeddings.safetensors"))?,
    }
    Ok(emb)
}

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

/// The command line end to end on the tiny test model (`cargo test --example embed`); the library calls it makes
/// are tested in tests/pipeline.rs.
#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let model_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny_full");
        let mut argv = vec!["embed", "--model-dir", model_dir, "--quiet"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    fn error(extra: &[&str]) -> String {
        match args(extra) {
            Ok(a) => format!("{:#}", run(&a, &mut Vec::new()).err().unwrap()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn writes_json_to_stdout_and_safetensors_by_default_name() {
        let cat = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/images/cat.png");
        let mut stdout = Vec::new();
        let emb = run(&args(&["--image", cat, "--text", "猫"]).unwrap(), &mut stdout).unwrap();
        let mut want = Vec::new();
        emb.write_json(&mut want, Path::new("-")).unwrap();
        want.push(b'\n');
        assert_eq!(stdout, want);
        let doc: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
        assert_eq!(
            (doc["dim"].as_u64(), doc["texts"][0]["text"].as_str()),
            (Some(24), Some("猫"))
        );
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        assert!(error(&[]).contains("nothing to embed"));
        let missing = error(&["--image", "/definitely/not/here"]);
        assert!(missing.to_lowercase().contains("no such file") && missing.contains("/definitely/not/here"));
        let unwritable = "/proc/definitely-not-writable/out.json";
        assert!(error(&["--text", "x", "--output", unwritable]).contains("cannot write"));
        assert!(error(&["--text", "x", "--format", "npy"]).contains("--output"));
        assert!(error(&["--text", "x", "--batch-size", "0"]).contains("batch-size"));
        assert!(error(&["--text", "x", "--device", "tpu"]).contains("device"));
        assert!(error(&["--text", "x", "--format", "csv"]).contains("json, safetensors or npy"));
        let empty = tempfile::tempdir().unwrap();
        let dir = empty.path().to_str().unwrap();
        assert!(error(&["--image", dir]).contains("no image files found"));
        let err = Args::try_parse_from(["embed", "--model-dir", "/definitely/not/here", "--text", "x"]).unwrap();
        assert!(format!("{:#}", run(&err, &mut Vec::new()).err().unwrap()).contains("/definitely/not/here"));
    }
}
