//! Multi-head self-attention (transformers' `AltRobertaSelfAttention` / `AltCLIPAttention`, eager).

use candle_core::{DType, Tensor};

use super::Linear;
use crate::error::{Error, Result};
use crate::kernels::cpu;

/// Multi-head self-attention with q, k and v fused into one projection at load time.
#[derive(Debug, Clone)]
pub(crate) struct SelfAttention {
    qkv: Linear,
    out: Linear,
    num_heads: usize,
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

    /// The heads' attention outputs, (batch, seq, hidden): the output projection's input. The CPU kernel reads q,
    /// k and v where the projection wrote them; elsewhere candle's ops run on per-head copies.
    fn context(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        match cpu::try_attention(&qkv, self.num_heads, self.scale, mask)? {
            Some(ctx) => Ok(ctx),
            None => generic_context(&qkv, self.num_heads, self.scale, mask),
        }
    }
}

/// [`SelfAttention::context`] in candle's ops from the fused projection's (batch, seq, 3·hidden) output: q, k and
/// v copied head-major, `softmax(scale·q·kᵀ + mask)·v` (candle's fused `sdpa` on Metal), heads put back side by
/// side.
fn generic_context(qkv: &Tensor, heads: usize, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, s, width) = qkv.dims3()?;
    let hidden = width / 3;
    let qkv = qkv
        .reshape((b, s, 3, heads, hidden / heads))?
        .permute((2, 0, 3, 1, 4))?;
    let part = |i: usize| -> Result<Tensor> { Ok(qkv.get(i)?.contiguous()?) };
    let (q, k, v) = (part(0)?, part(1)?, part(2)?);
    let ctx = if q.device().is_metal() {
        metal_sdpa(&q, &k, &v, mask, scale)?
    } else {
        let scores = (q.matmul(&k.t()?)? * scale)?;
        masked_softmax_f32(&scores, mask)?.matmul(&v)?
    };
    Ok(ctx.transpose(1, 2)?.reshape((b, s, hidden))?)
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
    fn fused_attention_matches_the_generic_path() {
        // (batch, seq, heads, head_dim), and how many mask sets: per batch, shared, none.
        for ((b, s, h, d), mask_sets) in [
            ((2, 5, 3, 8), Some(2)),
            ((1, 33, 2, 64), Some(1)),
            ((3, 9, 4, 16), None),
        ] {
            let qkv = wave((b, s, 3 * h * d), 2.0, 0.1, 0.0);
            // Masked keys as the text tower makes them: (1 − mask)·f32::MIN, the first key always kept.
            let mask = mask_sets.map(|sets| {
                let keep = wave((sets, 1, 1, s), 1.0, 0.3, 0.0).ge(-0.5).unwrap();
                let first = Tensor::arange(0u32, s as u32, &candle_core::Device::Cpu)
                    .unwrap()
                    .eq(0u32)
                    .unwrap();
                let keep = keep.broadcast_maximum(&first.reshape((1, 1, 1, s)).unwrap()).unwrap();
                ((1.0 - keep.to_dtype(DType::F32).unwrap()).unwrap() * f64::from(f32::MIN)).unwrap()
            });
            let scale = (d as f64).powf(-0.5);
            let fused = cpu::try_attention(&qkv, h, scale, mask.as_ref()).unwrap().unwrap();
            let generic = generic_context(&qkv, h, scale, mask.as_ref()).unwrap();
            assert_close(&format!("{:?}", (b, s, h, d)), &fused, &generic, 1e-6);
            let forced = with_kernels(Kernels::Generic, || {
                assert!(cpu::try_attention(&qkv, h, scale, mask.as_ref()).unwrap().is_none());
                generic_context(&qkv, h, scale, mask.as_ref()).unwrap()
            });
            assert_eq!(bits(&forced), bits(&generic), "{:?} forced generic", (b, s, h, d));
        }
    }
}
