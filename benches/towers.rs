//! Throughput of the two towers on the full-size random-weight checkpoint (BAAI/AltCLIP config, f32, CPU):
//! vision batch 1 and 8, text batch 8 × 77 tokens and 32 × 16 tokens.
//!
//! ```sh
//! python scripts/full_size_parity.py /work/altclip-full     # once
//! ALTCLIP_FULL_DIR=/work/altclip-full cargo bench --bench towers
//! ```
//!
//! Without `ALTCLIP_FULL_DIR` it prints a note and does nothing (so `cargo test --all-targets` stays fast). For
//! the side-by-side comparison with PyTorch see `scripts/bench_side_by_side.py` and BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use altclip::AltClipModel;
use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn text_inputs(batch: usize, seq: usize, device: &Device) -> (Tensor, Tensor) {
    let ids: Vec<u32> = (0..batch * seq)
        .map(|i| match i % seq {
            0 => 0,
            j if j + 1 == seq => 2,
            j => 3 + ((i * 7919 + j * 104_729) % 249_990) as u32,
        })
        .collect();
    let ids = Tensor::from_vec(ids, (batch, seq), device).unwrap_or_else(|e| panic!("{e}"));
    let mask = Tensor::ones((batch, seq), DType::U32, device).unwrap_or_else(|e| panic!("{e}"));
    (ids, mask)
}

fn bench(c: &mut Criterion) {
    let Ok(dir) = std::env::var("ALTCLIP_FULL_DIR") else {
        eprintln!("towers: set ALTCLIP_FULL_DIR to the checkpoint written by scripts/full_size_parity.py; skipping");
        return;
    };
    let device = Device::Cpu;
    let model = AltClipModel::from_dir(&dir, DType::F32, &device).unwrap_or_else(|e| panic!("loading {dir}: {e}"));

    let mut vision = c.benchmark_group("vision_tower_f32");
    vision.sample_size(10).measurement_time(Duration::from_secs(30));
    for batch in [1usize, 8] {
        let px = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &device).unwrap_or_else(|e| panic!("{e}"));
        vision.throughput(Throughput::Elements(batch as u64));
        vision.bench_with_input(BenchmarkId::new("images", batch), &px, |b, px| {
            b.iter(|| black_box(model.get_image_features(px, false).unwrap_or_else(|e| panic!("{e}"))))
        });
    }
    vision.finish();

    let mut text = c.benchmark_group("text_tower_f32");
    text.sample_size(10).measurement_time(Duration::from_secs(20));
    for (batch, seq) in [(8usize, 77usize), (32, 16)] {
        let (ids, mask) = text_inputs(batch, seq, &device);
        text.throughput(Throughput::Elements(batch as u64));
        text.bench_function(BenchmarkId::new("texts", format!("{batch}x{seq}")), |b| {
            b.iter(|| {
                black_box(
                    model
                        .get_text_features(&ids, Some(&mask))
                        .unwrap_or_else(|e| panic!("{e}")),
                )
            })
        });
    }
    text.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
