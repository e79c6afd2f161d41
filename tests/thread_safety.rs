//! Thread safety (issue #5, item 4): the model and processors are `Send + Sync`, and one shared [`AltClip`] used
//! from several threads at once gives bit-identical embeddings to a sequential run.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Barrier};

use altclip::processor::image::{ImageInput, ImageProcessor};
use altclip::processor::text::TextProcessor;
use altclip::{AltClip, AltClipModel, AltClipProcessor, ZeroShotClassifier};
use common::fixture;

const fn assert_send_sync<T: Send + Sync>() {}

// Compile-time checks: a failure here is a build error, not a test failure.
const _: () = {
    assert_send_sync::<AltClipModel>();
    assert_send_sync::<AltClip>();
    assert_send_sync::<AltClipProcessor>();
    assert_send_sync::<ImageProcessor>();
    assert_send_sync::<TextProcessor>();
    assert_send_sync::<ZeroShotClassifier>();
    assert_send_sync::<altclip::Error>();
};

const THREADS: usize = 4;
const ROUNDS: usize = 3;

fn images() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/images");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
        .collect();
    v.sort();
    v.extend(
        [
            "rgb_13x9.png",
            "la_90x120.png",
            "jpeg_cmyk_160x120.jpg",
            "webp_lossy_200x150.webp",
        ]
        .iter()
        .map(|f| fixture("images/inputs").join(f)),
    );
    v
}

fn texts() -> Vec<String> {
    [
        "a photo of a cat",
        "一只猫的照片",
        "ein Foto von einem Hund",
        "",
        "a cup of coffee on a wooden table, seen from above",
        "😺",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Bit patterns of an (n, dim) f32 tensor, for exact comparison.
fn bits(t: &candle_core::Tensor) -> Vec<Vec<u32>> {
    t.to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|row| row.into_iter().map(f32::to_bits).collect())
        .collect()
}

/// Every thread embeds a differently ordered / sized workload, in single items and in batches.
fn workload(clip: &AltClip, images: &[PathBuf], texts: &[String], thread: usize) -> Vec<(String, Vec<Vec<u32>>)> {
    let mut out = Vec::new();
    for round in 0..ROUNDS {
        let shift = (thread + round) % images.len();
        for k in 0..images.len() {
            let i = (k + shift) % images.len();
            let e = clip.embed_images(&[ImageInput::Path(&images[i])]).unwrap();
            out.push((format!("image {i}"), bits(&e)));
        }
        let inputs: Vec<ImageInput> = images.iter().map(|p| ImageInput::Path(p)).collect();
        out.push(("image batch".into(), bits(&clip.embed_images(&inputs).unwrap())));
        for k in 0..texts.len() {
            let i = (k + thread + round) % texts.len();
            let e = clip.embed_texts(&[texts[i].as_str()]).unwrap();
            out.push((format!("text {i}"), bits(&e)));
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        out.push(("text batch".into(), bits(&clip.embed_texts(&refs).unwrap())));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn concurrent_embeddings_are_bit_identical_to_sequential() {
    let clip = Arc::new(AltClip::from_dir(fixture("tiny_full"), &common::load_options()).unwrap());
    let (images, texts) = (images(), texts());
    // Sequential reference, one workload per thread id (the workloads differ only in order).
    let sequential: Vec<_> = (0..THREADS).map(|t| workload(&clip, &images, &texts, t)).collect();
    let barrier = Arc::new(Barrier::new(THREADS));
    let concurrent: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (clip, barrier, images, texts) = (Arc::clone(&clip), Arc::clone(&barrier), &images, &texts);
                s.spawn(move || {
                    barrier.wait();
                    workload(&clip, images, texts, t)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for t in 0..THREADS {
        assert_eq!(sequential[t].len(), concurrent[t].len());
        for ((name, a), (_, b)) in sequential[t].iter().zip(&concurrent[t]) {
            assert!(
                a == b,
                "thread {t}: {name} differs between sequential and concurrent runs"
            );
        }
    }
    // Sanity: singles of one image agree across threads, so the comparison is not vacuous.
    assert!(sequential[0]
        .iter()
        .any(|(_, rows)| rows.iter().flatten().any(|&b| b != 0)));
}
