//! The dynamic-int8 GEMM on Intel AMX (AMX-INT8, Sapphire Rapids and later): `tdpbusd` multiplies a 16×64 tile of
//! u8 input codes by a 64×16 tile of i8 weight codes into 16×16 i32 sums, 16 384 products an instruction (AVX-512
//! VNNI's `vpdpbusd`: 64). The weight is packed once, at load, as [`CodePanels`] (whose groups are the tiles' rows);
//! the input codes are read as tiles straight from their rows; each 32×32 block of sums is dequantized by
//! [`super::int8`]'s formula, value for value as the other int8 kernels'.

use std::arch::asm;
use std::sync::OnceLock;

use super::int8::{Dequantize, MAX_TILE_COLS};
use super::packed::Block;
use super::vnni::{CodePanels, Job, DEPTH_STEP, PANEL_COLS, WIDTH_STEP};
use super::Isa;

/// Rows of an input (A) or sums (C) tile; also the weight codes' column count per tile (a panel's).
pub(super) const TILE_ROWS: usize = PANEL_COLS;
/// Bytes of one tile row: 64 input codes, or 16 columns × 4 depths of weight codes.
const TILE_DEPTH: usize = DEPTH_STEP;
/// Bytes of one tile.
const TILE_BYTES: usize = TILE_ROWS * TILE_DEPTH;
/// Output columns of one block: two weight tiles side by side, the packed weight's width step.
const BLOCK_COLS: usize = WIDTH_STEP;
// `Dequantize::write` finishes a tile's rows in a local this wide.
const _: () = assert!(BLOCK_COLS <= MAX_TILE_COLS);
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

/// The tile unit the kernel's products run on: the CPU's, or in tests a scalar model of its three instructions, so
/// that the weight packing, the blocking and the finishing around them run on every x86-64 CPU, not only where AMX
/// is granted (the instructions themselves were last checked on an AMX Xeon, 927451e).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tiles {
    /// AMX-INT8, present and granted.
    Granted(Granted),
    /// `tileloadd`, `tdpbusd` and `tilestored` as the Intel SDM defines them, in scalar Rust ([`model`]).
    #[cfg(test)]
    Model,
}

impl Tiles {
    /// The CPU's tiles where AMX-INT8 may run.
    pub(super) fn check() -> Option<Self> {
        Granted::check().map(Self::Granted)
    }

    /// Configures this thread's tiles as `config` says.
    fn load(self, config: &TileConfig) {
        match self {
            // SAFETY: `granted` proves the CPU has AMX-INT8 and the OS granted the tile state; `config` is a valid
            // palette-1 configuration (`TileConfig::new`).
            Self::Granted(granted) => unsafe { config.load(granted) },
            #[cfg(test)]
            Self::Model => {}
        }
    }

    /// [`product`] on this unit.
    ///
    /// # Safety
    /// [`Tiles::load`] ran on this thread, and `a` and `b` hold what [`product`] reads.
    unsafe fn product(self, a: &[u8], pitch: usize, b: &[u8], (steps, two_rows): (usize, bool), sums: &mut Sums) {
        match self {
            // SAFETY: `Granted` proves the CPU and OS allow the tiles, and the rest is this function's contract.
            Self::Granted(_) => unsafe { product(a, pitch, b, steps, two_rows, sums) },
            #[cfg(test)]
            Self::Model => model::product(a, pitch, b, steps, two_rows, sums),
        }
    }

    /// Returns this thread's tiles to their initial state.
    fn release(self) {
        match self {
            // SAFETY: as for `load`.
            Self::Granted(granted) => unsafe { TileConfig::release(granted) },
            #[cfg(test)]
            Self::Model => {}
        }
    }
}

/// `codes` (`rows` rounded up to 16, by `weight.depth()`, u8) times the weight's codes, dequantized into a new
/// (rows, out) buffer written once. `out_dim` is the weight's.
pub(super) fn matmul(
    codes: &[u8],
    rows: usize,
    weight: &CodePanels,
    dq: Dequantize,
    (tiles, isa): (Tiles, Isa),
) -> Vec<f32> {
    let job = Job::new(codes, rows, weight, dq);
    let task = |job, block| dispatch!(isa, (job: Job, block: Block, tiles: Tiles) { run_block(job, block, tiles) });
    // SAFETY: `run_block` writes every value of its block.
    unsafe { job.run((MC, BLOCK_COLS), MAX_BLOCK_COLS, task) }
}

/// 32 × 32 i32 sums, on a cache line.
#[repr(C, align(64))]
struct Sums([i32; BLOCK_COLS * BLOCK_COLS]);

