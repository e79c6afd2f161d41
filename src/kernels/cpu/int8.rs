//! Dynamic int8 `x Wᵀ`, as PyTorch's `quantize_dynamic` and ONNX Runtime's `MatMulInteger`: the weight quantized
//! once to symmetric int8 per output channel and packed for the integer GEMM — AMX tiles where the CPU has AMX-INT8
//! and the OS grants it ([`super::amx`]), else the crate's `vpdpbusd` kernel on AVX-512 VNNI ([`super::vnni`]), else
//! `rten-gemm`'s (`vpmaddubsw` + `vpmaddwd` on AVX2); each call quantizes the input rows to u8 (asymmetric, per
//! row), accumulates in i32 and dequantizes to f32, bias and activation fused as after the f32 GEMM
//! ([`super::bias_act::Epilogue`]). On AVX2 CPUs whose integer dot product is no faster than their f32 FMA, the
//! same codes run weight-only through the f32 kernel instead ([`PackedCodes`]).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;
use rten_gemm::{GemmExecutor, GemmInputA, GemmInputB, GemmUninitOptions, PackedBMatrix};
use rten_tensor::NdTensorView;

#[cfg(target_arch = "x86_64")]
use super::amx::{self, Tiles};
use super::bias_act::{Epilogue, Fused};
use super::math::{lane_max_of, lane_min_max, round_clamped};
#[cfg(target_arch = "x86_64")]
use super::packed::Output;
use super::packed::PackedCodes;
#[cfg(target_arch = "x86_64")]
use super::vnni::{self, CodePanels, Vnni};
use super::{contiguous, with_host_f32, Isa, Level, Param};
use crate::config::Activation;
use crate::error::{Error, Result};

/// The largest weight magnitude: symmetric, so that no zero point is needed (as PyTorch's per-channel qint8).
const WEIGHT_MAX: f32 = 127.0;

/// A projection's (out, in) weight as int8 per output channel, packed for the integer GEMM.
pub(crate) struct Int8Weight {
    packing: Packing,
    /// Per output channel: `w[j, :] ≈ scales[j] · q[j, :]`.
    scales: Vec<f32>,
    /// Per output channel: `Σ q[j, :]`, for the input zero points' share of the products.
    code_sums: Vec<i32>,
    in_dim: usize,
    /// The largest input code: 255, or 127 where the kernel's `vpmaddubsw` could saturate an i16 pair sum
    /// (AVX2 without VNNI: 2 · 255 · 127 > 32767), as fbgemm's `reduce_range`.
    input_max: f32,
}

/// The integer GEMM a weight is packed for, or the f32 kernel over its codes.
enum Packing {
    Rten(PackedBMatrix<i8>),
    WeightOnly(PackedCodes),
    #[cfg(target_arch = "x86_64")]
    Vnni(CodePanels, Vnni),
    #[cfg(target_arch = "x86_64")]
    Amx(CodePanels, Tiles),
}

/// Which integer GEMM to pack for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Rten,
    /// The f32 kernel over codes dequantized as it goes, compiled for this instruction set.
    WeightOnly(Isa),
    #[cfg(target_arch = "x86_64")]
    Vnni(Vnni),
    #[cfg(target_arch = "x86_64")]
    Amx(Tiles),
}

impl Backend {
    /// AMX where it may run (16× VNNI's products per instruction), else the crate's AVX-512 VNNI kernel (1.3-1.5×
    /// rten-gemm's whole op on the towers' shapes, Xeon Emerald Rapids), else weight-only where the CPU's integer
    /// dot product is slow ([`slow_integer_dot`]) and the f32 kernel runs, else `rten-gemm`. Chosen by CPU
    /// features only, never by timing, so that a machine always gives the same embeddings.
    fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(tiles) = Tiles::check() {
                return Self::Amx(tiles);
            }
            if let Some(vnni) = Vnni::check() {
                return Self::Vnni(vnni);
            }
        }
        let isa = Isa::best();
        if isa.level() != Level::Baseline && slow_integer_dot() {
            return Self::WeightOnly(isa);
        }
        Self::Rten
    }
}

