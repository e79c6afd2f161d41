//! The dynamic-int8 GEMM on Intel AMX (AMX-INT8, Sapphire Rapids and later): `tdpbusd` multiplies a 16×64 tile of
//! u8 input codes by a 64×16 tile of i8 weight codes into 16×16 i32 sums, 16 384 products an instruction (AVX-512
//! VNNI's `vpdpbusd`: 64). The weight is packed once, at load, in the tiles' VNNI layout; the input codes are read
//! as tiles straight from their rows; each 32×32 block of sums is dequantized by [`super::int8`]'s formula, value for
//! value as its other kernel's.

use std::arch::asm;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::int8;
use super::packed::{task_blocks, Block, Output};
use super::{weight_buffer, Isa};

/// Rows of an input (A) or sums (C) tile; also the weight codes' column count per tile.
pub(super) const TILE_ROWS: usize = 16;
/// Bytes of one tile row: 64 input codes, or 16 columns × 4 depths of weight codes.
pub(super) const TILE_DEPTH: usize = 64;
/// Bytes of one tile.
const TILE_BYTES: usize = TILE_ROWS * TILE_DEPTH;
/// Output columns of one block: two weight tiles side by side; the packed weight's width is a multiple of it.
const BLOCK_COLS: usize = 2 * TILE_ROWS;
/// Input rows one task covers: its codes (MC × the depth, ≤ 512 KiB at depth 4096) stay in L2 while the block's
/// weight tiles pass.
const MC: usize = 128;
/// The widest column block one task covers.
const MAX_BLOCK_COLS: usize = 256;

/// Linux's `arch_prctl` request for permission to use an extended state component (asm/prctl.h).
#[cfg(target_os = "linux")]
const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
/// The AMX tile data state component (XFEATURE_XTILEDATA, asm/fpu/types.h).
#[cfg(target_os = "linux")]
const XFEATURE_XTILEDATA: libc::c_ulong = 18;

/// Whether AMX-INT8 may run here: the CPU has AMX-TILE and AMX-INT8 (CPUID leaf 7 EDX bits 24 and 25) and Linux
/// granted this process the tile data state (asked once; the grant covers every thread of the process).
pub(super) fn available() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    *GRANTED.get_or_init(|| cpu_has_amx_int8() && os_grants_tiles())
}

// `__cpuid_count` is a safe function from Rust 1.94 on, an unsafe one before (the crate's MSRV is 1.89).
#[allow(unused_unsafe)]
fn cpu_has_amx_int8() -> bool {
    // SAFETY: CPUID is present on every x86-64 CPU; leaf 7 reads as zeros where the CPU does not implement it.
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    let (tile, int8) = (1 << 24, 1 << 25);
    leaf7.edx & (tile | int8) == tile | int8
}

#[cfg(target_os = "linux")]
fn os_grants_tiles() -> bool {
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, n) takes two integers and only changes which state components this
    // process may use; a kernel without AMX support answers with an error, which means no.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

/// Off Linux nothing asks for the tile state, so AMX stays unused.
#[cfg(not(target_os = "linux"))]
fn os_grants_tiles() -> bool {
    false
}

/// Proof that [`available`] said yes: what the tile instructions' `unsafe` rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Granted(());

impl Granted {
    /// `Some` where AMX-INT8 may run.
    pub(super) fn check() -> Option<Self> {
        available().then_some(Self(()))
    }
}

/// A weight's (out, in) i8 codes in AMX tiles: for each 16-column panel, for each 64-deep step, one tile whose row
/// `r` holds, per column `n`, the codes of depths `4r .. 4r + 4` (the layout `tdpbusd` takes for its second
/// operand). Columns and depths past the weight's are zero.
pub(super) struct AmxWeight {
    buffer: Vec<u8>,
    start: usize,
    len: usize,
    /// Depth steps of [`TILE_DEPTH`]: the padded input width over 64.
    steps: usize,
    granted: Granted,
}

