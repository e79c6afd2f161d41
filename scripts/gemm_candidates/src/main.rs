//! GEMM candidates for AltCLIP's CPU linear layers (issue 15): `y = x·Wᵀ (+ b)` with x (M, K) and W (N, K)
//! row-major f32, as stored in the checkpoint. Every candidate is checked against an f64 reference before it is
//! timed; a wrong one is reported, not timed. Run: `cargo run --release` here; results go in RESULTS.md.
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use rten_gemm::{BiasVector, GemmExecutor, GemmInputA, GemmInputB, GemmUninitOptions, QuantParams};
use rten_tensor::Matrix;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
const THREADS: usize = 2;
const REPS: usize = 9;
/// (K, N) per layer: fused qkv, attention out, fc1, fc2.
const LAYERS: [(usize, usize, &str); 4] = [
    (1024, 3072, "qkv"),
    (1024, 1024, "attn out"),
    (1024, 4096, "fc1"),
    (4096, 1024, "fc2"),
];
/// Shape groups: name and M.
const GROUPS: [(&str, usize); 4] = [
    ("vision batch 8", 8 * 257),
    ("vision batch 1", 257),
    ("text M=1024", 1024),
    ("text M=160", 160),
];
const MAX_LOAD: f64 = 2.5;

/// Deterministic N(0, std²) samples (splitmix64 + Box-Muller), so runs are comparable without a rand dependency.
fn randn(seed: u64, len: usize, std: f32) -> Vec<f32> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let (u, v) = (next().max(1e-300), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32 * std
        })
        .collect()
}

struct Case {
    m: usize,
    k: usize,
    n: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Case {
    fn new(m: usize, k: usize, n: usize) -> Self {
        let seed = (m * 31 + k * 7 + n) as u64;
        Self {
            m,
            k,
            n,
            x: randn(seed, m * k, 1.0),
            w: randn(seed + 1, n * k, 0.02),
            b: randn(seed + 2, n, 0.02),
        }
    }
    fn flop(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
    /// Rows checked against the f64 reference (all of N, spread over M).
    fn check_rows(&self) -> Vec<usize> {
        (0..8).map(|i| i * (self.m - 1) / 7).collect()
    }
    fn reference(&self, row: usize, bias: bool) -> Vec<f64> {
        let x = &self.x[row * self.k..][..self.k];
        (0..self.n)
            .map(|j| {
                let w = &self.w[j * self.k..][..self.k];
                let dot: f64 = x.iter().zip(w).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
                dot + if bias { f64::from(self.b[j]) } else { 0.0 }
            })
            .collect()
    }
    /// max |y − ref| / max |ref| over the checked rows; `y` is (M, N) row-major.
    fn rel_err(&self, y: &[f32], bias: bool) -> f64 {
        let (mut err, mut scale) = (0f64, 0f64);
        for r in self.check_rows() {
            for (got, want) in y[r * self.n..][..self.n].iter().zip(self.reference(r, bias)) {
                err = err.max((f64::from(*got) - want).abs());
                scale = scale.max(want.abs());
            }
        }
        err / scale
    }
}

/// A candidate's output: (M, N) row-major unless `transposed`, as a Vec or a candle tensor.
enum Out {
    Vec(Vec<f32>),
    Transposed(Vec<f32>),
    Tensor(Tensor),
}

impl Out {
    fn row_major(self, c: &Case) -> Res<Vec<f32>> {
        Ok(match self {
            Out::Vec(v) => v,
            Out::Transposed(v) => (0..c.m * c.n).map(|i| v[(i % c.n) * c.m + i / c.n]).collect(),
            Out::Tensor(t) => t.flatten_all()?.to_vec1()?,
        })
    }
}

/// Median seconds per candidate over `REPS` rounds after two warm-up rounds. Each round calls every candidate
/// once, so a burst of load from other processes hits all of them alike.
fn median_secs(ops: &mut [&mut Candidate]) -> Res<Vec<f64>> {
    let mut t = vec![Vec::new(); ops.len()];
    for round in 0..REPS + 2 {
        for ((_, _, f), t) in ops.iter_mut().zip(&mut t) {
            let start = Instant::now();
            let out = f()?;
            if round >= 2 {
                t.push(start.elapsed().as_secs_f64());
            }
            drop(out);
        }
    }
    Ok(t.into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[REPS / 2]
        })
        .collect())
}

