//! Multi-head self-attention (transformers' `AltRobertaSelfAttention` / `AltCLIPAttention`, eager).

use candle_core::{DType, Tensor};

use super::Linear;
use crate::error::{Error, Result};
use crate::kernels::cpu::{self, Rhs};
use crate::kernels::Fresh;

/// Multi-head self-attention with q, k and v fused into one projection at load time.
#[derive(Debug, Clone)]
pub(crate) struct SelfAttention {
    qkv: Linear,
    out: Linear,
    num_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl SelfAttention {
    /// Builds the layer from q, k and v stacked into one projection ([`Linear::load_stacked`]) and the output one.
    pub(crate) fn new(qkv: Linear, out: Linear, num_heads: usize) -> Result<Self> {
        let hidden = out.out_dim()?;
        if num_heads == 0 || !hidden.is_multiple_of(num_heads) {
            return Err(Error::invalid_argument(
                "num_heads",
                format!("{num_heads} heads do not divide the hidden size {hidden}"),
            ));
        }
        let head_dim = hidden / num_heads;
        Ok(Self {
            qkv,
            out,
            num_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// The (fused) q/k/v and output projections, for [`Linear::quantize_all`].
    pub(crate) fn projections(&mut self) -> [&mut Linear; 2] {
        [&mut self.qkv, &mut self.out]
    }

    /// `x`: (batch, seq, hidden); `mask`: additive f32, broadcastable to (batch, heads, seq, seq).
    pub(crate) fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.out.forward(&self.context(x, mask)?)
    }

    /// `forward(x, mask) + residual`, the add in the output projection's epilogue (see
    /// [`Linear::forward_residual`]).
    pub(crate) fn forward_residual(&self, x: &Tensor, mask: Option<&Tensor>, residual: &Tensor) -> Result<Tensor> {
        self.out.forward_residual(&self.context(x, mask)?, residual)
    }

    /// The heads' attention outputs, (batch, seq, hidden): the output projection's input.
    fn context(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, s, hidden) = x.dims3()?;
        // q, k, v as (1, batch, heads, seq, head_dim) views of the projection's (batch, seq, 3·hidden) rows (a
        // narrow, not `get`, whose squeeze would copy): the CPU kernel reads each head in place; candle's batched
        // matmul (CPU gemm and cuBLAS alike), which needs each head's rows at a pitch of head_dim, gets a copy.
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, s, 3, self.num_heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (qkv.narrow(0, 0, 1)?, qkv.narrow(0, 1, 1)?, qkv.narrow(0, 2, 1)?);
        let dense = |t: &Tensor| -> Result<Tensor> { Ok(t.squeeze(0)?.contiguous()?) };
        let ctx = if q.device().is_metal() {
            metal_sdpa(&dense(&q)?, &dense(&k)?, &dense(&v)?, mask, self.scale)?
        } else {
            let scores = match cpu::try_batched_matmul(&q, &k, Rhs::Transposed)? {
                Some(scores) => scores.squeeze_lead()?,
                None => Fresh::matmul(&dense(&q)?, &dense(&k)?.t()?)?,
            };
            let probs = scaled_masked_softmax(scores, self.scale, mask)?;
            match cpu::try_batched_matmul(&probs.unsqueeze(0)?, &v, Rhs::AsIs)? {
                Some(ctx) => ctx.into_tensor().squeeze(0)?,
                None => probs.matmul(&dense(&v)?)?,
            }
        };
        Ok(ctx.transpose(1, 2)?.reshape((b, s, hidden))?)
    }
}

/// candle's fused Metal attention (`candle_nn::ops::sdpa`), which wants the mask expanded to
/// (batch, heads, q_seq, k_seq) in q's dtype. Never run here (no macOS machine): compiled on every target, taken
/// only on a Metal device.
fn metal_sdpa(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (b, h, s, _) = q.dims4()?;
    let mask = mask
        .map(|m| m.to_dtype(q.dtype())?.broadcast_as((b, h, s, k.dim(2)?)))
        .transpose()?;
    Ok(candle_nn::ops::sdpa(q, k, v, mask.as_ref(), false, scale as f32, 1.0)?)
}

/// `softmax(scale·scores + mask)` over the last dimension, the fused kernel overwriting `scores` where it applies.
fn scaled_masked_softmax(scores: Fresh, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    match cpu::try_scaled_masked_softmax(scores.as_tensor(), scale, mask)? {
        Some(kernel) => kernel.apply(scores),
        None => masked_softmax_f32(&(scores.into_tensor() * scale)?, mask),
    }
}

/// Softmax over the last dimension after adding an optional additive mask, both in f32 (as torch's
/// `softmax(dtype=float32)` after a float mask), returned in the input's dtype.
fn masked_softmax_f32(scores: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let dtype = scores.dtype();
    let mut x = scores.to_dtype(DType::F32)?;
    if let Some(mask) = mask {
        x = x.broadcast_add(mask)?;
    }
    let y = candle_nn::ops::softmax_last_dim(&x.contiguous()?)?;
    Ok(y.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::testing::{assert_close, bits, wave};
    use crate::kernels::testing::with_kernels;
    use crate::kernels::Kernels;

    #[test]
    fn fused_softmax_matches_the_generic_path() {
        for (dims, mask_batch) in [((2, 3, 5, 7), Some(2)), ((1, 2, 4, 33), Some(1)), ((3, 4, 9, 20), None)] {
            let scores = wave(dims, 6.0, 0.1, 0.0);
            // Masked keys as the text tower makes them: (1 − mask)·f32::MIN.
            let mask = mask_batch.map(|mb| {
                let keep = wave((mb, 1, 1, dims.3), 1.0, 0.3, 0.0)
                    .ge(-0.5)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap();
                ((1.0 - keep).unwrap() * f64::from(f32::MIN)).unwrap()
            });
            let scale = 0.125;
            assert!(cpu::try_scaled_masked_softmax(&scores, scale, mask.as_ref())
                .unwrap()
                .is_some());
            let fused = scaled_masked_softmax(Fresh::copy(&scores).unwrap(), scale, mask.as_ref()).unwrap();
            let generic = masked_softmax_f32(&(&scores * scale).unwrap(), mask.as_ref()).unwrap();
            assert_close(&format!("{dims:?}"), &fused, &generic, 1e-6);
            let forced = with_kernels(Kernels::Generic, || {
                scaled_masked_softmax(Fresh::copy(&scores).unwrap(), scale, mask.as_ref()).unwrap()
            });
            assert_eq!(bits(&forced), bits(&generic), "{dims:?} forced generic");
        }
    }
}
