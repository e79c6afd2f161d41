//! The Rust half of the side-by-side benchmark (`scripts/bench_side_by_side.py` runs it and PyTorch on the same
//! weights, in the same run, and prints the table). Prints one JSON object per line on stdout.
//!
//! ```sh
//! cargo run --release --example bench_side_by_side -- gemm
//! cargo run --release --example bench_side_by_side -- load <dir>
//! cargo run --release --example bench_side_by_side -- run <dir> <reps> <mixed lengths, comma-separated> [workloads]
//! ```
//!
//! `load`: time from nothing to the first text embedding (`AltClipModel::from_dir_quantized` + one 16-token text),
//! then to the first image embedding, and the peak RSS (`VmHWM`); with `$ALTCLIP_BENCH_QUANTIZE`, quantized as it
//! loads. `run`: per workload, one warm-up then `reps` timed
//! repetitions of `get_image_features` / `get_text_features` on deterministic inputs (the values do not change
//! the work). The mixed-length batch is timed twice: padded to its longest text (what PyTorch users do) and
//! sorted by length and padded per bucket, results returned in input order.

#[path = "common/pseudo_random.rs"]
mod pseudo_random;

use std::time::Instant;

use altclip::options::{parse_dtype, parse_quantization};
use altclip::{AltClipModel, Quantization, TextBatching};
use anyhow::{bail, Context, Result};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use pseudo_random::pseudo_random;

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Token ids `<s> w… </s>` padded with 1 to `seq`, per the given lengths (which count `<s>` and `</s>`).
fn text_batch(lengths: &[usize], seq: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let rows: Vec<usize> = (0..lengths.len()).collect();
    text_batch_rows(&rows, lengths, seq, device)
}

/// The unpadded ids `<s> w… </s>` of text `row` with `len` tokens (its tokens depend on its index only).
fn text_ids(row: usize, len: usize) -> Vec<u32> {
    (0..len)
        .map(|j| match j {
            0 => 0,
            j if j + 1 == len => 2,
            j => 3 + ((row * 7919 + j * 104_729) % 249_990) as u32,
        })
        .collect()
}

