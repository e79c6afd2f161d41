//! f32 `act(x Wᵀ + b)` over a weight packed once, at load, into the micro-kernel's panels: a register tile of 6 rows
//! by 64 columns on AVX-512 (24 accumulators) or 16 on AVX2 (12); each task takes its B panels in turn, KC deep
//! slices of them in L2, under every tile of its MC rows of A (packed per call, or read in place by AVX-512's
//! tiles); the bias, activation and residual are applied to each tile as its last pass ends. Plain Rust over
//! fixed-size arrays, which LLVM keeps in vector registers, compiled per instruction set (`dispatch!`). The
//! projections' GEMM on AVX2 and AVX-512 CPUs ([`PackedWeight::try_read`]).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::bias_act::{Epilogue, Fused};
use super::{contiguous, transpose, with_host_f32, Isa, Level, Param};
use crate::config::Activation;
use crate::error::{Error, Result};
use crate::kernels::{self, Kernels};
use crate::weights::CheckpointView;

/// Rows of the register tile: the height of A's panels (also attention's queries per step).
pub(super) const MR: usize = 6;
/// Columns of the register tile, the width of B's panels, on AVX-512: four 16-lane vectors.
const NR_WIDE: usize = 64;
/// Columns of the register tile elsewhere: two 8-lane AVX2 vectors.
const NR: usize = 16;
// Panels are written 16 rows at a time (`fill_panels`).
const _: () = assert!(NR.is_multiple_of(transpose::ROWS) && NR_WIDE.is_multiple_of(transpose::ROWS));
/// Depth of one pass over a tile: a KC-deep slice of one B panel (64 KiB on AVX2, 256 KiB on AVX-512) stays in L2
/// while every tile of the task's rows reads it. Each pass past the first reloads the tiles' sums from the output;
/// on the vision tower's shapes (depth 1024 and 4096) KC 1024 ran 15–25 % faster than 256 (BENCHMARKS.md, eleventh
/// session).
const KC: usize = 1024;
/// Rows of A one task covers: 43 tiles, one image's 257 vision tokens in one block, so each B panel is read once per
/// image. A's block (up to 1 MiB) streams from L2 or L3: per step a tile reads 6 of its values against 64 of B's.
const MC: usize = 258;
/// The widest column block one task covers.
const MAX_BLOCK_COLS: usize = 256;
/// Tasks per rayon thread, to balance uneven blocks.
const TASKS_PER_THREAD: usize = 4;
/// f32 values per 64-byte cache line: panels start on a line, so a panel row never straddles two.
const LINE: usize = 16;

/// A projection's (out, in) f32 weight as `Wᵀ` in panels of `width` columns: panel `p` holds
/// `W[p·width .. (p+1)·width, k]` for every `k`, `width` values per `k` (past `out` zero).
pub(crate) struct PackedWeight {
    out_dim: usize,
    in_dim: usize,
    width: usize,
    panels: Panels,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeight({}x{}, f32)", self.out_dim, self.in_dim)
    }
}

/// Panels of `width` columns, each `depth` deep, in one buffer whose used part starts on a cache line.
struct Panels {
    buffer: Vec<f32>,
    start: usize,
    len: usize,
}

impl Panels {
    /// `count` panels of a weight, in a buffer never zeroed (calloc memset the loading threads' chunks: 12 % of a
    /// full-size load's samples) nor advised for huge pages (under a VM's free page reporting, fresh 2 MiB pages
    /// cost more than small ones: BENCHMARKS.md, ninth session): `write` writes the panels' slots and returns how
    /// many, from the first on, it wrote; fewer than all of them is an error (`what` names the weight).
    fn written(
        (count, depth, width): (usize, usize, usize),
        what: &str,
        write: impl FnOnce(&mut [MaybeUninit<f32>]) -> Result<usize>,
    ) -> Result<Self> {
        let len = count * depth * width;
        let mut buffer: Vec<f32> = Vec::with_capacity(len + LINE);
        let start = buffer.as_ptr().align_offset(4 * LINE).min(LINE);
        let (gap, panels) = buffer.spare_capacity_mut()[..start + len].split_at_mut(start);
        gap.fill(MaybeUninit::new(0.0));
        let written = write(panels)?;
        if written != len {
            let reason = format!("packing {what}: {written} of {len} panel values written");
            return Err(candle_core::Error::Msg(reason).into());
        }
        // SAFETY: the first `start + len` values are written: the gap above, the panels by `write`, which counts
        // only slots it wrote, from the first on.
        unsafe { buffer.set_len(start + len) };
        Ok(Self { buffer, start, len })
    }

    fn values(&self) -> &[f32] {
        &self.buffer[self.start..self.start + self.len]
    }

    /// Packs `rows` (row-major, `depth` wide) into panels of `width` rows: panel `p`, entry `k · width + j` is
    /// `rows[(p · width + j) · depth + k]`. The buffer is not zeroed first (per call, in a reused heap, that was a
    /// memset of the whole input: 5 % of the text tower): the packing writes every value, the padding's zeros too.
    fn pack(rows: &[f32], depth: usize, width: usize, isa: Isa) -> Self {
        let count = (rows.len() / depth.max(1)).div_ceil(width);
        let len = count * depth * width;
        let mut buffer: Vec<f32> = Vec::with_capacity(len + LINE);
        let start = buffer.as_ptr().align_offset(4 * LINE).min(LINE);
        let (gap, panels) = buffer.spare_capacity_mut()[..start + len].split_at_mut(start);
        gap.fill(MaybeUninit::new(0.0));
        fill_panels(panels, rows, depth, width, isa);
        // SAFETY: the first `start + len` values are written: the gap above, the panels by `fill_panels`.
        unsafe { buffer.set_len(start + len) };
        Self { buffer, start, len }
    }
}

