//! Scalar math the kernels inline: branch-free f32 `exp` and `erf` (so that loops over them vectorise), the two
//! GELUs (and their AVX-512 register forms, bit for bit the same), and 16-lane reductions (a fixed summation order,
//! the same on every instruction set).

/// Lanes of the reductions: one AVX-512 register of f32, two AVX2 ones.
const LANES: usize = 16;

/// `eˣ` for f32: Cephes' range reduction and degree-6 polynomial (≤ 2 ulp), 0 below −87.3, branch-free so
/// that it vectorises. The kernels call [`exp_with`]; this unfused form is the tests' reference.
#[cfg(test)]
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    exp_with::<false>(x)
}

/// `exp`'s split of ln 2 for the range reduction (C1 + C2), and its polynomial's coefficients, highest first
/// (Cephes); the scalar and the AVX-512 forms both read these.
const EXP_LN2: (f32, f32) = (0.693_359_4, -2.121_944_4e-4);
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];
/// Adding it rounds an f32 below 2²² to the nearest integer (1.5·2²³); its bits less `EXP_ROUND_BITS` are that
/// integer.
const EXP_ROUND: f32 = 12_582_912.0;
const EXP_ROUND_BITS: i32 = 0x4B40_0000;
/// `exp`'s input range: 0 below `EXP_MIN`, the clamp's bounds.
const EXP_MIN: f32 = -87.3;
const EXP_MAX: f32 = 88.0;
/// `erf`'s input clamp, and the magnitude from which it is exactly ±1.
const ERF_CLAMP: f32 = 4.0;
const ERF_SATURATED: f32 = 3.9;
/// quick_gelu's sigmoid slope (CLIP's `x·sigmoid(1.702·x)`).
const QUICK_GELU_SLOPE: f32 = 1.702;
/// `erf`'s numerator (odd: times x) and denominator polynomials in x², highest first (Eigen / XLA).
const ERF_P: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_600_1e-3,
    -1.609_603_3e-2,
];
const ERF_Q: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_5e-4,
    -1.682_827e-3,
    -7.373_329_3e-3,
    -1.426_473_9e-2,
];

/// `exp` (the tests' unfused reference), its multiply-adds fused where `FMA` (the polynomial's chain then takes 9 instructions fewer: a third
/// of the attention kernel's softmax on Zen 5). Only for code compiled with FMA: elsewhere `mul_add` is a call.
#[inline(always)]
pub(super) fn exp_with<const FMA: bool>(x: f32) -> f32 {
    let madd = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    let t = madd(xc, std::f32::consts::LOG2_E, EXP_ROUND);
    let n = t - EXP_ROUND;
    let ni = (t.to_bits() as i32).wrapping_sub(EXP_ROUND_BITS);
    let r = madd(-n, EXP_LN2.1, madd(-n, EXP_LN2.0, xc));
    let p = EXP_POLY[1..].iter().fold(EXP_POLY[0], |p, &c| madd(p, r, c));
    let p = madd(p, r * r, r) + 1.0;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    if x < EXP_MIN {
        0.0
    } else {
        p * scale
    }
}

/// `erf(x)` for f32: the rational approximation of Eigen / XLA (≤ 4e-7 absolute in f32), exactly ±1 beyond 3.9;
/// its multiply-adds fused where `FMA` (only for code compiled with FMA: elsewhere `mul_add` is a call).
#[inline(always)]
pub(super) fn erf_with<const FMA: bool>(x: f32) -> f32 {
    let madd = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    let x = x.clamp(-ERF_CLAMP, ERF_CLAMP);
    let x2 = x * x;
    let p = ERF_P[1..].iter().fold(ERF_P[0], |p, &c| madd(x2, p, c));
    let p = x * p;
    let q = ERF_Q[1..].iter().fold(ERF_Q[0], |q, &c| madd(x2, q, c));
    // |erf| rounds to 1 in f32 beyond 3.9: saturate exactly, so that gelu(x) → 0 for very negative x.
    if x.abs() >= ERF_SATURATED {
        x.signum()
    } else {
        p / q
    }
}

/// `0.5·x·(1 + erf(x/√2))` (torch's `gelu`, `approximate="none"`), unfused: the tests' reference (the kernels call
/// [`gelu_erf_with`]).
#[cfg(test)]
#[inline(always)]
pub(super) fn gelu_erf(x: f32) -> f32 {
    gelu_erf_with::<false>(x)
}

