//! The decode/compute overlap of `altclip::prefetch::run` (issue 12, part 3), with a stand-in for the device stage:
//! does decoding keep its stand-alone throughput while the "device" runs, and what images/s comes out?
//!
//! The decode stage is the real one (`ImageProcessor::preprocess` on all cores: decode, convert, Pillow-exact
//! resize, crop, normalise, CLIP 224 config) over the fixture photos. The device stage is a calibrated stand-in
//! taking `ratio ×` the measured decode time per batch: `sleep` (a GPU: uses no CPU) or `spin` (a busy CPU
//! thread, for contrast: on a machine with few cores it takes one from the decoder). Each pipelined run is paired
//! with a stand-alone decode run right before it, so a shared machine's drifting load cancels out in the ratio.
//! Prints a Markdown table.
//!
//! `cargo bench --bench pipeline`

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use altclip::prefetch;
use altclip::processor::image::{ImageInput, ImageProcessor};
use candle_core::{DType, Device};

const BATCH: usize = 16;
/// Decoded formats, as in benches/preprocess.rs: two large photos, two small images.
const IMAGES: [&str; 4] = [
    "jpeg_1000x700.jpg",
    "rgb_1000x700.png",
    "jpeg_420_300x200.jpg",
    "rgba_128x96.png",
];

/// One timed run: wall seconds, and the seconds the decode stage was busy (summed over batches).
struct Run {
    wall: f64,
    decode_busy: f64,
}

#[derive(Clone, Copy)]
enum StandIn {
    Sleep,
    Spin,
}

fn run(
    processor: &ImageProcessor,
    batches: &[Vec<ImageInput<'_>>],
    depth: usize,
    device: Option<(StandIn, Duration)>,
) -> Run {
    let busy = Mutex::new(0f64);
    let started = Instant::now();
    let prepare = |batch: &Vec<ImageInput<'_>>| {
        let t = Instant::now();
        let pixels = processor
            .preprocess(batch, &Device::Cpu, DType::F32)
            .unwrap_or_else(|e| panic!("{e}"));
        *busy.lock().unwrap_or_else(|e| panic!("{e}")) += t.elapsed().as_secs_f64();
        pixels
    };
    prefetch::run(batches, depth, prepare, |pixels| {
        std::hint::black_box(pixels);
        match device {
            Some((StandIn::Sleep, d)) => std::thread::sleep(d),
            Some((StandIn::Spin, d)) => {
                let t = Instant::now();
                while t.elapsed() < d {
                    std::hint::spin_loop();
                }
            }
            None => {}
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let wall = started.elapsed().as_secs_f64();
    Run {
        wall,
        decode_busy: busy.into_inner().unwrap_or_else(|e| panic!("{e}")),
    }
}

/// `repeats` runs of `f`, each right after a stand-alone decode run (the machine's load drifts): the medians of
/// decode throughput relative to that stand-alone run, of decode images/s, and of end-to-end images/s.
fn paired(n: f64, repeats: usize, alone: impl Fn() -> Run, f: impl Fn() -> Run) -> (f64, f64, f64) {
    let mut rel = Vec::new();
    let mut decode = Vec::new();
    let mut end_to_end = Vec::new();
    for _ in 0..repeats {
        let a = alone();
        let r = f();
        rel.push(a.decode_busy / r.decode_busy);
        decode.push(n / r.decode_busy);
        end_to_end.push(n / r.wall);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(rel), median(decode), median(end_to_end))
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() {
    // `cargo test --all-targets` runs this without `--bench`: one short smoke run then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (batches_n, repeats) = if smoke { (2, 1) } else { (12, 5) };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/inputs");
    let files: Vec<Vec<u8>> = IMAGES
        .iter()
        .map(|n| std::fs::read(dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}")))
        .collect();
    let batches: Vec<Vec<ImageInput>> = (0..batches_n)
        .map(|k| {
            (0..BATCH)
                .map(|i| ImageInput::Bytes(&files[(k + i) % files.len()]))
                .collect()
        })
        .collect();
    let processor = ImageProcessor::default();
    let n = (BATCH * batches_n) as f64;
    run(&processor, &batches, 0, None); // warm-up

    let alone = || run(&processor, &batches, 0, None);
    let first = alone();
    let per_batch = Duration::from_secs_f64(first.decode_busy / batches_n as f64);
    println!(
        "{} ({} threads); {batches_n} batches of {BATCH}; decode alone: {:.1} images/s ({:.1} ms per batch)\n",
        cpu_name(),
        rayon::current_num_threads(),
        n / first.decode_busy,
        per_batch.as_secs_f64() * 1e3
    );
    println!(
        "| device stand-in | device ms/batch | depth | decode images/s while the device runs | vs alone (paired) \
         | end-to-end images/s | vs ideal n / max(decode, device) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let stand_ins = [
        (StandIn::Sleep, "sleep (uses no CPU)"),
        (StandIn::Spin, "spin (one busy CPU thread)"),
    ];
    for (device, name) in stand_ins {
        for ratio in [0.5, 1.0] {
            let d = per_batch.mul_f64(ratio);
            let ideal = n / (batches_n as f64 * per_batch.as_secs_f64().max(d.as_secs_f64()));
            for depth in [0, 1, 2] {
                let (rel, decode, e2e) = paired(n, repeats, alone, || {
                    run(&processor, &batches, depth, Some((device, d)))
                });
                println!(
                    "| {name} | {:.1} | {depth} | {decode:.1} | {:.0} % | {e2e:.1} | {:.0} % |",
                    d.as_secs_f64() * 1e3,
                    100.0 * rel,
                    100.0 * e2e / ideal
                );
            }
        }
    }
}
