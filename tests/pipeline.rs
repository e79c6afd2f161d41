//! End to end on the complete tiny model repository (`tests/fixtures/tiny_full`, random weights) and the bundled
//! photos: zero-shot and embeddings against transformers (`scripts/make_pipeline_fixtures.py`), and the `export`
//! calls the embed example makes. The examples' command lines are tested in their own files
//! (`cargo test --example embed`, `--example zero_shot`).

mod common;

use std::path::{Path, PathBuf};

use altclip::export::{self, BatchOptions, Embeddings, Format};
use altclip::processor::image::ImageInput;
use altclip::{AltClip, Error, ZeroShotClassifier};
use candle_core::Tensor;
use common::{fixture, invalid};
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
    AltClip::from_dir(fixture("tiny_full"), &common::load_options()).unwrap()
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
    // Measured 4.2e-7 (Zen 3, AVX2): f32 round-off of the towers (see model_parity's TOL), on every ISA.
    assert!(worst <= 1e-5, "{worst}");
}

fn embed(images: &[PathBuf], texts: &[String], batch_size: usize, strict: bool) -> altclip::Result<Embeddings> {
    let options = BatchOptions { batch_size, strict };
    let mut done = 0;
    let emb = export::embed_batches(&clip(), images, texts, &options, &mut |n| done += n);
    if emb.is_ok() {
        assert_eq!(done, images.len() + texts.len(), "progress counts every input once");
    }
    emb
}

#[test]
fn export_json_matches_transformers() {
    let e = expected();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let images: Vec<PathBuf> = strings(&e["images"]).iter().map(|p| repo_path(p)).collect();
    let emb = embed(
        &export::collect_images(&images).unwrap(),
        &strings(&e["texts"]),
        2,
        false,
    )
    .unwrap();
    emb.save(Format::Json, &out).unwrap();
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
    // Measured 1.5e-7 / 1.9e-7 / 1.2e-6 (Zen 3, AVX2): f32 round-off, as in model_parity; logits are scaled by
    // exp(logit_scale) ≈ 14, hence 10× the embeddings' bound.
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

#[test]
fn export_walks_directories_skips_unreadable_images_and_honours_strict() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::copy(repo_path("examples/images/cat.png"), nested.join("cat.png")).unwrap();
    std::fs::copy(repo_path("examples/images/coffee.png"), dir.path().join("coffee.png")).unwrap();
    std::fs::write(dir.path().join("broken.png"), b"this is text, not a PNG").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored: not an image extension").unwrap();
    let found = export::collect_images(&[dir.path().to_path_buf()]).unwrap();
    let emb = embed(&found, &[], 16, false).unwrap();
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
    // A batch and a single image run GEMMs of other heights, which may block differently: at most round-off of a
    // unit vector on any ISA (measured 0 on Zen 3, AVX2: the tiny model's GEMMs fit one block).
    let d = common::max_abs_diff(&got, &direct);
    eprintln!("batch vs single image embedding: max |Δ| {d:.2e}");
    assert!(d <= 1e-6, "batch vs single: {d}");
    let err = embed(&found, &[], 16, true).err().unwrap();
    assert!(format!("{err:#}").contains("broken.png"), "{err:#}");
}

#[test]
fn export_writes_safetensors_and_npy() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("e.safetensors");
    let cat = vec![repo_path("examples/images/cat.png")];
    embed(&cat, &["猫".into()], 16, false)
        .unwrap()
        .save(Format::Safetensors, &st)
        .unwrap();
    let t = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["image_embeds"].dims(), [1, 24]);
    assert_eq!(t["logits_per_image"].dims(), [1, 1]);
    let npy = dir.path().join("e.npy");
    embed(&cat, &[], 16, false).unwrap().save(Format::Npy, &npy).unwrap();
    let back = Tensor::read_npy(&npy).unwrap();
    assert_eq!(common::max_abs_diff(&back, &t["image_embeds"]), 0.0);
    // With both kinds, npy writes the two files `Format::output_files` names.
    let both = embed(&cat, &["猫".into()], 16, false).unwrap();
    both.save(Format::Npy, &npy).unwrap();
    let files = Format::Npy.output_files(&npy, true, true);
    assert_eq!(files, [dir.path().join("e.images.npy"), dir.path().join("e.texts.npy")]);
    assert_eq!(
        common::max_abs_diff(&Tensor::read_npy(&files[0]).unwrap(), &t["image_embeds"]),
        0.0
    );
    assert_eq!(
        common::max_abs_diff(&Tensor::read_npy(&files[1]).unwrap(), &t["text_embeds"]),
        0.0
    );
    assert_eq!(Format::Npy.output_files(&npy, false, true), std::slice::from_ref(&npy));
    assert_eq!(Format::Json.output_files(&npy, true, true), [npy]);
}