/// Reads the (out, in) f32 weight `name` under `view` into the panels `slots` starts with, `width` wide, packed
/// with `isa`'s code, one chunk of whole panels at a time; returns how many slots it wrote, from the first on. A
/// chunk is about 64 Ki values (256 KiB; at least one panel), so that the read's copy is still in L2 when it is
/// packed: towers loaded 8-10 % faster than with 4 MiB chunks (AMD EPYC Zen 4, with the transposes of
/// [`fill_panels`]; loading is bound by memory traffic, and the scalar packing showed no gain).
fn read_panels(
    view: &CheckpointView,
    name: &str,
    (out_dim, in_dim): (usize, usize),
    width: usize,
    isa: Isa,
    slots: &mut [MaybeUninit<f32>],
) -> Result<usize> {
    let chunk_rows = ((1 << 16) / in_dim / width).max(1) * width;
    let panel_len = in_dim * width;
    // The chunks come in order: `written` counts the slots filled so far, and a chunk elsewhere is refused.
    let mut written = 0;
    view.read_f32_rows(name, (out_dim, in_dim), chunk_rows, &mut |row, values| {
        let first = row / width * panel_len;
        let len = (values.len() / in_dim).div_ceil(width) * panel_len;
        if first != written || first + len > slots.len() {
            let reason = format!("packing {name}: rows from {row} out of order");
            return Err(candle_core::Error::Msg(reason).into());
        }
        fill_panels(&mut slots[first..first + len], values, in_dim, width, isa);
        written += len;
        Ok(())
    })?;
    Ok(written)
}

/// Packs `rows` (row-major, `depth` wide) into the panels `panels` starts with, every value of them written, one
/// rayon task per panel. Weight panels (16 or 64 wide) take 16 rows at a time as columns ([`transpose::into_slots`]:
/// 16 × 16 transposes in registers on AVX-512, 8 × 8 on AVX2; 2.1× faster than [`pack_panel`] at 4096 × 1024 on a
/// Zen 4), zero rows past the last; the inputs' 6-row panels take [`pack_panel`].
fn fill_panels(panels: &mut [MaybeUninit<f32>], rows: &[f32], depth: usize, width: usize, isa: Isa) {
    let panel_len = (depth * width).max(1);
    let tasks = panels.par_chunks_mut(panel_len).zip(rows.par_chunks(panel_len));
    if !width.is_multiple_of(transpose::ROWS) {
        return tasks.for_each(|(panel, rows)| {
            dispatch!(isa, (rows: &[f32], depth: usize, width: usize, panel: &mut [MaybeUninit<f32>]) {
                pack_panel(rows, depth, width, panel)
            })
        });
    }
    let zeros = vec![0.0; depth];
    tasks.for_each(|(panel, rows)| {
        for col in (0..width).step_by(transpose::ROWS) {
            let group: [&[f32]; transpose::ROWS] =
                std::array::from_fn(|j| rows.get((col + j) * depth..(col + j + 1) * depth).unwrap_or(&zeros));
            transpose::into_slots(isa, &group, panel, (width, col));
        }
    });
}

/// Writes up to `width` rows of `depth` values transposed into `panel` (depth × width), zeros past the last row; 8
/// values of each row at a time, so the writes stay in one 512-byte stretch (row by row, each write landed on a new
/// cache line: 7× slower). For inputs' panels and weight codes; f32 weights take [`fill_panels`]'s transposes.
#[inline(always)]
fn pack_panel<T: Copy + bytemuck::Zeroable>(rows: &[T], depth: usize, width: usize, panel: &mut [MaybeUninit<T>]) {
    const STEP: usize = 8;
    let present = rows.len() / depth.max(1);
    for (k0, block) in (0..depth).step_by(STEP).zip(panel.chunks_mut(STEP * width)) {
        let steps = block.len() / width;
        for (j, row) in rows.chunks_exact(depth).enumerate() {
            for (t, &v) in row[k0..k0 + steps].iter().enumerate() {
                block[t * width + j].write(v);
            }
        }
        if present < width {
            for step in block.chunks_exact_mut(width) {
                step[present..].fill(MaybeUninit::new(T::zeroed()));
            }
        }
    }
}

impl PackedWeight {
    /// The (out, in) f32 weights `name` under each of `parts`, stacked along the output dimension in order (q, k,
    /// v into one projection), read from the files straight into one set of panels for this CPU (through one 4 MB
    /// buffer: no unpacked weight is ever held whole, nor each part's panels apart). `None` where this kernel is not
    /// the one to use: the generic path forced ([`Kernels`]), a CPU without AVX2+FMA (candle's matmul serves it), a
    /// build with the `mkl` feature (whoever asks for MKL gets it: candle's matmul through MKL), a view that loads
    /// to another device or dtype than f32 on the CPU, an empty weight; and for several parts whose `out` is no
    /// multiple of the panel width (stack them with [`Self::concat`]).
    pub(crate) fn try_read(
        parts: &[&CheckpointView],
        name: &str,
        (out_dim, in_dim): (usize, usize),
    ) -> Result<Option<Self>> {
        if cfg!(feature = "mkl") {
            return Ok(None);
        }
        let isa = Isa::best();
        let cpu_f32 = parts.iter().all(|v| v.device().is_cpu() && v.dtype() == DType::F32);
        if kernels::selected()? != Kernels::Fused || isa.level() == Level::Baseline || !cpu_f32 {
            return Ok(None);
        }
        let width = Self::width_for(isa);
        if parts.is_empty() || out_dim == 0 || in_dim == 0 || (parts.len() > 1 && !out_dim.is_multiple_of(width)) {
            return Ok(None);
        }
        let stacked = parts.len() * out_dim;
        let shape = (stacked.div_ceil(width), in_dim, width);
        let panels = Panels::written(shape, name, |all| {
            let mut written = 0;
            for view in parts {
                written += read_panels(view, name, (out_dim, in_dim), width, isa, &mut all[written..])?;
            }
            Ok(written)
        })?;
        Ok(Some(Self {
            out_dim: stacked,
            in_dim,
            width,
            panels,
        }))
    }

    /// The panel width `isa`'s register tile takes.
    fn width_for(isa: Isa) -> usize {
        match isa.level() {
            Level::Avx512 => NR_WIDE,
            Level::Avx2Fma | Level::Baseline => NR,
        }
    }

    /// `weight` packed whatever the CPU, for the layers' tests.
    #[cfg(test)]
    pub(crate) fn pack_for_tests(weight: &Tensor) -> Self {
        Self::pack_for(weight, Isa::best()).unwrap().unwrap()
    }

    /// `weight` packed for `isa`'s register tile.
    #[cfg(test)]
    fn pack_for(weight: &Tensor, isa: Isa) -> Result<Option<Self>> {
        Self::pack_with_width(weight, Self::width_for(isa), isa)
    }