/// Median seconds of three calls of a one-off step (packing), and the last call's result.
fn secs_of<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut t = Vec::new();
    let mut timed = || {
        let start = Instant::now();
        let out = f();
        t.push(start.elapsed().as_secs_f64());
        out
    };
    drop((timed(), timed()));
    let out = timed();
    t.sort_by(f64::total_cmp);
    (t[1], out)
}

/// Per-output-channel symmetric int8 weights, as Wᵀ (K, N) packed for rten's u8×i8→i32 kernel.
struct Int8Weight {
    packed: rten_gemm::PackedBMatrix<i8>,
    scale: Vec<f32>,
    /// Σₖ wq per output channel, for the activation zero-point term (fbgemm's column offsets).
    col_sum: Vec<i32>,
    values: Vec<i8>,
}

fn quantize_weight(exec: &GemmExecutor<u8, i8, i32>, c: &Case) -> Int8Weight {
    let (values, scale) = quantize_weight_values(c);
    let packed = exec.prepack_b(Matrix::from_data([c.n, c.k], values.as_slice()).transposed());
    let col_sum = values
        .chunks(c.k)
        .map(|row| row.iter().map(|&v| i32::from(v)).sum())
        .collect();
    Int8Weight {
        packed,
        scale,
        col_sum,
        values,
    }
}

/// W (N, K) as round(W / s) with s = max |row| / 127 per output channel.
fn quantize_weight_values(c: &Case) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; c.n * c.k];
    let scale: Vec<f32> =
        c.w.chunks(c.k)
            .zip(q.chunks_mut(c.k))
            .map(|(row, qrow)| {
                let s = row.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE) / 127.0;
                qrow.iter_mut().zip(row).for_each(|(q, v)| *q = (v / s).round() as i8);
                s
            })
            .collect();
    (q, scale)
}

/// Per-row asymmetric u8 activations in 0..=qmax: (values, scale, zero point) — PyTorch's dynamic quantization.
fn quantize_rows(x: &[f32], k: usize, qmax: f32) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
    use rayon::prelude::*;
    let rows = x.len() / k;
    let (mut q, mut scale, mut zero) = (vec![0u8; x.len()], vec![0f32; rows], vec![0u8; rows]);
    q.par_chunks_mut(k)
        .zip(&mut scale)
        .zip(&mut zero)
        .zip(x.par_chunks(k))
        .for_each(|(((q, s), z), x)| {
            let (lo, hi) = x.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            *s = ((hi - lo) / qmax).max(f32::MIN_POSITIVE);
            *z = (-lo / *s).round().clamp(0.0, qmax) as u8;
            let zf = f32::from(*z);
            q.iter_mut()
                .zip(x)
                .for_each(|(q, v)| *q = (v / *s + zf).round().clamp(0.0, qmax) as u8);
        });
    (q, scale, zero)
}

/// Σₖ xq·wq in i32. The activation zero points are applied in the epilogue rather than passed as rten's
/// `a_quant`: rten-gemm 0.27's int8 `pack_a_impl` gives every full MR-row panel the zero points of rows 0..MR
/// (`zp[r]`, not `zp[row_tile * MR + r]`), so per-row zero points are wrong past the first panel.
fn int8_gemm(exec: &GemmExecutor<u8, i8, i32>, w: &Int8Weight, xq: &[u8], c: &Case) -> Res<Vec<i32>> {
    int8_gemm_with(exec, w, xq, None, c)
}

fn int8_gemm_with(
    exec: &GemmExecutor<u8, i8, i32>,
    w: &Int8Weight,
    xq: &[u8],
    zero: Option<&[u8]>,
    c: &Case,
) -> Res<Vec<i32>> {
    let mut acc = Vec::with_capacity(c.m * c.n);
    let opts = GemmUninitOptions {
        a_quant: zero.map(|zero_point| QuantParams { zero_point }),
        ..Default::default()
    };
    let a = GemmInputA::Unpacked(Matrix::from_data([c.m, c.k], xq));
    exec.gemm_uninit(
        &mut acc.spare_capacity_mut()[..c.m * c.n],
        a,
        GemmInputB::Packed(&w.packed),
        opts,
    )?;
    // SAFETY: `gemm_uninit` returned Ok, so it initialised all M·N outputs.
    unsafe { acc.set_len(c.m * c.n) };
    Ok(acc)
}