/// Whether this CPU's AVX2 integer dot product (`vpmaddubsw` + `vpmaddwd`) is no faster than its f32 FMA, so that
/// dynamic int8 would run slower than f32 ([`slow_integer_dot_on`]); asked once per process (CPUID traps to the
/// hypervisor in a VM, and every projection asks). `false` off x86-64.
fn slow_integer_dot() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static SLOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SLOW.get_or_init(|| {
            let cpuid = raw_cpuid::CpuId::new();
            match (cpuid.get_vendor_info(), cpuid.get_feature_info()) {
                (Some(vendor), Some(version)) => {
                    slow_integer_dot_on(vendor.as_str(), version.family_id(), version.model_id())
                }
                _ => false,
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`slow_integer_dot`] for a CPUID vendor string, family and model: one vector integer multiply per cycle against
/// two FMAs. Measured on an AMD family 23 (Zen 2 class: int8 vision 1.1-1.2× *slower* than f32, BENCHMARKS.md);
/// AMD and Hygon families up to 0x18 (Zen 1/2, Dhyana), and Intel Haswell and Broadwell, whose `vpmaddubsw` issues
/// on one port (uops.info), are taken to be so. AMD Zen 3 and later, Intel Skylake and later issue it on two.
fn slow_integer_dot_on(vendor: &str, family: u8, model: u8) -> bool {
    // Intel family 6 models: Haswell (3C, 3F, 45, 46), Broadwell (3D, 47, 4F, 56).
    const HASWELL_BROADWELL: [u8; 8] = [0x3C, 0x3F, 0x45, 0x46, 0x3D, 0x47, 0x4F, 0x56];
    match vendor {
        "AuthenticAMD" | "HygonGenuine" => family <= 0x18,
        "GenuineIntel" => family == 6 && HASWELL_BROADWELL.contains(&model),
        _ => false,
    }
}

impl std::fmt::Debug for Int8Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Int8Weight({}x{}, {}, input codes 0..={})",
            self.scales.len(),
            self.in_dim,
            match self.packing {
                Packing::Rten(_) => "rten-gemm",
                Packing::WeightOnly(_) => "weight-only, f32 kernel",
                #[cfg(target_arch = "x86_64")]
                Packing::Vnni(..) => "AVX-512 VNNI",
                #[cfg(target_arch = "x86_64")]
                Packing::Amx(..) => "AMX",
            },
            self.input_max
        )
    }
}

fn executor() -> GemmExecutor<u8, i8, i32> {
    GemmExecutor::new()
}

impl Int8Weight {
    /// Quantizes and packs `weight` (out, in), f32 on the CPU (anything else is `Error::InvalidArgument`): per row, `scale = max|w| / 127`,
    /// `q = round(w / scale)` (ties to even).
    pub(crate) fn quantize(weight: &Tensor) -> Result<Self> {
        Self::quantize_for(weight, Backend::best())
    }

    fn quantize_for(weight: &Tensor, backend: Backend) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        let unsupported = || {
            Error::invalid_argument(
                "quantization",
                format!(
                    "int8 runs on the CPU with f32 activations and takes a non-empty weight, not {:?} {:?} on \
                     {:?}: load in f32 on the CPU, or use a GGML format",
                    weight.dims(),
                    weight.dtype(),
                    weight.device()
                ),
            )
        };
        if weight.dtype() != DType::F32 || out_dim == 0 || in_dim == 0 {
            return Err(unsupported());
        }
        // Read in place: a copy of every weight cost as much as quantizing it.
        let isa = Isa::best();
        let (q, (scales, code_sums)) = with_host_f32(weight, |w| {
            let mut q = vec![0i8; w.len()];
            let rows: (Vec<f32>, Vec<i32>) = q
                .par_chunks_mut(in_dim)
                .zip(w.par_chunks(in_dim))
                .map(|(q, w)| dispatch!(isa, (w: &[f32], q: &mut [i8]) -> (f32, i32) { quantize_weight_row(w, q) }))
                .unzip();
            (q, rows)
        })?
        .ok_or_else(unsupported)?;
        let (packing, input_max) = match backend {
            // Exact i32 sums of u8 × i8 products: the full code range.
            #[cfg(target_arch = "x86_64")]
            Backend::Amx(tiles) => (Packing::Amx(CodePanels::pack(&q, (out_dim, in_dim)), tiles), 255.0),
            #[cfg(target_arch = "x86_64")]
            Backend::Vnni(vnni) => (Packing::Vnni(CodePanels::pack(&q, (out_dim, in_dim)), vnni), 255.0),
            // The inputs stay f32: no input codes.
            Backend::WeightOnly(isa) => (Packing::WeightOnly(PackedCodes::pack(&q, &scales, in_dim, isa)), 255.0),
            Backend::Rten => {
                // Wᵀ (in, out) as a strided view of the (out, in) rows: packing reads it without a transposed copy.
                let b = NdTensorView::from_data_with_strides([in_dim, out_dim], &q[..], [1, in_dim])
                    .map_err(|e| candle_core::Error::Msg(format!("int8 weight view: {e:?}")))?;
                let exec = executor();
                let input_max = if exec.may_saturate() { 127.0 } else { 255.0 };
                (Packing::Rten(exec.prepack_b(b)), input_max)
            }
        };
        Ok(Self {
            packing,
            scales,
            code_sums,
            in_dim,
            input_max,
        })
    }

    /// Output width.
    pub(crate) fn out_dim(&self) -> usize {
        self.scales.len()
    }

    /// Input width.
    pub(crate) fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// `act(x Wᵀ + bias) + residual` for `x` (rows, in) on the CPU, into new storage; `residual` is (rows, out).
    /// Bias, activation and residual are applied to each dequantized tile where they have a fused form, else after
    /// the product by candle's ops (as [`super::PackedWeight::forward`]).
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        (bias, act, residual): (Option<&Param>, Option<Activation>, Option<&Tensor>),
    ) -> Result<Tensor> {
        Fused::run(x, (bias, act, residual), self.out_dim(), |x, epilogue| {
            let op = Int8MatMul {
                weight: self,
                epilogue,
                isa: Isa::best(),
            };
            Ok(x.apply_op1_no_bwd(&op)?)
        })
    }

    /// The f32 weight these codes stand for, (out, in): for tests and error bounds.
    #[cfg(test)]
    pub(crate) fn dequantized(&self, codes: &[i8]) -> Vec<f32> {
        codes
            .chunks(self.in_dim)
            .zip(&self.scales)
            .flat_map(|(row, s)| row.iter().map(move |&c| f32::from(c) * s))
            .collect()
    }
}

