//! The dynamic-int8 GEMM on AVX-512 VNNI (Cascade Lake and later Xeons, AMD Zen 4/5): `vpdpbusd` adds, per i32
//! lane, four u8 input codes times four i8 weight codes; a 6-row × 64-column tile of sums lives in 24 registers
//! over each 512-deep slice of the depth. Also the packed layout of weight codes that this kernel and AMX's both read
//! ([`CodePanels`]). Each tile's sums are dequantized by [`super::int8`]'s formula, value for value as the other
//! int8 kernels'.

use std::arch::x86_64::{
    _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_setzero_si512, _mm512_storeu_si512,
};

use rayon::prelude::*;

use super::int8::{Dequantize, MAX_TILE_COLS};
use super::packed::{prefetch_operands, task_blocks, Block, Output};
use super::weight_buffer;

/// Columns of one panel: one 512-bit register of i32 sums; also the rows of an AMX tile.
pub(super) const PANEL_COLS: usize = 16;
/// Depths one AMX tile row covers; the packed depth is a multiple of it.
pub(super) const DEPTH_STEP: usize = 64;
/// Bytes of one depth group of a panel: 16 columns × 4 depths, the operand of one `vpdpbusd` (and one AMX tile row).
const GROUP_BYTES: usize = PANEL_COLS * 4;
/// The packed width is a multiple of this: two panels, AMX's block and this kernel's narrow tile.
pub(super) const WIDTH_STEP: usize = 2 * PANEL_COLS;

/// Input rows of one register tile; the input codes' rows are padded to a multiple of it.
pub(super) const MR: usize = 6;
/// Panels of the wide register tile (64 columns); a 32-column rest takes the narrow tile of [`NR_NARROW`].
const NR: usize = 4;
// `Dequantize::write` finishes a tile's rows in a local this wide.
const _: () = assert!(NR * PANEL_COLS <= MAX_TILE_COLS);
const NR_NARROW: usize = 2;
/// Depth of one slice: a 64-column group's slice of panels is 32 KiB, in L1 while the tiles pass (5-13 % faster
/// than the whole depth at depth 1024, within 4 % at 4096, Xeon Emerald Rapids; 256 was no better).
const KC: usize = 512;
/// Input rows one task covers: its codes (≤ 126 × 4096 bytes) stay in L2 while the block's panels pass.
const MC: usize = 126;
/// The widest column block one task covers.
const MAX_BLOCK_COLS: usize = 256;

/// A weight's (out, in) i8 codes in 16-column panels: per panel, per group of 4 depths, 64 bytes holding for each
/// column `n` its codes of those depths — `vpdpbusd`'s second operand, and row by row AMX's 64 × 16 weight tiles
/// (`tdpbusd`'s second operand: one tile is 16 consecutive groups). Columns past the weight's (to a multiple of
/// [`WIDTH_STEP`]) and depths past it (to a multiple of [`DEPTH_STEP`]) are zero.
pub(super) struct CodePanels {
    buffer: Vec<u8>,
    start: usize,
    len: usize,
    depth: usize,
}

impl CodePanels {
    /// Packs `codes` (out × in, row-major).
    pub(super) fn pack(codes: &[i8], (out_dim, in_dim): (usize, usize)) -> Self {
        let depth = in_dim.next_multiple_of(DEPTH_STEP);
        let len = out_dim.next_multiple_of(WIDTH_STEP) * depth;
        let buffer = weight_buffer::<u8>(len + GROUP_BYTES);
        let start = buffer.as_ptr().align_offset(GROUP_BYTES).min(GROUP_BYTES);
        let mut panels = Self {
            buffer,
            start,
            len,
            depth,
        };
        let panel_len = panels.panel_len();
        panels
            .values_mut()
            .par_chunks_mut(panel_len)
            .zip(codes.par_chunks(PANEL_COLS * in_dim))
            .for_each(|(panel, rows)| pack_panel(rows, in_dim, panel));
        panels
    }

    /// The padded input width: the input codes' row pitch.
    pub(super) fn depth(&self) -> usize {
        self.depth
    }

    /// Bytes of one panel.
    pub(super) fn panel_len(&self) -> usize {
        PANEL_COLS * self.depth
    }

    /// The panels, each [`CodePanels::panel_len`] bytes, on a 64-byte line.
    pub(super) fn values(&self) -> &[u8] {
        &self.buffer[self.start..self.start + self.len]
    }

    fn values_mut(&mut self) -> &mut [u8] {
        &mut self.buffer[self.start..self.start + self.len]
    }
}

