//! Layer norm over the last dimension with a two-pass variance, optionally of `x + residual` (the add fused into
//! the first pass); f32 in and out.

use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::{lane_sq_dev, lane_sum};
use super::{contiguous, Isa, Param, MIN_CHUNK};
use crate::error::Result;
use crate::kernels::{self, Kernels};

/// `layer_norm(x)` (or `layer_norm(x + residual)`) with `weight`, `bias` and `eps`, in `x`'s dtype, or `None`
/// where the kernel does not apply: the generic path forced ([`crate::kernels::Kernels`]), `x` not on the CPU,
/// weight or bias without a host copy, a last dimension other than their width, or a residual that is not on the
/// CPU, not f32 like `x`, or not shaped like it. Without a residual, `x` of any dtype is normalised in f32; either
/// input may be non-contiguous (it is copied).
pub(crate) fn try_layer_norm(
    x: &Tensor,
    residual: Option<&Tensor>,
    weight: &Param,
    bias: &Param,
    eps: f64,
) -> Result<Option<Tensor>> {
    if kernels::selected()? == Kernels::Generic {
        return Ok(None);
    }
    let (Some(w), Some(b)) = (&weight.host, &bias.host) else {
        return Ok(None);
    };
    if !x.device().is_cpu() || x.dims().last() != Some(&w.len()) || b.len() != w.len() {
        return Ok(None);
    }
    let op = LayerNormOp {
        weight: w.clone(),
        bias: b.clone(),
        eps: eps as f32,
        isa: Isa::best(),
    };
    match residual {
        None => {
            let y = x.to_dtype(DType::F32)?.contiguous()?.apply_op1_no_bwd(&op)?;
            Ok(Some(y.to_dtype(x.dtype())?))
        }
        Some(r) => {
            let fits =
                r.device().is_cpu() && x.dtype() == DType::F32 && r.dtype() == DType::F32 && x.dims() == r.dims();
            if !fits {
                return Ok(None);
            }
            Ok(Some(x.contiguous()?.apply_op2_no_bwd(&r.contiguous()?, &op)?))
        }
    }
}

/// The kernel's parameters, as host slices.
struct LayerNormOp {
    weight: Arc<[f32]>,
    bias: Arc<[f32]>,
    eps: f32,
    isa: Isa,
}

/// Normalises `src` (or `src + residual`) row by row into `dst`, each value written first by the copy (or add),
/// so that `dst` need not be initialised (the three are equally long; only their common length is written).
fn norm_rows(dst: &mut [MaybeUninit<f32>], src: &[f32], residual: Option<&[f32]>, op: &LayerNormOp) {
    dispatch!(op.isa, (dst: &mut [MaybeUninit<f32>], src: &[f32], residual: Option<&[f32]>, op: &LayerNormOp) {
        let n = op.weight.len();
        let len = residual.map_or(src.len(), |r| r.len().min(src.len())).min(dst.len());
        let dst = &mut dst[..len];
        match residual {
            Some(r) => dst.iter_mut().zip(src.iter().zip(r)).for_each(|(d, (a, b))| {
                d.write(a + b);
            }),
            None => dst.iter_mut().zip(src).for_each(|(d, a)| {
                d.write(*a);
            }),
        }
        // SAFETY: every value of `dst` was written just above (`src` and `residual` are at least as long), and
        // `MaybeUninit<f32>` has `f32`'s layout.
        let dst = unsafe { &mut *(std::ptr::from_mut(dst) as *mut [f32]) };
        for row in dst.chunks_exact_mut(n) {
            let mean = lane_sum(row) / n as f32;
            let var = lane_sq_dev(row, mean) / n as f32;
            let inv = 1.0 / (var + op.eps).sqrt();
            row.iter_mut()
                .zip(op.weight.iter().zip(op.bias.iter()))
                .for_each(|(v, (w, b))| *v = (*v - mean) * inv * w + b);
        }
    })
}

