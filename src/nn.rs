//! Building blocks shared by both towers: linear layers, layer norm, activations and multi-head attention.

use candle_core::{DType, Tensor, D};

use crate::config::Activation;
use crate::error::Result;
use crate::weights::Weights;

/// `y = x Wᵀ + b` over the last dimension, for inputs of any rank.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` (out, in) and `bias` (out) under `w`'s prefix.
    pub fn load(w: &Weights, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: w.get((out_dim, in_dim), "weight")?,
            bias: Some(w.get(out_dim, "bias")?),
        })
    }

    /// Loads a bias-free projection (`weight` only).
    pub fn load_no_bias(w: &Weights, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: w.get((out_dim, in_dim), "weight")?,
            bias: None,
        })
    }

    /// Concatenates several projections of the same input into one (rows stacked in order).
    pub fn fuse(parts: &[Linear]) -> Result<Self> {
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.weight).collect();
        let biases: Option<Vec<&Tensor>> = parts.iter().map(|p| p.bias.as_ref()).collect();
        Ok(Self {
            weight: Tensor::cat(&weights, 0)?,
            bias: biases.map(|b| Tensor::cat(&b, 0)).transpose()?,
        })
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Applies the layer.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let (lead, last) = dims.split_at(dims.len().saturating_sub(1));
        let rows: usize = lead.iter().product();
        let x2 = x.reshape((rows, last.first().copied().unwrap_or(1)))?;
        let mut y = x2.matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let mut out_dims = lead.to_vec();
        out_dims.push(self.out_dim());
        Ok(y.reshape(out_dims)?)
    }
}

/// Layer normalisation over the last dimension, computed in f32 whatever the activations' dtype (as torch does),
/// with a two-pass variance so that large-mean rows keep their precision.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` (dim) under `w`'s prefix; they are kept in f32.
    pub fn load(w: &Weights, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.get_f32(dim, "weight")?,
            bias: w.get_f32(dim, "bias")?,
            eps,
        })
    }

    /// Applies the normalisation; the output has the input's dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let y = normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?;
        Ok(y.to_dtype(dtype)?)
    }
}

impl Activation {
    /// Applies the activation elementwise.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Gelu => x.gelu_erf()?,
            Activation::GeluTanh => x.gelu()?,
            Activation::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            Activation::Relu => x.relu()?,
            Activation::Silu => candle_nn::ops::silu(x)?,
        })
    }
}

/// Softmax over the last dimension after adding an optional additive mask, both in f32 (as torch's
/// `softmax(dtype=float32)` after a float mask), returned in the input's dtype.
pub fn masked_softmax_f32(scores: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let dtype = scores.dtype();
    let mut x = scores.to_dtype(DType::F32)?;
    if let Some(mask) = mask {
        x = x.broadcast_add(mask)?;
    }
    let y = candle_nn::ops::softmax_last_dim(&x.contiguous()?)?;
    Ok(y.to_dtype(dtype)?)
}

/// Multi-head self-attention with q, k and v fused into one projection at load time.
#[derive(Debug, Clone)]
pub struct SelfAttention {
    qkv: Linear,
    out: Linear,
    num_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl SelfAttention {
    /// Builds the layer from separately stored q, k, v and output projections.
    pub fn new(q: Linear, k: Linear, v: Linear, out: Linear, num_heads: usize) -> Result<Self> {
        let hidden = out.out_dim();
        let head_dim = hidden / num_heads.max(1);
        Ok(Self {
            qkv: Linear::fuse(&[q, k, v])?,
            out,
            num_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// `x`: (batch, seq, hidden); `mask`: additive f32, broadcastable to (batch, heads, seq, seq).
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, s, hidden) = x.dims3()?;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, s, 3, self.num_heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? * self.scale)?;
        let probs = masked_softmax_f32(&scores, mask)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, hidden))?;
        self.out.forward(&ctx)
    }
}

/// Feed-forward block: `fc2(act(fc1(x)))`.
#[derive(Debug, Clone)]
pub struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl FeedForward {
    /// Builds the block from its two projections and activation.
    pub fn new(fc1: Linear, fc2: Linear, act: Activation) -> Self {
        Self { fc1, fc2, act }
    }

    /// Applies the block.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(x)?)?)
    }
}
