//! Embeds images (files, or directories walked recursively) and/or texts in batches; writes JSON, safetensors, npy
//! or (feature `parquet`) Parquet: the formats of `altclip::export`, whose docs give the JSON document's keys and
//! the Parquet schema. Images are decoded on all cores while the model runs the previous batch (`--prefetch`); the
//! images/s goes to stderr. `--shard I/N` embeds the I-th of N slices of the sorted inputs, for N parallel jobs.
//!
//! ```sh
//! cargo run --release --example embed -- --image examples/images --text "a cat" --text "一只猫" --output out.json
//! cargo run --release --features parquet --example embed -- --image photos/ --shard 0/4 --format parquet \
//!     --output part-0.parquet
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use altclip::export::{self, BatchOptions, Embeddings, Format, Shard};
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
    /// Output format: json, safetensors, npy or parquet (built with `--features parquet`).
    #[arg(long, default_value = "json")]
    format: Format,
    /// Output file (JSON goes to stdout when absent; safetensors to embeddings.safetensors). With both images and
    /// texts, npy and parquet write `<stem>.images.<ext>` and `<stem>.texts.<ext>` beside it.
    #[arg(long, required_if_eq_any([("format", "npy"), ("format", "parquet")]))]
    output: Option<PathBuf>,
    /// Only the I-th of N contiguous slices (0 <= I < N) of the images and of the texts, each list sorted first
    /// (byte order of the paths / texts), so that N jobs together embed every input exactly once.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Parquet rows per row group (memory is bounded by it).
    #[cfg(feature = "parquet")]
    #[arg(long, default_value_t = export::DEFAULT_ROW_GROUP_SIZE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    row_group_size: usize,
    /// Fail on the first unreadable image instead of reporting and skipping it (parquet: writing its error row).
    #[arg(long)]
    strict: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// What [`run`] wrote.
#[derive(Debug)]
enum Written {
    /// JSON, safetensors or npy, from the embeddings in memory.
    Embeddings(Embeddings),
    /// Parquet, streamed.
    #[cfg(feature = "parquet")]
    Parquet(export::ParquetSummary),
}

/// The images (directories walked) and texts to embed: all of them, or with `--shard` this job's slice of each.
fn inputs(args: &Args) -> anyhow::Result<(Vec<PathBuf>, Vec<String>)> {
    let paths = export::collect_images(&args.images)?;
    if !args.images.is_empty() && paths.is_empty() {
        bail!("no image files found under the given --image paths");
    }
    let Some(shard) = args.shard else {
        return Ok((paths, args.texts.clone()));
    };
    let (all_images, all_texts) = (paths.len(), args.texts.len());
    let (paths, texts) = (shard.take(paths), shard.take(args.texts.clone()));
    if paths.is_empty() && texts.is_empty() {
        bail!("shard {shard} of {all_images} image(s) and {all_texts} text(s) is empty: use fewer shards");
    }
    Ok((paths, texts))
}