impl AmxWeight {
    /// Packs `codes` (out × in, row-major).
    pub(super) fn pack(codes: &[i8], (out_dim, in_dim): (usize, usize), granted: Granted) -> Self {
        let steps = in_dim.div_ceil(TILE_DEPTH);
        let panels = out_dim.next_multiple_of(BLOCK_COLS) / TILE_ROWS;
        let len = panels * steps * TILE_BYTES;
        let buffer = weight_buffer::<u8>(len + TILE_DEPTH);
        let start = buffer.as_ptr().align_offset(TILE_DEPTH).min(TILE_DEPTH);
        let mut weight = Self {
            buffer,
            start,
            len,
            steps,
            granted,
        };
        let panel_len = steps * TILE_BYTES;
        weight
            .values_mut()
            .par_chunks_mut(panel_len)
            .zip(codes.par_chunks(TILE_ROWS * in_dim))
            .for_each(|(panel, rows)| pack_panel(rows, in_dim, panel));
        weight
    }

    /// The padded input width the input codes' rows must have.
    pub(super) fn depth(&self) -> usize {
        self.steps * TILE_DEPTH
    }

    fn values(&self) -> &[u8] {
        &self.buffer[self.start..self.start + self.len]
    }

    fn values_mut(&mut self) -> &mut [u8] {
        &mut self.buffer[self.start..self.start + self.len]
    }
}

/// Writes up to 16 rows of `in_dim` codes (one panel's columns) into the panel's tiles.
fn pack_panel(rows: &[i8], in_dim: usize, panel: &mut [u8]) {
    for (n, row) in rows.chunks_exact(in_dim).enumerate() {
        for (k, &code) in row.iter().enumerate() {
            let at = k / TILE_DEPTH * TILE_BYTES + (k % TILE_DEPTH) / 4 * TILE_DEPTH + n * 4 + k % 4;
            panel[at] = code as u8;
        }
    }
}

/// What turns a block's i32 sums into f32: `(sum − zero[i] · code_sums[j]) · row_scales[i] · scales[j]`.
#[derive(Clone, Copy)]
pub(super) struct Dequantize<'a> {
    pub(super) row_scales: &'a [f32],
    pub(super) zeros: &'a [u8],
    pub(super) scales: &'a [f32],
    pub(super) code_sums: &'a [i32],
}

/// `codes` (`rows` rounded up to 16, by `weight.depth()`, u8) times the weight's codes, dequantized into a new
/// (rows, out) buffer written once. `out_dim` is the weight's.
pub(super) fn matmul(codes: &[u8], rows: usize, weight: &AmxWeight, dq: Dequantize, isa: Isa) -> Vec<f32> {
    let out_dim = dq.scales.len();
    let mut y: Vec<f32> = Vec::with_capacity(rows * out_dim);
    let out = Output {
        ptr: y.as_mut_ptr(),
        width: out_dim,
    };
    let job = Job {
        codes,
        weight,
        rows,
        out,
        dq,
    };
    task_blocks((rows, out_dim), (MC, BLOCK_COLS), MAX_BLOCK_COLS)
        .into_par_iter()
        .for_each(|block| dispatch!(isa, (job: Job, block: Block) { run_block(job, block) }));
    // SAFETY: the blocks cover all rows × out_dim once (`task_blocks`) and `run_block` writes every value of its block;
    // all tasks have finished.
    unsafe { y.set_len(rows * out_dim) };
    y
}

/// What every task of one product shares.
#[derive(Clone, Copy)]
struct Job<'a> {
    codes: &'a [u8],
    weight: &'a AmxWeight,
    rows: usize,
    out: Output,
    dq: Dequantize<'a>,
}

/// 32 × 32 i32 sums, on a cache line.
#[repr(C, align(64))]
struct Sums([i32; BLOCK_COLS * BLOCK_COLS]);

