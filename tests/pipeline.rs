//! End to end on the complete tiny model repository (`tests/fixtures/tiny_full`, random weights) and the bundled
//! photos: zero-shot and embeddings against transformers (`scripts/make_pipeline_fixtures.py`), and both examples
//! run through their own code.

// Both examples include examples/common/model_args.rs as their own module; here they are compiled side by side.
#![allow(clippy::duplicate_mod)]

mod common;

#[path = "../examples/embed.rs"]
#[allow(dead_code)]
mod embed_example;
#[path = "../examples/zero_shot.rs"]
#[allow(dead_code)]
mod zero_shot_example;

use std::path::{Path, PathBuf};

use altclip::processor::image::ImageInput;
use altclip::{AltClip, LoadOptions, ZeroShotClassifier};
use candle_core::Tensor;
use clap::Parser;
use common::fixture;
use serde_json::Value;

fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("tiny_full/expected_pipeline.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

fn clip() -> AltClip {
    AltClip::from_dir(fixture("tiny_full"), &LoadOptions::default()).unwrap()
}

#[test]
fn zero_shot_matches_transformers_order_and_probabilities() {
    let e = expected();
    let clip = clip();
    let labels = strings(&e["labels"]);
    let templates = strings(&e["templates"]);
    let classifier = ZeroShotClassifier::new(&clip, &labels, &templates).unwrap();
    let paths: Vec<PathBuf> = strings(&e["images"]).iter().map(|p| repo_path(p)).collect();
    let inputs: Vec<ImageInput> = paths.iter().map(|p| ImageInput::Path(p)).collect();
    let results = classifier.classify(&clip, &inputs).unwrap();
    let want = matrix(&e["zero_shot_probs"]);
    let mut worst = 0f32;
    for (scores, want_row) in results.iter().zip(&want) {
        // Order: sorted by transformers' probabilities.
        let mut order: Vec<usize> = (0..want_row.len()).collect();
        order.sort_by(|&a, &b| want_row[b].total_cmp(&want_row[a]));
        assert_eq!(scores.iter().map(|s| s.index).collect::<Vec<_>>(), order);
        for s in scores {
            worst = worst.max((s.probability - want_row[s.index]).abs());
            assert_eq!(s.label, labels[s.index]);
        }
    }
    eprintln!("zero-shot max |Δp| = {worst:.3e}");
    assert!(worst <= 1e-5, "{worst}");
}

#[test]
fn embed_example_json_matches_transformers() {
    let e = expected();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let mut argv = vec![
        "embed".to_string(),
        "--model-dir".into(),
        fixture("tiny_full").display().to_string(),
    ];
    for p in strings(&e["images"]) {
        argv.extend(["--image".into(), repo_path(&p).display().to_string()]);
    }
    for t in strings(&e["texts"]) {
        argv.extend(["--text".into(), t]);
    }
    argv.extend([
        "--batch-size".into(),
        "2".into(),
        "--quiet".into(),
        "--output".into(),
        out.display().to_string(),
    ]);
    let args = embed_example::Args::try_parse_from(&argv).unwrap();
    embed_example::run(&args, &mut Vec::new()).unwrap();
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(doc["dim"], 24);
    let embeddings = |key: &str| -> Vec<Vec<f32>> {
        let rows = doc[key].as_array().unwrap();
        matrix(&Value::Array(rows.iter().map(|i| i["embedding"].clone()).collect()))
    };
    let (images, texts) = (embeddings("images"), embeddings("texts"));
    let di = max_diff(&images, &matrix(&e["image_embeds"]));
    let dt = max_diff(&texts, &matrix(&e["text_embeds"]));
    let dl = max_diff(&matrix(&doc["logits_per_image"]), &matrix(&e["logits_per_image"]));
    eprintln!("embed JSON max |Δ|: image {di:.3e}, text {dt:.3e}, logits {dl:.3e}");
    assert!(di <= 1e-5 && dt <= 1e-5 && dl <= 1e-4, "{di} {dt} {dl}");
    let paths: Vec<String> = doc["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap().into())
        .collect();
    assert!(
        paths[0].ends_with("cat.png") && paths[2].ends_with("astronaut.png"),
        "{paths:?}"
    );
    assert_eq!(doc["texts"][1]["text"], "一杯咖啡");
}

fn embed_args(extra: &[&str]) -> embed_example::Args {
    let model_dir = fixture("tiny_full").display().to_string();
    let mut argv = vec!["embed", "--model-dir", &model_dir, "--quiet"];
    argv.extend_from_slice(extra);
    embed_example::Args::try_parse_from(argv).unwrap()
}

#[test]
fn embed_example_walks_directories_skips_unreadable_images_and_honours_strict() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::copy(repo_path("examples/images/cat.png"), nested.join("cat.png")).unwrap();
    std::fs::copy(repo_path("examples/images/coffee.png"), dir.path().join("coffee.png")).unwrap();
    std::fs::write(dir.path().join("broken.png"), b"this is text, not a PNG").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored: not an image extension").unwrap();
    let root = dir.path().display().to_string();
    let emb = embed_example::embed(&embed_args(&["--image", &root])).unwrap();
    let names: Vec<String> = emb
        .image_paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into())
        .collect();
    assert_eq!(names, ["cat.png", "coffee.png"]);
    assert_eq!(emb.skipped.len(), 1);
    assert!(emb.skipped[0].0.ends_with("broken.png"));
    // Same embedding as the direct path.
    let direct = clip()
        .embed_images(&[ImageInput::Path(&repo_path("examples/images/cat.png"))])
        .unwrap();
    let got = emb.image_embeds.as_ref().unwrap().get(0).unwrap().unsqueeze(0).unwrap();
    assert!(common::max_abs_diff(&got, &direct) <= 1e-6, "batch vs single");
    let err = embed_example::embed(&embed_args(&["--image", &root, "--strict"]))
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("broken.png"), "{err:#}");
}