/// Embeds and writes the output (JSON without `--output` to `stdout`).
fn run(args: &Args, stdout: &mut dyn Write) -> anyhow::Result<Written> {
    let (paths, texts) = inputs(args)?;
    if let Some(out) = &args.output {
        // Before the work.
        for file in args.format.output_files(out, !paths.is_empty(), !texts.is_empty()) {
            export::check_writable(&file).with_context(|| format!("cannot write {}", file.display()))?;
        }
    }
    let pipeline = altclip::ImagePipeline {
        batch_size: usize::try_from(args.batch_size)?,
        depth: args.prefetch,
    };
    let clip = args.model.load(!args.quiet)?.with_image_pipeline(pipeline);
    let bar = match args.quiet {
        true => indicatif::ProgressBar::hidden(),
        false => indicatif::ProgressBar::new((paths.len() + texts.len()) as u64),
    };
    let options = BatchOptions {
        batch_size: pipeline.batch_size,
        strict: args.strict,
    };
    #[cfg(feature = "parquet")]
    if let (Format::Parquet, Some(out)) = (args.format, &args.output) {
        let parquet = export::ParquetOptions {
            row_group_size: args.row_group_size,
        };
        let summary = export::write_parquet(&clip, &paths, &texts, &options, &parquet, out, &mut |n| {
            bar.inc(n as u64)
        })?;
        bar.finish_and_clear();
        report_rate(
            summary.images,
            summary.image_seconds,
            summary.images_per_second(),
            pipeline,
        );
        return Ok(Written::Parquet(summary));
    }
    let emb = export::embed_batches(&clip, &paths, &texts, &options, &mut |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    for (path, err) in &emb.skipped {
        eprintln!("skipping {}: {err}", path.display());
    }
    let images = emb.image_paths.len() + emb.skipped.len();
    report_rate(images, emb.image_seconds, emb.images_per_second(), pipeline);
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
    Ok(Written::Embeddings(emb))
}

/// The images/s line on stderr.
fn report_rate(images: usize, seconds: f64, rate: Option<f64>, pipeline: altclip::ImagePipeline) {
    if let Some(rate) = rate {
        eprintln!(
            "{images} image(s) in {seconds:.2} s: {rate:.1} images/s (batch {}, prefetch {})",
            pipeline.batch_size, pipeline.depth
        );
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Freed activations reused, not faulted in again (see the function).
    altclip::process::retain_freed_memory();
    match run(&args, &mut std::io::stdout().lock()) {
        Ok(Written::Embeddings(emb)) => {
            if !emb.skipped.is_empty() {
                eprintln!("{} image(s) could not be read and were skipped", emb.skipped.len());
            }
            std::process::ExitCode::SUCCESS
        }
        #[cfg(feature = "parquet")]
        Ok(Written::Parquet(summary)) => {
            if summary.failed > 0 {
                eprintln!(
                    "{} image(s) could not be read: their rows hold the error (column `error`)",
                    summary.failed
                );
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

    fn embeddings(written: Written) -> Embeddings {
        match written {
            Written::Embeddings(emb) => emb,
            #[cfg(feature = "parquet")]
            other => panic!("{other:?}"),
        }
    }

    fn image(name: &str) -> String {
        format!("{}/examples/images/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn writes_json_to_stdout_and_safetensors_by_default_name() {
        let cat = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/images/cat.png");
        let mut stdout = Vec::new();
        let emb = embeddings(run(&args(&["--image", cat, "--text", "猫"]).unwrap(), &mut stdout).unwrap());
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
        assert!(error(&["--text", "x", "--format", "csv"]).contains("json, safetensors, npy or parquet"));
        #[cfg(feature = "parquet")]
        assert!(error(&["--text", "x", "--format", "parquet"]).contains("--output"));
        for bad in ["3/3", "a/b", "1"] {
            assert!(
                error(&["--text", "x", "--shard", bad]).contains("invalid shard"),
                "{bad}"
            );
        }
        // One text in two shards: [0, 0) and [0, 1).
        let one_text = error(&["--text", "x", "--shard", "0/2"]);
        assert!(
            one_text.contains("shard 0/2 of 0 image(s) and 1 text(s) is empty"),
            "{one_text}"
        );
        let empty = tempfile::tempdir().unwrap();
        let dir = empty.path().to_str().unwrap();
        assert!(error(&["--image", dir]).contains("no image files found"));
        let err = Args::try_parse_from(["embed", "--model-dir", "/definitely/not/here", "--text", "x"]).unwrap();
        assert!(format!("{:#}", run(&err, &mut Vec::new()).err().unwrap()).contains("/definitely/not/here"));
    }

    /// `--shard I/N` of the JSON output: this job's slice of the sorted images and texts.
    #[test]
    fn shards_split_sorted_images_and_texts() {
        let all = ["astronaut.png", "cat.png", "coffee.png"];
        let dir = image("");
        let mut seen = (Vec::new(), Vec::new());
        for i in 0..2 {
            let shard = format!("{i}/2");
            let argv = [
                "--image", &dir, "--text", "b", "--text", "a", "--text", "c", "--shard", &shard,
            ];
            let emb = embeddings(run(&args(&argv).unwrap(), &mut Vec::new()).unwrap());
            seen.0.extend(
                emb.image_paths
                    .iter()
                    .map(|p| p.file_name().unwrap().to_str().unwrap().to_string()),
            );
            seen.1.extend(emb.texts);
        }
        assert_eq!(seen.0, all);
        assert_eq!(seen.1, ["a", "b", "c"]);
    }

    /// Parquet is streamed through `export::write_parquet`: one row per input, the unreadable one included.
    #[cfg(feature = "parquet")]
    #[test]
    fn writes_parquet_rows_for_every_input_and_shards_them() {
        use arrow_array::cast::AsArray;
        use arrow_array::Array;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let read = |path: &Path| -> Vec<(String, Option<String>)> {
            let file = std::fs::File::open(path).unwrap();
            let mut rows = Vec::new();
            for batch in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
                let batch = batch.unwrap();
                let (labels, errors) = (batch.column(0).as_string::<i32>(), batch.column(2).as_string::<i32>());
                assert_eq!(batch.column(1).null_count(), errors.len() - errors.null_count());
                rows.extend(
                    labels
                        .iter()
                        .zip(errors)
                        .map(|(l, e)| (l.unwrap().into(), e.map(String::from))),
                );
            }
            rows
        };
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("broken.png");
        std::fs::write(&broken, b"not a PNG").unwrap();
        let (cat, coffee, broken) = (
            image("cat.png"),
            image("coffee.png"),
            broken.to_str().unwrap().to_string(),
        );
        let out = dir.path().join("out.parquet");
        let out_arg = out.to_str().unwrap();
        let argv = [
            "--image", &coffee, "--image", &broken, "--image", &cat, "--text", "猫", "--format", "parquet",
        ];
        let mut argv = argv.to_vec();
        argv.extend(["--output", out_arg, "--batch-size", "2", "--row-group-size", "1"]);
        let Written::Parquet(summary) = run(&args(&argv).unwrap(), &mut Vec::new()).unwrap() else {
            panic!("not parquet")
        };
        assert_eq!((summary.images, summary.failed, summary.texts), (3, 1, 1));
        let images = read(&dir.path().join("out.images.parquet"));
        let labels: Vec<&str> = images.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, [coffee.as_str(), broken.as_str(), cat.as_str()]);
        assert!(images[0].1.is_none() && images[2].1.is_none());
        assert!(images[1].1.as_deref().unwrap().contains("broken.png"), "{images:?}");
        assert_eq!(read(&dir.path().join("out.texts.parquet")), [("猫".to_string(), None)]);
        // Two shards of the images alone write `--output` itself, and together hold each image once, sorted.
        let mut union = Vec::new();
        for i in 0..2 {
            let (shard, part) = (format!("{i}/2"), dir.path().join(format!("part-{i}.parquet")));
            let part_arg = part.to_str().unwrap();
            let argv = [
                "--image", &coffee, "--image", &broken, "--image", &cat, "--shard", &shard,
            ];
            let mut argv = argv.to_vec();
            argv.extend(["--format", "parquet", "--output", part_arg]);
            run(&args(&argv).unwrap(), &mut Vec::new()).unwrap();
            union.extend(read(&part).into_iter().map(|(label, _)| label));
        }
        let mut want = vec![coffee, broken, cat];
        want.sort();
        assert_eq!(union, want);
    }

    /// Without the feature, `--format parquet` says how to get it.
    #[cfg(not(feature = "parquet"))]
    #[test]
    fn parquet_without_the_feature_says_how_to_build() {
        let err = error(&["--text", "x", "--format", "parquet", "--output", "x.parquet"]);
        assert!(err.contains("--features parquet"), "{err}");
    }
}