/// As [`text_batch`] for the texts `rows` of `lengths`, padded with 1 to `seq`.
fn text_batch_rows(rows: &[usize], lengths: &[usize], seq: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let mut ids = Vec::with_capacity(rows.len() * seq);
    let mut mask = Vec::with_capacity(rows.len() * seq);
    for &row in rows {
        let text = text_ids(row, lengths[row]);
        mask.extend((0..seq).map(|j| u32::from(j < text.len())));
        ids.extend((0..seq).map(|j| text.get(j).copied().unwrap_or(1)));
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

fn emit(side: &str, name: &str, items: usize, times: &[f64]) {
    let times: Vec<String> = times.iter().map(|t| format!("{t:.6}")).collect();
    println!(
        "{{\"side\":\"{side}\",\"workload\":\"{name}\",\"items\":{items},\"times\":[{}]}}",
        times.join(",")
    );
}

/// Row-wise cosine similarity of two (n, d) feature matrices.
fn cosines(a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
    let a = altclip::model::l2_normalize(a)?;
    let b = altclip::model::l2_normalize(b)?;
    Ok((a * b)?.sum(1)?.to_vec1::<f32>()?)
}

/// For each row of `images`, the index of the most similar row of `texts` (zero-shot top-1).
fn top1(images: &Tensor, texts: &Tensor) -> Result<Vec<u32>> {
    let sims = altclip::model::l2_normalize(images)?.matmul(&altclip::model::l2_normalize(texts)?.t()?)?;
    Ok(sims.argmax(1)?.to_vec1::<u32>()?)
}

/// Quantization accuracy against f32 on the same inputs: embedding cosines and zero-shot top-1 agreement of
/// 32 pseudo-random images against the mixed-length texts and 32 more of 77 tokens.
fn quant_accuracy(f32_model: &AltClipModel, q_model: &AltClipModel, side: &str, mixed: &[usize]) -> Result<()> {
    let device = Device::Cpu;
    let images = Tensor::from_vec(pseudo_random(32 * 3 * 224 * 224, 11), (32, 3, 224, 224), &device)?;
    let mut lengths = mixed.to_vec();
    lengths.extend(std::iter::repeat_n(77, 32));
    let texts: Vec<Vec<u32>> = lengths
        .iter()
        .enumerate()
        .map(|(row, &len)| text_ids(row, len))
        .collect();
    let batching = TextBatching::default();
    let mut feats = Vec::new();
    for model in [f32_model, q_model] {
        let mut parts = Vec::new();
        for chunk in 0..4 {
            parts.push(model.get_image_features(&images.narrow(0, chunk * 8, 8)?, false)?);
        }
        feats.push((
            Tensor::cat(&parts, 0)?,
            model.get_text_features_batched(&texts, 1, &batching)?,
        ));
    }
    let (fi, ft) = &feats[0];
    let (qi, qt) = &feats[1];
    let ci = cosines(fi, qi)?;
    let ct = cosines(ft, qt)?;
    let (a, b) = (top1(fi, ft)?, top1(qi, qt)?);
    let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    let (a2, b2) = (top1(ft, fi)?, top1(qt, qi)?);
    let agree2 = a2.iter().zip(&b2).filter(|(x, y)| x == y).count();
    let min = |v: &[f32]| v.iter().copied().fold(f32::INFINITY, f32::min);
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    println!(
        "{{\"side\":\"{side}\",\"workload\":\"accuracy\",\"image_cos_min\":{:.6},\"image_cos_mean\":{:.6},\
         \"text_cos_min\":{:.6},\"text_cos_mean\":{:.6},\"top1_image_to_text\":[{agree},{}],\
         \"top1_text_to_image\":[{agree2},{}]}}",
        min(&ci),
        mean(&ci),
        min(&ct),
        mean(&ct),
        a.len(),
        a2.len()
    );
    Ok(())
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
    emit("candle", "gemm_1024x4096x4096", 1, &times);
    for q in [GgmlDType::Q8_0, GgmlDType::Q4K] {
        let qw = QMatMul::from_qtensor(QTensor::quantize(&w, q)?)?;
        let times = time_reps(5, || {
            qw.forward(&a)?;
            Ok(())
        })?;
        emit(
            &quant_side(Some(Quantization::Ggml(q))),
            "gemm_1024x4096x4096",
            1,
            &times,
        );
    }
    Ok(())
}

fn load(dir: &str, quant: Option<Quantization>) -> Result<()> {
    let device = Device::Cpu;
    let t = Instant::now();
    let model = AltClipModel::from_dir_quantized(dir, DType::F32, &device, quant).context("loading")?;
    let loaded = t.elapsed().as_secs_f64();
    let (ids, mask) = text_batch(&[16], 16, &device)?;
    model.get_text_features(&ids, Some(&mask))?.to_vec2::<f32>()?;
    let first_text = t.elapsed().as_secs_f64();
    model
        .get_image_features(&pixels(1, &device)?, false)?
        .to_vec2::<f32>()?;
    let first_image = t.elapsed().as_secs_f64();
    println!(
        "{{\"side\":\"{}\",\"workload\":\"load\",\"load_s\":{loaded:.4},\"first_text_s\":{first_text:.4},\
         \"first_image_s\":{first_image:.4},\"peak_rss\":{}}}",
        quant_side(quant),
        peak_rss_bytes().unwrap_or(0)
    );
    Ok(())
}

/// `candle`, or `candle_int8`, `candle_q4k` etc. for a quantized model.
fn quant_side(quant: Option<Quantization>) -> String {
    match quant {
        None => "candle".into(),
        Some(Quantization::Int8) => "candle_int8".into(),
        Some(Quantization::Ggml(q)) => format!("candle_{}", format!("{q:?}").to_ascii_lowercase()),
    }
}

/// The mixed-length caption batch, padded to its longest and through the library's length bucketing.
fn mixed_lengths(
    model: &AltClipModel,
    reps: usize,
    mixed: &[usize],
    device: &Device,
    emit: &dyn Fn(&str, usize, &[f64]),
) -> Result<()> {
    let seq = mixed.iter().copied().max().unwrap_or(1);
    let (ids, mask) = text_batch(mixed, seq, device)?;
    let times = time_reps(reps, || {
        model.get_text_features(&ids, Some(&mask))?;
        Ok(())
    })?;
    emit("text_mixed_padded", mixed.len(), &times);
    // The library's padding-aware batching (what `AltClip::embed_texts` does), default plan.
    let texts: Vec<Vec<u32>> = mixed.iter().enumerate().map(|(row, &len)| text_ids(row, len)).collect();
    let batching = TextBatching::default();
    let padded = model.get_text_features(&ids, Some(&mask))?;
    let bucketed = model.get_text_features_batched(&texts, 1, &batching)?;
    let diff = (padded - &bucketed)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    let passes = batching.plan(mixed)?.len();
    eprintln!("bucketed ({passes} passes) vs padded text features: max |diff| {diff:e}");
    let times = time_reps(reps, || {
        model.get_text_features_batched(&texts, 1, &batching)?;
        Ok(())
    })?;
    emit("text_mixed_bucketed", mixed.len(), &times);
    Ok(())
}

fn run(
    dir: &str,
    reps: usize,
    mixed: &[usize],
    only: Option<&str>,
    quant: Option<Quantization>,
    dtype: DType,
) -> Result<()> {
    let device = Device::Cpu;
    let mut model = AltClipModel::from_dir(dir, dtype, &device).context("loading")?;
    let side = match dtype {
        DType::F32 => quant_side(quant),
        other => format!("candle_{}", other.as_str()),
    };
    if let Some(q) = quant {
        let reference = model.clone();
        let n = model.quantize(q)?;
        eprintln!("quantized {n} projections to {q:?}");
        quant_accuracy(&reference, &model, &side, mixed)?;
    }
    let emit = |name: &str, items: usize, times: &[f64]| emit(&side, name, items, times);
    let wanted = |name: &str| only.is_none_or(|o| o.split(',').any(|w| w == name));
    for batch in [1usize, 8] {
        let name = format!("vision_b{batch}");
        if wanted(&name) {
            let px = pixels(batch, &device)?.to_dtype(dtype)?;
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
        mixed_lengths(&model, reps, mixed, &device, &emit)?;
    }
    println!(
        "{{\"side\":\"{side}\",\"workload\":\"peak_rss_run\",\"peak_rss\":{}}}",
        peak_rss_bytes().unwrap_or(0)
    );
    Ok(())
}

fn main() -> Result<()> {
    // As the embed tool and the examples run.
    altclip::process::retain_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quant = parse_quantization(&std::env::var("ALTCLIP_BENCH_QUANTIZE").unwrap_or_default())?;
    match args.first().map(String::as_str) {
        Some("gemm") => gemm(),
        Some("load") if args.len() == 2 => load(&args[1], quant),
        Some("run") if args.len() >= 4 => {
            let reps: usize = args[2].parse().context("reps")?;
            let mixed = args[3]
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<usize>().context("mixed lengths"))
                .collect::<Result<Vec<_>>>()?;
            let dtype = parse_dtype(&std::env::var("ALTCLIP_BENCH_DTYPE").unwrap_or_else(|_| "f32".into()))?;
            run(&args[1], reps, &mixed, args.get(4).map(String::as_str), quant, dtype)
        }
        _ => bail!(
            "usage: bench_side_by_side gemm | load <dir> | run <dir> <reps> <lengths> [workloads] \
             ($ALTCLIP_BENCH_QUANTIZE=int8|q8_0|q4k|...: quantized model; $ALTCLIP_BENCH_DTYPE=f16|bf16)"
        ),
    }
}