/// One task's block: per 32-column pair of weight panels, per pair of 16-row input tiles, the sums over the whole
/// depth, then their dequantization into the output.
#[inline(always)]
fn run_block(job: Job, block: Block, tiles: Tiles) {
    let Job {
        codes,
        weight,
        rows,
        out,
        dq,
    } = job;
    let (depth, panel_len) = (weight.depth(), weight.panel_len());
    let steps = depth / TILE_DEPTH;
    let panels = weight.values();
    let mut sums = Sums([0; BLOCK_COLS * BLOCK_COLS]);
    tiles.load(&TileConfig::new());
    for j0 in (block.cols.0..block.cols.1).step_by(BLOCK_COLS) {
        let b = &panels[j0 / TILE_ROWS * panel_len..][..2 * panel_len];
        for i0 in (block.rows.0..block.rows.1).step_by(BLOCK_COLS) {
            let height = BLOCK_COLS.min(rows - i0);
            // One or two 16-row tiles of `steps` steps at row pitch `depth`, and two panels of `steps` tiles each:
            // what `product` reads, checked by this slicing.
            let a = &codes[i0 * depth..][..height.next_multiple_of(TILE_ROWS) * depth];
            // SAFETY: the tiles were loaded above, on this thread; `a` and `b` as sliced.
            unsafe { tiles.product(a, depth, b, (steps, height > TILE_ROWS), &mut sums) };
            let width = BLOCK_COLS.min(out.width - j0);
            dq.write(&sums.0, BLOCK_COLS, out, (i0, j0, height, width));
        }
    }
    tiles.release();
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

/// A scalar model of the three tile instructions the kernel issues, as the Intel SDM defines them (`TILELOADD`,
/// `TDPBUSD`, `TILESTORED`), on the configuration [`TileConfig::new`] makes: tiles of 16 rows × 64 bytes.
#[cfg(test)]
mod model {
    use super::{Sums, BLOCK_COLS, TILE_BYTES, TILE_DEPTH, TILE_ROWS};

    /// A tile of 16 rows × 64 bytes: input or weight codes.
    type Tile = [[u8; TILE_DEPTH]; TILE_ROWS];
    /// The same tile as 16 rows of 16 i32 sums.
    type SumTile = [[i32; TILE_ROWS]; TILE_ROWS];

    /// `tileloadd`: 16 rows of 64 bytes, `stride` bytes apart from `at`.
    fn load(bytes: &[u8], at: usize, stride: usize) -> Tile {
        std::array::from_fn(|r| bytes[at + r * stride..][..TILE_DEPTH].try_into().unwrap())
    }

    /// `tdpbusd c, a, b`: per row m, per dword k of a's row, per column n, the dot product of a's 4 bytes (unsigned)
    /// with the 4 bytes of b's row k at dword n (signed), added to c[m][n] (wrapping, as the SDM's 32-bit adds).
    fn dpbusd(c: &mut SumTile, a: &Tile, b: &Tile) {
        for (c_row, a_row) in c.iter_mut().zip(a) {
            for (k, four) in a_row.chunks_exact(4).enumerate() {
                for (n, sum) in c_row.iter_mut().enumerate() {
                    let dot: i32 = (0..4)
                        .map(|i| i32::from(four[i]) * i32::from(b[k][4 * n + i] as i8))
                        .sum();
                    *sum = sum.wrapping_add(dot);
                }
            }
        }
    }

    /// `tilestored`: the tile's rows at `at` of `sums`, `BLOCK_COLS` i32 apart (the kernel's 128-byte stride).
    fn store(sums: &mut Sums, at: usize, tile: &SumTile) {
        for (r, row) in tile.iter().enumerate() {
            sums.0[at + r * BLOCK_COLS..][..TILE_ROWS].copy_from_slice(row);
        }
    }

    /// [`super::product`]'s instruction sequence on the model: the same loads, products and stores.
    pub(super) fn product(a: &[u8], pitch: usize, b: &[u8], steps: usize, two_rows: bool, sums: &mut Sums) {
        let mut c = [[[0i32; TILE_ROWS]; TILE_ROWS]; 4];
        let (a1, b1) = (TILE_ROWS * pitch, steps * TILE_BYTES);
        for step in 0..steps {
            let (a_at, b_at) = (step * TILE_DEPTH, step * TILE_BYTES);
            let (tmm4, tmm6, tmm7) = (
                load(a, a_at, pitch),
                load(b, b_at, TILE_DEPTH),
                load(b, b1 + b_at, TILE_DEPTH),
            );
            dpbusd(&mut c[0], &tmm4, &tmm6);
            dpbusd(&mut c[1], &tmm4, &tmm7);
            if two_rows {
                let tmm5 = load(a, a1 + a_at, pitch);
                dpbusd(&mut c[2], &tmm5, &tmm6);
                dpbusd(&mut c[3], &tmm5, &tmm7);
            }
        }
        let corners = [0, TILE_ROWS, TILE_ROWS * BLOCK_COLS, TILE_ROWS * BLOCK_COLS + TILE_ROWS];
        let stored = if two_rows { 4 } else { 2 };
        for (tile, at) in c.iter().zip(corners).take(stored) {
            store(sums, at, tile);
        }
    }
}