/// Quantizes one output channel into `q`; returns its scale and the sum of its codes.
#[inline(always)]
fn quantize_weight_row(w: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = lane_max_of(w, f32::abs).max(0.0);
    let scale = if amax > 0.0 { amax / WEIGHT_MAX } else { 1.0 };
    let inv = 1.0 / scale;
    for (q, v) in q.iter_mut().zip(w) {
        *q = round_clamped(v * inv, -WEIGHT_MAX, WEIGHT_MAX) as i8;
    }
    (scale, q.iter().map(|&c| i32::from(c)).sum())
}

/// Quantizes one input row to codes `0..=max` with a zero point (asymmetric; the range always holds 0, so that
/// zero maps to a code exactly); returns (scale, zero point).
#[inline(always)]
fn quantize_input_row(x: &[f32], q: &mut [MaybeUninit<u8>], max: f32) -> (f32, u8) {
    let (lo, hi) = lane_min_max(x);
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / max } else { 1.0 };
    let inv = 1.0 / scale;
    let zero = (-lo * inv).round_ties_even().clamp(0.0, max);
    for (q, &v) in q.iter_mut().zip(x) {
        q.write(round_clamped(v * inv + zero, 0.0, max) as u8);
    }
    (scale, zero as u8)
}

/// `(acc − zero · code_sums[j]) · row_scale · scales[j]`, written over the accumulators as f32 bits.
#[inline(always)]
fn dequantize_row(acc: &mut [i32], (row_scale, zero): (f32, i32), scales: &[f32], code_sums: &[i32]) {
    for ((a, &s), &c) in acc.iter_mut().zip(scales).zip(code_sums) {
        *a = dequantize(*a, (row_scale, zero), (s, c)).to_bits() as i32;
    }
}

/// One output: `(sum − zero · code_sum) · row_scale · scale`, the formula both integer GEMMs dequantize with (AMX's
/// values equal rten-gemm's because they share it).
#[inline(always)]
pub(super) fn dequantize(sum: i32, (row_scale, zero): (f32, i32), (scale, code_sum): (f32, i32)) -> f32 {
    (sum - zero * code_sum) as f32 * (row_scale * scale)
}

/// What turns a block's i32 sums into f32: `(sum − zero[i] · code_sums[j]) · row_scales[i] · scales[j]`, for the
/// crate's own integer kernels.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Dequantize<'a> {
    pub(super) row_scales: &'a [f32],
    pub(super) zeros: &'a [u8],
    pub(super) scales: &'a [f32],
    pub(super) code_sums: &'a [i32],
    /// Bias and activation, applied to each dequantized row segment.
    pub(super) epilogue: Epilogue<'a>,
    /// The instruction set to finish in: full tiles in AVX-512 registers where it is AVX-512.
    pub(super) isa: Isa,
}

/// The widest tile the crate's integer kernels hand to [`Dequantize::write`]: VNNI's 64 columns (AMX's are 32).
#[cfg(target_arch = "x86_64")]
pub(super) const MAX_TILE_COLS: usize = 64;

