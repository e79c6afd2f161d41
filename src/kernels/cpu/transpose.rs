//! Rows written as the columns of a panel, one panel row per depth: the packed GEMM's weight panels as they load and
//! attention's key panels per head. 16 rows at a time, by transposes in registers (16 × 16 on AVX-512, 8 × 8 on
//! AVX2) and a scalar loop for the depths past the last whole block and on the baseline.

use std::mem::MaybeUninit;

use super::{Isa, Level};

/// Rows one call writes as columns: one 16-lane vector per depth.
pub(super) const ROWS: usize = 16;

/// Writes the 16 `rows` into `panel`'s columns `col .. col + 16`, one row of `panel` (`width` wide) per depth, for
/// every depth both have (the shortest row's, no more than `panel` has rows).
#[inline(always)]
pub(super) fn into_slots(isa: Isa, rows: &[&[f32]; ROWS], panel: &mut [MaybeUninit<f32>], at: (usize, usize)) {
    let done = transposed_depths(isa, rows, panel, at);
    columns(rows, panel, at, done);
}

/// [`into_slots`] over initialised values.
#[inline(always)]
pub(super) fn into_values(isa: Isa, rows: &[&[f32]; ROWS], panel: &mut [f32], at: (usize, usize)) {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s size and alignment, and `into_slots` stores only initialised values, so
    // `panel` is as initialised after as before.
    let slots = unsafe { &mut *(std::ptr::from_mut(panel) as *mut [MaybeUninit<f32>]) };
    into_slots(isa, rows, slots, at);
}

/// Writes the first depths of the 16 `rows` into `panel`'s columns `col .. col + 16` as transposes in registers,
/// and returns how many it wrote (none on the baseline): [`columns`] writes the rest.
#[inline(always)]
fn transposed_depths(isa: Isa, rows: &[&[f32]; ROWS], panel: &mut [MaybeUninit<f32>], at: (usize, usize)) -> usize {
    #[cfg(target_arch = "x86_64")]
    match isa.level() {
        // SAFETY: an `Isa` of the AVX-512 level is only made where the CPU has AVX-512F (`Isa::new`).
        Level::Avx512 => unsafe { x86::transpose_16(rows, panel, at) },
        // SAFETY: an `Isa` of the AVX2 level is only made where the CPU has AVX2 (`Isa::new`).
        Level::Avx2Fma => unsafe { x86::transpose_8(rows, panel, at) },
        Level::Baseline => 0,
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, rows, panel, at);
        0
    }
}

/// Writes depths `from ..` of the 16 `rows` into `panel`'s columns `col .. col + 16`, one row of `panel` (`width`
/// wide) per depth. A whole vector is written per depth (in attention a value at a time took 6 % of the kernel).
#[inline(always)]
fn columns(rows: &[&[f32]; ROWS], panel: &mut [MaybeUninit<f32>], (width, col): (usize, usize), from: usize) {
    let depth = common_depth(rows, panel.len(), width);
    for (k, dst) in panel.chunks_exact_mut(width).enumerate().take(depth).skip(from) {
        // SAFETY: k < depth, which no row is shorter than.
        let column: [f32; ROWS] = std::array::from_fn(|j| unsafe { *rows[j].get_unchecked(k) });
        for (d, v) in dst[col..col + ROWS].iter_mut().zip(column) {
            d.write(v);
        }
    }
}

/// The depths both the rows and a panel of `len` values (rows `width` wide, one per depth) have: what the writers
/// may write.
#[inline(always)]
fn common_depth(rows: &[&[f32]; ROWS], len: usize, width: usize) -> usize {
    rows.iter().map(|r| r.len()).fold(len / width, usize::min)
}

