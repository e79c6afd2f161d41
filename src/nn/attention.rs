//! Multi-head self-attention (transformers' `AltRobertaSelfAttention` / `AltCLIPAttention`, eager).

use candle_core::{DType, Tensor};

use super::Linear;
use crate::error::{Error, Result};
use crate::kernels::cpu;

/// Which tokens a layer computes outputs for: all of them, or each sequence's first alone — all that a pooled
/// output reads of the last layer (transformers computes every token's and keeps `[:, 0]`; each token's output
/// depends on the others only through the keys and values, which are still computed for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queries {
    /// Every token's output.
    All,
    /// Each sequence's first token's output alone.
    First,
}

impl Queries {
    /// How many of a sequence's `seq` tokens.
    fn count(self, seq: usize) -> usize {
        match self {
            Queries::All => seq,
            Queries::First => seq.min(1),
        }
    }

    /// The rows of `x` (batch, seq, …) whose outputs are computed: `x`, or its first token's, (batch, 1, …).
    pub(crate) fn rows(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Queries::All => x.clone(),
            Queries::First => x.narrow(1, 0, 1)?,
        })
    }
}

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

    /// `x`: (batch, seq, hidden); `mask`: additive f32, broadcastable to (batch, heads, seq, seq). The outputs of
    /// the tokens `queries` names: (batch, seq or 1, hidden).
    pub(crate) fn forward(&self, x: &Tensor, mask: Option<&Tensor>, queries: Queries) -> Result<Tensor> {
        self.out.forward(&self.context(x, mask, queries)?)
    }

    /// `forward(x, mask, queries) + residual`, the add in the output projection's epilogue (see
    /// [`Linear::forward_residual`]); `residual` has the output's shape.
    pub(crate) fn forward_residual(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        residual: &Tensor,
        queries: Queries,
    ) -> Result<Tensor> {
        self.out.forward_residual(&self.context(x, mask, queries)?, residual)
    }

    /// The heads' attention outputs for the tokens `queries` names, (batch, seq or 1, hidden): the output
    /// projection's input. The CPU kernel reads q, k and v where the projection wrote them; elsewhere candle's ops
    /// run on per-head copies.
    fn context(&self, x: &Tensor, mask: Option<&Tensor>, queries: Queries) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        let count = queries.count(qkv.dim(1)?);
        match cpu::try_attention(&qkv, self.num_heads, self.scale, mask, count)? {
            Some(ctx) => Ok(ctx),
            None => generic_context(&qkv, self.num_heads, self.scale, mask, count),
        }
    }
}

/// [`SelfAttention::context`] in candle's ops from the fused projection's (batch, seq, 3·hidden) output: q (of the
/// first `queries` tokens), k and v copied head-major, `softmax(scale·q·kᵀ + mask)·v` (candle's fused `sdpa` on
/// Metal), heads put back side by side: (batch, queries, hidden).
fn generic_context(qkv: &Tensor, heads: usize, scale: f64, mask: Option<&Tensor>, queries: usize) -> Result<Tensor> {
    let (b, s, width) = qkv.dims3()?;
    let hidden = width / 3;
    let qkv = qkv
        .reshape((b, s, 3, heads, hidden / heads))?
        .permute((2, 0, 3, 1, 4))?;
    let part = |i: usize, tokens: usize| -> Result<Tensor> { Ok(qkv.get(i)?.narrow(2, 0, tokens)?.contiguous()?) };
    let (q, k, v) = (part(0, queries)?, part(1, s)?, part(2, s)?);
    // candle's one-query `sdpa` (its vector kernel) ignores the mask: a masked single query takes the generic ops.
    let ctx = if q.device().is_metal() && (queries > 1 || mask.is_none()) {
        metal_sdpa(&q, &k, &v, mask, scale)?
    } else {
        let scores = (q.matmul(&k.t()?)? * scale)?;
        masked_softmax_f32(&scores, mask)?.matmul(&v)?
    };
    Ok(ctx.transpose(1, 2)?.reshape((b, queries, hidden))?)
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
            for queries in [s, 1] {
                let what = format!("{:?} {queries} queries", (b, s, h, d));
                let fused = cpu::try_attention(&qkv, h, scale, mask.as_ref(), queries)
                    .unwrap()
                    .unwrap();
                let generic = generic_context(&qkv, h, scale, mask.as_ref(), queries).unwrap();
                assert_close(&what, &fused, &generic, 1e-6);
                let forced = with_kernels(Kernels::Generic, || {
                    assert!(cpu::try_attention(&qkv, h, scale, mask.as_ref(), queries)
                        .unwrap()
                        .is_none());
                    generic_context(&qkv, h, scale, mask.as_ref(), queries).unwrap()
                });
                assert_eq!(bits(&forced), bits(&generic), "{what}: forced generic");
            }
            // The first query alone is the first row of every query's.
            let every = generic_context(&qkv, h, scale, mask.as_ref(), s).unwrap();
            let first = generic_context(&qkv, h, scale, mask.as_ref(), 1).unwrap();
            assert_close("first of every", &first, &every.narrow(1, 0, 1).unwrap(), 1e-6);
        }
    }
}
