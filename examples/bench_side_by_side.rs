//! The Rust half of the side-by-side benchmark (`scripts/bench_side_by_side.py` runs it and PyTorch on the same
//! weights, in the same run, and prints the table). Prints one JSON object per line on stdout.
//!
//! ```sh
//! cargo run --release --example bench_side_by_side -- gemm
//! cargo run --release --example bench_side_by_side -- load <dir>
//! cargo run --release --example bench_side_by_side -- run <dir> <reps> <mixed lengths, comma-separated> [workloads]
//! ```
//!
//! `load`: time from nothing to the first text embedding (`AltClipModel::from_dir` + one 16-token text), then to
//! the first image embedding, and the peak RSS (`VmHWM`). `run`: per workload, one warm-up then `reps` timed
//! repetitions of `get_image_features` / `get_text_features` on deterministic inputs (the values do not change
//! the work). The mixed-length batch is timed twice: padded to its longest text (what PyTorch users do) and
//! sorted by length and padded per bucket, results returned in input order.

use std::time::Instant;

use altclip::AltClipModel;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Deterministic pseudo-random floats in [-1, 1) (xorshift), so both sides see well-conditioned inputs.
fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Token ids `<s> w… </s>` padded with 1 to `seq`, per the given lengths (which count `<s>` and `</s>`).
fn text_batch(lengths: &[usize], seq: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let rows: Vec<usize> = (0..lengths.len()).collect();
    text_batch_rows(&rows, lengths, seq, device)
}

/// As [`text_batch`] for the texts `rows` of `lengths` (a text's tokens depend on its index, not its position).
fn text_batch_rows(rows: &[usize], lengths: &[usize], seq: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let mut ids = Vec::with_capacity(rows.len() * seq);
    let mut mask = Vec::with_capacity(rows.len() * seq);
    for &row in rows {
        let len = lengths[row];
        for j in 0..seq {
            let (id, m) = if j == 0 {
                (0u32, 1u32)
            } else if j + 1 < len {
                (3 + ((row * 7919 + j * 104_729) % 249_990) as u32, 1)
            } else if j + 1 == len {
                (2, 1)
            } else {
                (1, 0)
            };
            ids.push(id);
            mask.push(m);
        }
    }
    let shape = (rows.len(), seq);
    Ok((
        Tensor::from_vec(ids, shape, device)?,
        Tensor::from_vec(mask, shape, device)?,
    ))
}

fn pixels(batch: usize, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        pseudo_random(batch * 3 * 224 * 224, 7),
        (batch, 3, 224, 224),
        device,
    )?)
}

/// Padding-aware batching: sort by length, split into buckets of `bucket` texts, pad each bucket to its own
/// longest text, and put the results back in input order.
fn text_features_bucketed(model: &AltClipModel, lengths: &[usize], bucket: usize) -> Result<Tensor> {
    let device = model.device();
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut parts = Vec::new();
    for chunk in order.chunks(bucket) {
        let seq = chunk.iter().map(|&i| lengths[i]).max().unwrap_or(1);
        let (ids, mask) = text_batch_rows(chunk, lengths, seq, device)?;
        parts.push(model.get_text_features(&ids, Some(&mask))?);
    }
    let sorted = Tensor::cat(&parts, 0)?;
    let mut inverse = vec![0u32; order.len()];
    for (pos, &i) in order.iter().enumerate() {
        inverse[i] = pos as u32;
    }
    let inverse = Tensor::from_vec(inverse, order.len(), device)?;
    Ok(sorted.index_select(&inverse, 0)?)
}

fn time_reps(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    f()?; // warm-up
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}

fn emit(name: &str, items: usize, times: &[f64]) {
    let times: Vec<String> = times.iter().map(|t| format!("{t:.6}")).collect();
    println!(
        "{{\"side\":\"candle\",\"workload\":\"{name}\",\"items\":{items},\"times\":[{}]}}",
        times.join(",")
    );
}