/// `gelu_erf` (the tests' reference), its polynomials' multiply-adds fused where `FMA` (11 instructions fewer a vector: the int8 text
/// tower's GELU epilogue was 2.5 % of its GEMM kernel's samples on a Zen 4). Only for code compiled with FMA.
#[inline(always)]
pub(super) fn gelu_erf_with<const FMA: bool>(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_with::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `x·sigmoid(1.702·x)`, unfused: the tests' reference (the kernels call [`quick_gelu_with`]).
#[cfg(test)]
#[inline(always)]
pub(super) fn quick_gelu(x: f32) -> f32 {
    quick_gelu_with::<false>(x)
}

/// `quick_gelu` (the tests' reference) on [`exp_with`]: its multiply-adds fused where `FMA`. Only for code compiled with FMA.
#[inline(always)]
pub(super) fn quick_gelu_with<const FMA: bool>(x: f32) -> f32 {
    x / (1.0 + exp_with::<FMA>(-QUICK_GELU_SLOPE * x))
}

/// [`exp_with`], [`gelu_erf_with`] and [`quick_gelu_with`] (fused forms) on 16 lanes of an AVX-512 register,
/// operation for operation, so that each lane is bit for bit the scalar function's value: for finishing a GEMM
/// tile in registers, where the scalar forms went through memory (`int8::Dequantize::write`).
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::{
        ERF_CLAMP, ERF_P, ERF_Q, ERF_SATURATED, EXP_LN2, EXP_MAX, EXP_MIN, EXP_POLY, EXP_ROUND, EXP_ROUND_BITS,
        QUICK_GELU_SLOPE,
    };

    /// `x.clamp(lo, hi)`: `max` and `min` with the constant first, so that a NaN `x` comes through (as `clamp`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn clamp(x: __m512, lo: f32, hi: f32) -> __m512 {
        _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), x))
    }

    /// `a · b + c`, rounded once (`f32::mul_add`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn madd(a: __m512, b: __m512, c: f32) -> __m512 {
        _mm512_fmadd_ps(a, b, _mm512_set1_ps(c))
    }

    /// The polynomial `coefficients` (highest first) at `x` by Horner's rule, as the scalar forms' folds.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn horner(x: __m512, coefficients: &[f32]) -> __m512 {
        let first = _mm512_set1_ps(coefficients[0]);
        coefficients[1..].iter().fold(first, |p, &c| madd(x, p, c))
    }

    /// [`super::exp_with`]`::<true>`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in crate::kernels::cpu) fn exp(x: __m512) -> __m512 {
        let xc = clamp(x, EXP_MIN, EXP_MAX);
        let t = madd(xc, _mm512_set1_ps(std::f32::consts::LOG2_E), EXP_ROUND);
        let n = _mm512_sub_ps(t, _mm512_set1_ps(EXP_ROUND));
        let ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(EXP_ROUND_BITS));
        // −n: the sign bit flipped, as the scalar negation.
        let minus_n = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(n), _mm512_set1_epi32(i32::MIN)));
        let r = _mm512_fmadd_ps(
            minus_n,
            _mm512_set1_ps(EXP_LN2.1),
            _mm512_fmadd_ps(minus_n, _mm512_set1_ps(EXP_LN2.0), xc),
        );
        // The scalar fold's `madd(p, r, c)`: p · r + c, the same product as r · p.
        let p = horner(r, &EXP_POLY);
        let p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(ni, _mm512_set1_epi32(127))));
        // 0 where x < EXP_MIN (a NaN compares false and keeps p · scale, as the scalar form).
        let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP_MIN));
        _mm512_maskz_mul_ps(!below, p, scale)
    }

    /// [`super::erf_with`]`::<true>`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn erf(x: __m512) -> __m512 {
        let x = clamp(x, -ERF_CLAMP, ERF_CLAMP);
        let x2 = _mm512_mul_ps(x, x);
        let p = _mm512_mul_ps(x, horner(x2, &ERF_P));
        let q = horner(x2, &ERF_Q);
        // ±1 where |x| ≥ ERF_SATURATED: `signum`, 1 with x's sign (x is not NaN there).
        let sign = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN)));
        let signum = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(sign),
            _mm512_castps_si512(_mm512_set1_ps(1.0)),
        ));
        let abs = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MAX)));
        let saturated = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(abs, _mm512_set1_ps(ERF_SATURATED));
        _mm512_mask_blend_ps(saturated, _mm512_div_ps(p, q), signum)
    }

    /// [`super::gelu_erf_with`]`::<true>`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in crate::kernels::cpu) fn gelu_erf(x: __m512) -> __m512 {
        let e = erf(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2)));
        _mm512_mul_ps(
            _mm512_mul_ps(_mm512_set1_ps(0.5), x),
            _mm512_add_ps(_mm512_set1_ps(1.0), e),
        )
    }

    /// [`super::quick_gelu_with`]`::<true>`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in crate::kernels::cpu) fn quick_gelu(x: __m512) -> __m512 {
        let e = exp(_mm512_mul_ps(_mm512_set1_ps(-QUICK_GELU_SLOPE), x));
        _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e))
    }
}

