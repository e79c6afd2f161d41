//! Attention's core, `softmax(scale·q·kᵀ + mask)·v`, fused per (batch, head) over the fused projection's rows:
//! each task packs its head's keys and values once into register-tile panels (in L2), then for every 6 queries
//! computes their scores, softmax and context in one pass through an L1 buffer, writing the context straight into
//! the output projection's (batch, queries, hidden) input. No scores tensor, no transposes ([`try_attention`]).

use std::cell::RefCell;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::math::{exp_with, lane_update_max, lane_update_sum};
use super::packed::{tile_rows, Output, MR};
use super::{copy_up_to, transpose, with_host_f32, Isa, Level};
use crate::error::Result;
use crate::kernels::{self, Kernels};

thread_local! {
    /// Each thread's key panels, value panels and scores, reused by its tasks: three zeroed buffers per (batch,
    /// head) were 1.2 % of int8 text 32 × 16's samples (calloc, memset) on a Zen 4. A task holds it borrowed
    /// while it runs, and makes no rayon calls, so no other task of its thread can ask for it meanwhile.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Columns of the register tile on AVX-512: four 16-lane vectors (the key panels' and value panels' width).
const WIDE: usize = 64;
/// Columns of the narrow tile: the width elsewhere, and of the last key panel on AVX-512 (257 vision tokens would
/// otherwise fill a 64-wide panel with one key).
const NARROW: usize = transpose::ROWS;

/// The shape of one attention call: batch, sequence (keys), heads, head size, and the queries computed: each
/// sequence's first `queries` tokens (all of them, or the first alone where only it is read on).
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    queries: usize,
}

impl Dims {
    fn hidden(self) -> usize {
        self.heads * self.head_dim
    }

    /// Values of a task's scratch at tile width W: its key panels, value panels and scores ([`Head::run`]).
    fn scratch_parts<const W: usize>(self) -> [usize; 3] {
        [
            self.pitch() * self.head_dim,
            self.head_dim.div_ceil(W) * W * self.seq,
            MR * self.pitch(),
        ]
    }

    /// Values of a task's scratch at the widest tile, which every width fits in.
    fn scratch_len(self) -> usize {
        self.scratch_parts::<WIDE>().iter().sum()
    }

    /// Row pitch of the scores buffer: the keys in whole 16-lane chunks, for the key panels (W-wide then
    /// NARROW-wide) and for the softmax, which runs without scalar tails.
    fn pitch(self) -> usize {
        self.seq.div_ceil(NARROW) * NARROW
    }
}

/// The fused attention on `qkv` (batch, seq, 3·hidden) — q, k and v side by side as the fused projection writes
/// them, heads of `hidden / heads` within each — with `mask` additive over keys, (batch | 1, 1, 1, seq), read in
/// f32: the heads' contexts of each sequence's first `queries` tokens, (batch, queries, hidden). `None` where it
/// does not apply: the generic path forced ([`crate::kernels::Kernels`]), `qkv` not f32 on the CPU, a width not
/// 3 × heads × head size, `queries` not in 1..=seq, a mask of another shape or device.
pub(crate) fn try_attention(
    qkv: &Tensor,
    heads: usize,
    scale: f64,
    mask: Option<&Tensor>,
    queries: usize,
) -> Result<Option<Tensor>> {
    if kernels::selected()? == Kernels::Generic || !qkv.device().is_cpu() || qkv.dtype() != DType::F32 {
        return Ok(None);
    }
    let &[batch, seq, width] = qkv.dims() else {
        return Ok(None);
    };
    if heads == 0 || !width.is_multiple_of(3 * heads) || seq == 0 || !(1..=seq).contains(&queries) {
        return Ok(None);
    }
    let dims = Dims {
        batch,
        seq,
        heads,
        head_dim: width / (3 * heads),
        queries,
    };
    let mask = match mask {
        None => None,
        Some(m) => {
            let fits = matches!(m.dims(), &[mb, 1, 1, mk] if (mb == batch || mb == 1) && mk == seq);
            if !m.device().is_cpu() || !fits {
                return Ok(None);
            }
            Some(m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        }
    };
    let isa = Isa::best();
    let Some(ctx) = with_host_f32(qkv, |values| attend(values, dims, scale as f32, mask.as_deref(), isa))? else {
        return Ok(None);
    };
    Ok(Some(Tensor::from_vec(
        ctx,
        (batch, queries, dims.hidden()),
        qkv.device(),
    )?))
}

/// The contexts of every (batch, head), one parallel task each, into a new (batch·queries, hidden) buffer written
/// once. `mask`: `seq` values per batch, or one set for all.
fn attend(qkv: &[f32], dims: Dims, scale: f32, mask: Option<&[f32]>, isa: Isa) -> Vec<f32> {
    let len = dims.batch * dims.queries * dims.hidden();
    let mut ctx: Vec<f32> = Vec::with_capacity(len);
    let out = Output {
        ptr: ctx.as_mut_ptr(),
        width: dims.hidden(),
    };
    let fma = isa.has_fma();
    let wide = isa.level() == Level::Avx512;
    let (masks, pitch) = (padded_masks(mask, dims), dims.pitch());
    (0..dims.batch * dims.heads).into_par_iter().for_each(|task| {
        let (b, head) = (task / dims.heads, task % dims.heads);
        let sets = masks.len() / pitch;
        let mask = &masks[(b % sets) * pitch..][..pitch];
        let job = Head {
            qkv,
            dims,
            b,
            head,
            scale,
            mask,
            out,
            isa,
        };
        // Borrowed and grown out here: inside the ISA's code the accessor was not inlined (its `mul_add`s became
        // calls), and the growth code made LLVM stop unrolling the tiles (scalar FMAs).
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < dims.scratch_len() {
                scratch.resize(dims.scratch_len(), 0.0);
            }
            dispatch!(isa, (job: Head, scratch: &mut [f32], wide: bool, fma: bool) {
                match (wide, fma) {
                    (true, true) => job.run::<WIDE, true>(scratch),
                    (true, false) => job.run::<WIDE, false>(scratch),
                    (false, true) => job.run::<NARROW, true>(scratch),
                    (false, false) => job.run::<NARROW, false>(scratch),
                }
            })
        })
    });
    // SAFETY: the tasks cover every (batch, head) once, each writing all queries × head_dim values of its head
    // (`Head::run`); all have finished.
    unsafe { ctx.set_len(len) };
    ctx
}