/// Checked rows where `int8_gemm`'s i32 output differs from Σₖ xq·wq computed here in i64 (empty if exact).
fn int8_mismatches(acc: &[i32], xq: &[u8], c: &Case, w: &Int8Weight) -> Vec<usize> {
    let exact = |r: usize, j: usize| -> i64 {
        let (x, wq) = (&xq[r * c.k..][..c.k], &w.values[j * c.k..][..c.k]);
        x.iter().zip(wq).map(|(&a, &b)| i64::from(a) * i64::from(b)).sum()
    };
    c.check_rows()
        .into_iter()
        .filter(|&r| (0..c.n).any(|j| exact(r, j) != i64::from(acc[r * c.n + j])))
        .collect()
}

/// Quantize x, integer GEMM, then `y = (acc − zx[row]·Σwq[col]) · sx[row] · sw[col] + b` in f32.
fn int8_linear(exec: &GemmExecutor<u8, i8, i32>, w: &Int8Weight, c: &Case, qmax: f32) -> Res<Vec<f32>> {
    use rayon::prelude::*;
    let (xq, sx, zero) = quantize_rows(&c.x, c.k, qmax);
    let acc = int8_gemm(exec, w, &xq, c)?;
    let mut y = vec![0f32; c.m * c.n];
    y.par_chunks_mut(c.n)
        .zip(acc.par_chunks(c.n))
        .zip(sx.par_iter().zip(&zero))
        .for_each(|((y, acc), (sx, &z))| {
            let z = i32::from(z);
            for ((((y, &a), sw), b), cs) in y.iter_mut().zip(acc).zip(&w.scale).zip(&c.b).zip(&w.col_sum) {
                *y = (a - z * cs) as f32 * (sx * sw) + b;
            }
        });
    Ok(y)
}

/// Max abs error and the minimum per-row cosine of `y` against the f32 result `f`.
fn int8_error(y: &[f32], f: &[f32], n: usize) -> (f32, f64) {
    let max_abs = y.iter().zip(f).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let cos = y.chunks(n).zip(f.chunks(n)).map(|(a, b)| {
        let dot = |p: &[f32], q: &[f32]| p.iter().zip(q).map(|(&u, &v)| f64::from(u) * f64::from(v)).sum::<f64>();
        dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
    });
    (max_abs, cos.fold(1.0, f64::min))
}

/// `x·Wᵀ` with matrixmultiply, reading Wᵀ in place through strides (beta = 0, no bias).
/// Outputs start zeroed, as candle allocates its matmul output (only rten's `gemm_uninit` can skip that).
fn matrixmultiply_sgemm(c: &Case) -> Out {
    let (m, k, n) = (c.m, c.k, c.n);
    let mut y = vec![0f32; m * n];
    let (x, w, out) = (c.x.as_ptr(), c.w.as_ptr(), y.as_mut_ptr());
    let (k_, n_) = (k as isize, n as isize);
    // SAFETY: x (M, K) and y (M, N) row-major, W (N, K) row-major read as Wᵀ (row stride 1, column stride K).
    unsafe { matrixmultiply::sgemm(m, k, n, 1.0, x, k_, 1, w, 1, k_, 0.0, out, n_, 1) };
    Out::Vec(y)
}

/// `x·Wᵀ` with gemmkit: Wᵀ through strides into row-major y, or a prepacked Wᵀ into column-major y (= yᵀ,
/// the only layout `gemm_packed_b` accepts).
fn gemmkit_gemm(c: &Case, packed: Option<&gemmkit::PackedRhs<f32>>) -> Out {
    let (m, k, n) = (c.m, c.k, c.n);
    let (mut y, par) = (vec![0f32; m * n], gemmkit::Parallelism::Rayon(THREADS));
    let x = gemmkit::MatRef::from_row_major(&c.x, m, k);
    match packed {
        None => {
            let w = gemmkit::MatRef::new(&c.w, k, n, 1, k as isize);
            gemmkit::gemm(1.0, x, w, 0.0, gemmkit::MatMut::from_row_major(&mut y, m, n), par);
            Out::Vec(y)
        }
        Some(p) => {
            gemmkit::gemm_packed_b(1.0, x, p, 0.0, gemmkit::MatMut::from_col_major(&mut y, m, n), par);
            Out::Transposed(y)
        }
    }
}

