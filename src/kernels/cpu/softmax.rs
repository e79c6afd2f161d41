//! `x ← softmax(scale·x + mask)` in place over the last dimension of attention scores (batch, heads, queries, keys),
//! with an additive (batch | 1, 1, 1, keys) mask.

use std::sync::Arc;

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::{exp, lane_max, lane_sum};
use super::{apply_in_place, contiguous_mut, Isa, MIN_CHUNK};
use crate::error::Result;
use crate::kernels::{self, Fresh, Kernels};

/// The fused `x ← softmax(scale·x + mask)`, prepared by [`try_scaled_masked_softmax`] for one shape of scores. The
/// mask's rows of `keys` additive values are chosen per `rows_per_mask` consecutive rows (so a (batch, 1, 1, keys)
/// mask serves (batch, heads, queries, keys)).
#[derive(Debug)]
pub(crate) struct ScaledMaskedSoftmax {
    scale: f32,
    mask: Option<Arc<[f32]>>,
    rows_per_mask: usize,
    shape: Shape,
    isa: Isa,
}

/// The fused kernel for `softmax(scale·scores + mask)` on scores shaped like `scores`, or `None` where it does not
/// apply: the generic path forced ([`crate::kernels::Kernels`]), scores not on the CPU in f32 or not of rank 4, or
/// a mask not on the CPU or not shaped (batch | 1, 1, 1, keys). The mask is read in f32. Contiguity is the
/// [`Fresh`] tensor's.
pub(crate) fn try_scaled_masked_softmax(
    scores: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Option<ScaledMaskedSoftmax>> {
    if kernels::selected()? == Kernels::Generic || !scores.device().is_cpu() || scores.dtype() != DType::F32 {
        return Ok(None);
    }
    let &[b, h, q, k] = scores.dims() else {
        return Ok(None);
    };
    let mask = match mask {
        None => None,
        Some(m) => {
            let fits = matches!(m.dims(), &[mb, 1, 1, mk] if (mb == b || mb == 1) && mk == k);
            if !m.device().is_cpu() || !fits {
                return Ok(None);
            }
            Some(Arc::<[f32]>::from(
                m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            ))
        }
    };
    Ok(Some(ScaledMaskedSoftmax {
        scale: scale as f32,
        mask,
        rows_per_mask: h * q,
        shape: scores.shape().clone(),
        isa: Isa::best(),
    }))
}

impl ScaledMaskedSoftmax {
    /// Runs the kernel on `scores`, in place; they must have the shape the kernel was prepared for.
    pub(crate) fn apply(self, scores: Fresh) -> Result<Tensor> {
        apply_in_place(&self, &self.shape, scores)
    }
}

#[inline(always)]
fn softmax_row(row: &mut [f32], scale: f32, mask: Option<&[f32]>) {
    match mask {
        Some(m) => row.iter_mut().zip(m).for_each(|(v, m)| *v = *v * scale + m),
        None => row.iter_mut().for_each(|v| *v *= scale),
    }
    let max = lane_max(row);
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let inv = 1.0 / lane_sum(row);
    row.iter_mut().for_each(|v| *v *= inv);
}

fn softmax_rows(data: &mut [f32], keys: usize, first_row: usize, op: &ScaledMaskedSoftmax) {
    dispatch!(op.isa, (data: &mut [f32], keys: usize, first_row: usize, op: &ScaledMaskedSoftmax) {
        for (i, row) in data.chunks_exact_mut(keys).enumerate() {
            let mask = op.mask.as_deref().map(|m| {
                let sets = m.len() / keys;
                let set = ((first_row + i) / op.rows_per_mask.max(1)) % sets.max(1);
                &m[set * keys..(set + 1) * keys]
            });
            softmax_row(row, op.scale, mask);
        }
    })
}

impl InplaceOp1 for ScaledMaskedSoftmax {
    fn name(&self) -> &'static str {
        "altclip-scaled-masked-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let keys = layout.dims().last().copied().unwrap_or(1).max(1);
        if let Some(m) = &self.mask {
            if m.is_empty() || !m.len().is_multiple_of(keys) {
                candle_core::bail!("{}: mask width does not match", self.name());
            }
        }
        let data = contiguous_mut(storage, layout, self.name())?;
        let rows_per_chunk = MIN_CHUNK.div_ceil(keys).max(1);
        data.par_chunks_mut(rows_per_chunk * keys)
            .enumerate()
            .for_each(|(c, chunk)| softmax_rows(chunk, keys, c * rows_per_chunk, self));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::kernels::cpu::testing::{bits, for_each_isa, wave};
    use crate::kernels::cpu::Level;

    #[test]
    fn try_scaled_masked_softmax_takes_cpu_f32_rank_4_and_a_key_mask() {
        let s = wave((2, 3, 4, 5), 2.0, 0.0, 0.0);
        let fits = |m: Option<&Tensor>| try_scaled_masked_softmax(&s, 0.5, m).unwrap().is_some();
        assert!(fits(None), "no mask");
        assert!(fits(Some(&wave((2, 1, 1, 5), 1.0, 0.0, 0.0))), "per-batch mask");
        assert!(fits(Some(&wave((1, 1, 1, 5), 1.0, 0.0, 0.0))), "shared mask");
        assert!(
            fits(Some(&wave((2, 1, 1, 5), 1.0, 0.0, 0.0).to_dtype(DType::F16).unwrap())),
            "f16 mask"
        );
        assert!(!fits(Some(&wave((2, 1, 4, 5), 1.0, 0.0, 0.0))), "per-query mask");
        assert!(!fits(Some(&wave((2, 1, 1, 6), 1.0, 0.0, 0.0))), "mask of other keys");
        assert!(!fits(Some(&wave((3, 1, 1, 5), 1.0, 0.0, 0.0))), "mask of other batch");
        assert!(!fits(Some(&wave((2, 5), 1.0, 0.0, 0.0))), "rank-2 mask");
        // A non-contiguous input is fine: the kernel runs on a `Fresh` copy, which is contiguous.
        let t = s.transpose(2, 3).unwrap();
        assert!(
            try_scaled_masked_softmax(&t, 1.0, None).unwrap().is_some(),
            "transposed"
        );
        let s16 = s.to_dtype(DType::F16).unwrap();
        assert!(try_scaled_masked_softmax(&s16, 1.0, None).unwrap().is_none(), "f16");
        let s3 = wave((3, 4, 5), 1.0, 0.0, 0.0);
        assert!(try_scaled_masked_softmax(&s3, 1.0, None).unwrap().is_none(), "rank 3");
    }

    #[test]
    fn every_instruction_set_matches_the_baseline() {
        // Rust keeps IEEE semantics (no reassociation, no FMA contraction), so every path gives the same bits.
        for (dims, mask_batch) in [((2, 3, 5, 7), 2), ((1, 2, 4, 33), 1), ((3, 16, 50, 50), 3)] {
            let s = wave(dims, 4.0, 0.1, 0.0);
            let mask = wave((mask_batch, 1, 1, dims.3), 3.0, 0.7, -1.0);
            let run = |isa: Isa| {
                let mut kernel = try_scaled_masked_softmax(&s, 0.125, Some(&mask)).unwrap().unwrap();
                kernel.isa = isa;
                kernel.apply(Fresh::copy(&s).unwrap()).unwrap()
            };
            let baseline = Isa::new(Level::Baseline).map(run).unwrap();
            for_each_isa("scaled_masked_softmax", |isa| {
                assert_eq!(bits(&run(isa)), bits(&baseline), "{isa:?} {dims:?}")
            });
        }
    }
}