/// `Σ row`, accumulated in 16 lanes.
#[inline(always)]
pub(super) fn lane_sum(row: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `max f(row)` (−∞ when empty), over 16 lanes (a plain fold of `max` does not vectorise). NaNs are skipped, as
/// `f32::max` does.
#[inline(always)]
pub(super) fn lane_max_of(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(f(c[i]));
        }
    }
    let max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |a, &b| a.max(f(b)));
    acc.iter().fold(max, |a, &b| a.max(b))
}

/// `row[j] ← f(row[j], with[j])` for rows of whole 16-lane chunks (the rest is left as it is), returning the new
/// values' max: one pass, the lanes folded as a tree. A NaN is skipped unless it comes last in its lane (a compare
/// and select, so that the max is one instruction; the NaN reaches the exponentials anyway).
#[inline(always)]
pub(super) fn lane_update_max(row: &mut [f32], with: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let (rows, _) = row.as_chunks_mut::<LANES>();
    let (withs, _) = with.as_chunks::<LANES>();
    for (r, w) in rows.iter_mut().zip(withs) {
        // Whole arrays in and out: written value by value, the loop stayed scalar inside the attention kernel.
        let mut v = *r;
        for i in 0..LANES {
            v[i] = f(v[i], w[i]);
            acc[i] = if v[i] > acc[i] { v[i] } else { acc[i] };
        }
        *r = v;
    }
    tree_fold(acc, |a, b| if a > b { a } else { b })
}

/// `row[j] ← f(row[j])` for rows of whole 16-lane chunks (the rest is left as it is), returning the new values'
/// sum: one pass, accumulated in 16 lanes, folded as a tree.
#[inline(always)]
pub(super) fn lane_update_sum(row: &mut [f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let (rows, _) = row.as_chunks_mut::<LANES>();
    for r in rows.iter_mut() {
        for i in 0..LANES {
            r[i] = f(r[i]);
            acc[i] += r[i];
        }
    }
    tree_fold(acc, |a, b| a + b)
}

/// The lanes combined pairwise, halves onto halves: four vector steps instead of fifteen dependent scalar ones.
#[inline(always)]
fn tree_fold(mut acc: [f32; LANES], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] = op(acc[i], acc[i + width]);
        }
        width /= 2;
    }
    acc[0]
}