#[cfg(target_arch = "x86_64")]
impl Dequantize<'_> {
    /// Writes the `height` × `width` corner of `sums` (rows of `pitch`), dequantized and through the epilogue, at
    /// (`row`, `col`) of `out`; `width` is at most [`MAX_TILE_COLS`]. The caller's task owns that part of the
    /// output (`packed::task_blocks`).
    #[inline(always)]
    pub(super) fn write(&self, sums: &[i32], pitch: usize, out: Output, corner: (usize, usize, usize, usize)) {
        let (row, col, height, width) = corner;
        if self.isa.level() == Level::Avx512 {
            // SAFETY: an `Isa` of the AVX-512 level is only made where the CPU has AVX-512F (`Isa::new`).
            match width {
                MAX_TILE_COLS => return unsafe { self.write_vectors::<4>(sums, pitch, out, (row, col, height)) },
                32 => return unsafe { self.write_vectors::<2>(sums, pitch, out, (row, col, height)) },
                _ => {}
            }
        }
        // A full tile's width as a constant: its rows are finished without tails and copied in vector moves, not
        // by a call to memmove (1.3 % of int8 text 32 × 16's samples, Zen 4).
        if width == MAX_TILE_COLS {
            self.write_rows(sums, pitch, out, (row, col, height, MAX_TILE_COLS));
        } else {
            self.write_rows(sums, pitch, out, corner);
        }
    }

    /// [`Dequantize::write`] for a tile `V` vectors wide, in AVX-512 registers from the sums' loads to the output's
    /// stores, each value bit for bit as [`Dequantize::write_rows`] makes it (`math::avx512`). That scalar form
    /// finished each row in a local that each of its passes stored and reloaded: 13 cycles a vector with a bias,
    /// 28 with GELU, alone on one thread of a Zen 4. In the VNNI product this made 512 × 1024 × {3072, 1024, 4096}
    /// 2–3 % faster on one thread (interleaved runs), within ±1 % on two.
    #[target_feature(enable = "avx512f")]
    fn write_vectors<const V: usize>(
        &self,
        sums: &[i32],
        pitch: usize,
        out: Output,
        (row, col, height): (usize, usize, usize),
    ) {
        use std::arch::x86_64::{
            _mm512_cvtepi32_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps, _mm512_mullo_epi32,
            _mm512_set1_epi32, _mm512_set1_ps, _mm512_storeu_ps, _mm512_sub_epi32,
        };
        const LANES: usize = 16;
        let width = V * LANES;
        let (scales, code_sums) = (&self.scales[col..col + width], &self.code_sums[col..col + width]);
        for (i, sums) in sums.chunks_exact(pitch).take(height).enumerate() {
            let (row_scale, zero) = self.row(row + i);
            let (row_scale, zero) = (_mm512_set1_ps(row_scale), _mm512_set1_epi32(zero));
            let at = (row + i) * out.width + col;
            for v in 0..V {
                let lanes = v * LANES..(v + 1) * LANES;
                // SAFETY: each slice is 16 values (`sums` rows are at least `width` long, as `write_rows` reads),
                // the 64 bytes each load reads.
                let (sum, scale, code_sum) = unsafe {
                    (
                        _mm512_loadu_si512(sums[lanes.clone()].as_ptr().cast()),
                        _mm512_loadu_ps(scales[lanes.clone()].as_ptr()),
                        _mm512_loadu_si512(code_sums[lanes].as_ptr().cast()),
                    )
                };
                // `dequantize`, lane by lane: (sum − zero · code_sum) as f32 · (row_scale · scale).
                let exact = _mm512_sub_epi32(sum, _mm512_mullo_epi32(zero, code_sum));
                let y = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(row_scale, scale));
                let y = self.epilogue.apply_vector(y, (row + i, col + v * LANES), out.width);
                // SAFETY: (row + i, col + 16 v ..+ 16) lies inside the output and inside the calling task's block,
                // which no other task writes (the caller's contract).
                unsafe { _mm512_storeu_ps(out.ptr.add(at + v * LANES), y) };
            }
        }
    }

    /// [`Dequantize::write`]'s work, inlined for each width it is called with.
    #[inline(always)]
    fn write_rows(&self, sums: &[i32], pitch: usize, out: Output, corner: (usize, usize, usize, usize)) {
        let (row, col, height, width) = corner;
        let (scales, code_sums) = (&self.scales[col..col + width], &self.code_sums[col..col + width]);
        // Each row is finished in a local and written once, not written, read back for the epilogue and written
        // again (VNNI, 2056 × 1024 × 4096 with quick_gelu, out of cache: 12 % of the op on a Zen 4).
        let mut local = [0f32; MAX_TILE_COLS];
        let values = &mut local[..width];
        for (i, acc) in sums.chunks_exact(pitch).enumerate().take(height) {
            let (row_scale, zero) = self.row(row + i);
            for (((v, &a), &s), &c) in values.iter_mut().zip(acc).zip(scales).zip(code_sums) {
                *v = dequantize(a, (row_scale, zero), (s, c));
            }
            // Only the AVX-512 kernels (VNNI, AMX) write here, and AVX-512F has FMA.
            self.epilogue.apply::<true>(values, (row + i, col), out.width);
            // SAFETY: (row + i, col .. col + width) lies inside the output and inside the calling task's block,
            // which no other task writes; `values` is a local of `width` values.
            unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out.ptr.add((row + i) * out.width + col), width) };
        }
    }

    /// Row `row`'s input scale and zero point.
    #[inline(always)]
    fn row(&self, row: usize) -> (f32, i32) {
        (self.row_scales[row], i32::from(self.zeros[row]))
    }
}

/// The candle op running [`Int8Weight::forward`] on the input's storage.
struct Int8MatMul<'a> {
    weight: &'a Int8Weight,
    epilogue: Epilogue<'a>,
    isa: Isa,
}