#[test]
fn embed_example_writes_safetensors_and_npy() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("e.safetensors");
    let cat = repo_path("examples/images/cat.png").display().to_string();
    let st_s = st.display().to_string();
    embed_example::run(
        &embed_args(&[
            "--image",
            &cat,
            "--text",
            "猫",
            "--format",
            "safetensors",
            "--output",
            &st_s,
        ]),
        &mut Vec::new(),
    )
    .unwrap();
    let t = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["image_embeds"].dims(), [1, 24]);
    assert_eq!(t["logits_per_image"].dims(), [1, 1]);
    let npy = dir.path().join("e.npy");
    let npy_s = npy.display().to_string();
    embed_example::run(
        &embed_args(&["--image", &cat, "--format", "npy", "--output", &npy_s]),
        &mut Vec::new(),
    )
    .unwrap();
    let back = Tensor::read_npy(&npy).unwrap();
    assert_eq!(common::max_abs_diff(&back, &t["image_embeds"]), 0.0);
}

#[test]
fn embed_example_bad_inputs_are_clear_errors() {
    let msg = |args: embed_example::Args| format!("{:#}", embed_example::run(&args, &mut Vec::new()).err().unwrap());
    assert!(msg(embed_args(&[])).contains("nothing to embed"));
    assert!(msg(embed_args(&["--image", "/definitely/not/here"])).contains("no such file"));
    let unwritable = "/proc/definitely-not-writable/out.json";
    assert!(msg(embed_args(&["--text", "x", "--output", unwritable])).contains("cannot write"));
    assert!(msg(embed_args(&["--text", "x", "--format", "npy"])).contains("--output"));
    assert!(msg(embed_args(&["--text", "x", "--batch-size", "0"])).contains("batch-size"));
    assert!(msg(embed_args(&["--text", "x", "--device", "tpu"])).contains("device"));
}