    /// `weight` in panels of `width` (a register tile's width), packed with `isa`'s code.
    fn pack_with_width(weight: &Tensor, width: usize, isa: Isa) -> Result<Option<Self>> {
        if !weight.device().is_cpu() || weight.dtype() != DType::F32 || weight.rank() != 2 {
            return Ok(None);
        }
        let (out_dim, in_dim) = weight.dims2()?;
        if out_dim == 0 || in_dim == 0 {
            return Ok(None);
        }
        Ok(
            with_host_f32(weight, |w| Panels::pack(w, in_dim, width, isa))?.map(|panels| Self {
                out_dim,
                in_dim,
                width,
                panels,
            }),
        )
    }

    /// Output width.
    pub(crate) fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Input width.
    pub(crate) fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// The (out, in) weight, unpacked (to quantize it, or to concatenate weights whose panels do not line up).
    pub(crate) fn to_tensor(&self) -> Result<Tensor> {
        let (out_dim, in_dim, width) = (self.out_dim, self.in_dim, self.width);
        let mut w = vec![0f32; out_dim * in_dim];
        w.par_chunks_mut(width * in_dim)
            .zip(self.panels.values().par_chunks(width * in_dim))
            .for_each(|(rows, panel)| {
                for (j, row) in rows.chunks_exact_mut(in_dim).enumerate() {
                    for (k, v) in row.iter_mut().enumerate() {
                        *v = panel[k * width + j];
                    }
                }
            });
        Ok(Tensor::from_vec(w, (out_dim, in_dim), &candle_core::Device::Cpu)?)
    }

    /// The weights of `parts` stacked along the output dimension, in order (q, k, v into one projection). Panels
    /// are concatenated where every part but the last fills whole panels; otherwise the stack is repacked.
    pub(crate) fn concat(parts: &[&PackedWeight]) -> Result<Self> {
        let (in_dim, width) = parts.first().map_or((0, 0), |p| (p.in_dim, p.width));
        let dims: Vec<_> = parts.iter().map(|p| (p.out_dim, p.in_dim)).collect();
        if parts.is_empty() || parts.iter().any(|p| p.in_dim != in_dim || p.width != width) {
            return Err(Error::invalid_argument(
                "parts",
                format!("cannot stack weights of (out, in) {dims:?}: none, or unequal input widths"),
            ));
        }
        let out_dim: usize = parts.iter().map(|p| p.out_dim).sum();
        if parts[..parts.len() - 1]
            .iter()
            .any(|p| !p.out_dim.is_multiple_of(width))
        {
            let dense = parts.iter().map(|p| p.to_tensor()).collect::<Result<Vec<_>>>()?;
            return Self::pack_with_width(&Tensor::cat(&dense, 0)?, width, Isa::best())?.ok_or_else(|| {
                Error::invalid_argument("parts", format!("cannot repack the stack of (out, in) {dims:?}"))
            });
        }
        let panels = Panels::written((out_dim.div_ceil(width), in_dim, width), "a stack of weights", |all| {
            let mut at = 0;
            for values in parts.iter().map(|p| p.panels.values()) {
                let slots = all.get_mut(at..at + values.len()).ok_or_else(|| {
                    Error::invalid_argument("parts", format!("the stack of (out, in) {dims:?} overflows its panels"))
                })?;
                for (slot, &v) in slots.iter_mut().zip(values) {
                    slot.write(v);
                }
                at += values.len();
            }
            Ok(at)
        })?;
        Ok(Self {
            out_dim,
            in_dim,
            width,
            panels,
        })
    }

    /// `act(x Wᵀ + bias) + residual` for `x` (rows, in), f32 on the CPU, into new storage; `residual` is
    /// (rows, out). Bias, activation and residual are applied tile by tile where they have a fused form (GELU erf,
    /// quick_gelu, a bias with a host copy, an f32 residual on the CPU); otherwise after the product, by candle's
    /// ops.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        (bias, act, residual): (Option<&Param>, Option<Activation>, Option<&Tensor>),
    ) -> Result<Tensor> {
        Fused::run(x, (bias, act, residual), self.out_dim, |x, epilogue| {
            let op = PackedMatMul {
                weight: self,
                epilogue,
                isa: Isa::best(),
            };
            Ok(x.apply_op1_no_bwd(&op)?)
        })
    }
}

/// A projection's (out, in) weight as int8 codes, symmetric per output channel, in [`PackedWeight`]'s panels,
/// multiplied by the same f32 kernel over one KC × W slice of codes dequantized at a time: weight-only int8, int8's
/// memory at f32's speed, for CPUs whose integer dot product is no faster than their f32 FMA
/// ([`super::Int8Weight`] picks it).
pub(crate) struct PackedCodes {
    out_dim: usize,
    in_dim: usize,
    width: usize,
    codes: Vec<i8>,
    /// `w[j, :] ≈ scales[j] · codes of j`, zero past `out_dim` to the last panel's end.
    scales: Vec<f32>,
}

impl PackedCodes {
    /// Packs `codes` (out × in, row-major) with their per-output-channel `scales` for `isa`'s register tile.
    pub(crate) fn pack(codes: &[i8], scales: &[f32], in_dim: usize, isa: Isa) -> Self {
        let (out_dim, width) = (scales.len(), PackedWeight::width_for(isa));
        let panel_len = (in_dim * width).max(1);
        let len = out_dim.div_ceil(width) * panel_len;
        let mut packed: Vec<i8> = Vec::with_capacity(len);
        packed.spare_capacity_mut()[..len]
            .par_chunks_mut(panel_len)
            .zip(codes.par_chunks(panel_len))
            .for_each(|(panel, rows)| pack_panel(rows, in_dim, width, panel));
        // SAFETY: `pack_panel` wrote every value of each panel, zeros past the last row too, and the
        // ⌈out / width⌉ panels, each given its rows, cover all `len` values.
        unsafe { packed.set_len(len) };
        let mut padded = scales.to_vec();
        padded.resize(out_dim.div_ceil(width) * width, 0.0);
        Self {
            out_dim,
            in_dim,
            width,
            codes: packed,
            scales: padded,
        }
    }