fn gemm() -> Result<()> {
    let device = Device::Cpu;
    let (m, k, n) = (1024, 4096, 4096);
    let a = Tensor::from_vec(pseudo_random(m * k, 1), (m, k), &device)?;
    let w = Tensor::from_vec(pseudo_random(n * k, 2), (n, k), &device)?;
    let times = time_reps(5, || {
        a.matmul(&w.t()?)?;
        Ok(())
    })?;
    emit("gemm_1024x4096x4096", 1, &times);
    Ok(())
}

fn load(dir: &str) -> Result<()> {
    let device = Device::Cpu;
    let t = Instant::now();
    let model = AltClipModel::from_dir(dir, DType::F32, &device).context("loading")?;
    let loaded = t.elapsed().as_secs_f64();
    let (ids, mask) = text_batch(&[16], 16, &device)?;
    model.get_text_features(&ids, Some(&mask))?.to_vec2::<f32>()?;
    let first_text = t.elapsed().as_secs_f64();
    model
        .get_image_features(&pixels(1, &device)?, false)?
        .to_vec2::<f32>()?;
    let first_image = t.elapsed().as_secs_f64();
    println!(
        "{{\"side\":\"candle\",\"workload\":\"load\",\"load_s\":{loaded:.4},\"first_text_s\":{first_text:.4},\
         \"first_image_s\":{first_image:.4},\"peak_rss\":{}}}",
        peak_rss_bytes().unwrap_or(0)
    );
    Ok(())
}

fn run(dir: &str, reps: usize, mixed: &[usize], only: Option<&str>) -> Result<()> {
    let device = Device::Cpu;
    let model = AltClipModel::from_dir(dir, DType::F32, &device).context("loading")?;
    let wanted = |name: &str| only.is_none_or(|o| o.split(',').any(|w| w == name));
    for batch in [1usize, 8] {
        let name = format!("vision_b{batch}");
        if wanted(&name) {
            let px = pixels(batch, &device)?;
            let times = time_reps(reps, || {
                model.get_image_features(&px, false)?;
                Ok(())
            })?;
            emit(&name, batch, &times);
        }
    }
    for (batch, seq) in [(1usize, 77usize), (8, 77), (32, 16)] {
        let name = format!("text_b{batch}x{seq}");
        if wanted(&name) {
            let (ids, mask) = text_batch(&vec![seq; batch], seq, &device)?;
            let times = time_reps(reps, || {
                model.get_text_features(&ids, Some(&mask))?;
                Ok(())
            })?;
            emit(&name, batch, &times);
        }
    }
    if !mixed.is_empty() && wanted("text_mixed") {
        let seq = mixed.iter().copied().max().unwrap_or(1);
        let (ids, mask) = text_batch(mixed, seq, &device)?;
        let times = time_reps(reps, || {
            model.get_text_features(&ids, Some(&mask))?;
            Ok(())
        })?;
        emit("text_mixed_padded", mixed.len(), &times);
        let padded = model.get_text_features(&ids, Some(&mask))?;
        let bucketed = text_features_bucketed(&model, mixed, 8)?;
        let diff = (padded - &bucketed)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        eprintln!("bucketed vs padded text features: max |diff| {diff:e}");
        let times = time_reps(reps, || {
            text_features_bucketed(&model, mixed, 8)?;
            Ok(())
        })?;
        emit("text_mixed_bucketed", mixed.len(), &times);
    }
    println!(
        "{{\"side\":\"candle\",\"workload\":\"peak_rss_run\",\"peak_rss\":{}}}",
        peak_rss_bytes().unwrap_or(0)
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gemm") => gemm(),
        Some("load") if args.len() == 2 => load(&args[1]),
        Some("run") if args.len() >= 4 => {
            let reps: usize = args[2].parse().context("reps")?;
            let mixed = args[3]
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<usize>().context("mixed lengths"))
                .collect::<Result<Vec<_>>>()?;
            run(&args[1], reps, &mixed, args.get(4).map(String::as_str))
        }
        _ => bail!("usage: bench_side_by_side gemm | load <dir> | run <dir> <reps> <lengths> [workloads]"),
    }
}