/// The mask's sets of `seq` values (none: zeros, as `scale·x + 0` is `scale·x`) at the scores' pitch, −∞ past the
/// last key, so that the padding's exponentials are 0.
fn padded_masks(mask: Option<&[f32]>, dims: Dims) -> Vec<f32> {
    let (seq, pitch) = (dims.seq, dims.pitch());
    let zeros = vec![0f32; seq];
    let mask = mask.unwrap_or(&zeros);
    let mut padded = vec![f32::NEG_INFINITY; mask.len() / seq * pitch];
    for (dst, src) in padded.chunks_exact_mut(pitch).zip(mask.chunks_exact(seq)) {
        dst[..seq].copy_from_slice(src);
    }
    padded
}

/// One task: head `head` of batch `b`.
#[derive(Clone, Copy)]
struct Head<'a> {
    qkv: &'a [f32],
    dims: Dims,
    b: usize,
    head: usize,
    scale: f32,
    /// The batch's additive mask over keys, padded to the scores' pitch ([`padded_masks`]).
    mask: &'a [f32],
    out: Output,
    /// The instruction set the task runs in: which key transposes it may use.
    isa: Isa,
}

impl Head<'_> {
    /// Row `t` of this head's part `part` (0: q, 1: k, 2: v): `head_dim` values.
    #[inline(always)]
    fn row(&self, part: usize, t: usize) -> &[f32] {
        let Dims { seq, head_dim, .. } = self.dims;
        let hidden = self.dims.hidden();
        &self.qkv[(self.b * seq + t) * 3 * hidden + part * hidden + self.head * head_dim..][..head_dim]
    }

    /// Writes the keys as `kᵀ` panels over all of `panels` (`pitch · head_dim` values): `seq / W` panels of W
    /// keys, then the rest in NARROW-wide ones, each `head_dim` deep, as wide as the scores' pitch.
    #[inline(always)]
    fn pack_keys<const W: usize>(&self, panels: &mut [f32]) {
        let (seq, depth) = (self.dims.seq, self.dims.head_dim);
        let mut at = 0;
        for (start, width) in panel_starts::<W>(seq) {
            let panel = &mut panels[at..][..width * depth];
            // NARROW keys at a time, their depths transposed in registers, 16 × 16 on AVX-512 and 8 × 8 on AVX2
            // (the scalar loop was a quarter of the kernel's samples on int8 text 32 x 16; the tower 0.8-0.9 %
            // faster, Zen 4).
            // Columns past the last key repeat it: the padded mask gives them no weight.
            for group in (0..width).step_by(NARROW) {
                let keys: [&[f32]; NARROW] = std::array::from_fn(|j| self.row(1, (start + group + j).min(seq - 1)));
                transpose::into_values(self.isa, &keys, panel, (width, group));
            }
            at += width * depth;
        }
    }

    /// Writes the values over all of `panels` (`head_dim` rounded up to W, times `seq`) as W-wide panels of
    /// `head_dim` columns, `seq` deep (zeros past the last column).
    #[inline(always)]
    fn pack_values<const W: usize>(&self, panels: &mut [f32]) {
        let (seq, d) = (self.dims.seq, self.dims.head_dim);
        for (c, panel) in panels.chunks_exact_mut(W * seq).enumerate() {
            let cols = W.min(d - c * W);
            for (t, dst) in panel.chunks_exact_mut(W).enumerate() {
                copy_up_to::<W>(dst, &self.row(2, t)[c * W..], cols);
                dst[cols..].fill(0.0);
            }
        }
    }

    /// The head's context, MR queries at a time: scores against every key panel into the L1 buffer, softmax
    /// over each row, then the rows times every value panel, stored at the head's columns of the output.
    /// `scratch` holds the key panels, value panels and scores: grown to fit, never cleared, as each part is
    /// written before it is read.
    #[inline(always)]
    fn run<const W: usize, const FMA: bool>(self, scratch: &mut [f32]) {
        let Dims {
            seq, head_dim, queries, ..
        } = self.dims;
        let pitch = self.dims.pitch();
        let [key_len, value_len, score_len] = self.dims.scratch_parts::<W>();
        let (keys, rest) = scratch.split_at_mut(key_len);
        let (values, rest) = rest.split_at_mut(value_len);
        let scores = &mut rest[..score_len];
        self.pack_keys::<W>(keys);
        self.pack_values::<W>(values);
        let (keys, values) = (&*keys, &*values);
        for i0 in (0..queries).step_by(MR) {
            let height = MR.min(queries - i0);
            // Rows past the last query repeat it; their results are not stored.
            let q_rows: [&[f32]; MR] = std::array::from_fn(|i| self.row(0, (i0 + i).min(queries - 1)));
            let mut at = 0;
            for (start, width) in panel_starts::<W>(seq) {
                let panel = &keys[at..][..width * head_dim];
                if width == W {
                    put_rows(&tile_rows::<W, FMA>(q_rows, panel), scores, pitch, start);
                } else {
                    put_rows(&tile_rows::<NARROW, FMA>(q_rows, panel), scores, pitch, start);
                }
                at += width * head_dim;
            }
            // Softmax's exponentials, each row's sum kept: the context rows are divided by it as they are stored
            // (`Σ eⱼ·vⱼ / Σ eⱼ`, two passes over the scores instead of five).
            let mut sums = [1f32; MR];
            for (row, sum) in scores.chunks_exact_mut(pitch).zip(&mut sums).take(height) {
                *sum = exponentials::<FMA>(row, self.scale, self.mask);
            }
            let inverse = sums.map(|s| 1.0 / s);
            let weights: [&[f32]; MR] = std::array::from_fn(|i| &scores[i * pitch..][..seq]);
            for (c, panel) in values.chunks_exact(W * seq).enumerate() {
                let acc = tile_rows::<W, FMA>(weights, panel);
                self.store(&acc, &inverse, (i0, height), (c * W, W.min(head_dim - c * W)));
            }
        }
    }

    /// Writes `acc`'s first `height` rows times their `inverse` sums, `width` columns, at query `row`, head column
    /// `col` of the output.
    #[inline(always)]
    fn store<const W: usize>(
        &self,
        acc: &[[f32; W]; MR],
        inverse: &[f32; MR],
        (row, height): (usize, usize),
        (col, width): (usize, usize),
    ) {
        let Dims { queries, head_dim, .. } = self.dims;
        for (i, (acc, &inverse)) in acc.iter().zip(inverse).enumerate().take(height) {
            let values = acc.map(|v| v * inverse);
            let at = (self.b * queries + row + i) * self.out.width + self.head * head_dim + col;
            // SAFETY: `at .. at + width` lies inside the (batch·queries, hidden) output, in this head's columns of this
            // batch's rows, which no other task writes or reads while this task runs.
            let dst = unsafe { std::slice::from_raw_parts_mut(self.out.ptr.add(at), width) };
            copy_up_to::<W>(dst, &values, width);
        }
    }
}