/// Writes up to 16 rows of `in_dim` codes (one panel's columns) into the panel's groups, 4 codes at a time.
fn pack_panel(rows: &[i8], in_dim: usize, panel: &mut [u8]) {
    for (n, row) in rows.chunks_exact(in_dim).enumerate() {
        for (four, group) in row.chunks(4).zip(panel.chunks_exact_mut(GROUP_BYTES)) {
            for (d, &code) in group[n * 4..].iter_mut().zip(four) {
                *d = code as u8;
            }
        }
    }
}

/// Proof that the CPU has AVX-512F, AVX-512BW and AVX-512 VNNI: what the kernel's `unsafe` rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Vnni(());

impl Vnni {
    /// `Some` where this kernel may run.
    pub(super) fn check() -> Option<Self> {
        use std::arch::is_x86_feature_detected as has;
        (has!("avx512f") && has!("avx512bw") && has!("avx512vnni")).then_some(Self(()))
    }
}

/// `codes` (`rows` rounded up to [`MR`], by `weight.depth()`, u8) times the weight's codes, dequantized into a new
/// (rows, out) buffer written once. `out_dim` is the weight's (`dq.scales`' length).
pub(super) fn matmul(codes: &[u8], rows: usize, weight: &CodePanels, dq: Dequantize, _vnni: Vnni) -> Vec<f32> {
    // Row blocks of equal height: a thin last one would stream the column block's panels for a few rows.
    let mc = rows.div_ceil(rows.div_ceil(MC)).next_multiple_of(MR);
    let job = Job::new(codes, rows, weight, dq);
    // SAFETY: `run_block` writes every value of its block; `_vnni` proves the CPU has the features it is compiled
    // for.
    unsafe {
        job.run((mc, NR * PANEL_COLS), MAX_BLOCK_COLS, |job, block| {
            run_block(job, block)
        })
    }
}

/// What every task of one integer product over [`CodePanels`] shares.
#[derive(Clone, Copy)]
pub(super) struct Job<'a> {
    pub(super) codes: &'a [u8],
    pub(super) weight: &'a CodePanels,
    pub(super) rows: usize,
    pub(super) out: Output,
    pub(super) dq: Dequantize<'a>,
}

impl<'a> Job<'a> {
    /// The job of `codes` (`rows` of them, padded as the kernel needs) times `weight`; its output is made by
    /// [`Job::run`].
    pub(super) fn new(codes: &'a [u8], rows: usize, weight: &'a CodePanels, dq: Dequantize<'a>) -> Self {
        Self {
            codes,
            weight,
            rows,
            out: Output {
                ptr: std::ptr::null_mut(),
                width: dq.scales.len(),
            },
            dq,
        }
    }

    /// Runs `task` on each block of the (rows, out) output (`task_blocks` of `unit`-wide columns, `mc` rows, at
    /// most `max_cols` wide) in parallel, into a new buffer.
    ///
    /// # Safety
    /// `task` must write every value of the block it is given, and only those.
    pub(super) unsafe fn run(
        mut self,
        (mc, unit): (usize, usize),
        max_cols: usize,
        task: impl Fn(Job<'a>, Block) + Sync,
    ) -> Vec<f32> {
        let (rows, out_dim) = (self.rows, self.out.width);
        let mut y: Vec<f32> = Vec::with_capacity(rows * out_dim);
        self.out.ptr = y.as_mut_ptr();
        task_blocks((rows, out_dim), (mc, unit), max_cols)
            .into_par_iter()
            .for_each(|block| task(self, block));
        // SAFETY: the blocks cover all rows × out_dim once (`task_blocks`) and, per the contract, each task wrote
        // every value of its block; all tasks have finished.
        unsafe { y.set_len(rows * out_dim) };
        y
    }
}

/// One task's block: per 64-column group of panels (32 at the weight's edge), per [`KC`]-deep slice of the depth,
/// per 6-row tile of input codes, the tile's sums over the slice; after the last slice, dequantized into the output.
/// The group's slice (32 KiB at 64 columns) stays in L1 while the tiles pass; their sums between slices wait in
/// `partial`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn run_block(job: Job, block: Block) {
    let (depth, panel_len) = (job.weight.depth(), job.weight.panel_len());
    let (codes, panels) = (job.codes, job.weight.values());
    let mut partial = vec![0i32; (block.rows.1 - block.rows.0).next_multiple_of(MR) * NR * PANEL_COLS];
    let mut j0 = block.cols.0;
    while j0 < block.cols.1 {
        let wide = block.cols.1 - j0 > NR_NARROW * PANEL_COLS;
        for k0 in (0..depth).step_by(KC) {
            let slice = Slice {
                start: k0,
                len: KC.min(depth - k0),
                depth,
            };
            let b = &panels[j0 / PANEL_COLS * panel_len + k0 * PANEL_COLS..];
            let rows = (block.rows.0..block.rows.1).step_by(MR);
            for (i0, partial) in rows.zip(partial.chunks_exact_mut(MR * NR * PANEL_COLS)) {
                let a = &codes[i0 * depth + k0..];
                let corner = (i0, j0, MR.min(job.rows - i0), (block.cols.1 - j0).min(NR * PANEL_COLS));
                // A last tile of 1-4 rows (512 rows end in 2) runs as 2 or 4 rows, not as MR of which the rest are
                // padding: 0.5-2.5 % faster at 512 x 1024 x {1024, 3072, 4096} (Zen 4, interleaved runs).
                match (wide, corner.2) {
                    (true, 1..=2) => tile::<2, NR>(a, b, slice, partial, job, corner),
                    (true, 3..=4) => tile::<4, NR>(a, b, slice, partial, job, corner),
                    (true, _) => tile::<MR, NR>(a, b, slice, partial, job, corner),
                    (false, 1..=2) => tile::<2, NR_NARROW>(a, b, slice, partial, job, corner),
                    (false, 3..=4) => tile::<4, NR_NARROW>(a, b, slice, partial, job, corner),
                    (false, _) => tile::<MR, NR_NARROW>(a, b, slice, partial, job, corner),
                }
            }
        }
        j0 += if wide { NR } else { NR_NARROW } * PANEL_COLS;
    }
}