    /// `act(x Wᵀ + bias)` for `x` (rows, in) on the CPU, into a new (rows, out) buffer.
    pub(crate) fn matmul(&self, x: &[f32], epilogue: Epilogue, isa: Isa) -> Vec<f32> {
        let b = WeightPanels {
            values: PanelValues::Codes {
                codes: &self.codes,
                scales: &self.scales,
            },
            depth: self.in_dim,
            cols: self.out_dim,
            width: self.width,
        };
        matmul(x, x.len() / self.in_dim.max(1), b, epilogue, isa)
    }
}

/// The weight side of one product: panels of `width` columns, `depth` deep, for `cols` outputs.
#[derive(Clone, Copy)]
struct WeightPanels<'a> {
    values: PanelValues<'a>,
    depth: usize,
    cols: usize,
    width: usize,
}

/// What the panels hold: f32 values, or int8 codes and a scale per column.
#[derive(Clone, Copy)]
enum PanelValues<'a> {
    F32(&'a [f32]),
    Codes { codes: &'a [i8], scales: &'a [f32] },
}

impl PackedWeight {
    /// This weight's panels, for [`matmul`].
    fn panels(&self) -> WeightPanels<'_> {
        WeightPanels {
            values: PanelValues::F32(self.panels.values()),
            depth: self.in_dim,
            cols: self.out_dim,
            width: self.width,
        }
    }
}

/// The candle op behind [`PackedWeight::forward`].
struct PackedMatMul<'a> {
    weight: &'a PackedWeight,
    epilogue: Epilogue<'a>,
    isa: Isa,
}

impl CustomOp1 for PackedMatMul<'_> {
    fn name(&self) -> &'static str {
        "altclip-packed-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let (rows, in_dim) = layout.shape().dims2()?;
        if in_dim != self.weight.in_dim {
            candle_core::bail!(
                "{}: input {:?} against a weight of {} inputs",
                self.name(),
                layout.dims(),
                self.weight.in_dim
            );
        }
        self.epilogue.check_fits(self.name(), (rows, self.weight.out_dim))?;
        let y = matmul(x, rows, self.weight.panels(), self.epilogue, self.isa);
        Ok((CpuStorage::F32(y), Shape::from((rows, self.weight.out_dim))))
    }
}

/// The output, written through a raw pointer by the tasks, each into its own block of rows × columns.
#[derive(Clone, Copy)]
pub(super) struct Output {
    pub(super) ptr: *mut f32,
    /// Row pitch (the output width).
    pub(super) width: usize,
}

// SAFETY: the tasks of one product (this module's `matmul`, or AMX's) write disjoint blocks of the buffer `ptr`
// points into (see `task_blocks`), and the product waits for all of them before it uses the buffer.
unsafe impl Send for Output {}
// SAFETY: as above.
unsafe impl Sync for Output {}

/// One task: rows `rows.0..rows.1` by columns `cols.0..cols.1` of the output.
#[derive(Clone, Copy)]
pub(super) struct Block {
    pub(super) rows: (usize, usize),
    pub(super) cols: (usize, usize),
}

/// The tasks for an output of `rows` × `cols` in panels of `width`: MC-row blocks by column blocks of whole
/// panels, enough of them for every thread.
fn blocks(rows: usize, cols: usize, width: usize) -> Vec<Block> {
    task_blocks((rows, cols), (MC, width), MAX_BLOCK_COLS)
}

/// The tasks for an output of `rows` × `cols`: `block.0`-row blocks by column blocks of whole `block.1`-wide
/// units, at most `max_cols` wide, `TASKS_PER_THREAD` per thread where the shape allows (for this GEMM and AMX's).
pub(super) fn task_blocks((rows, cols): (usize, usize), (mc, unit): (usize, usize), max_cols: usize) -> Vec<Block> {
    let row_blocks = rows.div_ceil(mc).max(1);
    let units = cols.div_ceil(unit).max(1);
    let wanted = (TASKS_PER_THREAD * rayon::current_num_threads()).div_ceil(row_blocks);
    let per_block = units.div_ceil(wanted.clamp(1, units)).min((max_cols / unit).max(1));
    (0..units.div_ceil(per_block))
        .flat_map(|c| {
            (0..row_blocks).map(move |r| Block {
                rows: (r * mc, ((r + 1) * mc).min(rows)),
                cols: (c * per_block * unit, ((c + 1) * per_block * unit).min(cols)),
            })
        })
        .collect()
}

/// `x` (rows, in) times the packed weight, with `epilogue`, into a new (rows, out) buffer written once.
fn matmul(x: &[f32], rows: usize, weight: WeightPanels, epilogue: Epilogue, isa: Isa) -> Vec<f32> {
    let WeightPanels {
        values,
        depth,
        cols,
        width,
    } = weight;
    // A's rows where they are for AVX-512's 64-column tiles: their six row streams cost less than a packing pass
    // over the input and its parallel region (f32 towers 1.5–4 % faster, Zen 4, in-process A/B; the MLP's second
    // layer, four depth passes, gained too). On AVX2's 16-column tiles each row value serves a quarter of the
    // columns, and in place was 0.5–2 % slower there (the same Zen 4, AVX2 forced).
    let packed;
    let a = if width == NR_WIDE {
        InputRows::InPlace(RowsInPlace { x, rows, depth })
    } else {
        packed = Panels::pack(x, depth, MR, isa);
        InputRows::Packed(PackedRows {
            panels: packed.values(),
            depth,
        })
    };
    let mut y: Vec<f32> = Vec::with_capacity(rows * cols);
    let out = Output {
        ptr: y.as_mut_ptr(),
        width: cols,
    };
    let job = Job {
        a,
        b: values,
        depth,
        out,
        epilogue,
    };
    // Without FMA (the baseline), `mul_add` would be a libm call per product.
    let fma = isa.has_fma();
    blocks(rows, cols, width).into_par_iter().for_each(|block| {
        dispatch!(isa, (job: Job, block: Block, width: usize, fma: bool) {
            match (width, fma) {
                (NR_WIDE, true) => run_block::<NR_WIDE, true>(job, block),
                (NR_WIDE, false) => run_block::<NR_WIDE, false>(job, block),
                (_, true) => run_block::<NR, true>(job, block),
                (_, false) => run_block::<NR, false>(job, block),
            }
        })
    });
    // SAFETY: the blocks cover all rows × cols once (`blocks`), and `run_block` writes every value of its block in
    // its first depth pass; all tasks have finished.
    unsafe { y.set_len(rows * cols) };
    y
}