impl LayerNormOp {
    fn run(&self, x: &[f32], residual: Option<&[f32]>, shape: &Shape) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = self.weight.len();
        if n == 0 || !x.len().is_multiple_of(n) || shape.dims().last() != Some(&n) {
            candle_core::bail!("altclip-layer-norm: width mismatch");
        }
        // Not zeroed first: `norm_rows` writes each value once (a serial memset of the output was 1.2-1.6 % of int8
        // text 32 x 16's samples, Zen 4).
        let mut dst: Vec<f32> = Vec::with_capacity(x.len());
        let rows_per_chunk = MIN_CHUNK.div_ceil(n).max(1);
        let step = rows_per_chunk * n;
        dst.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(step)
            .enumerate()
            .for_each(|(c, d)| {
                let s = &x[c * step..c * step + d.len()];
                let r = residual.map(|r| &r[c * step..c * step + d.len()]);
                norm_rows(d, s, r, self);
            });
        // SAFETY: the chunks cover all `x.len()` values, each written by `norm_rows`; all tasks have finished.
        unsafe { dst.set_len(x.len()) };
        Ok((CpuStorage::F32(dst), shape.clone()))
    }
}

impl CustomOp1 for LayerNormOp {
    fn name(&self) -> &'static str {
        "altclip-layer-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(contiguous(s, l, CustomOp1::name(self))?, None, l.shape())
    }
}

impl CustomOp2 for LayerNormOp {
    fn name(&self) -> &'static str {
        "altclip-add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("{}: shape mismatch", CustomOp2::name(self));
        }
        let r = contiguous(s2, l2, CustomOp2::name(self))?;
        self.run(contiguous(s1, l1, CustomOp2::name(self))?, Some(r), l1.shape())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::kernels::cpu::testing::{bits, for_each_isa, wave};
    use crate::kernels::cpu::Level;

    fn params(n: usize) -> (Param, Param) {
        (
            Param::new(wave(n, 0.3, 0.2, 1.0)).unwrap(),
            Param::new(wave(n, 0.2, 0.9, 0.0)).unwrap(),
        )
    }

    #[test]
    fn try_layer_norm_takes_cpu_inputs_of_the_weights_width() {
        let (w, b) = params(8);
        let x = wave((3, 8), 2.0, 0.0, 0.5);
        let r = wave((3, 8), 1.0, 0.4, 0.0);
        let fits = |x: &Tensor, r: Option<&Tensor>| try_layer_norm(x, r, &w, &b, 1e-5).unwrap().is_some();
        assert!(fits(&x, None), "f32");
        assert!(fits(&x, Some(&r)), "f32 with residual");
        // A non-contiguous input is fine: the kernel copies it.
        assert!(fits(&x.t().unwrap().t().unwrap(), None), "transposed twice");
        assert!(fits(&wave((8, 3), 2.0, 0.0, 0.5).t().unwrap(), None), "transposed");
        // Without a residual any dtype is normalised in f32 (and returned in its own).
        let y16 = try_layer_norm(&x.to_dtype(DType::F16).unwrap(), None, &w, &b, 1e-5)
            .unwrap()
            .unwrap();
        assert_eq!(y16.dtype(), DType::F16);
        assert!(!fits(&x.to_dtype(DType::F16).unwrap(), Some(&r)), "f16 with residual");
        assert!(!fits(&x, Some(&r.to_dtype(DType::F16).unwrap())), "f16 residual");
        assert!(!fits(&x, Some(&wave((1, 8), 1.0, 0.0, 0.0))), "residual of other shape");
        assert!(!fits(&wave((3, 5), 1.0, 0.0, 0.0), None), "other width");
        let w16 = Param::new(w.tensor().to_dtype(DType::F16).unwrap()).unwrap();
        assert!(
            try_layer_norm(&x, None, &w16, &b, 1e-5).unwrap().is_none(),
            "weight without a host copy"
        );
    }

    #[test]
    fn every_instruction_set_matches_the_baseline() {
        // Rust keeps IEEE semantics (no reassociation, no FMA contraction), so every path gives the same bits.
        for (rows, n) in [(1, 7), (5, 64), (300, 130)] {
            let (w, b) = params(n);
            let x = wave((rows, n), 3.0, 0.1, 100.0);
            let r = wave((rows, n), 1.0, 0.5, 0.0);
            for residual in [None, Some(&r)] {
                let run = |isa: Isa| {
                    let op = LayerNormOp {
                        weight: w.host.clone().unwrap(),
                        bias: b.host.clone().unwrap(),
                        eps: 1e-5,
                        isa,
                    };
                    match residual {
                        None => x.apply_op1_no_bwd(&op).unwrap(),
                        Some(r) => x.apply_op2_no_bwd(r, &op).unwrap(),
                    }
                };
                let baseline = Isa::new(Level::Baseline).map(run).unwrap();
                for_each_isa("layer_norm", |isa| {
                    assert_eq!(bits(&run(isa)), bits(&baseline), "{isa:?} {rows}x{n}")
                });
            }
        }
    }
}