/// One task's block: per 32-column pair of weight panels, per pair of 16-row input tiles, the sums over the whole
/// depth, then their dequantization into the output.
#[inline(always)]
fn run_block(job: Job, block: Block) {
    let Job {
        codes,
        weight,
        rows,
        out,
        dq,
    } = job;
    let (depth, steps) = (weight.depth(), weight.steps);
    let panel_len = steps * TILE_BYTES;
    let tiles = weight.values();
    let mut sums = Sums([0; BLOCK_COLS * BLOCK_COLS]);
    let config = TileConfig::new();
    // SAFETY: `weight.granted` proves the CPU has AMX-INT8 and the OS granted the tile state; the configuration is
    // a valid palette-1 one (`TileConfig::new`).
    unsafe { config.load(weight.granted) };
    for j0 in (block.cols.0..block.cols.1).step_by(BLOCK_COLS) {
        let b = &tiles[j0 / TILE_ROWS * panel_len..][..2 * panel_len];
        for i0 in (block.rows.0..block.rows.1).step_by(BLOCK_COLS) {
            let height = BLOCK_COLS.min(rows - i0);
            let a = &codes[i0 * depth..][..height.next_multiple_of(TILE_ROWS) * depth];
            // SAFETY: as above, with the tiles configured; `a` holds one or two 16-row tiles of `steps` steps at
            // row pitch `depth`, `b` two panels of `steps` tiles each (both checked by the slicing above).
            unsafe { product(a, depth, b, steps, height > TILE_ROWS, &mut sums) };
            let width = BLOCK_COLS.min(out.width - j0);
            dequantize(&sums, out, (i0, j0, height, width), dq);
        }
    }
    // SAFETY: as for `load`; releasing returns the tiles to their initial state.
    unsafe { TileConfig::release(weight.granted) };
}

/// `sums` = one or two (`two_rows`) 16-row tiles of `a` times two 16-column panels of `b`, over `steps` depth steps.
///
/// # Safety
/// The tiles must be configured as [`TileConfig::new`] does, on a CPU with AMX-INT8 whose OS granted the tile state;
/// `a` must hold 16 (32 if `two_rows`) rows of `steps · 64` codes at pitch `pitch`, `b` two panels of `steps` tiles.
#[inline(always)]
unsafe fn product(a: &[u8], pitch: usize, b: &[u8], steps: usize, two_rows: bool, sums: &mut Sums) {
    let (a0, b0) = (a.as_ptr(), b.as_ptr());
    // SAFETY: the offsets stay inside `a` and `b` (second row tile: 16 rows on; second panel: `steps` tiles on).
    let (a1, b1) = unsafe { (a0.add(TILE_ROWS * pitch), b0.add(steps * TILE_BYTES)) };
    let c = sums.0.as_mut_ptr();
    let c_pitch = BLOCK_COLS * 4;
    // SAFETY: per the contract, each step reads 16 × 64 bytes of `a` (per row tile) and one 1 KiB tile of each
    // panel of `b`, all inside them; tmm0..tmm3 accumulate, tmm4/5 hold input tiles, tmm6/7 weight tiles. The
    // stores write 16 rows × 64 bytes at pitch 128 bytes from four corners of the 32 × 32 `sums`.
    unsafe {
        if two_rows {
            asm!(
                "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
                "2:",
                "tileloadd tmm4, [{a0} + {pa}*1]",
                "tileloadd tmm6, [{b0} + {pb}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a1} + {pa}*1]",
                "tdpbusd tmm2, tmm5, tmm6",
                "tileloadd tmm7, [{b1} + {pb}*1]",
                "tdpbusd tmm1, tmm4, tmm7",
                "tdpbusd tmm3, tmm5, tmm7",
                "add {a0}, 64", "add {a1}, 64", "add {b0}, 1024", "add {b1}, 1024",
                "dec {n}", "jnz 2b",
                a0 = inout(reg) a0 => _, a1 = inout(reg) a1 => _, b0 = inout(reg) b0 => _, b1 = inout(reg) b1 => _,
                pa = in(reg) pitch, pb = in(reg) TILE_DEPTH, n = inout(reg) steps => _,
                options(nostack, readonly),
            );
            asm!(
                "tilestored [{c} + {p}*1], tmm0",
                "tilestored [{c} + {p}*1 + 64], tmm1",
                "tilestored [{c2} + {p}*1], tmm2",
                "tilestored [{c2} + {p}*1 + 64], tmm3",
                c = in(reg) c, c2 = in(reg) c.add(TILE_ROWS * BLOCK_COLS), p = in(reg) c_pitch,
                options(nostack),
            );
        } else {
            asm!(
                "tilezero tmm0", "tilezero tmm1",
                "2:",
                "tileloadd tmm4, [{a0} + {pa}*1]",
                "tileloadd tmm6, [{b0} + {pb}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {pb}*1]",
                "tdpbusd tmm1, tmm4, tmm7",
                "add {a0}, 64", "add {b0}, 1024", "add {b1}, 1024",
                "dec {n}", "jnz 2b",
                a0 = inout(reg) a0 => _, b0 = inout(reg) b0 => _, b1 = inout(reg) b1 => _,
                pa = in(reg) pitch, pb = in(reg) TILE_DEPTH, n = inout(reg) steps => _,
                options(nostack, readonly),
            );
            asm!(
                "tilestored [{c} + {p}*1], tmm0",
                "tilestored [{c} + {p}*1 + 64], tmm1",
                c = in(reg) c, p = in(reg) c_pitch,
                options(nostack),
            );
        }
    }
}

