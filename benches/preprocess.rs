//! Image preprocessing throughput (decode + convert + resize + crop + normalize) with the default CLIP config,
//! on the fixture images; compare with `scripts/bench_preprocess.py` (transformers' `CLIPImageProcessorPil`).
//!
//! `cargo bench --bench preprocess` (JPEG through libjpeg-turbo, the default); `--no-default-features --features
//! pure-rust-jpeg` times the zune-jpeg path instead. The `jpeg_decode_1_thread` group times both decoders in the
//! same binary (zune-jpeg through the `image` crate, which the benches always have).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use altclip::processor::image::{load_image, DecodeOptions, ImageInput, ImageProcessor};
use altclip::processor::resize::{resize_rgb8, Filter};
use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The images timed, shared with scripts/bench_preprocess.py.
const IMAGES: [&str; 5] = [
    "jpeg_1000x700.jpg",
    "rgb_1000x700.png",
    "jpeg_420_300x200.jpg",
    "rgba_128x96.png",
    "photo_china_640x427.jpg",
];

/// The JPEGs whose decode alone is timed (a real photo, a large synthetic 4:2:0, a progressive one).
const JPEGS: [&str; 4] = [
    "photo_china_640x427.jpg",
    "photo_flower_640x427.jpg",
    "jpeg_1000x700.jpg",
    "jpeg_prog_300x200.jpg",
];

fn load(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images/inputs")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn bench(c: &mut Criterion) {
    let processor = ImageProcessor::default(); // CLIP: shortest_edge 224, bicubic, crop 224
    let files: Vec<Vec<u8>> = IMAGES.iter().map(|n| load(n)).collect();
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));

    let mut single = c.benchmark_group("preprocess_one_image_1_thread");
    single.throughput(Throughput::Elements(1));
    for (name, bytes) in IMAGES.iter().zip(&files) {
        single.bench_with_input(BenchmarkId::from_parameter(name), bytes, |b, bytes| {
            b.iter(|| {
                one_thread.install(|| {
                    let t = processor
                        .preprocess(&[ImageInput::Bytes(bytes)], &Device::Cpu, DType::F32)
                        .unwrap_or_else(|e| panic!("{e}"));
                    black_box(t)
                })
            })
        });
    }
    single.finish();

    // Decode + RGB conversion only: this crate's decoder (libjpeg-turbo by default) vs zune-jpeg.
    let mut decode = c.benchmark_group("jpeg_decode_1_thread");
    decode.throughput(Throughput::Elements(1));
    for name in JPEGS {
        let bytes = load(name);
        decode.bench_with_input(BenchmarkId::new("altclip_load_image", name), &bytes, |b, bytes| {
            b.iter(|| {
                let img = load_image(&ImageInput::Bytes(bytes), &DecodeOptions::default());
                black_box(img.unwrap_or_else(|e| panic!("{name}: {e}")))
            })
        });
        decode.bench_with_input(BenchmarkId::new("zune_jpeg", name), &bytes, |b, bytes| {
            b.iter(|| {
                let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg);
                black_box(img.unwrap_or_else(|e| panic!("{name}: {e}")).to_rgb8())
            })
        });
    }
    decode.finish();

    // A batch of 16 (the images, round-robin), decoded and resized in parallel on all cores.
    let batch: Vec<ImageInput> = (0..16).map(|i| ImageInput::Bytes(&files[i % files.len()])).collect();
    let mut group = c.benchmark_group("preprocess_batch16");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("all_threads", |b| {
        b.iter(|| black_box(processor.preprocess(&batch, &Device::Cpu, DType::F32)))
    });
    group.bench_function("1_thread", |b| {
        b.iter(|| one_thread.install(|| black_box(processor.preprocess(&batch, &Device::Cpu, DType::F32))))
    });
    group.finish();

    // The resampler alone: 1000x700 RGB -> 320x224 bicubic (the CLIP resize of the large fixture).
    let img = image::load_from_memory(&files[1])
        .unwrap_or_else(|e| panic!("{e}"))
        .to_rgb8();
    let mut resize = c.benchmark_group("resize_1000x700_to_320x224");
    resize.throughput(Throughput::Elements(1));
    resize.bench_function("bicubic_1_thread", |b| {
        b.iter(|| one_thread.install(|| black_box(resize_rgb8(img.as_raw(), 1000, 700, 320, 224, Filter::Bicubic))))
    });
    resize.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
