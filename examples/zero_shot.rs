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
use clap::Parser;

#[path = "common/model_args.rs"]
mod model_args;
use model_args::ModelArgs;

/// Classify images against free-text labels (any language) with AltCLIP.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Image files to classify.
    #[arg(long = "image", required = true, num_args = 1..)]
    images: Vec<PathBuf>,
    /// Comma-separated labels, e.g. "cat,dog,猫".
    #[arg(long)]
    labels: String,
    /// Prompt template with `{}` for the label (repeatable); default: English and Chinese CLIP templates.
    #[arg(long = "template")]
    templates: Vec<String>,
    #[command(flatten)]
    model: ModelArgs,
    /// How many labels to show per image.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    top_k: u64,
}

/// Loads the model and prints a ranked table per image to `out`.
fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let labels: Vec<&str> = args.labels.split(',').map(str::trim).collect();
    let clip = args.model.load(true)?;
    let classifier = if args.templates.is_empty() {
        let templates: Vec<&str> = ENGLISH_TEMPLATES.iter().chain(CHINESE_TEMPLATES).copied().collect();
        ZeroShotClassifier::new(&clip, &labels, &templates)?
    } else {
        ZeroShotClassifier::new(&clip, &labels, &args.templates)?
    };
    let inputs: Vec<ImageInput> = args.images.iter().map(|p| ImageInput::Path(p)).collect();
    let results = classifier.classify(&clip, &inputs)?;
    let top_k = usize::try_from(args.top_k)?;
    for (path, scores) in args.images.iter().zip(results) {
        writeln!(out, "{}", path.display())?;
        writeln!(
            out,
            "  {:>4}  {:<24} {:>11}  {:>8}",
            "rank", "label", "probability", "logit"
        )?;
        for (rank, s) in scores.iter().take(top_k).enumerate() {
            let (label, p, logit) = (&s.label, s.probability, s.logit);
            writeln!(out, "  {:>4}  {label:<24} {p:>11.4}  {logit:>8.3}", rank + 1)?;
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Freed activations reused, not faulted in again (see the function).
    altclip::process::retain_freed_memory();
    match run(&args, &mut std::io::stdout().lock()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The command line end to end on the tiny test model (`cargo test --example zero_shot`); the classifier's numbers
/// against transformers are tested in tests/pipeline.rs.
#[cfg(test)]
mod tests {
    use super::*;

    const CAT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/images/cat.png");

    fn args(model_dir: &str, extra: &[&str]) -> Args {
        let mut argv = vec!["zero_shot", "--model-dir", model_dir];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    fn tiny(extra: &[&str]) -> Args {
        args(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny_full"), extra)
    }

    #[test]
    fn prints_a_ranked_table() {
        let expected = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tiny_full/expected_pipeline.json"
        ))
        .unwrap();
        let e: serde_json::Value = serde_json::from_str(&expected).unwrap();
        let strings = |k: &str| -> Vec<String> {
            e[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        };
        let (labels, templates) = (strings("labels"), strings("templates"));
        let joined = labels.join(",");
        let mut argv = vec!["--image", CAT, "--labels", &joined, "--top-k", "2"];
        for t in &templates {
            argv.extend(["--template", t]);
        }
        let mut out = Vec::new();
        run(&tiny(&argv), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let probs: Vec<f64> = e["zero_shot_probs"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let best = (0..probs.len()).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).unwrap();
        let first_row = out.lines().nth(2).unwrap();
        assert!(
            first_row.contains(labels[best].as_str()) && first_row.contains(&format!("{:.4}", probs[best] as f32)),
            "{out}"
        );
        assert_eq!(out.lines().count(), 4, "{out}");
    }

    #[test]
    fn rejects_bad_labels_and_missing_files() {
        let run = |a: Args| format!("{:#}", run(&a, &mut Vec::new()).err().unwrap());
        assert!(run(tiny(&["--image", CAT, "--labels", "cat,cat"])).contains("twice"));
        assert!(run(tiny(&["--image", CAT, "--labels", "cat,,dog"])).contains("empty"));
        assert!(run(tiny(&["--image", CAT, "--labels", ""])).contains("labels"));
        assert!(run(tiny(&[
            "--image",
            CAT,
            "--labels",
            "cat",
            "--template",
            "no placeholder"
        ]))
        .contains("placeholder"));
        assert!(run(tiny(&["--image", "/no/such/image.png", "--labels", "cat"])).contains("/no/such/image.png"));
        let empty = tempfile::tempdir().unwrap();
        let err = run(args(
            empty.path().to_str().unwrap(),
            &["--image", CAT, "--labels", "cat"],
        ));
        assert!(err.contains("config.json"), "{err}");
        let zero = Args::try_parse_from(["zero_shot", "--image", CAT, "--labels", "cat", "--top-k", "0"]);
        assert!(zero.unwrap_err().to_string().contains("top-k"));
    }
}