/// What every task of one product shares: A's rows, packed B, their depth, the output and its epilogue.
#[derive(Clone, Copy)]
struct Job<'a> {
    a: InputRows<'a>,
    b: PanelValues<'a>,
    depth: usize,
    out: Output,
    epilogue: Epilogue<'a>,
}

/// One task's block: for each B panel (`W` columns wide), each KC-deep pass, each A panel, one register tile.
#[inline(always)]
fn run_block<const W: usize, const FMA: bool>(job: Job, block: Block) {
    // One loop nest per kind of panel, each compiled on its own (a branch per slice inside one nest cost the
    // AVX2 tile its registers: 15 instead of 219 GFLOP/s).
    match (job.b, job.a) {
        (PanelValues::F32(b), InputRows::Packed(a)) => run_slices::<W, FMA, _, _>(job, block, a, F32Slices(b), &mut []),
        (PanelValues::F32(b), InputRows::InPlace(a)) => {
            run_slices::<W, FMA, _, _>(job, block, a, F32Slices(b), &mut [])
        }
        (PanelValues::Codes { codes, scales }, a) => {
            let mut slice = vec![0f32; KC.min(job.depth) * W];
            let codes = CodeSlices { codes, scales };
            match a {
                InputRows::Packed(a) => run_slices::<W, FMA, _, _>(job, block, a, codes, &mut slice),
                InputRows::InPlace(a) => run_slices::<W, FMA, _, _>(job, block, a, codes, &mut slice),
            }
        }
    }
}

/// [`run_block`] over A's rows as `a` gives them and B's panel slices as `slices` gives them (`buffer`: room for
/// one KC × W slice, where needed).
#[inline(always)]
fn run_slices<const W: usize, const FMA: bool, A: TileRows, S: PanelSlices>(
    job: Job,
    block: Block,
    a: A,
    slices: S,
    buffer: &mut [f32],
) {
    let Job {
        depth, out, epilogue, ..
    } = job;
    let (rows, cols) = (block.rows.1, out.width);
    // Panel by panel, its passes in turn: B is read in the order it is stored, once per task.
    for j0 in (block.cols.0..block.cols.1).step_by(W) {
        let width = W.min(cols - j0);
        for k0 in (0..depth).step_by(KC) {
            let steps = KC.min(depth - k0);
            let pass = Pass {
                first: k0 == 0,
                last: k0 + steps == depth,
            };
            let at = (j0 / W) * depth * W + k0 * W;
            let bp = slices.slice::<W>((at, steps * W), j0, buffer);
            for i0 in (block.rows.0..rows).step_by(MR) {
                let corner = (i0, j0, MR.min(rows - i0), width);
                prefetch_operands(out, corner, epilogue.residual.filter(|_| pass.last));
                let acc = a.tile::<W, FMA>(i0, k0, bp);
                store::<W, FMA>(&acc, out, corner, pass, epilogue);
            }
        }
    }
}

/// A's rows as one product's tasks read them.
#[derive(Clone, Copy)]
enum InputRows<'a> {
    Packed(PackedRows<'a>),
    InPlace(RowsInPlace<'a>),
}

/// A's rows, MR at a time, wherever they are.
trait TileRows: Copy {
    /// The sums of rows `i0 .. i0 + MR` (past the input's last row, copies of it) times `b`, a W-wide panel slice
    /// from depth `k0`, over the slice's depth.
    fn tile<const W: usize, const FMA: bool>(&self, i0: usize, k0: usize, b: &[f32]) -> [[f32; W]; MR];
}

/// A packed in MR-row panels of `depth` ([`Panels::pack`]).
#[derive(Clone, Copy)]
struct PackedRows<'a> {
    panels: &'a [f32],
    depth: usize,
}

impl TileRows for PackedRows<'_> {
    #[inline(always)]
    fn tile<const W: usize, const FMA: bool>(&self, i0: usize, k0: usize, b: &[f32]) -> [[f32; W]; MR] {
        let steps = b.len() / W;
        tile::<W, FMA>(&self.panels[(i0 / MR) * self.depth * MR + k0 * MR..][..steps * MR], b)
    }
}

/// A as the input holds it: `rows` rows of `depth`.
#[derive(Clone, Copy)]
struct RowsInPlace<'a> {
    x: &'a [f32],
    rows: usize,
    depth: usize,
}

impl TileRows for RowsInPlace<'_> {
    #[inline(always)]
    fn tile<const W: usize, const FMA: bool>(&self, i0: usize, k0: usize, b: &[f32]) -> [[f32; W]; MR] {
        let (steps, last) = (b.len() / W, self.rows.saturating_sub(1));
        let rows = std::array::from_fn(|i| &self.x[(i0 + i).min(last) * self.depth + k0..][..steps]);
        tile_rows::<W, FMA>(rows, b)
    }
}

/// The f32 values of B's panel slices, wherever they come from.
trait PanelSlices: Copy {
    /// The `range` (start, length) of the panels, whose columns start at `col`, as f32 (in `buffer` if need be).
    fn slice<'s, const W: usize>(&'s self, range: (usize, usize), col: usize, buffer: &'s mut [f32]) -> &'s [f32];
}

/// f32 panels: the slices as they are.
#[derive(Clone, Copy)]
struct F32Slices<'a>(&'a [f32]);

impl PanelSlices for F32Slices<'_> {
    #[inline(always)]
    fn slice<'s, const W: usize>(&'s self, (at, len): (usize, usize), _: usize, _: &'s mut [f32]) -> &'s [f32] {
        &self.0[at..][..len]
    }
}

/// Code panels: each slice dequantized into the buffer.
#[derive(Clone, Copy)]
struct CodeSlices<'a> {
    codes: &'a [i8],
    scales: &'a [f32],
}

impl PanelSlices for CodeSlices<'_> {
    #[inline(always)]
    fn slice<'s, const W: usize>(&'s self, (at, len): (usize, usize), col: usize, buffer: &'s mut [f32]) -> &'s [f32] {
        let slice = &mut buffer[..len];
        dequantize_slice::<W>(&self.codes[at..][..len], &self.scales[col..col + W], slice);
        slice
    }
}