/// (label, whether it adds the bias itself, the op).
type Candidate<'a> = (&'static str, bool, Box<dyn FnMut() -> Res<Out> + 'a>);

/// Checks `f` (y + b vs the f64 reference; quantized ones by row cosine vs `f32_out`), then times it.
fn check(
    c: &Case,
    (label, adds_bias, f): &mut Candidate,
    f32_out: &mut Vec<f32>,
    errors: &mut Vec<String>,
) -> Res<Option<String>> {
    let mut y = f()?.row_major(c)?;
    if !*adds_bias {
        y.iter_mut().zip(c.b.iter().cycle()).for_each(|(v, b)| *v += b);
    }
    let err = c.rel_err(&y, true);
    if label.contains("int8") || label.contains("Q8_0") {
        let (max_abs, min_cos) = int8_error(&y, f32_out, c.n);
        errors.push(format!(
            "| {}×{}×{} | {label} | {max_abs:.2e} | {min_cos:.6} | {err:.1e} |",
            c.m, c.k, c.n
        ));
        return Ok((min_cos < 0.99).then(|| format!("WRONG (cos {min_cos:.3})")));
    }
    if f32_out.is_empty() {
        *f32_out = y;
    }
    Ok((err > 1e-5).then(|| format!("WRONG (rel err {err:.1e})")))
}

/// Times every candidate on one shape and prints one table row of GFLOP/s; appends the int8 error lines.
/// Returns each column's speed over candle's matmul (None where a candidate was wrong).
fn run_shape(c: &Case, errors: &mut Vec<String>) -> Res<Vec<Option<f64>>> {
    let f32_exec = GemmExecutor::<f32>::new();
    let i8_exec = GemmExecutor::<u8, i8, i32>::new();
    // vpmaddubsw (AVX2, AVX-512 without VNNI) saturates i16 pair sums: 7-bit activations, as fbgemm's reduce_range.
    let qmax = if i8_exec.may_saturate() { 127.0 } else { 255.0 };
    let (m, k, n) = (c.m, c.k, c.n);
    let xt = Tensor::from_slice(&c.x, (m, k), &Device::Cpu)?;
    let wt = Tensor::from_slice(&c.w, (n, k), &Device::Cpu)?;
    let w_view = || Matrix::from_data([n, k], c.w.as_slice()).transposed();
    let packed = f32_exec.prepack_b(w_view());
    let gk_packed = gemmkit::prepack_rhs(gemmkit::MatRef::new(&c.w, k, n, 1, k as isize));
    let i8w = quantize_weight(&i8_exec, c);
    let qmm = QMatMul::from_qtensor(QTensor::quantize(&wt, GgmlDType::Q8_0)?)?;
    let (xq, _, _) = quantize_rows(&c.x, k, qmax);
    let rten = |b: GemmInputB<f32>| -> Res<Out> {
        let mut y = Vec::with_capacity(m * n);
        let opts = GemmUninitOptions {
            bias: Some(BiasVector::Row(&c.b)),
            ..Default::default()
        };
        let a = GemmInputA::Unpacked(Matrix::from_data([m, k], c.x.as_slice()));
        f32_exec.gemm_uninit(&mut y.spare_capacity_mut()[..m * n], a, b, opts)?;
        // SAFETY: `gemm_uninit` returned Ok, so it initialised all M·N outputs.
        unsafe { y.set_len(m * n) };
        Ok(Out::Vec(y))
    };
    let mut candidates: Vec<Candidate> = vec![
        ("rten packed", true, Box::new(|| rten(GemmInputB::Packed(&packed)))),
        (
            "candle matmul",
            false,
            Box::new(|| Ok(Out::Tensor(xt.matmul(&wt.t()?)?))),
        ),
        ("rten unpacked", true, Box::new(|| rten(GemmInputB::Unpacked(w_view())))),
        ("matrixmultiply", false, Box::new(|| Ok(matrixmultiply_sgemm(c)))),
        ("gemmkit", false, Box::new(|| Ok(gemmkit_gemm(c, None)))),
        (
            "gemmkit packed, yᵀ out",
            false,
            Box::new(|| Ok(gemmkit_gemm(c, Some(&gk_packed)))),
        ),
        (
            "int8 whole op",
            true,
            Box::new(|| Ok(Out::Vec(int8_linear(&i8_exec, &i8w, c, qmax)?))),
        ),
        ("candle Q8_0", false, Box::new(|| Ok(Out::Tensor(qmm.forward(&xt)?)))),
    ];
    // The integer kernel alone, on activations quantized beforehand; its i32 output must be exact.
    let bad = int8_mismatches(&int8_gemm(&i8_exec, &i8w, &xq, c)?, &xq, c, &i8w);
    let mut cells = Vec::new();
    if bad.is_empty() {
        candidates.push((
            "int8 GEMM only",
            false,
            Box::new(|| int8_gemm(&i8_exec, &i8w, &xq, c).map(|_| Out::Vec(Vec::new()))),
        ));
    } else {
        cells.push(("int8 GEMM only", format!("WRONG (rows {bad:?})")));
    }
    let mut f32_out = Vec::new();
    let mut timed = Vec::new();
    for cand in candidates.iter_mut() {
        let verdict = if cand.0 == "int8 GEMM only" {
            None
        } else {
            check(c, cand, &mut f32_out, errors)?
        };
        match verdict {
            Some(wrong) => cells.push((cand.0, wrong)),
            None => timed.push(cand),
        }
    }
    let secs = median_secs(&mut timed)?;
    let candle = timed
        .iter()
        .zip(&secs)
        .find(|(cand, _)| cand.0 == "candle matmul")
        .map(|(_, &t)| t);
    let speedup = COLUMNS.map(|col| {
        let t = timed.iter().zip(&secs).find(|(cand, _)| cand.0 == col).map(|(_, &t)| t);
        Some(candle? / t?)
    });
    cells.extend(
        timed
            .iter()
            .zip(secs)
            .map(|(cand, t)| (cand.0, format!("{:.1}", c.flop() / t / 1e9))),
    );
    let order = COLUMNS.map(|col| cells.iter().find(|(l, _)| *l == col).map_or("?", |(_, v)| v.as_str()));
    println!("| {m}×{k}×{n} | {} |", order.join(" | "));
    Ok(speedup.to_vec())
}

