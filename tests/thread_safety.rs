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

/// The towers load on first use, and that may come from rayon workers at once (a caller's `par_iter`): one call
/// loads each tower, the others wait for it, none deadlocks (a load run on the calling worker could steal a
/// caller's job that then waits on the load in progress), and every call gives what an eagerly loaded model gives.
#[test]
fn first_use_from_rayon_workers_loads_each_tower_once() {
    use rayon::prelude::*;
    let dir = fixture("tiny/st");
    let dev = common::device();
    let eager = AltClipModel::from_dir(&dir, candle_core::DType::F32, &dev).unwrap();
    eager.load_towers().unwrap();
    let ids = candle_core::Tensor::new(&[[0u32, 9, 17, 2]], &dev).unwrap();
    let pixels = candle_core::Tensor::rand(0f32, 1f32, (1, 3, 30, 30), &dev).unwrap();
    let flat =
        |t: altclip::Result<candle_core::Tensor>| -> Vec<f32> { t.unwrap().flatten_all().unwrap().to_vec1().unwrap() };
    let want_text = flat(eager.get_text_features(&ids, None));
    let want_image = flat(eager.get_image_features(&pixels, false));
    for threads in [1, 2, 4, 2, 4, 2, 4, 2, 4] {
        let lazy = AltClipModel::from_dir(&dir, candle_core::DType::F32, &dev).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let got: Vec<(bool, Vec<f32>)> = pool.install(|| {
            (0..64)
                .into_par_iter()
                .map(|i| {
                    let features = if i % 2 == 0 {
                        lazy.get_text_features(&ids, None)
                    } else {
                        lazy.get_image_features(&pixels, false)
                    };
                    (i % 2 == 0, flat(features))
                })
                .collect()
        });
        for (is_text, features) in got {
            assert_eq!(
                &features,
                if is_text { &want_text } else { &want_image },
                "{threads} threads"
            );
        }
    }
}

/// A tower's forward runs on a worker of rayon's global pool (`tower::on_worker`), so with more plain callers than
/// workers, a worker waiting inside one forward takes other callers' whole forwards meanwhile. The first uses load
/// each tower on the calling thread before its forward starts; every call, nested or not, gives what an eagerly
/// loaded model gives, and none waits forever.
#[test]
fn first_use_from_more_threads_than_workers_loads_and_agrees() {
    let dir = fixture("tiny/st");
    let dev = common::device();
    let eager = AltClipModel::from_dir(&dir, candle_core::DType::F32, &dev).unwrap();
    let ids = candle_core::Tensor::new(&[[0u32, 9, 17, 2]], &dev).unwrap();
    let pixels = candle_core::Tensor::rand(0f32, 1f32, (1, 3, 30, 30), &dev).unwrap();
    let flat =
        |t: altclip::Result<candle_core::Tensor>| -> Vec<f32> { t.unwrap().flatten_all().unwrap().to_vec1().unwrap() };
    let want = [
        flat(eager.get_text_features(&ids, None)),
        flat(eager.get_image_features(&pixels, false)),
    ];
    let callers = 4 * rayon::current_num_threads() + 2;
    for _ in 0..3 {
        let lazy = AltClipModel::from_dir(&dir, candle_core::DType::F32, &dev).unwrap();
        let barrier = Barrier::new(callers);
        let got: Vec<(usize, Vec<f32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..callers)
                .map(|i| {
                    let (lazy, barrier, ids, pixels) = (&lazy, &barrier, &ids, &pixels);
                    s.spawn(move || {
                        barrier.wait();
                        let features = match i % 2 {
                            0 => lazy.get_text_features(ids, None),
                            _ => lazy.get_image_features(pixels, false),
                        };
                        (i % 2, flat(features))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (tower, features) in got {
            assert_eq!(features, want[tower], "tower {tower}, {callers} callers");
        }
    }
}
