//! Tokenizer throughput: batch encoding with the SentencePiece-built and tokenizer.json-built tokenizers.
//!
//! `cargo bench --bench tokenize`

use std::hint::black_box;
use std::path::PathBuf;

use altclip::processor::text::{Padding, TextProcessor};
use candle_core::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer")
        .join(rel)
}

const TEXTS: [&str; 8] = [
    "a photo of a cat sitting on the table",
    "一张猫坐在桌子上的照片",
    "テーブルの上に座っている猫の写真",
    "테이블 위에 앉아 있는 고양이 사진",
    "صورة قطة تجلس على الطاولة",
    "Фотография кошки, сидящей на столе",
    "मेज़ पर बैठी एक बिल्ली की तस्वीर",
    "I love pizza 🍕 and ice cream 🍦!",
];

fn bench(c: &mut Criterion) {
    let processors = [
        ("sp_only", TextProcessor::from_dir(fixture("sp_only"))),
        ("with_json", TextProcessor::from_dir(fixture("with_json"))),
    ];
    let mut group = c.benchmark_group("encode");
    for batch in [1usize, 8, 64, 256] {
        let texts: Vec<&str> = TEXTS.iter().copied().cycle().take(batch).collect();
        group.throughput(Throughput::Elements(batch as u64));
        for (name, processor) in &processors {
            let Ok(processor) = processor else {
                eprintln!("skipping {name}: fixtures missing (run scripts/make_tokenizer_fixtures.py)");
                continue;
            };
            group.bench_with_input(BenchmarkId::new(*name, batch), &texts, |b, texts| {
                b.iter(|| black_box(processor.encode(texts, Padding::Longest, &Device::Cpu)))
            });
        }
    }
    group.finish();

    let long: String = TEXTS.concat().repeat(100).chars().take(20_000).collect();
    if let Ok(processor) = &processors[0].1 {
        c.bench_function("encode_20000_chars_truncated", |b| {
            b.iter(|| black_box(processor.encode(&[long.as_str()], Padding::Longest, &Device::Cpu)))
        });
    }
    c.bench_function("load_sentencepiece", |b| {
        b.iter(|| black_box(TextProcessor::from_dir(fixture("sp_only"))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
