//! Layer normalisation over the last dimension (torch's `nn.LayerNorm`).

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::kernels::cpu::{self, Param};
use crate::weights::CheckpointView;

/// Layer normalisation over the last dimension, computed in f32 whatever the activations' dtype (as torch does),
/// with a two-pass variance so that large-mean rows keep their precision.
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    weight: Param,
    bias: Param,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` (dim) under `w`'s prefix; they are kept in f32.
    pub(crate) fn load(w: &CheckpointView, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: Param::new(w.get_f32(dim, "weight")?)?,
            bias: Param::new(w.get_f32(dim, "bias")?)?,
            eps,
        })
    }

    /// Applies the normalisation; the output has the input's dtype.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match cpu::try_layer_norm(x, None, &self.weight, &self.bias, self.eps)? {
            Some(y) => Ok(y),
            None => self.forward_generic(x),
        }
    }

    /// `forward(x + residual)`, the add fused into the normalisation's first pass on the CPU.
    pub(crate) fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        match cpu::try_layer_norm(x, Some(residual), &self.weight, &self.bias, self.eps)? {
            Some(y) => Ok(y),
            None => self.forward(&(x + residual)?),
        }
    }

    fn forward_generic(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let y = normed
            .broadcast_mul(self.weight.tensor())?
            .broadcast_add(self.bias.tensor())?;
        Ok(y.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::testing::{assert_close, bits, wave};
    use crate::kernels::testing::with_kernels;
    use crate::kernels::Kernels;

    fn layer_norm(n: usize) -> LayerNorm {
        LayerNorm {
            weight: Param::new(wave(n, 0.3, 0.2, 1.0)).unwrap(),
            bias: Param::new(wave(n, 0.2, 0.9, 0.0)).unwrap(),
            eps: 1e-5,
        }
    }

    #[test]
    fn fused_layer_norm_matches_the_generic_path() {
        for dims in [vec![3, 8], vec![2, 5, 64], vec![4, 1024]] {
            let ln = layer_norm(*dims.last().unwrap());
            let x = wave(dims.clone(), 2.0, 0.0, 0.5);
            let r = wave(dims.clone(), 1.0, 0.4, -0.2);
            let fused = cpu::try_layer_norm(&x, None, &ln.weight, &ln.bias, ln.eps)
                .unwrap()
                .unwrap();
            assert_close(&format!("{dims:?}"), &fused, &ln.forward_generic(&x).unwrap(), 1e-6);
            let fused = cpu::try_layer_norm(&x, Some(&r), &ln.weight, &ln.bias, ln.eps)
                .unwrap()
                .unwrap();
            let generic = ln.forward_generic(&(&x + &r).unwrap()).unwrap();
            assert_close(&format!("{dims:?} + residual"), &fused, &generic, 1e-6);
            let forced = with_kernels(Kernels::Generic, || ln.forward_residual(&x, &r).unwrap());
            assert_eq!(bits(&forced), bits(&generic), "{dims:?} forced generic");
        }
    }
}