/// The transposes in registers: 16 × 16 values at a time on AVX-512, 8 × 8 on AVX2.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256, __m512, _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_setzero_ps, _mm256_shuffle_ps,
        _mm256_storeu_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps, _mm512_castpd_ps, _mm512_castps_pd, _mm512_loadu_ps,
        _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_storeu_ps, _mm512_unpackhi_pd, _mm512_unpackhi_ps,
        _mm512_unpacklo_pd, _mm512_unpacklo_ps,
    };
    use std::mem::MaybeUninit;

    use super::ROWS;

    /// The depths of the 16 `rows` that both forms write: whole blocks of `block`, no more than `panel` has rows.
    fn blocked_depth(rows: &[&[f32]; ROWS], panel: &[MaybeUninit<f32>], width: usize, block: usize) -> usize {
        super::common_depth(rows, panel.len(), width) / block * block
    }

    /// Writes the whole 16-blocks of depths of the 16 `rows` into `panel` (a row `width` wide per depth) at columns
    /// `col .. col + 16`, as [`super::columns`] does, and returns how many depths it wrote. A 16 × 16 block is 16
    /// loads, 64 shuffles and 16 stores instead of 256 scalar loads and stores.
    #[target_feature(enable = "avx512f")]
    pub(super) fn transpose_16(
        rows: &[&[f32]; ROWS],
        panel: &mut [MaybeUninit<f32>],
        (width, col): (usize, usize),
    ) -> usize {
        let depth = blocked_depth(rows, panel, width, 16);
        for d0 in (0..depth).step_by(16) {
            let mut block = [_mm512_setzero_ps(); 16];
            for (vector, row) in block.iter_mut().zip(rows) {
                let values = &row[d0..d0 + 16];
                // SAFETY: 16 values, the 64 bytes the load reads.
                *vector = unsafe { _mm512_loadu_ps(values.as_ptr()) };
            }
            for (k, column) in transpose_16x16(block).iter().enumerate() {
                let dst = &mut panel[(d0 + k) * width + col..][..16];
                // SAFETY: 16 slots, the 64 bytes the store writes.
                unsafe { _mm512_storeu_ps(dst.as_mut_ptr().cast(), *column) };
            }
        }
        depth
    }

    /// [`transpose_16`] on AVX2: whole 8-blocks of depths, each as two 8 × 8 transposes (8 loads, 24 shuffles and 8
    /// stores for 64 values).
    #[target_feature(enable = "avx2")]
    pub(super) fn transpose_8(
        rows: &[&[f32]; ROWS],
        panel: &mut [MaybeUninit<f32>],
        (width, col): (usize, usize),
    ) -> usize {
        let depth = blocked_depth(rows, panel, width, 8);
        for d0 in (0..depth).step_by(8) {
            for (half, rows) in rows.chunks_exact(8).enumerate() {
                let mut block = [_mm256_setzero_ps(); 8];
                for (vector, row) in block.iter_mut().zip(rows) {
                    let values = &row[d0..d0 + 8];
                    // SAFETY: 8 values, the 32 bytes the load reads.
                    *vector = unsafe { _mm256_loadu_ps(values.as_ptr()) };
                }
                for (k, column) in transpose_8x8(block).iter().enumerate() {
                    let dst = &mut panel[(d0 + k) * width + col + 8 * half..][..8];
                    // SAFETY: 8 slots, the 32 bytes the store writes.
                    unsafe { _mm256_storeu_ps(dst.as_mut_ptr().cast(), *column) };
                }
            }
        }
        depth
    }

    /// The 16 × 16 transpose of `r`: element k of result j is element j of `r[k]`. Interleaves 32-bit lanes, then
    /// 64-bit pairs, then 128-bit quarters twice.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose_16x16(r: [__m512; 16]) -> [__m512; 16] {
        let mut t = r;
        for i in (0..16).step_by(2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        let pd = _mm512_castps_pd;
        let mut u = t;
        for i in (0..16).step_by(4) {
            u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[i]), pd(t[i + 2])));
            u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[i]), pd(t[i + 2])));
            u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[i + 1]), pd(t[i + 3])));
            u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[i + 1]), pd(t[i + 3])));
        }
        let mut v = u;
        for half in [0, 8] {
            for i in 0..4 {
                v[half + i] = _mm512_shuffle_f32x4::<0x88>(u[half + i], u[half + i + 4]);
                v[half + i + 4] = _mm512_shuffle_f32x4::<0xdd>(u[half + i], u[half + i + 4]);
            }
        }
        let mut w = v;
        for i in 0..8 {
            w[i] = _mm512_shuffle_f32x4::<0x88>(v[i], v[i + 8]);
            w[i + 8] = _mm512_shuffle_f32x4::<0xdd>(v[i], v[i + 8]);
        }
        w
    }

    /// The 8 × 8 transpose of `r`: 32-bit lanes interleaved, then 64-bit pairs picked, then 128-bit halves.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
        let mut t = r;
        for i in (0..8).step_by(2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        let mut u = t;
        for i in (0..8).step_by(4) {
            u[i] = _mm256_shuffle_ps::<0x44>(t[i], t[i + 2]);
            u[i + 1] = _mm256_shuffle_ps::<0xee>(t[i], t[i + 2]);
            u[i + 2] = _mm256_shuffle_ps::<0x44>(t[i + 1], t[i + 3]);
            u[i + 3] = _mm256_shuffle_ps::<0xee>(t[i + 1], t[i + 3]);
        }
        let mut v = u;
        for i in 0..4 {
            v[i] = _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]);
            v[i + 4] = _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::testing::{bits_of, for_each_isa, values, wave};

    fn initialised(slots: Vec<MaybeUninit<f32>>) -> Vec<f32> {
        // SAFETY: the tests make every slot initialised (NaN) before the writers, which store only values.
        slots.into_iter().map(|v| unsafe { v.assume_init() }).collect()
    }

    #[test]
    fn transposes_write_what_the_scalar_columns_write() {
        for_each_isa("transposes", |isa| {
            // Depths below one block, of whole blocks, and with a tail; panels of one group and of four; a panel
            // with fewer rows than the rows' depth.
            for (depth, width, col, panel_rows) in [
                (4, 16, 0, 4),
                (8, 16, 0, 8),
                (64, 16, 0, 64),
                (80, 64, 48, 80),
                (28, 64, 16, 28),
                (40, 16, 0, 20),
            ] {
                let values = values(&wave(ROWS * depth, 2.0, 0.7, 0.1));
                let rows: [&[f32]; ROWS] = std::array::from_fn(|j| &values[j * depth..][..depth]);
                let mut want = vec![MaybeUninit::new(f32::NAN); width * panel_rows];
                columns(&rows, &mut want, (width, col), 0);
                let mut got = vec![MaybeUninit::new(f32::NAN); width * panel_rows];
                let done = transposed_depths(isa, &rows, &mut got, (width, col));
                let block = match isa.level() {
                    Level::Avx512 => 16,
                    Level::Avx2Fma => 8,
                    Level::Baseline => usize::MAX,
                };
                assert_eq!(done, panel_rows / block * block, "{isa:?}, {depth} deep");
                columns(&rows, &mut got, (width, col), done);
                let (got, want) = (initialised(got), initialised(want));
                assert_eq!(
                    bits_of(&got),
                    bits_of(&want),
                    "{isa:?}, {depth} deep, {width} wide, at {col}"
                );
                // The scalar columns put row j's depth k at row k, column col + j; the rest stays untouched.
                for (k, row) in want.chunks_exact(width).enumerate() {
                    for (c, v) in row.iter().enumerate() {
                        match c.checked_sub(col).filter(|j| *j < ROWS) {
                            Some(j) => assert_eq!(v.to_bits(), values[j * depth + k].to_bits()),
                            None => assert!(v.is_nan()),
                        }
                    }
                }
            }
        });
    }
}