#[test]
fn export_bad_inputs_are_typed_errors() {
    assert!(invalid(embed(&[], &[], 16, false)).contains("nothing to embed"));
    match export::collect_images(&[PathBuf::from("/definitely/not/here")]) {
        Err(Error::Io { path, source }) => {
            assert!(path.ends_with("/definitely/not/here") && source.kind() == std::io::ErrorKind::NotFound)
        }
        other => panic!("{other:?}"),
    }
    let unwritable = Path::new("/proc/definitely-not-writable/out.json");
    assert!(matches!(export::check_writable(unwritable), Err(Error::Io { path, .. }) if path == unwritable));
    assert!(invalid(embed(&[], &["x".into()], 0, false)).starts_with("batch_size"));
    assert!(matches!(
        altclip::options::parse_device("tpu"),
        Err(Error::InvalidArgument { argument: "device", .. })
    ));
    assert!(matches!("npy".parse(), Ok(Format::Npy)));
    assert!(matches!(
        "csv".parse::<Format>(),
        Err(Error::InvalidArgument { argument: "format", .. })
    ));
    // Without the `parquet` feature the format is refused with how to get it.
    #[cfg(not(feature = "parquet"))]
    assert!(invalid("parquet".parse::<Format>()).contains("--features parquet"));
    // Nothing embedded: every image was unreadable.
    let broken = tempfile::NamedTempFile::with_suffix(".png").unwrap();
    let nothing = embed(&[broken.path().to_path_buf()], &[], 16, false).unwrap();
    assert_eq!(nothing.skipped.len(), 1);
    assert!(invalid(nothing.save_npy(&broken.path().with_extension("npy"))).starts_with("images"));
}

#[cfg(feature = "hub")]
#[test]
fn offline_hub_id_with_an_empty_cache_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let opts = altclip::LoadOptions::default()
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

#[cfg(feature = "hub")]
#[test]
fn processor_from_pretrained_accepts_a_local_directory() {
    let dir = fixture("tiny_full");
    let a =
        altclip::AltClipProcessor::from_pretrained(dir.to_str().unwrap(), &altclip::hub::HubOptions::new()).unwrap();
    let b = altclip::AltClipProcessor::from_dir(&dir).unwrap();
    let cat = repo_path("examples/images/cat.png");
    let dev = common::device();
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
        // Different passes pad differently, so GEMMs see other shapes and block differently: round-off of unit
        // vectors, measured ≤ 1.8e-7 on Zen 3 (AVX2), below 1e-6 on an AVX-512 Xeon.
        assert!(d < 1e-6, "{d}");
    }
    // Each row is its own text's embedding: the two "cat" rows agree, and row 3 is the single-text result.
    let single = padded.embed_texts(&[texts[3]]).unwrap();
    assert!(common::max_abs_diff(&reference.get(3).unwrap(), &single.get(0).unwrap()) < 1e-6);
    assert!(common::max_abs_diff(&reference.get(1).unwrap(), &reference.get(4).unwrap()) < 1e-6);
    assert!(common::max_abs_diff(&reference.get(0).unwrap(), &reference.get(1).unwrap()) > 1e-3);
}

#[test]
fn logits_are_the_models_and_equal_the_scaled_cosines_bit_for_bit() {
    let clip = clip();
    let cat = repo_path("examples/images/cat.png");
    let images = clip.embed_images(&[ImageInput::Path(&cat)]).unwrap();
    let texts = clip.embed_texts(&["a cat", "一杯咖啡", "an astronaut"]).unwrap();
    let logits = clip.logits(&images, &texts).unwrap();
    assert_eq!(logits.dims(), [1, 3]);
    let model = clip.model().logits(&images, &texts).unwrap();
    // What `AltClip::logits` computed before it delegated: exp(logit_scale) as an f32, times the cosines.
    let scale = f64::from(clip.model().logit_scale().unwrap());
    let before = (images.matmul(&texts.t().unwrap()).unwrap() * scale).unwrap();
    let bits = |t: &Tensor| -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&logits), bits(&model));
    assert_eq!(bits(&logits), bits(&before));
}

/// Bit patterns of a tensor, for exact comparison.
fn bit_rows(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|row| row.into_iter().map(f32::to_bits).collect())
        .collect()
}

/// What the image batch API computed before the pipeline: each batch preprocessed, then run, one after the other.
fn sequential_rows(clip: &AltClip, inputs: &[ImageInput], batch_size: usize) -> Vec<Vec<u32>> {
    let dev = candle_core::Device::Cpu;
    let mut rows = Vec::new();
    for chunk in inputs.chunks(batch_size) {
        let pixels = clip
            .processor()
            .image()
            .preprocess(chunk, &dev, candle_core::DType::F32)
            .unwrap();
        rows.extend(bit_rows(&clip.embed_pixels(&pixels).unwrap()));
    }
    rows
}