/// (first key, width) of each key panel over `seq` keys: W-wide ones, then NARROW-wide ones for the rest.
#[inline(always)]
fn panel_starts<const W: usize>(seq: usize) -> impl Iterator<Item = (usize, usize)> {
    let full = seq / W * W;
    let wide = (0..full).step_by(W).map(|s| (s, W));
    wide.chain((full..seq).step_by(NARROW).map(|s| (s, NARROW)))
}

/// Copies a tile's rows into the scores buffer at column `col` (as many columns as the buffer has room for).
#[inline(always)]
fn put_rows<const W: usize>(acc: &[[f32; W]; MR], scores: &mut [f32], pitch: usize, col: usize) {
    let width = W.min(pitch - col);
    for (acc, row) in acc.iter().zip(scores.chunks_exact_mut(pitch)) {
        copy_up_to::<W>(&mut row[col..], acc, width);
    }
}

/// `row ← exp(x − max x)` for `x = scale·row + mask` (transformers' eager attention: scores scaled, the mask
/// added, softmax in f32), returning the new row's sum.
#[inline(always)]
fn exponentials<const FMA: bool>(row: &mut [f32], scale: f32, mask: &[f32]) -> f32 {
    let max = lane_update_max(row, mask, |v, m| v * scale + m);
    lane_update_sum(row, |v| exp_with::<FMA>(v - max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::testing::{bits_of, for_each_isa, wave};

    /// `softmax(scale·q·kᵀ + mask)·v` per (batch, head) in f64, for each sequence's first `dims.queries` queries.
    fn reference(qkv: &[f32], dims: Dims, scale: f64, mask: Option<&[f32]>) -> Vec<f64> {
        let Dims {
            batch,
            seq,
            heads,
            head_dim,
            queries,
        } = dims;
        let hidden = dims.hidden();
        let at = |b: usize, part: usize, t: usize, h: usize, k: usize| {
            f64::from(qkv[(b * seq + t) * 3 * hidden + part * hidden + h * head_dim + k])
        };
        let mut ctx = vec![0f64; batch * queries * hidden];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..queries {
                    let scores: Vec<f64> = (0..seq)
                        .map(|j| {
                            let dot: f64 = (0..head_dim).map(|k| at(b, 0, i, h, k) * at(b, 1, j, h, k)).sum();
                            let m = mask.map_or(0.0, |m| f64::from(m[(b * seq) % m.len() + j]));
                            dot * scale + m
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for k in 0..head_dim {
                        let v: f64 = (0..seq).map(|j| e[j] / sum * at(b, 2, j, h, k)).sum();
                        ctx[(b * queries + i) * hidden + h * head_dim + k] = v;
                    }
                }
            }
        }
        ctx
    }

    #[test]
    fn every_instruction_set_matches_an_f64_reference() {
        // Ragged shapes: sequences short of, at and past a tile and a panel (vision's 257 = 4·64 + 1), heads
        // narrower than a panel, wider than one, and not a multiple of it; masks per batch, shared, none; every
        // query, the first alone (a pooled output's last layer), or a count past one tile.
        let cases = [
            (
                Dims {
                    batch: 1,
                    seq: 1,
                    heads: 1,
                    head_dim: 8,
                    queries: 1,
                },
                None,
            ),
            (
                Dims {
                    batch: 2,
                    seq: 7,
                    heads: 3,
                    head_dim: 16,
                    queries: 7,
                },
                Some(2),
            ),
            (
                Dims {
                    batch: 1,
                    seq: 77,
                    heads: 2,
                    head_dim: 64,
                    queries: 1,
                },
                Some(1),
            ),
            (
                Dims {
                    batch: 3,
                    seq: 16,
                    heads: 4,
                    head_dim: 24,
                    queries: 16,
                },
                Some(3),
            ),
            (
                Dims {
                    batch: 1,
                    seq: 257,
                    heads: 2,
                    head_dim: 64,
                    queries: 257,
                },
                None,
            ),
            (
                Dims {
                    batch: 2,
                    seq: 70,
                    heads: 1,
                    head_dim: 80,
                    queries: 8,
                },
                Some(1),
            ),
        ];
        for (dims, mask_sets) in cases {
            let n = dims.batch * dims.seq * 3 * dims.hidden();
            let qkv = super::super::testing::values(&wave(n, 1.5, 0.3, 0.1));
            // Keys masked as the text tower masks padding: f32::MIN at about a third of them, never the first.
            let mask: Option<Vec<f32>> = mask_sets.map(|sets| {
                let m = super::super::testing::values(&wave(sets * dims.seq, 1.0, 0.9, 0.0));
                m.iter()
                    .enumerate()
                    .map(|(j, &v)| if v < -0.5 && j % dims.seq > 0 { f32::MIN } else { 0.0 })
                    .collect()
            });
            let scale = (dims.head_dim as f64).powf(-0.5);
            let want = reference(&qkv, dims, scale, mask.as_deref());
            for_each_isa("attention", |isa| {
                let got = attend(&qkv, dims, scale as f32, mask.as_deref(), isa);
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(&g, &w)| (f64::from(g) - w).abs())
                    .fold(0f64, f64::max);
                assert!(worst < 2e-6, "{isa:?} {dims:?}: worst error {worst:e}");
                // The first queries alone are those of every query, bit for bit.
                let every = Dims {
                    queries: dims.seq,
                    ..dims
                };
                let all = attend(&qkv, every, scale as f32, mask.as_deref(), isa);
                let width = dims.queries * dims.hidden();
                let firsts: Vec<f32> = all
                    .chunks_exact(dims.seq * dims.hidden())
                    .flat_map(|b| b[..width].iter().copied())
                    .collect();
                assert_eq!(bits_of(&got), bits_of(&firsts), "{isa:?} {dims:?}: first queries");
            });
        }
    }
}