/// Writes the `height` × `width` corner of `sums`, dequantized, at (`row`, `col`) of the output.
#[inline(always)]
fn dequantize(sums: &Sums, out: Output, (row, col, height, width): (usize, usize, usize, usize), dq: Dequantize) {
    let (scales, code_sums) = (&dq.scales[col..col + width], &dq.code_sums[col..col + width]);
    for (i, acc) in sums.0.chunks_exact(BLOCK_COLS).enumerate().take(height) {
        let (row_scale, zero) = (dq.row_scales[row + i], i32::from(dq.zeros[row + i]));
        // SAFETY: (row + i, col .. col + width) lies inside the output and inside this task's block, which no
        // other task writes (`task_blocks`).
        let dst = unsafe { std::slice::from_raw_parts_mut(out.ptr.add((row + i) * out.width + col), width) };
        for (((d, &a), &s), &c) in dst.iter_mut().zip(acc).zip(scales).zip(code_sums) {
            *d = int8::dequantize(a, (row_scale, zero), (s, c));
        }
    }
}

/// The palette-1 tile configuration every task loads: eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    /// Bytes per row, per tile.
    columns: [u16; 16],
    /// Rows, per tile.
    rows: [u8; 16],
}

impl TileConfig {
    fn new() -> Self {
        let mut config = Self {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            columns: [0; 16],
            rows: [0; 16],
        };
        config.columns[..8].fill(TILE_DEPTH as u16);
        config.rows[..8].fill(TILE_ROWS as u8);
        config
    }

    /// Configures this thread's tiles.
    ///
    /// # Safety
    /// `_granted` must come from [`Granted::check`] (AMX present and granted).
    unsafe fn load(&self, _granted: Granted) {
        // SAFETY: per the contract the instruction exists and may be used; `self` is a valid 64-byte configuration.
        unsafe { asm!("ldtilecfg [{}]", in(reg) self as *const Self, options(nostack, readonly)) };
    }

    /// Returns this thread's tiles to their initial state.
    ///
    /// # Safety
    /// As for [`TileConfig::load`].
    unsafe fn release(_granted: Granted) {
        // SAFETY: per the contract the instruction exists and may be used.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
