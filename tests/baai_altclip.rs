//! transformers' published numbers for the real BAAI/AltCLIP checkpoint (its `test_modeling_altclip.py`
//! integration tests). Needs the 3.5 GB weights and the COCO val2017 photo 000000039769, so it is `#[ignore]`d:
//!
//! ```sh
//! huggingface-cli download BAAI/AltCLIP --local-dir /data/AltCLIP          # or any snapshot directory
//! curl -o /data/coco_39769.jpg http://images.cocodataset.org/val2017/000000039769.jpg
//! ALTCLIP_DIR=/data/AltCLIP ALTCLIP_COCO_IMAGE=/data/coco_39769.jpg \
//!     cargo test --release --test baai_altclip -- --ignored --nocapture
//! ```
//!
//! `ALTCLIP_DIR` may also be a hub id (`BAAI/AltCLIP`), resolved through the cache (`HF_HUB_OFFLINE=1` works).

use std::path::PathBuf;

use altclip::processor::image::{CropSize, ImageInput, ImageProcessor, SizeSpec};
use altclip::{AltClip, LoadOptions};
use candle_core::{DType, Device, IndexOp};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("set {name} (see the module docs)"))
}

fn load() -> (AltClip, PathBuf) {
    let clip = AltClip::from_pretrained(&env("ALTCLIP_DIR"), &LoadOptions::default()).unwrap();
    (clip, PathBuf::from(env("ALTCLIP_COCO_IMAGE")))
}

#[test]
#[ignore = "needs the BAAI/AltCLIP weights and the COCO image (ALTCLIP_DIR, ALTCLIP_COCO_IMAGE)"]
fn chinese_cat_dog_probabilities_match_transformers() {
    let (clip, image) = load();
    let texts = clip.embed_texts(&["一张猫的照片", "一张狗的照片"]).unwrap();
    let images = clip.embed_images(&[ImageInput::Path(&image)]).unwrap();
    let logits = clip.logits(&images, &texts).unwrap();
    let probs: Vec<f32> = candle_nn::ops::softmax_last_dim(&logits)
        .unwrap()
        .i(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    eprintln!("probabilities {probs:?} (transformers: [9.9942e-01, 5.7805e-04])");
    assert!((probs[0] - 9.9942e-01).abs() <= 5e-3 && (probs[1] - 5.7805e-04).abs() <= 5e-3);
}

#[test]
#[ignore = "needs the BAAI/AltCLIP weights and the COCO image (ALTCLIP_DIR, ALTCLIP_COCO_IMAGE)"]
fn interpolated_vision_hidden_state_at_180px_matches_transformers() {
    let (clip, image) = load();
    let mut processor = ImageProcessor::new(clip.processor().image().config.clone());
    processor.config.size = SizeSpec::ShortestEdge(180);
    processor.config.crop_size = CropSize {
        height: 180,
        width: 180,
    };
    let pixels = processor
        .preprocess(&[ImageInput::Path(&image)], &Device::Cpu, DType::F32)
        .unwrap();
    assert_eq!(pixels.dims(), [1, 3, 180, 180]);
    let out = clip
        .model()
        .vision_model()
        .unwrap()
        .forward(&pixels, true, false)
        .unwrap();
    assert_eq!(out.last_hidden_state.dims(), [1, 145, 1024]);
    let slice: Vec<Vec<f32>> = out.last_hidden_state.i((0, ..3, ..3)).unwrap().to_vec2().unwrap();
    #[allow(clippy::approx_constant)] // transformers' published values, not 1/√2
    let want = [
        [-0.3589, -0.5939, 0.3534],
        [0.4346, 0.1647, 0.7071],
        [1.1404, -0.4716, 0.1664],
    ];
    eprintln!("last_hidden_state[0, :3, :3] = {slice:?}");
    for (row, want_row) in slice.iter().zip(want) {
        for (g, w) in row.iter().zip(want_row) {
            assert!((g - w).abs() <= 1e-4, "{slice:?} vs {want:?}");
        }
    }
}

/// Int8 (`LoadOptions::with_quantization`) against f32 on the real weights: the same zero-shot winner for the
/// bundled photos and the COCO one, and embeddings within cosine 0.995. (On the tiny random fixture model
/// `tests/quantize.rs` bounds the changes instead: its labels are near-ties that any rounding may reorder.)
#[test]
#[ignore = "needs the BAAI/AltCLIP weights and the COCO image (ALTCLIP_DIR, ALTCLIP_COCO_IMAGE)"]
fn int8_keeps_the_zero_shot_winners_of_f32() {
    use altclip::{Quantization, ZeroShotClassifier};
    let (f32, coco) = load();
    let int8 = AltClip::from_pretrained(
        &env("ALTCLIP_DIR"),
        &LoadOptions::default().with_quantization(Some(Quantization::Int8)),
    )
    .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images");
    let mut paths: Vec<PathBuf> = ["cat.png", "coffee.png", "astronaut.png"]
        .iter()
        .map(|p| root.join(p))
        .collect();
    paths.push(coco);
    let images: Vec<ImageInput> = paths.iter().map(|p| ImageInput::Path(p)).collect();
    let labels = [
        "cat",
        "dog",
        "coffee",
        "astronaut",
        "car",
        "remote control",
        "猫",
        "咖啡",
    ];
    let templates = ["a photo of a {}.", "一张{}的照片。"];
    let winners = |clip: &AltClip| -> Vec<usize> {
        let classifier = ZeroShotClassifier::new(clip, &labels, &templates).unwrap();
        let scores = classifier.classify(clip, &images).unwrap();
        scores.iter().map(|s| s[0].index).collect()
    };
    let (a, b) = (winners(&f32), winners(&int8));
    eprintln!("zero-shot winners: f32 {a:?}, int8 {b:?}");
    assert_eq!(a, b);
    let cos = |x: &candle_core::Tensor, y: &candle_core::Tensor| -> Vec<f32> {
        let (x, y) = (
            altclip::model::l2_normalize(x).unwrap(),
            altclip::model::l2_normalize(y).unwrap(),
        );
        (x * y).unwrap().sum(1).unwrap().to_vec1().unwrap()
    };
    let image_cos = cos(
        &f32.embed_images(&images).unwrap(),
        &int8.embed_images(&images).unwrap(),
    );
    let texts = ["a photo of a cat", "一杯咖啡", "宇宙飛行士の写真"];
    let text_cos = cos(&f32.embed_texts(&texts).unwrap(), &int8.embed_texts(&texts).unwrap());
    eprintln!("int8 vs f32 cosines: images {image_cos:?}, texts {text_cos:?}");
    assert!(image_cos.iter().chain(&text_cos).all(|&c| c >= 0.995));
}