/// A slice of the depth: `len` codes from `start`, of rows `depth` long.
#[derive(Clone, Copy)]
struct Slice {
    start: usize,
    len: usize,
    depth: usize,
}

/// Sums of an `M`-row tile `a` (rows of `slice.depth` codes, from the slice's start) times `N` panels of `b` (from
/// the slice's start) over the slice, added to `partial` unless it is the first; after the last slice dequantized
/// into the output's `corner` (row, col, height, width), else kept in `partial`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn tile<const M: usize, const N: usize>(
    a: &[u8],
    b: &[u8],
    slice: Slice,
    partial: &mut [i32],
    job: Job,
    corner: (usize, usize, usize, usize),
) {
    let (pitch, panel_len, groups) = (slice.depth, PANEL_COLS * slice.depth, slice.len / 4);
    // Bounds that the loop's unchecked reads rest on: M rows of `a`, N panels of `b`, one tile of `partial`.
    let (a, b) = (
        &a[..(M - 1) * pitch + slice.len],
        &b[..(N - 1) * panel_len + groups * GROUP_BYTES],
    );
    let partial = &mut partial[..MR * NR * PANEL_COLS];
    let last = slice.start + slice.len == slice.depth;
    if last {
        // The lines `write` will touch, asked for while the products run (3-5 % of the op, Zen 4, 616 rows).
        prefetch_operands(job.out, corner, job.dq.epilogue.residual);
    }
    let mut acc = [[_mm512_setzero_si512(); N]; M];
    if slice.start > 0 {
        for (row, acc) in partial.chunks_exact(NR * PANEL_COLS).zip(&mut acc) {
            for (src, v) in row.chunks_exact(PANEL_COLS).zip(acc) {
                // SAFETY: `src` is 16 i32, the 64 bytes the load reads.
                *v = unsafe { _mm512_loadu_si512(src.as_ptr().cast()) };
            }
        }
    }
    for g in 0..groups {
        let mut w = [_mm512_setzero_si512(); N];
        for (j, w) in w.iter_mut().enumerate() {
            // SAFETY: group g of panel j: 64 bytes at j · panel_len + 64 g, inside `b` (g < groups).
            *w = unsafe { _mm512_loadu_si512(b.as_ptr().add(j * panel_len + g * GROUP_BYTES).cast()) };
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: 4 codes of row i at 4g, inside `a` (4g + 4 ≤ slice.len); read unaligned.
            let four = unsafe { a.as_ptr().add(i * pitch + 4 * g).cast::<i32>().read_unaligned() };
            let x = _mm512_set1_epi32(four);
            for (acc, &w) in acc.iter_mut().zip(&w) {
                *acc = _mm512_dpbusd_epi32(*acc, x, w);
            }
        }
    }
    for (row, acc) in partial.chunks_exact_mut(NR * PANEL_COLS).zip(&acc) {
        for (dst, v) in row.chunks_exact_mut(PANEL_COLS).zip(acc) {
            // SAFETY: `dst` is 16 i32, the 64 bytes the store writes.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), *v) };
        }
    }
    if last {
        job.dq.write(partial, NR * PANEL_COLS, job.out, corner);
    }
}