fn zero_shot_args(extra: &[&str]) -> zero_shot_example::Args {
    let model_dir = fixture("tiny_full").display().to_string();
    let mut argv = vec!["zero_shot", "--model-dir", &model_dir];
    argv.extend_from_slice(extra);
    zero_shot_example::Args::try_parse_from(argv).unwrap()
}

#[test]
fn zero_shot_example_prints_a_ranked_table() {
    let e = expected();
    let cat = repo_path("examples/images/cat.png").display().to_string();
    let labels = strings(&e["labels"]).join(",");
    let templates = strings(&e["templates"]);
    let mut argv = vec!["--image", &cat, "--labels", &labels, "--top-k", "2"];
    for t in &templates {
        argv.extend(["--template", t]);
    }
    let mut out = Vec::new();
    zero_shot_example::run(&zero_shot_args(&argv), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    let probs = matrix(&e["zero_shot_probs"]).remove(0);
    let best = (0..probs.len()).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).unwrap();
    let best_label = &strings(&e["labels"])[best];
    let first_row = out.lines().nth(2).unwrap();
    assert!(
        first_row.contains(best_label.as_str()) && first_row.contains(&format!("{:.4}", probs[best])),
        "{out}"
    );
    assert_eq!(out.lines().count(), 4, "{out}");
}

#[test]
fn zero_shot_example_rejects_bad_labels_and_missing_files() {
    let cat = repo_path("examples/images/cat.png").display().to_string();
    let run = |extra: &[&str]| {
        format!(
            "{:#}",
            zero_shot_example::run(&zero_shot_args(extra), &mut Vec::new())
                .err()
                .unwrap()
        )
    };
    assert!(run(&["--image", &cat, "--labels", "cat,cat"]).contains("twice"));
    assert!(run(&["--image", &cat, "--labels", "cat,,dog"]).contains("empty"));
    assert!(run(&["--image", &cat, "--labels", ""]).contains("labels"));
    assert!(run(&["--image", &cat, "--labels", "cat", "--template", "no placeholder"]).contains("placeholder"));
    assert!(run(&["--image", "/no/such/image.png", "--labels", "cat"]).contains("/no/such/image.png"));
    let empty_dir = tempfile::tempdir().unwrap();
    let empty = empty_dir.path().display().to_string();
    let argv = ["zero_shot", "--model-dir", &empty, "--image", &cat, "--labels", "cat"];
    let args = zero_shot_example::Args::try_parse_from(argv).unwrap();
    let err = format!("{:#}", zero_shot_example::run(&args, &mut Vec::new()).err().unwrap());
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn offline_hub_id_with_an_empty_cache_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let opts = LoadOptions::default()
        .with_cache_dir(cache.path())
        .with_offline(true)
        .with_progress(false);
    let err = AltClip::from_pretrained("BAAI/AltCLIP", &opts).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, altclip::Error::OfflineMissing { .. }), "{msg}");
    assert!(msg.contains("BAAI/AltCLIP") && msg.contains("config.json"), "{msg}");
}

#[test]
fn partial_embedding_keeps_good_rows_in_order() {
    let clip = clip();
    let cat = repo_path("examples/images/cat.png");
    let bad = b"not an image".to_vec();
    let inputs = [
        ImageInput::Path(&cat),
        ImageInput::Bytes(&bad),
        ImageInput::Path(Path::new("/missing.png")),
    ];
    let r = clip.embed_images_partial(&inputs).unwrap();
    assert_eq!(r.ok, [0]);
    assert_eq!(r.failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2]);
    let direct = clip.embed_images(&inputs[..1]).unwrap();
    assert_eq!(common::max_abs_diff(r.embeddings.as_ref().unwrap(), &direct), 0.0);
    assert!(clip.embed_images(&[]).is_err());
    assert!(clip.embed_texts(&[]).is_err());
}