impl Int8MatMul<'_> {
    /// Quantizes `x`'s rows into rows of `pitch` codes (zeros past the input width), `padded_rows` of them (zeros
    /// past `x`'s): the codes, each row's scale and zero point.
    fn quantize_input(&self, x: &[f32], pitch: usize, padded_rows: usize) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
        let (k, max, isa) = (self.weight.in_dim, self.weight.input_max, self.isa);
        let (rows, len) = (x.len() / k, padded_rows * pitch);
        // Not zeroed first: each value is written once, the padding with zeros (a memset of the whole buffer was
        // 1.4 % of the int8 text tower's samples).
        let mut codes: Vec<u8> = Vec::with_capacity(len);
        let (present, padding) = codes.spare_capacity_mut()[..len].split_at_mut(rows * pitch);
        padding.fill(MaybeUninit::new(0));
        let (scales, zeros) = present
            .par_chunks_mut(pitch)
            .zip(x.par_chunks(k))
            .map(|(q, x)| {
                let (q, pad) = q.split_at_mut(k);
                pad.fill(MaybeUninit::new(0));
                dispatch!(isa, (x: &[f32], q: &mut [MaybeUninit<u8>], max: f32) -> (f32, u8) {
                    quantize_input_row(x, q, max)
                })
            })
            .unzip();
        // SAFETY: all `len` values are written: the padded rows above, each row's `k` codes by `quantize_input_row`
        // (one per input value) and its padding.
        unsafe { codes.set_len(len) };
        (codes, scales, zeros)
    }

    fn run(&self, x: &[f32]) -> std::result::Result<Vec<f32>, rten_gemm::GemmError> {
        match &self.weight.packing {
            Packing::Rten(packed) => self.run_rten(x, packed),
            Packing::WeightOnly(codes) => Ok(codes.matmul(x, self.epilogue, self.isa)),
            #[cfg(target_arch = "x86_64")]
            Packing::Vnni(panels, vnni) => Ok(self.run_panels(x, panels, vnni::MR, |codes, rows, dq| {
                vnni::matmul(codes, rows, panels, dq, *vnni)
            })),
            #[cfg(target_arch = "x86_64")]
            Packing::Amx(panels, tiles) => Ok(self.run_panels(x, panels, amx::TILE_ROWS, |codes, rows, dq| {
                amx::matmul(codes, rows, panels, dq, (*tiles, self.isa))
            })),
        }
    }

    /// Quantizes `x` into rows of the panels' depth, `rows` rounded up to `row_step`, and runs `kernel` on them.
    #[cfg(target_arch = "x86_64")]
    fn run_panels(
        &self,
        x: &[f32],
        panels: &CodePanels,
        row_step: usize,
        kernel: impl FnOnce(&[u8], usize, Dequantize) -> Vec<f32>,
    ) -> Vec<f32> {
        let rows = x.len() / self.weight.in_dim;
        let (codes, row_scales, zeros) = self.quantize_input(x, panels.depth(), rows.next_multiple_of(row_step));
        let dq = Dequantize {
            row_scales: &row_scales,
            zeros: &zeros,
            scales: &self.weight.scales,
            code_sums: &self.weight.code_sums,
            epilogue: self.epilogue,
            isa: self.isa,
        };
        kernel(&codes, rows, dq)
    }

    fn run_rten(&self, x: &[f32], packed: &PackedBMatrix<i8>) -> std::result::Result<Vec<f32>, rten_gemm::GemmError> {
        let (k, n) = (self.weight.in_dim, self.weight.out_dim());
        let rows = x.len() / k;
        let (codes, row_scales, zeros) = self.quantize_input(x, k, rows);
        let a = NdTensorView::from_data([rows, k], &codes[..]);
        let mut acc: Vec<i32> = Vec::with_capacity(rows * n);
        // Raw `Σ codes · weight codes`; the zero points are applied in the dequantization, not by rten-gemm, whose
        // 0.27 row-zero-point path gave wrong rows beyond the first row tile (found by the test below).
        let written = executor()
            .gemm_uninit(
                &mut acc.spare_capacity_mut()[..rows * n],
                GemmInputA::Unpacked(a),
                GemmInputB::Packed(packed),
                GemmUninitOptions::default(),
            )?
            .len();
        // SAFETY: `gemm_uninit` returned the first `rows · n` elements initialised (it errors otherwise), and the
        // capacity is `rows · n`.
        unsafe { acc.set_len(written) };
        let (isa, epilogue, fma) = (self.isa, self.epilogue, self.isa.has_fma());
        let (scales, sums) = (&self.weight.scales[..], &self.weight.code_sums[..]);
        acc.par_chunks_mut(n)
            .zip(row_scales.into_par_iter().zip(zeros))
            .enumerate()
            .for_each(|(i, (row, (s, z)))| {
                let sz = (s, i32::from(z));
                dispatch!(isa, (
                    row: &mut [i32], i: usize, sz: (f32, i32), scales: &[f32], sums: &[i32], epilogue: Epilogue,
                    fma: bool
                ) {
                    dequantize_row(row, sz, scales, sums);
                    let width = row.len();
                    let row = bytemuck::cast_slice_mut(row);
                    if fma {
                        epilogue.apply::<true>(row, (i, 0), width);
                    } else {
                        epilogue.apply::<false>(row, (i, 0), width);
                    }
                })
            });
        Ok(bytemuck::cast_vec(acc))
    }
}