/// `codes` (steps × W, a panel slice) times their columns' `scales`, into `out`: the weights the codes stand for,
/// as [`super::Int8Weight`]'s dequantization (`f32::from(code) · scale`).
#[inline(always)]
fn dequantize_slice<const W: usize>(codes: &[i8], scales: &[f32], out: &mut [f32]) {
    // Fixed-size rows, so that LLVM vectorises (over slices of unknown length it converted one value at a time).
    let scales: [f32; W] = std::array::from_fn(|j| scales[j]);
    let (codes, _) = codes.as_chunks::<W>();
    let (out, _) = out.as_chunks_mut::<W>();
    for (out, codes) in out.iter_mut().zip(codes) {
        let wide: [i32; W] = codes.map(i32::from);
        *out = std::array::from_fn(|j| wide[j] as f32 * scales[j]);
    }
}

/// Which depth pass a tile's sums come from: the first writes the output, later ones add to it, the last applies
/// the epilogue.
#[derive(Clone, Copy)]
struct Pass {
    first: bool,
    last: bool,
}

/// `A-panel · B-panel` over the panels' depth (at least one step): per step, one A value per row times `W` B
/// values. The first step's products start the sums (no zeroed accumulators: their memset took 3–4 % of the text
/// tower on a Xeon); `a · b` is what a fused multiply-add onto +0 gives, but for the sign of a zero.
#[inline(always)]
fn tile<const W: usize, const FMA: bool>(a: &[f32], b: &[f32]) -> [[f32; W]; MR] {
    let mut steps = a.chunks_exact(MR).zip(b.chunks_exact(W));
    let Some((a0, b0)) = steps.next() else {
        return [[0f32; W]; MR];
    };
    let mut acc: [[f32; W]; MR] = std::array::from_fn(|i| std::array::from_fn(|j| a0[i] * b0[j]));
    for (a, b) in steps {
        for (acc, &ai) in acc.iter_mut().zip(a) {
            for (c, &bj) in acc.iter_mut().zip(b) {
                *c = if FMA { ai.mul_add(bj, *c) } else { ai * bj + *c };
            }
        }
    }
    acc
}

/// `Σₖ rows[i][k] · b[k][j]` for MR rows of A read in place and a W-wide panel `b`, over the depth all of them
/// have. The sums start at zero: started from the first products as [`tile`] does, LLVM kept them on the stack (2×
/// slower towers, Zen 4).
#[inline(always)]
pub(super) fn tile_rows<const W: usize, const FMA: bool>(rows: [&[f32]; MR], b: &[f32]) -> [[f32; W]; MR] {
    let depth = rows.iter().map(|r| r.len()).fold(b.len() / W, usize::min);
    let (b, _) = b[..depth * W].as_chunks::<W>();
    let mut acc = [[0f32; W]; MR];
    for (k, bk) in b.iter().enumerate() {
        for (acc, row) in acc.iter_mut().zip(&rows) {
            // SAFETY: k < depth, which no row is shorter than. Checked indexing kept a compare and branch per row
            // per step in the loop and spilled its lengths: 121 instead of 184 GFLOP/s.
            let a = unsafe { *row.get_unchecked(k) };
            for (c, &bj) in acc.iter_mut().zip(bk) {
                *c = if FMA { a.mul_add(bj, *c) } else { a * bj + *c };
            }
        }
    }
    acc
}

/// Asks for the lines a tile's store will touch after its products, so that their misses overlap the products
/// instead of stalling the store: the output's rows at `corner` and, where given, the residual's (this kernel's
/// [`store`] reads the output after the first pass and writes it in every one, and adds the residual in the last;
/// the integer kernels write once).
#[inline(always)]
pub(super) fn prefetch_operands(
    out: Output,
    (row, col, height, width): (usize, usize, usize, usize),
    residual: Option<&[f32]>,
) {
    for i in 0..height {
        let at = (row + i) * out.width + col;
        for j in (0..width).step_by(LINE) {
            // The output's values at `at + j` lie inside its buffer (as in `store`).
            prefetch(out.ptr.wrapping_add(at + j));
            if let Some(value) = residual.and_then(|r| r.get(at + j)) {
                prefetch(value);
            }
        }
    }
}