/// `(min, max)` of `row` (+∞, −∞ when empty), NaNs skipped, in one pass over four 16-lane accumulators each (one
/// pair of vectors would make the pass wait on each compare's latency).
#[inline(always)]
pub(super) fn lane_min_max(row: &[f32]) -> (f32, f32) {
    const WIDE: usize = 4 * LANES;
    let (mut lo, mut hi) = ([f32::INFINITY; WIDE], [f32::NEG_INFINITY; WIDE]);
    let mut chunks = row.chunks_exact(WIDE);
    for c in &mut chunks {
        for i in 0..WIDE {
            // Compare-and-select, which a NaN (never less, never greater) leaves alone: one min/max instruction.
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    let tail = chunks.remainder().iter();
    let lo = lo.iter().chain(tail.clone()).fold(f32::INFINITY, |a, &b| a.min(b));
    let hi = hi.iter().chain(tail).fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    (lo, hi)
}

/// `v.round_ties_even().clamp(lo, hi) as i32` for integer bounds of magnitude ≤ 2²², in a form LLVM vectorises
/// (`roundeven` and the saturating `as` stayed scalar: 2.6–2.8 ns a value on a Xeon with AVX-512): adding 1.5 · 2²³
/// moves the clamped value where f32's spacing is 1, so the add itself rounds, to nearest even, and the integer is
/// the low bits. Clamping first is the same as after, the bounds being integers. NaN gives `lo`.
#[inline(always)]
pub(super) fn round_clamped(v: f32, lo: f32, hi: f32) -> i32 {
    const SHIFT: f32 = 12_582_912.0;
    (v.max(lo).min(hi) + SHIFT).to_bits() as i32 - SHIFT.to_bits() as i32
}

/// `Σ (v − mean)²` over `row`, accumulated in 16 lanes.
#[inline(always)]
pub(super) fn lane_sq_dev(row: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_and_gelu_match_libm() {
        let mut worst_exp = 0f64;
        let mut worst_gelu = 0f64;
        let mut worst_quick = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4; // [-20, 20]
            let e = (x as f64).exp();
            for value in [exp(x), exp_with::<true>(x)] {
                let rel = ((value as f64) - e).abs() / e.max(f64::MIN_POSITIVE);
                if e > 1e-37 {
                    worst_exp = worst_exp.max(rel);
                }
            }
            let g = 0.5 * x as f64 * (1.0 + candle_core::cpu::erf::erf_f64(x as f64 / std::f64::consts::SQRT_2));
            let q = x as f64 / (1.0 + (-1.702 * x as f64).exp());
            for (gelu, quick) in [
                (gelu_erf(x), quick_gelu(x)),
                (gelu_erf_with::<true>(x), quick_gelu_with::<true>(x)),
            ] {
                worst_gelu = worst_gelu.max((gelu as f64 - g).abs() / (1.0 + g.abs()));
                worst_quick = worst_quick.max((quick as f64 - q).abs() / (1.0 + q.abs()));
            }
        }
        assert!(worst_exp < 5e-7, "exp rel err {worst_exp:e}");
        // f32 cancellation in 1 + erf near erf = −1 (torch's f32 gelu has the same): ≤ 1e-6 absolute.
        assert!(worst_gelu < 1.5e-6, "gelu err {worst_gelu:e}");
        assert!(worst_quick < 5e-7, "quick_gelu err {worst_quick:e}");
        for exp in [exp, exp_with::<true>] {
            assert_eq!(exp(-1e30), 0.0);
            assert_eq!(exp(f32::MIN), 0.0);
            assert!(exp(1e30).is_finite());
        }
    }

    #[test]
    fn round_clamped_is_round_ties_even_clamped() {
        let ties = [
            -2.5f32, -1.5, -0.5, 0.5, 1.5, 2.5, 126.5, 127.5, 254.5, 255.5, -126.5, -127.5,
        ];
        let spread = (0..5000).map(|i| ((i as f32) * 0.37).sin() * 300.0);
        let near = (0..2000).map(|i| (i as f32) * 0.25 - 250.0 + f32::EPSILON * (i % 3) as f32);
        for v in ties.into_iter().chain(spread).chain(near) {
            for (lo, hi) in [(-127.0, 127.0), (0.0, 255.0), (0.0, 127.0)] {
                let want = v.round_ties_even().clamp(lo, hi) as i32;
                assert_eq!(round_clamped(v, lo, hi), want, "{v} in {lo}..={hi}");
            }
        }
        assert_eq!(round_clamped(f32::NAN, -127.0, 127.0), -127);
    }

    #[test]
    fn lane_reductions_match_sequential_ones() {
        for n in [0usize, 1, 15, 16, 17, 40, 64, 65, 333] {
            let row: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 3.0 + 0.5).collect();
            let sum: f32 = row.iter().sum();
            assert!((lane_sum(&row) - sum).abs() <= 1e-5 * (1.0 + sum.abs()), "sum of {n}");
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            assert_eq!(
                lane_max_of(&row, f32::abs),
                row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b.abs())),
                "max |v| of {n}"
            );
            let min = row.iter().fold(f32::INFINITY, |a, &b| a.min(b));
            assert_eq!(lane_min_max(&row), (min, max), "min and max of {n}");
            let mut with_nan = row.clone();
            with_nan.push(f32::NAN);
            with_nan.insert(0, f32::NAN);
            assert_eq!(lane_max_of(&with_nan, |v| v), max, "NaN skipped, {n}");
            assert_eq!(
                lane_min_max(&with_nan),
                lane_min_max(&row),
                "NaN skipped in min/max, {n}"
            );
            let mean = if n == 0 { 0.0 } else { sum / n as f32 };
            let sq: f32 = row.iter().map(|v| (v - mean) * (v - mean)).sum();
            assert!(
                (lane_sq_dev(&row, mean) - sq).abs() <= 1e-5 * (1.0 + sq),
                "squared deviations of {n}"
            );
        }
    }

    /// Values for the vector forms' tests: a fine sweep over both GELUs' and exp's working ranges, their
    /// thresholds and neighbours, and the special values.
    fn sweep() -> Vec<f32> {
        let mut v: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-3).collect();
        for t in [
            87.3f32,
            88.0,
            3.9 * std::f32::consts::SQRT_2,
            4.0 * std::f32::consts::SQRT_2,
            3.9,
            4.0,
            51.29,
        ] {
            for x in [t, -t] {
                v.extend([x, f32::from_bits(x.to_bits() + 1), f32::from_bits(x.to_bits() - 1)]);
            }
        }
        v.extend([
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            1e-30,
            -1e-30,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
        ]);
        v.extend([f32::NEG_INFINITY, f32::NAN, 1e30, -1e30]);
        v
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn on_lanes(xs: &[f32], f: unsafe fn(std::arch::x86_64::__m512) -> std::arch::x86_64::__m512) -> Vec<f32> {
        use std::arch::x86_64::*;
        let mut out = Vec::with_capacity(xs.len());
        for chunk in xs.chunks(16) {
            let mut lanes = [0f32; 16];
            lanes[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: 16 values in and out; this function runs with AVX-512F, which `f` needs.
            let y = unsafe { f(_mm512_loadu_ps(lanes.as_ptr())) };
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), y) };
            out.extend_from_slice(&lanes[..chunk.len()]);
        }
        out
    }

    #[test]
    fn vector_forms_give_the_scalar_forms_bits() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            let xs = sweep();
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            type Vector = unsafe fn(std::arch::x86_64::__m512) -> std::arch::x86_64::__m512;
            type Case = (&'static str, Vector, fn(f32) -> f32);
            let cases: [Case; 3] = [
                ("exp", avx512::exp, exp_with::<true>),
                ("gelu_erf", avx512::gelu_erf, gelu_erf_with::<true>),
                ("quick_gelu", avx512::quick_gelu, quick_gelu_with::<true>),
            ];
            for (name, vector, scalar) in cases {
                // SAFETY: the CPU has AVX-512F (checked above).
                let got = unsafe { on_lanes(&xs, vector) };
                let want: Vec<f32> = xs.iter().map(|&x| scalar(x)).collect();
                for ((x, g), w) in xs.iter().zip(bits(&got)).zip(bits(&want)) {
                    // A NaN for a NaN: its sign and payload are not the functions' (they differ between debug and
                    // release builds of the scalar form).
                    let (g_nan, w_nan) = (f32::from_bits(g).is_nan(), f32::from_bits(w).is_nan());
                    assert!(
                        g == w || (g_nan && w_nan),
                        "{name}({x:e}): {} vs {}",
                        f32::from_bits(g),
                        f32::from_bits(w)
                    );
                }
            }
            return;
        }
        println!("vector math: skipped, this CPU lacks AVX-512F");
    }

    #[test]
    fn lane_updates_write_every_whole_chunk_and_reduce_it() {
        for chunks in [0usize, 1, 2, 17] {
            let n = chunks * LANES;
            let row: Vec<f32> = (0..n + 3).map(|i| ((i as f32) * 0.37).sin() * 3.0 + 0.5).collect();
            let with: Vec<f32> = (0..n + 3).map(|i| (i % 5) as f32).collect();
            let mut updated = row.clone();
            let max = lane_update_max(&mut updated, &with, |v, w| v * 0.5 - w);
            let want: Vec<f32> = row[..n].iter().zip(&with).map(|(v, w)| v * 0.5 - w).collect();
            assert_eq!(updated[..n], want[..], "updated, {chunks} chunks");
            assert_eq!(updated[n..], row[n..], "the rest untouched, {chunks} chunks");
            assert_eq!(
                max,
                want.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)),
                "max, {chunks} chunks"
            );
            let sum = lane_update_sum(&mut updated, |v| v * v);
            let want: Vec<f32> = want.iter().map(|v| v * v).collect();
            assert_eq!(updated[..n], want[..], "squared, {chunks} chunks");
            let exact: f32 = want.iter().sum();
            assert!(
                (sum - exact).abs() <= 1e-5 * (1.0 + exact),
                "sum, {chunks} chunks: {sum} vs {exact}"
            );
        }
    }
}