#[test]
fn processor_from_pretrained_accepts_a_local_directory() {
    let dir = fixture("tiny_full");
    let a =
        altclip::AltClipProcessor::from_pretrained(dir.to_str().unwrap(), &altclip::hub::HubOptions::new()).unwrap();
    let b = altclip::AltClipProcessor::from_dir(&dir).unwrap();
    let cat = repo_path("examples/images/cat.png");
    let dev = candle_core::Device::Cpu;
    let run = |p: &altclip::AltClipProcessor| {
        p.process(
            &["一只猫", "a cat"],
            &[ImageInput::Path(&cat)],
            &dev,
            candle_core::DType::F32,
        )
        .unwrap()
    };
    let (pa, pb) = (run(&a), run(&b));
    let ids_a: Vec<Vec<u32>> = pa.input_ids.unwrap().to_vec2().unwrap();
    assert_eq!(ids_a, pb.input_ids.unwrap().to_vec2::<u32>().unwrap());
    assert_eq!(ids_a[0][0], 0, "starts with <s>");
    assert_eq!(
        common::max_abs_diff(&pa.pixel_values.unwrap(), &pb.pixel_values.unwrap()),
        0.0
    );
    // The three photos' pixel_values sum to what CLIPImageProcessorPil produced.
    let paths: Vec<PathBuf> = strings(&expected()["images"]).iter().map(|p| repo_path(p)).collect();
    let inputs: Vec<ImageInput> = paths.iter().map(|p| ImageInput::Path(p)).collect();
    let pixels = a
        .process(&[], &inputs, &dev, candle_core::DType::F32)
        .unwrap()
        .pixel_values
        .unwrap();
    let sum: f64 = pixels
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    let want = expected()["pixel_values_sum"].as_f64().unwrap();
    assert!((sum - want).abs() < 1e-2, "{sum} vs {want}");
}

#[test]
fn length_bucketed_text_embeddings_match_padding_to_the_longest_in_input_order() {
    // Lengths from 3 to ~60 tokens, unsorted, one duplicate, so every batching plan reorders.
    let texts = [
        "a photo of a cat sitting on a windowsill in the afternoon sun, with a cup of coffee next to it and \
         an astronaut poster on the wall behind",
        "cat",
        "一张狗的照片",
        "a dog",
        "cat",
        "une photo d'un astronaute qui flotte au-dessus de la Terre",
    ];
    let padded = clip().with_text_batching(altclip::TextBatching::pad_to_longest(64));
    let reference = padded.embed_texts(&texts).unwrap();
    let lengths: Vec<usize> = padded
        .processor()
        .text()
        .encode_unpadded(&texts, None)
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect();
    assert!(lengths[0] > 40 && lengths[1] < 6, "{lengths:?}");
    let plans = [
        altclip::TextBatching::default(),
        altclip::TextBatching {
            overhead_tokens: 0,
            ..Default::default()
        },
    ];
    for batching in plans {
        let groups = batching.plan(&lengths).unwrap();
        assert!(groups.len() > 1, "{groups:?}");
        let got = clip().with_text_batching(batching).embed_texts(&texts).unwrap();
        let d = common::max_abs_diff(&got, &reference);
        eprintln!("{} passes vs padded to the longest: max |Δ| {d:.2e}", groups.len());
        assert!(d < 1e-6, "{d}");
    }
    // Each row is its own text's embedding: the two "cat" rows agree, and row 3 is the single-text result.
    let single = padded.embed_texts(&[texts[3]]).unwrap();
    assert!(common::max_abs_diff(&reference.get(3).unwrap(), &single.get(0).unwrap()) < 1e-6);
    assert!(common::max_abs_diff(&reference.get(1).unwrap(), &reference.get(4).unwrap()) < 1e-6);
    assert!(common::max_abs_diff(&reference.get(0).unwrap(), &reference.get(1).unwrap()) > 1e-3);
}