/// A hint to bring the cache line holding `at` into L1 (none off x86-64).
#[inline(always)]
fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and cannot fault, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Writes a tile's `height` × `width` values at (`row`, `col`) of the output, added to what earlier passes wrote
/// there; after the last pass, with the epilogue applied to them first.
#[inline(always)]
fn store<const W: usize, const FMA: bool>(
    acc: &[[f32; W]; MR],
    out: Output,
    (row, col, height, width): (usize, usize, usize, usize),
    pass: Pass,
    epilogue: Epilogue,
) {
    for (i, acc) in acc.iter().enumerate().take(height) {
        // SAFETY: (row + i, col .. col + width) lies inside the output (`blocks` and `run_block` keep to rows × cols)
        // and inside this task's block, which no other task writes; the first pass writes before any read.
        let dst = unsafe { out.ptr.add((row + i) * out.width + col) };
        // The row finished here and written once: writing the sums and reading them back for the epilogue cost
        // 6 % of the kernel (AVX2, 258 × 1024 × 4096, one thread).
        let mut values = *acc;
        if !pass.first {
            // SAFETY: as above; the first pass has written these values.
            let earlier = unsafe { std::slice::from_raw_parts(dst, width) };
            for (v, &e) in values.iter_mut().zip(earlier) {
                *v += e;
            }
        }
        if pass.last {
            epilogue.apply::<FMA>(&mut values[..width], (row + i, col), out.width);
        }
        // Whole vectors, not a value at a time (a scalar loop took a tenth of the kernel's time on a Xeon).
        // SAFETY: as above, `width` ≤ W values from `dst` on; `values` is a local.
        unsafe {
            if width == W {
                dst.cast::<[f32; W]>().write_unaligned(values);
            } else {
                std::ptr::copy_nonoverlapping(values.as_ptr(), dst, width);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::bias_act::Act;
    use crate::kernels::cpu::math::gelu_erf;
    use crate::kernels::cpu::testing::{for_each_isa, values, wave};

    /// `act(x Wᵀ + b)` in f64, then rounded.
    fn reference(
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        (rows, depth, cols): (usize, usize, usize),
        gelu: bool,
    ) -> Vec<f32> {
        let mut y = vec![0f32; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                let dot: f64 = (0..depth)
                    .map(|k| f64::from(x[i * depth + k]) * f64::from(w[j * depth + k]))
                    .sum();
                let v = (dot + b.map_or(0.0, |b| f64::from(b[j]))) as f32;
                y[i * cols + j] = if gelu { gelu_erf(v) } else { v };
            }
        }
        y
    }

    #[test]
    fn every_instruction_set_matches_an_f64_reference_on_ragged_shapes() {
        // Rows and columns off the tile (6 × 16), depths off KC (1024) and off the packing step (8), over two and
        // three passes, blocks of several tasks.
        for (rows, depth, cols) in [
            (1, 1, 1),
            (5, 7, 17),
            (13, 300, 40),
            (150, 520, 64),
            (7, 1024, 272),
            (13, 2100, 40),
            (9, 2051, 130),
        ] {
            let x = values(&wave((rows, depth), 1.5, 0.1, 0.0));
            let w_t = wave((cols, depth), 0.3, 0.7, 0.0);
            let w = values(&w_t);
            let b = values(&wave(cols, 0.5, 0.2, 0.1));
            let r = values(&wave((rows, cols), 2.0, 0.4, 0.0));
            for gelu in [false, true] {
                let mut want = reference(&x, &w, Some(&b), (rows, depth, cols), gelu);
                // The residual, added last, lands on its own row and column.
                want.iter_mut().zip(&r).for_each(|(v, r)| *v += r);
                for_each_isa("packed matmul", |isa| {
                    for width in [NR, NR_WIDE] {
                        let packed = PackedWeight::pack_with_width(&w_t, width, isa).unwrap().unwrap();
                        let act = if gelu { Act::GeluErf } else { Act::None };
                        let epilogue = Epilogue {
                            bias: Some(&b),
                            act,
                            residual: Some(&r),
                        };
                        let got = matmul(&x, rows, packed.panels(), epilogue, isa);
                        let worst = got
                            .iter()
                            .zip(&want)
                            .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
                            .fold(0f32, f32::max);
                        // f32 sums of `depth` products of magnitude ≤ 0.45, against f64: a few ulps of the sum,
                        // growing with depth.
                        assert!(
                            worst <= 2e-6 * (depth as f32 / 520.0).max(1.0),
                            "{isa:?} width {width} {rows}x{depth}x{cols} gelu {gelu}: {worst:e}"
                        );
                    }
                });
            }
        }
    }

    #[test]
    fn codes_give_the_f32_kernels_values_over_the_weights_they_stand_for() {
        // Depths over two and three KC passes (each slice dequantized at its own offset), ragged rows and columns,
        // codes of both signs up to ±127.
        for (rows, depth, cols) in [(1, 1, 1), (5, 7, 17), (13, 2100, 40), (150, 520, 130), (7, 3100, 272)] {
            let codes: Vec<i8> = (0..cols * depth)
                .map(|i| ((i * 37 + i / 7) % 255) as i16 - 127)
                .map(|c| c as i8)
                .collect();
            let scales: Vec<f32> = (0..cols).map(|j| 0.001 + j as f32 * 1e-4).collect();
            let weights: Vec<f32> = codes
                .chunks(depth)
                .zip(&scales)
                .flat_map(|(row, s)| row.iter().map(move |&c| f32::from(c) * s))
                .collect();
            let dense = Tensor::from_vec(weights, (cols, depth), &candle_core::Device::Cpu).unwrap();
            let x = values(&wave((rows, depth), 1.5, 0.1, 0.0));
            let b = values(&wave(cols, 0.5, 0.2, 0.1));
            let r = values(&wave((rows, cols), 2.0, 0.4, 0.0));
            let epilogue = Epilogue {
                bias: Some(&b),
                act: Act::GeluErf,
                residual: Some(&r),
            };
            for_each_isa("weight-only int8 matmul", |isa| {
                let packed = PackedWeight::pack_for(&dense, isa).unwrap().unwrap();
                let want = matmul(&x, rows, packed.panels(), epilogue, isa);
                let got = PackedCodes::pack(&codes, &scales, depth, isa).matmul(&x, epilogue, isa);
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{isa:?} {rows}x{depth}x{cols}"
                );
                assert!(
                    got.iter().any(|&v| v.abs() > 0.1),
                    "{rows}x{depth}x{cols}: not all near zero"
                );
            });
        }
    }

    #[test]
    fn unpacking_and_stacking_give_back_the_weights() {
        let isa = Isa::best();
        let cases = [
            (vec![16, 32, 16], 24, NR),
            (vec![5, 16, 3], 9, NR),
            (vec![64, 128], 8, NR_WIDE),
            (vec![16, 64], 8, NR_WIDE),
        ];
        for (parts, depth, width) in cases {
            let dense: Vec<Tensor> = parts
                .iter()
                .enumerate()
                .map(|(i, &n)| wave((n, depth), 1.0, i as f64, 0.0))
                .collect();
            let packed: Vec<PackedWeight> = dense
                .iter()
                .map(|w| PackedWeight::pack_with_width(w, width, isa).unwrap().unwrap())
                .collect();
            for (p, w) in packed.iter().zip(&dense) {
                assert_eq!(values(&p.to_tensor().unwrap()), values(w), "{parts:?} round trip");
            }
            let stacked = PackedWeight::concat(&packed.iter().collect::<Vec<_>>()).unwrap();
            let want = Tensor::cat(&dense, 0).unwrap();
            assert_eq!((stacked.out_dim(), stacked.in_dim()), want.dims2().unwrap());
            assert_eq!(
                values(&stacked.to_tensor().unwrap()),
                values(&want),
                "{parts:?} stacked"
            );
            let repacked = PackedWeight::pack_with_width(&want, width, isa).unwrap().unwrap();
            assert_eq!(
                stacked.panels.values(),
                repacked.panels.values(),
                "{parts:?} same panels as packing the stack"
            );
        }
        let (a, b) = (wave((16, 8), 1.0, 0.0, 0.0), wave((16, 9), 1.0, 0.0, 0.0));
        let (a, b) = (
            PackedWeight::pack_for(&a, isa).unwrap().unwrap(),
            PackedWeight::pack_for(&b, isa).unwrap().unwrap(),
        );
        assert!(PackedWeight::concat(&[&a, &b]).is_err(), "unequal input widths");
        assert!(PackedWeight::concat(&[]).is_err(), "nothing to stack");
    }

    #[test]
    fn weights_read_in_chunks_pack_as_the_loaded_tensor() {
        use crate::weights::{Checkpoint, CheckpointView};
        use candle_core::Device;
        // 150 rows of 20 000: chunks of whole panels, 48 rows (AVX2) or 64 (AVX-512), the last one short.
        let w = wave((150, 20_000), 1.0, 0.4, 0.0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        w.save_safetensors("p.weight", &path).unwrap();
        let from_file = CheckpointView::new(
            Checkpoint::from_safetensors(&[&path]).unwrap(),
            DType::F32,
            &Device::Cpu,
        );
        let in_memory = Checkpoint::from_tensors([("p.weight".to_string(), w.clone())].into());
        let in_memory = CheckpointView::new(in_memory, DType::F32, &Device::Cpu);
        let isa = Isa::best();
        for (what, view) in [("safetensors", &from_file), ("tensors", &in_memory)] {
            let read = PackedWeight::try_read(&[&view.pp("p")], "weight", (150, 20_000)).unwrap();
            if isa.level() == Level::Baseline || cfg!(feature = "mkl") {
                assert!(
                    read.is_none(),
                    "{what}: the baseline and MKL builds keep candle's matmul"
                );
                continue;
            }
            let read = read.unwrap();
            let packed = PackedWeight::pack_for(&w, isa).unwrap().unwrap();
            assert_eq!(read.panels.values(), packed.panels.values(), "{what}");
            assert!(
                PackedWeight::try_read(&[&view.pp("p")], "weight", (20_000, 150)).is_err(),
                "{what}: wrong shape"
            );
        }
        let half = CheckpointView::new(
            Checkpoint::from_safetensors(&[&path]).unwrap(),
            DType::F16,
            &Device::Cpu,
        );
        assert!(
            PackedWeight::try_read(&[&half.pp("p")], "weight", (150, 20_000))
                .unwrap()
                .is_none(),
            "f16 view"
        );
    }

    #[test]
    fn weights_read_stacked_pack_as_their_concatenation() {
        use crate::weights::{Checkpoint, CheckpointView};
        use candle_core::Device;
        // Three parts of 128 rows (whole panels at either width), deeper than one read chunk's rows.
        let parts: Vec<Tensor> = (0..3).map(|i| wave((128, 9000), 1.0, f64::from(i), 0.0)).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let named: std::collections::HashMap<String, Tensor> = parts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("p{i}.weight"), t.clone()))
            .collect();
        candle_core::safetensors::save(&named, &path).unwrap();
        let view = CheckpointView::new(
            Checkpoint::from_safetensors(&[&path]).unwrap(),
            DType::F32,
            &Device::Cpu,
        );
        let views: Vec<CheckpointView> = (0..3).map(|i| view.pp(format!("p{i}"))).collect();
        let views: Vec<&CheckpointView> = views.iter().collect();
        let isa = Isa::best();
        let read = PackedWeight::try_read(&views, "weight", (128, 9000)).unwrap();
        if isa.level() == Level::Baseline || cfg!(feature = "mkl") {
            assert!(read.is_none(), "the baseline and MKL builds keep candle's matmul");
            return;
        }
        let read = read.unwrap();
        let want = PackedWeight::pack_for(&Tensor::cat(&parts, 0).unwrap(), isa)
            .unwrap()
            .unwrap();
        assert_eq!((read.out_dim(), read.in_dim()), (384, 9000));
        assert_eq!(read.panels.values(), want.panels.values());
        assert!(
            PackedWeight::try_read(&views, "weight", (256, 9000)).is_err(),
            "wrong shape"
        );
        // Parts that do not fill whole panels are left to `concat`'s repacking; one such part alone is read.
        let small = wave((5, 7), 1.0, 0.0, 0.0);
        let tensors = [("a.weight".to_string(), small.clone()), ("b.weight".to_string(), small)].into();
        let small = CheckpointView::new(Checkpoint::from_tensors(tensors), DType::F32, &Device::Cpu);
        let (a, b) = (small.pp("a"), small.pp("b"));
        assert!(PackedWeight::try_read(&[&a, &b], "weight", (5, 7)).unwrap().is_none());
        assert!(PackedWeight::try_read(&[&a], "weight", (5, 7)).unwrap().is_some());
    }

    #[test]
    fn only_cpu_f32_matrices_are_packed() {
        let isa = Isa::best();
        let w = wave((4, 8), 1.0, 0.0, 0.0);
        assert!(PackedWeight::pack_for(&w, isa).unwrap().is_some());
        assert!(
            PackedWeight::pack_for(&w.to_dtype(DType::F16).unwrap(), isa)
                .unwrap()
                .is_none(),
            "f16"
        );
        assert!(
            PackedWeight::pack_for(&w.reshape((2, 2, 8)).unwrap(), isa)
                .unwrap()
                .is_none(),
            "3-D"
        );
        // A transposed view is packed as the matrix it shows.
        let t = PackedWeight::pack_for(&w.t().unwrap(), isa).unwrap().unwrap();
        assert_eq!(values(&t.to_tensor().unwrap()), values(&w.t().unwrap()));
    }

    #[test]
    fn blocks_cover_the_output_once() {
        for ((rows, cols), width) in [(1, 1), (257, 1024), (2056, 4096), (77, 768), (145, 17)]
            .into_iter()
            .flat_map(|shape| [(shape, NR), (shape, NR_WIDE)])
        {
            let mut seen = vec![0u8; rows * cols];
            for b in blocks(rows, cols, width) {
                for i in b.rows.0..b.rows.1 {
                    for j in b.cols.0..b.cols.1 {
                        seen[i * cols + j] += 1;
                    }
                }
                assert_eq!(b.rows.0 % MR, 0);
                assert_eq!(b.cols.0 % width, 0);
            }
            assert!(seen.iter().all(|&s| s == 1), "{rows}x{cols} width {width}");
        }
    }
}