const COLUMNS: [&str; 9] = [
    "candle matmul",
    "rten packed",
    "rten unpacked",
    "matrixmultiply",
    "gemmkit",
    "gemmkit packed, yᵀ out",
    "int8 GEMM only",
    "int8 whole op",
    "candle Q8_0",
];

/// Shows the rten-gemm 0.27 per-row zero-point defect that `int8_gemm` works around: with `a_quant` the checked
/// rows past the first MR-row panel differ from Σₖ (xq − zx)·wq.
fn zero_point_repro() -> Res<()> {
    let (c, exec) = (Case::new(64, 512, 64), GemmExecutor::<u8, i8, i32>::new());
    let w = quantize_weight(&exec, &c);
    let (xq, _, zero) = quantize_rows(&c.x, c.k, 127.0);
    let acc = int8_gemm_with(&exec, &w, &xq, Some(&zero), &c)?;
    // Undo the zero-point term so the raw Σ xq·wq check applies: Σ (xq − z)·wq = Σ xq·wq − z·Σ wq.
    let raw: Vec<i32> = acc
        .iter()
        .enumerate()
        .map(|(i, &a)| a + i32::from(zero[i / c.n]) * w.col_sum[i % c.n])
        .collect();
    println!(
        "rten a_quant per-row zero points, 64×512×64: checked rows wrong = {:?}",
        int8_mismatches(&raw, &xq, &c, &w)
    );
    Ok(())
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn uptime() -> String {
    std::process::Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Weight pack cost and size, once per (K, N): rten f32 prepack, rten int8 quantize + prepack, gemmkit, Q8_0.
fn pack_table() -> Res<()> {
    println!("| weight (K×N) | rten f32 pack ms | rten f32 packed / f32 | int8 quantize+pack ms | int8 packed / f32 | gemmkit pack ms | Q8_0 quantize ms | Q8_0 / f32 |");
    println!("|---|---|---|---|---|---|---|---|");
    for (k, n, name) in LAYERS {
        let c = Case::new(1, k, n);
        let f32_bytes = (4 * k * n) as f64;
        let (f32_exec, i8_exec) = (GemmExecutor::<f32>::new(), GemmExecutor::<u8, i8, i32>::new());
        let view = Matrix::from_data([n, k], c.w.as_slice()).transposed();
        let (t_f32, p) = secs_of(|| f32_exec.prepack_b(view.view()));
        let f32_size = (p.into_vec().len() * 4) as f64;
        let (t_i8, q) = secs_of(|| quantize_weight(&i8_exec, &c));
        let i8_size = (q.packed.into_vec().len() * 4 + q.scale.len() * 4 + q.col_sum.len() * 4) as f64;
        let (t_gk, _) = secs_of(|| gemmkit::prepack_rhs(gemmkit::MatRef::new(&c.w, k, n, 1, k as isize)));
        let wt = Tensor::from_slice(&c.w, (n, k), &Device::Cpu)?;
        let (t_q8, qt) = secs_of(|| QTensor::quantize(&wt, GgmlDType::Q8_0));
        let q8_size = qt?.storage_size_in_bytes() as f64;
        println!(
            "| {name} ({k}×{n}) | {:.1} | {:.3} | {:.1} | {:.3} | {:.1} | {:.1} | {:.3} |",
            t_f32 * 1e3,
            f32_size / f32_bytes,
            t_i8 * 1e3,
            i8_size / f32_bytes,
            t_gk * 1e3,
            t_q8 * 1e3,
            q8_size / f32_bytes
        );
    }
    Ok(())
}

fn main() -> Res<()> {
    // matrixmultiply sizes its own thread-tree pool from this variable (default: physical cores, at most 4).
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        std::env::set_var("MATMUL_NUM_THREADS", THREADS.to_string());
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(THREADS).build()?;
    pool.install(|| -> Res<()> {
        let i8_exec = GemmExecutor::<u8, i8, i32>::new();
        println!(
            "rten kernels: f32 {}, int8 {} (may_saturate = {})",
            GemmExecutor::<f32>::new().kernel_name(),
            i8_exec.kernel_name(),
            i8_exec.may_saturate()
        );
        println!("rayon threads in pool: {}", rayon::current_num_threads());
        zero_point_repro()?;
        pack_table()?;
        let mut errors = vec![
            "| M×K×N | candidate | max abs vs f32 | min row cosine vs f32 | rel err vs f64 |".to_string(),
            "|---|---|---|---|---|".to_string(),
        ];
        let mut speedups = Vec::new();
        for (group, m) in GROUPS {
            for attempt in 1.. {
                while load1() > MAX_LOAD {
                    println!("load {:.2} > {MAX_LOAD}: waiting", load1());
                    std::thread::sleep(std::time::Duration::from_secs(30));
                }
                println!("\n### {group} (attempt {attempt})\nbefore: {}", uptime());
                println!(
                    "| M×K×N | {} |\n|---{}|",
                    COLUMNS.join(" | "),
                    "|---".repeat(COLUMNS.len())
                );
                let (mut group_errors, mut group_speedups) = (Vec::new(), Vec::new());
                for (k, n, _) in LAYERS {
                    group_speedups.push(run_shape(&Case::new(m, k, n), &mut group_errors)?);
                }
                println!("after: {}", uptime());
                if load1() <= MAX_LOAD || attempt == 3 {
                    errors.extend(group_errors);
                    speedups.extend(group_speedups);
                    break;
                }
                println!("load {:.2} > {MAX_LOAD} after the group: rerunning it", load1());
            }
        }
        println!("\n### int8 error\n{}", errors.join("\n"));
        println!(
            "\n### geometric mean speed over candle matmul, {} shapes",
            speedups.len()
        );
        for (i, col) in COLUMNS.iter().enumerate() {
            let ratios: Option<Vec<f64>> = speedups.iter().map(|s| s[i]).collect();
            let geo = ratios.map(|r| (r.iter().map(|v| v.ln()).sum::<f64>() / r.len() as f64).exp());
            println!(
                "| {col} | {} |",
                geo.map_or("wrong somewhere".to_string(), |g| format!("{g:.2}×"))
            );
        }
        Ok(())
    })
}