#[test]
fn pipelined_image_embeddings_equal_sequential_bit_for_bit_with_failures_in_order() {
    let names = ["cat.png", "coffee.png", "astronaut.png"];
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| repo_path(&format!("examples/images/{n}")))
        .collect();
    let bad = b"not an image".to_vec();
    let missing = PathBuf::from("/definitely/not/here.png");
    // Good and failing inputs interleaved over several batches; the last batch fails entirely.
    let mut inputs: Vec<ImageInput> = Vec::new();
    for round in 0..3 {
        inputs.extend(paths.iter().map(|p| ImageInput::Path(p)));
        inputs.push(if round == 1 {
            ImageInput::Bytes(&bad)
        } else {
            ImageInput::Path(&missing)
        });
    }
    inputs.extend([ImageInput::Bytes(&bad), ImageInput::Path(&missing)]);
    let good: Vec<usize> = (0..inputs.len()).filter(|i| i % 4 != 3 && *i < 12).collect();
    let good_inputs: Vec<ImageInput> = good.iter().map(|&i| inputs[i]).collect();
    for batch_size in [1, 2, 3, 5, 64] {
        let run = |depth| {
            clip()
                .with_image_pipeline(altclip::ImagePipeline { batch_size, depth })
                .embed_images_partial(&inputs)
                .unwrap()
        };
        let reference = run(0);
        assert_eq!(reference.ok, good, "batch {batch_size}");
        let failed: Vec<usize> = reference.failed.iter().map(|(i, _)| *i).collect();
        assert_eq!(failed, [3, 7, 11, 12, 13]);
        // Errors name their own input, by path or by index in the whole call.
        assert!(
            reference.failed[1].1.to_string().contains("<bytes #7>"),
            "{}",
            reference.failed[1].1
        );
        assert!(
            reference.failed[0].1.to_string().contains("here.png"),
            "{}",
            reference.failed[0].1
        );
        let want = bit_rows(reference.embeddings.as_ref().unwrap());
        for depth in 1..4 {
            let got = run(depth);
            assert_eq!(got.ok, reference.ok, "batch {batch_size}, depth {depth}");
            let errors = |r: &altclip::pipeline::PartialEmbeddings| -> Vec<(usize, String)> {
                r.failed.iter().map(|(i, e)| (*i, e.to_string())).collect()
            };
            assert_eq!(errors(&got), errors(&reference), "batch {batch_size}, depth {depth}");
            assert_eq!(
                bit_rows(got.embeddings.as_ref().unwrap()),
                want,
                "batch {batch_size}, depth {depth}"
            );
        }
        // The strict call on the readable inputs: pipelined equals the old unpipelined loop, bit for bit.
        for depth in 0..3 {
            let strict = clip()
                .with_image_pipeline(altclip::ImagePipeline { batch_size, depth })
                .embed_images(&good_inputs)
                .unwrap();
            assert_eq!(bit_rows(&strict), sequential_rows(&clip(), &good_inputs, batch_size));
        }
    }
    // Strict: the first unreadable input (in input order) is the error, whatever the depth.
    for depth in 0..3 {
        let clip = clip().with_image_pipeline(altclip::ImagePipeline { batch_size: 2, depth });
        let err = clip.embed_images(&inputs).err().unwrap();
        assert!(err.to_string().contains("here.png"), "{err}");
    }
    let zero = clip().with_image_pipeline(altclip::ImagePipeline {
        batch_size: 0,
        depth: 1,
    });
    assert!(invalid(zero.embed_images(&good_inputs)).starts_with("batch_size"));
    let deep = clip().with_image_pipeline(altclip::ImagePipeline {
        batch_size: 1,
        depth: usize::MAX,
    });
    assert!(invalid(deep.embed_images(&good_inputs)).starts_with("depth"));
}

#[test]
fn export_reports_images_per_second_and_strict_stops_at_the_first_failure() {
    let cat = repo_path("examples/images/cat.png");
    let broken = tempfile::NamedTempFile::with_suffix(".png").unwrap();
    let images = vec![cat.clone(), cat.clone(), broken.path().to_path_buf(), cat];
    let emb = embed(&images, &[], 1, false).unwrap();
    assert_eq!(emb.image_paths.len(), 3);
    assert!(emb.image_seconds > 0.0 && emb.images_per_second().unwrap() > 0.0);
    let err = embed(&images, &[], 1, true).err().unwrap();
    assert!(format!("{err:#}").contains(broken.path().to_str().unwrap()), "{err:#}");
    let texts_only = embed(&[], &["x".into()], 1, false).unwrap();
    assert_eq!(texts_only.images_per_second(), None);
}