impl CustomOp1 for Int8MatMul<'_> {
    fn name(&self) -> &'static str {
        "altclip-int8-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let (rows, k) = layout.shape().dims2()?;
        if k != self.weight.in_dim {
            candle_core::bail!("{}: input width {k}, weight takes {}", self.name(), self.weight.in_dim);
        }
        self.epilogue.check_fits(self.name(), (rows, self.weight.out_dim()))?;
        let y = self
            .run(x)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", self.name())))?;
        Ok((CpuStorage::F32(y), Shape::from((rows, self.weight.out_dim()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::math::{gelu_erf, gelu_erf_with};
    use crate::kernels::cpu::testing::{for_each_isa, values, wave};

    /// The op without bias or activation.
    fn plain(weight: &Int8Weight, isa: Isa) -> Int8MatMul<'_> {
        Int8MatMul {
            weight,
            epilogue: Epilogue::NONE,
            isa,
        }
    }

    /// `x Wᵀ` in f64 from the codes the kernel used, as the exact reference for the integer path.
    fn reference(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
        (0..rows)
            .flat_map(|i| (0..n).map(move |j| (0..k).map(|t| f64::from(x[i * k + t]) * f64::from(w[j * k + t])).sum()))
            .collect()
    }

    #[test]
    fn every_isa_quantizes_weights_alike() {
        // Both signs, magnitudes across the range, a width that is no multiple of any vector.
        let w: Vec<f32> = (0..300)
            .map(|i| ((i % 255) as f32 - 127.0) / 254.0 + (i as f32 * 0.37).sin())
            .collect();
        let want = {
            let mut q = vec![0i8; w.len()];
            (quantize_weight_row(&w, &mut q), q)
        };
        for_each_isa("int8 weight quantization", |isa| {
            let mut codes = vec![0i8; w.len()];
            let (w, q) = (&w[..], &mut codes[..]);
            let got = dispatch!(isa, (w: &[f32], q: &mut [i8]) -> (f32, i32) { quantize_weight_row(w, q) });
            assert_eq!((got, codes), want.clone(), "{isa:?}");
        });
    }

    #[test]
    fn every_isa_quantizes_and_dequantizes_alike() {
        let x = values(&wave((6, 70), 3.0, 0.2, 0.5));
        let w = Int8Weight::quantize(&wave((11, 70), 0.05, 0.3, 0.0)).unwrap();
        let base = Isa::new(crate::kernels::cpu::Level::Baseline).unwrap();
        let want = plain(&w, base).run(&x).unwrap();
        for_each_isa("int8 quantize/dequantize", |isa| {
            let got = plain(&w, isa).run(&x).unwrap();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{isa:?}"
            );
        });
    }

    /// `backend`'s values, bit for bit, are rten-gemm's, over every ISA's quantization and dequantization.
    #[cfg(target_arch = "x86_64")]
    fn gives_the_values_rten_gemm_gives(backend: Backend) {
        // Rows off the 16-row AMX tile, the 32-row pair and the 6-row VNNI tile (last tiles of 1 to 5 rows, which
        // VNNI runs as 2-, 4- and 6-row tiles), several row blocks; depths off the 64-deep step and the 512-deep
        // VNNI slice; widths off the 32- and 64-column tiles, several column blocks; the towers' depths.
        for (rows, k, n) in [
            (1, 5, 7),
            (17, 64, 33),
            (33, 70, 40),
            (300, 256, 300),
            (257, 1024, 64),
            (40, 4096, 96),
            (7, 130, 1000),
            (13, 600, 70),
            (20, 520, 130),
        ] {
            let w = wave((n, k), 0.05, 0.3, 0.0);
            let x = values(&wave((rows, k), 2.0, 1.1, 0.3));
            let mut own = Int8Weight::quantize_for(&w, backend).unwrap();
            let rten = Int8Weight::quantize_for(&w, Backend::Rten).unwrap();
            if backend == Backend::Amx(Tiles::Model) {
                // Exact either way: on a CPU without VNNI rten-gemm's codes are 7-bit, so the model's are too.
                own.input_max = rten.input_max;
            }
            assert_eq!(own.input_max, rten.input_max, "a CPU with VNNI: no reduced range");
            let want = plain(&rten, Isa::best()).run(&x).unwrap();
            for_each_isa("int8 dequantization", |isa| {
                let got = plain(&own, isa).run(&x).unwrap();
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{backend:?}, {rows}x{k}x{n}, {isa:?}"
                );
            });
        }
    }

    #[test]
    fn amx_gives_the_values_rten_gemm_gives() {
        #[cfg(target_arch = "x86_64")]
        match Tiles::check() {
            Some(tiles) => gives_the_values_rten_gemm_gives(Backend::Amx(tiles)),
            None => println!("int8 AMX: skipped, this CPU lacks AMX-INT8 or the OS did not grant the tile state"),
        }
        #[cfg(not(target_arch = "x86_64"))]
        println!("int8 AMX: skipped, not an x86-64 CPU");
    }

    /// The AMX kernel's packing, blocking and finishing on every x86-64 CPU, its tile instructions modelled.
    #[test]
    fn amx_on_a_model_of_its_tiles_gives_the_values_rten_gemm_gives() {
        #[cfg(target_arch = "x86_64")]
        gives_the_values_rten_gemm_gives(Backend::Amx(Tiles::Model));
        #[cfg(not(target_arch = "x86_64"))]
        println!("int8 AMX model: skipped, not an x86-64 CPU");
    }

    #[test]
    fn vnni_gives_the_values_rten_gemm_gives() {
        #[cfg(target_arch = "x86_64")]
        match Vnni::check() {
            Some(vnni) => gives_the_values_rten_gemm_gives(Backend::Vnni(vnni)),
            None => println!("int8 AVX-512 VNNI: skipped, this CPU lacks AVX-512 VNNI"),
        }
        #[cfg(not(target_arch = "x86_64"))]
        println!("int8 AVX-512 VNNI: skipped, not an x86-64 CPU");
    }

    #[test]
    fn integer_dot_products_are_slow_on_zen_2_and_haswell_only() {
        let cpus = [
            ("AuthenticAMD", 0x17, 0x31, true, "Zen 2"),
            ("AuthenticAMD", 0x17, 0x01, true, "Zen 1"),
            ("HygonGenuine", 0x18, 0x00, true, "Dhyana"),
            ("AuthenticAMD", 0x19, 0x01, false, "Zen 3"),
            ("AuthenticAMD", 0x19, 0x11, false, "Zen 4"),
            ("AuthenticAMD", 0x1A, 0x02, false, "Zen 5"),
            ("GenuineIntel", 6, 0x3F, true, "Haswell-EP"),
            ("GenuineIntel", 6, 0x4F, true, "Broadwell-EP"),
            ("GenuineIntel", 6, 0x55, false, "Skylake-SP"),
            ("GenuineIntel", 6, 0x8F, false, "Sapphire Rapids"),
            ("CentaurHauls", 6, 0x0F, false, "unknown vendor"),
        ];
        for (vendor, family, model, slow, what) in cpus {
            assert_eq!(slow_integer_dot_on(vendor, family, model), slow, "{what}");
        }
        let best = Backend::best();
        println!(
            "this CPU: slow integer dot {}, int8 backend {best:?}",
            slow_integer_dot()
        );
        // No CPU with a slow integer dot product has VNNI or AMX.
        if slow_integer_dot() && Isa::best().level() != Level::Baseline {
            assert!(matches!(best, Backend::WeightOnly(_)), "{best:?}");
        }
    }

    #[test]
    fn weight_only_is_the_f32_product_of_the_dequantized_weights() {
        // Depths over one KC pass, widths off the tiles, a zero row.
        for (rows, k, n) in [(3, 5, 7), (17, 300, 33), (9, 1024, 70)] {
            let w = wave((n, k), 0.05, 0.3, 0.0);
            let mut xv = values(&wave((rows, k), 2.0, 1.1, 0.3));
            xv[..k].fill(0.0);
            let wv = values(&w);
            let mut codes = vec![0i8; n * k];
            for (q, row) in codes.chunks_mut(k).zip(wv.chunks(k)) {
                quantize_weight_row(row, q);
            }
            for_each_isa("int8 weight-only", |isa| {
                if isa.level() == Level::Baseline {
                    return;
                }
                let weight = Int8Weight::quantize_for(&w, Backend::WeightOnly(isa)).unwrap();
                let exact = reference(&xv, rows, k, &weight.dequantized(&codes), n);
                let full = reference(&xv, rows, k, &wv, n);
                let scale = full.iter().fold(0f64, |m, v| m.max(v.abs()));
                let got = plain(&weight, isa).run(&xv).unwrap();
                for (i, ((g, e), f)) in got.iter().zip(&exact).zip(&full).enumerate() {
                    let at = format!("{isa:?} {rows}x{k}x{n} [{i}]");
                    assert!((f64::from(*g) - e).abs() <= 1e-5 * (1.0 + e.abs()), "{at}: {g} vs {e}");
                    // Only the weights are rounded: closer to f32 than dynamic int8 (2e-2 above).
                    assert!((f64::from(*g) - f).abs() <= 1e-2 * scale, "{at}: {g} vs f32 {f}");
                }
                assert!(got[..n].iter().all(|&v| v == 0.0), "a zero row gives zeros");
            });
        }
    }

    /// Every int8 GEMM this CPU can run.
    fn backends() -> Vec<Backend> {
        let mut all = vec![Backend::Rten];
        all.extend(Isa::new(Level::Avx2Fma).map(Backend::WeightOnly));
        #[cfg(target_arch = "x86_64")]
        {
            all.extend(Vnni::check().map(Backend::Vnni));
            all.extend(Tiles::check().map(Backend::Amx));
        }
        all
    }

    #[test]
    fn bias_activation_and_residual_reach_the_right_values_on_every_backend() {
        // Widths off every tile, a depth of two VNNI slices, rows off every tile.
        let (rows, k, n) = (13, 600, 70);
        let (w, x) = (wave((n, k), 0.05, 0.3, 0.0), wave((rows, k), 0.1, 1.1, 0.3));
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.1 - 3.0).collect();
        let param = Param::new(Tensor::new(bias.as_slice(), &candle_core::Device::Cpu).unwrap()).unwrap();
        // A residual that differs in every row and column, so that a misplaced row or column shows.
        let residual: Vec<f32> = (0..rows * n)
            .map(|i| (i / n) as f32 * 10.0 + (i % n) as f32 * 0.01)
            .collect();
        let residual_t = Tensor::from_vec(residual.clone(), (rows, n), &candle_core::Device::Cpu).unwrap();
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for backend in backends() {
            let weight = Int8Weight::quantize_for(&w, backend).unwrap();
            let mut want = plain(&weight, Isa::best()).run(&values(&x)).unwrap();
            // Every backend's epilogue fuses GELU's multiply-adds where the CPU has FMA (all that run VNNI do).
            let gelu = |v| {
                if Isa::best().has_fma() {
                    gelu_erf_with::<true>(v)
                } else {
                    gelu_erf(v)
                }
            };
            for row in want.chunks_exact_mut(n) {
                row.iter_mut().zip(&bias).for_each(|(v, b)| *v = gelu(*v + b));
            }
            let got = values(
                &weight
                    .forward(&x, (Some(&param), Some(Activation::Gelu), None))
                    .unwrap(),
            );
            assert_eq!(bits(&got), bits(&want), "{backend:?}");
            let (lo, hi) = got.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            assert!(lo < 0.0 && hi > 1.0, "GELU's both sides are reached: {lo}..{hi}");
            // The residual is added after the activation, value for value.
            let parts = (Some(&param), Some(Activation::Gelu), Some(&residual_t));
            let got = values(&weight.forward(&x, parts).unwrap());
            want.iter_mut().zip(&residual).for_each(|(v, r)| *v += r);
            assert_eq!(bits(&got), bits(&want), "{backend:?} with residual");
            // Without a fused activation, candle's ops apply bias, activation and residual after the product.
            let parts = (Some(&param), Some(Activation::GeluTanh), Some(&residual_t));
            let got = weight.forward(&x, parts).unwrap();
            let y = Tensor::from_vec(
                plain(&weight, Isa::best()).run(&values(&x)).unwrap(),
                (rows, n),
                x.device(),
            );
            let y = Activation::GeluTanh
                .forward(&y.unwrap().broadcast_add(param.tensor()).unwrap())
                .unwrap();
            assert_eq!(
                bits(&values(&got)),
                bits(&values(&(y + &residual_t).unwrap())),
                "{backend:?} tanh"
            );
        }
    }

    #[test]
    fn rows_round_trip_within_half_a_step() {
        let x = [-1.5f32, 0.0, 0.25, 3.0, -0.75];
        for max in [127.0, 255.0] {
            let mut slots = [MaybeUninit::new(0u8); 5];
            let (scale, zero) = quantize_input_row(&x, &mut slots, max);
            // SAFETY: every slot was made initialised (and the function writes only codes).
            let q = slots.map(|s| unsafe { s.assume_init() });
            assert_eq!(q[1], zero, "0 is exact");
            for (v, c) in x.iter().zip(q) {
                let back = (f32::from(c) - f32::from(zero)) * scale;
                assert!((back - v).abs() <= 0.5 * scale + 1e-6, "{v} -> {back} (max {max})");
            }
        }
        let mut q = [0i8; 5];
        let (scale, sum) = quantize_weight_row(&x, &mut q);
        assert_eq!((scale, q[3], sum), (3.0 / 127.0, 127, -64 + 11 + 127 - 32));
    }

    #[test]
    fn matches_the_f64_product_of_its_codes_and_the_f32_product() {
        // Widths that are not multiples of any tile, a row that is all zeros, and the towers' K.
        for (rows, k, n) in [(3, 5, 7), (17, 64, 33), (9, 1024, 40)] {
            let w = wave((n, k), 0.05, 0.3, 0.0);
            let x = wave((rows, k), 2.0, 1.1, 0.3);
            let x = x
                .slice_assign(
                    &[0..1, 0..k],
                    &Tensor::zeros((1, k), DType::F32, &candle_core::Device::Cpu).unwrap(),
                )
                .unwrap();
            let int8 = Int8Weight::quantize(&w).unwrap();
            assert_eq!((int8.out_dim(), int8.in_dim()), (n, k));
            let got = values(&int8.forward(&x, (None, None, None)).unwrap());
            // The exact product of the dequantized operands bounds the kernel's own error (f32 dequantization).
            let (xv, wv) = (values(&x), values(&w));
            let mut codes = vec![0i8; n * k];
            for (q, row) in codes.chunks_mut(k).zip(wv.chunks(k)) {
                quantize_weight_row(row, q);
            }
            let wq = int8.dequantized(&codes);
            let op = plain(&int8, Isa::best());
            let (xc, xs, xz) = op.quantize_input(&xv, k, rows);
            let xq: Vec<f32> = xc
                .chunks(k)
                .zip(xs.iter().zip(&xz))
                .flat_map(|(r, (s, z))| r.iter().map(move |&c| (f32::from(c) - f32::from(*z)) * s))
                .collect();
            let exact = reference(&xq, rows, k, &wq, n);
            let full = reference(&xv, rows, k, &wv, n);
            let scale = full.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (i, ((g, e), f)) in got.iter().zip(&exact).zip(&full).enumerate() {
                assert!(
                    (f64::from(*g) - e).abs() <= 1e-5 * (1.0 + e.abs()),
                    "{rows}x{k}x{n} [{i}]: {g} vs {e}"
                );
                assert!(
                    (f64::from(*g) - f).abs() <= 2e-2 * scale,
                    "{rows}x{k}x{n} [{i}]: {g} vs f32 {f}"
                );
            }
            assert!(got[..n].iter().all(|&v| v == 0.0), "a zero row gives zeros");
        }
    }
}
