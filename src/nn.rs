//! Building blocks shared by both towers: linear layers, layer norm, activations and multi-head attention.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor, D};

use crate::config::Activation;
use crate::error::{Error, Result};
use crate::weights::CheckpointView;

/// A projection's weight, (out, in): as loaded, or in a GGML block format after [`Linear::quantize`].
#[derive(Debug, Clone)]
enum Weight {
    Dense(Tensor),
    Quantized(QMatMul),
}

/// `y = x Wᵀ + b` over the last dimension, for inputs of any rank.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    /// The f32 bias as a host slice, for the fused CPU kernels (only when the weights live on the CPU in f32).
    bias_cpu: Option<Arc<[f32]>>,
}

/// `t` as a host f32 slice when it lives on the CPU in f32 (for the fused kernels), else `None`.
fn host_f32(t: &Tensor) -> Option<Arc<[f32]>> {
    if !t.device().is_cpu() || t.dtype() != DType::F32 {
        return None;
    }
    t.flatten_all().ok()?.to_vec1::<f32>().ok().map(Arc::from)
}

/// Whether `x` can go through the fused f32 CPU kernels.
fn fused_cpu(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

impl Linear {
    /// Loads `weight` (out, in) and `bias` (out) under `w`'s prefix.
    pub fn load(w: &CheckpointView, in_dim: usize, out_dim: usize) -> Result<Self> {
        let bias = w.get(out_dim, "bias")?;
        Ok(Self {
            weight: Weight::Dense(w.get((out_dim, in_dim), "weight")?),
            bias_cpu: host_f32(&bias),
            bias: Some(bias),
        })
    }

    /// Loads a bias-free projection (`weight` only).
    pub fn load_no_bias(w: &CheckpointView, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: Weight::Dense(w.get((out_dim, in_dim), "weight")?),
            bias: None,
            bias_cpu: None,
        })
    }

    /// Concatenates several projections of the same input into one (rows stacked in order). Only before
    /// quantization.
    pub fn fuse(parts: &[Linear]) -> Result<Self> {
        let weights = parts
            .iter()
            .map(|p| match &p.weight {
                Weight::Dense(t) => Ok(t),
                Weight::Quantized(_) => Err(Error::InvalidArgument {
                    argument: "parts",
                    reason: "quantized projections cannot be fused; fuse first, then quantize".into(),
                }),
            })
            .collect::<Result<Vec<&Tensor>>>()?;
        let biases: Option<Vec<&Tensor>> = parts.iter().map(|p| p.bias.as_ref()).collect();
        let bias = biases.map(|b| Tensor::cat(&b, 0)).transpose()?;
        Ok(Self {
            weight: Weight::Dense(Tensor::cat(&weights, 0)?),
            bias_cpu: bias.as_ref().and_then(host_f32),
            bias,
        })
    }

    /// The weight's (out, in) dims, in either form.
    fn weight_dims(&self) -> &[usize] {
        match &self.weight {
            Weight::Dense(t) | Weight::Quantized(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.dims(),
            Weight::Quantized(QMatMul::QTensor(q)) => q.shape().dims(),
        }
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.weight_dims().first().copied().unwrap_or(0)
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.weight_dims().last().copied().unwrap_or(0)
    }

    /// Whether the weight is held in a quantized format.
    pub fn is_quantized(&self) -> bool {
        matches!(self.weight, Weight::Quantized(_))
    }

    /// Replaces the f32 weight by its `dtype` block quantization (candle's k-quants / GGML formats), used by
    /// every later forward on the CPU; the bias stays f32. Returns `false` and changes nothing when the input
    /// width is not a multiple of the format's block size (32 for Q8_0/Q4_0, 256 for the k-quants).
    pub fn quantize(&mut self, dtype: GgmlDType) -> Result<bool> {
        let Weight::Dense(weight) = &self.weight else {
            return Ok(false);
        };
        if !self.in_dim().is_multiple_of(dtype.block_size()) {
            return Ok(false);
        }
        let q = QTensor::quantize(&weight.to_dtype(DType::F32)?, dtype)?;
        self.weight = Weight::Quantized(QMatMul::from_qtensor(q)?);
        Ok(true)
    }

    /// Applies the layer.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, None)
    }

    /// Applies the layer then `act`; on the CPU in f32, bias and activation are one in-place pass over the GEMM's
    /// output.
    pub fn forward_act(&self, x: &Tensor, act: Option<Activation>) -> Result<Tensor> {
        let dims = x.dims();
        let (lead, last) = dims.split_at(dims.len().saturating_sub(1));
        let rows: usize = lead.iter().product();
        let x2 = x.reshape((rows, last.first().copied().unwrap_or(1)))?;
        let mut y = match &self.weight {
            Weight::Dense(w) => x2.matmul(&w.t()?)?,
            // candle's quantized matmul quantizes the activations to 8 bits per row, then integer dot products.
            Weight::Quantized(q) => q
                .forward(&x2.to_dtype(DType::F32)?.contiguous()?)?
                .to_dtype(x.dtype())?,
        };
        let fused = match act {
            None => Some(cpu::Act::None),
            Some(Activation::Gelu) => Some(cpu::Act::GeluErf),
            Some(Activation::QuickGelu) => Some(cpu::Act::QuickGelu),
            Some(_) => None,
        };
        let bias_ok = self.bias.is_none() || self.bias_cpu.is_some();
        match fused {
            // The GEMM's output is a fresh contiguous tensor that nothing else holds, so it can be updated in place.
            Some(a) if fused_cpu(&y) && bias_ok && y.is_contiguous() => {
                if self.bias_cpu.is_some() || a != cpu::Act::None {
                    y.inplace_op1(&cpu::BiasAct {
                        bias: self.bias_cpu.clone(),
                        act: a,
                    })?;
                }
            }
            _ => {
                if let Some(b) = &self.bias {
                    y = y.broadcast_add(b)?;
                }
                if let Some(act) = act {
                    y = act.forward(&y)?;
                }
            }
        }
        let mut out_dims = lead.to_vec();
        out_dims.push(self.out_dim());
        Ok(y.reshape(out_dims)?)
    }
}

/// A layer norm's weight and bias as host slices.
type HostAffine = (Arc<[f32]>, Arc<[f32]>);

/// Layer normalisation over the last dimension, computed in f32 whatever the activations' dtype (as torch does),
/// with a two-pass variance so that large-mean rows keep their precision.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    /// Weight and bias as host slices, for the fused CPU kernel (when the weights live on the CPU).
    host: Option<HostAffine>,
}

impl LayerNorm {
    /// Loads `weight` and `bias` (dim) under `w`'s prefix; they are kept in f32.
    pub fn load(w: &CheckpointView, dim: usize, eps: f64) -> Result<Self> {
        let weight = w.get_f32(dim, "weight")?;
        let bias = w.get_f32(dim, "bias")?;
        let host = host_f32(&weight).zip(host_f32(&bias));
        Ok(Self {
            weight,
            bias,
            eps,
            host,
        })
    }

    fn op(&self) -> Option<cpu::LayerNormOp> {
        self.host.as_ref().map(|(w, b)| cpu::LayerNormOp {
            weight: w.clone(),
            bias: b.clone(),
            eps: self.eps as f32,
        })
    }

    /// Applies the normalisation; the output has the input's dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let (Some(op), true) = (self.op(), x.device().is_cpu()) {
            let dtype = x.dtype();
            let y = x.to_dtype(DType::F32)?.contiguous()?.apply_op1_no_bwd(&op)?;
            return Ok(y.to_dtype(dtype)?);
        }
        self.forward_tensor_ops(x)
    }

    /// `forward(x + residual)`, the add fused into the normalisation's first pass on the CPU.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if let (Some(op), true, DType::F32, DType::F32) = (self.op(), x.device().is_cpu(), x.dtype(), residual.dtype())
        {
            if x.dims() == residual.dims() {
                return Ok(x.contiguous()?.apply_op2_no_bwd(&residual.contiguous()?, &op)?);
            }
        }
        self.forward(&(x + residual)?)
    }

    fn forward_tensor_ops(&self, x: &Tensor) -> Result<Tensor> {
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
        let fused = match self {
            Activation::Gelu => Some(cpu::Act::GeluErf),
            Activation::QuickGelu => Some(cpu::Act::QuickGelu),
            _ => None,
        };
        if let (Some(act), true) = (fused, fused_cpu(x)) {
            // A fresh contiguous copy (never the input's storage), updated in place.
            let y = x.copy()?.contiguous()?;
            if y.is_contiguous() {
                y.inplace_op1(&cpu::BiasAct { bias: None, act })?;
                return Ok(y);
            }
        }
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
    if fused_cpu(scores) {
        if let Some(y) = scaled_masked_softmax_in_place(scores.copy()?.contiguous()?, 1.0, mask)? {
            return Ok(y);
        }
    }
    masked_softmax_tensor_ops(scores, mask)
}

/// On the CPU in f32, `softmax(scale·scores + mask)` computed in place in `scores`, which must be a fresh
/// contiguous tensor nothing else holds; `None` where the shapes are not the (batch | 1, 1, 1, keys) mask the kernel
/// handles or the tensor is not on the CPU in f32.
fn scaled_masked_softmax_in_place(scores: Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !fused_cpu(&scores) || !scores.is_contiguous() || scores.rank() != 4 {
        return Ok(None);
    }
    let (b, h, q, k) = scores.dims4()?;
    let mask = match mask {
        None => None,
        Some(m) => {
            let ok = m.device().is_cpu()
                && m.rank() == 4
                && (m.dim(0)? == b || m.dim(0)? == 1)
                && m.dim(1)? == 1
                && m.dim(2)? == 1
                && m.dim(3)? == k;
            if !ok {
                return Ok(None);
            }
            Some(Arc::<[f32]>::from(
                m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            ))
        }
    };
    scores.inplace_op1(&cpu::ScaledMaskedSoftmax {
        scale: scale as f32,
        mask,
        rows_per_mask: h * q,
    })?;
    Ok(Some(scores))
}

fn masked_softmax_tensor_ops(scores: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
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

    /// Quantizes the (fused) q/k/v and output projections (see [`Linear::quantize`]); returns how many were.
    pub fn quantize(&mut self, dtype: GgmlDType) -> Result<usize> {
        Ok(usize::from(self.qkv.quantize(dtype)?) + usize::from(self.out.quantize(dtype)?))
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
        let scores = q.matmul(&k.t()?)?;
        let probs = match scaled_masked_softmax_in_place(scores.clone(), self.scale, mask)? {
            Some(p) => p,
            None => masked_softmax_f32(&(scores * self.scale)?, mask)?,
        };
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

    /// Quantizes both projections (see [`Linear::quantize`]); returns how many were.
    pub fn quantize(&mut self, dtype: GgmlDType) -> Result<usize> {
        Ok(usize::from(self.fc1.quantize(dtype)?) + usize::from(self.fc2.quantize(dtype)?))
    }

    /// Applies the block.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward_act(x, Some(self.act))?)
    }
}

/// CPU kernels for the f32 elementwise work around the GEMMs: fused bias + activation, scaled masked softmax and
/// layer norm, each one parallel (rayon) pass written so that LLVM vectorises it, compiled for AVX-512 / AVX2+FMA
/// and picked at run time. Other devices and dtypes use the tensor-op path in the callers.
mod cpu {
    use std::sync::Arc;

    use candle_core::{CpuStorage, CustomOp1, CustomOp2, InplaceOp1, Layout, Shape};
    use rayon::prelude::*;

    /// Rows handed to one rayon task: enough work to amortise the task, enough tasks to balance.
    const MIN_CHUNK: usize = 16 * 1024;

    /// The activations with a fused kernel.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Act {
        None,
        /// `0.5·x·(1 + erf(x/√2))` (torch's `gelu`, `approximate="none"`).
        GeluErf,
        /// `x·sigmoid(1.702·x)`.
        QuickGelu,
    }

    /// `eˣ` for f32: Cephes' range reduction and degree-6 polynomial (≤ 2 ulp), 0 below −87.3, branch-free so
    /// that it vectorises.
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const C1: f32 = 0.693_359_4;
        const C2: f32 = -2.121_944_4e-4;
        const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to the nearest integer
        let xc = x.clamp(-87.3, 88.0);
        let t = xc * LOG2E + ROUND;
        let n = t - ROUND;
        let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
        let r = xc - n * C1 - n * C2;
        let mut p = 1.987_569_1e-4f32;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 1.666_666_5e-1;
        p = p * r + 0.5;
        let p = p * r * r + r + 1.0;
        let scale = f32::from_bits(((ni + 127) as u32) << 23);
        if x < -87.3 {
            0.0
        } else {
            p * scale
        }
    }

    /// `erf(x)` for f32: the rational approximation of Eigen / XLA (≤ 4e-7 absolute in f32), exactly ±1 beyond 3.9.
    #[inline(always)]
    pub fn erf(x: f32) -> f32 {
        let x = x.clamp(-4.0, 4.0);
        let x2 = x * x;
        let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
        p = x2 * p - 2.101_024e-6;
        p = x2 * p - 5.692_506_4e-5;
        p = x2 * p - 7.349_906_3e-4;
        p = x2 * p - 2.954_600_1e-3;
        p = x2 * p - 1.609_603_3e-2;
        let p = x * p;
        let mut q = x2 * -1.456_607_2e-5 - 2.133_740_5e-4;
        q = x2 * q - 1.682_827e-3;
        q = x2 * q - 7.373_329_3e-3;
        q = x2 * q - 1.426_473_9e-2;
        // |erf| rounds to 1 in f32 beyond 3.9: saturate exactly, so that gelu(x) → 0 for very negative x.
        if x.abs() >= 3.9 {
            x.signum()
        } else {
            p / q
        }
    }

    #[inline(always)]
    fn act(a: Act, x: f32) -> f32 {
        match a {
            Act::None => x,
            Act::GeluErf => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
            Act::QuickGelu => x / (1.0 + exp(-1.702 * x)),
        }
    }

    #[inline(always)]
    fn bias_act_rows(data: &mut [f32], bias: Option<&[f32]>, a: Act) {
        match (bias, a) {
            (Some(b), Act::None) => data.chunks_exact_mut(b.len()).for_each(|row| {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }),
            (Some(b), Act::GeluErf) => data.chunks_exact_mut(b.len()).for_each(|row| {
                row.iter_mut().zip(b).for_each(|(v, b)| *v = act(Act::GeluErf, *v + b));
            }),
            (Some(b), Act::QuickGelu) => data.chunks_exact_mut(b.len()).for_each(|row| {
                row.iter_mut()
                    .zip(b)
                    .for_each(|(v, b)| *v = act(Act::QuickGelu, *v + b));
            }),
            (None, Act::None) => {}
            (None, Act::GeluErf) => data.iter_mut().for_each(|v| *v = act(Act::GeluErf, *v)),
            (None, Act::QuickGelu) => data.iter_mut().for_each(|v| *v = act(Act::QuickGelu, *v)),
        }
    }

    /// Runs `$body` compiled for the best of AVX-512F, AVX2+FMA or the baseline target.
    macro_rules! dispatch {
        ($name:ident ( $($arg:ident : $ty:ty),* ) $body:block) => {{
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) { generic($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports the features v4 was compiled for.
                    unsafe { v4($($arg),*) }
                } else if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above, for v3.
                    unsafe { v3($($arg),*) }
                } else {
                    generic($($arg),*)
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            generic($($arg),*)
        }};
    }

    fn bias_act_slice(data: &mut [f32], bias: Option<&[f32]>, a: Act) {
        dispatch!(k(data: &mut [f32], bias: Option<&[f32]>, a: Act) { bias_act_rows(data, bias, a) })
    }

    fn contiguous_mut<'a>(
        storage: &'a mut CpuStorage,
        layout: &Layout,
        op: &str,
    ) -> candle_core::Result<&'a mut [f32]> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{op}: f32 only");
        };
        match layout.contiguous_offsets() {
            Some((a, b)) => Ok(&mut data[a..b]),
            None => candle_core::bail!("{op}: contiguous input only"),
        }
    }

    fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{op}: f32 only");
        };
        match layout.contiguous_offsets() {
            Some((a, b)) => Ok(&data[a..b]),
            None => candle_core::bail!("{op}: contiguous input only"),
        }
    }

    /// In place: `x ← act(x + bias)` over rows of `bias.len()` (or elementwise without bias).
    pub struct BiasAct {
        pub bias: Option<Arc<[f32]>>,
        pub act: Act,
    }

    impl InplaceOp1 for BiasAct {
        fn name(&self) -> &'static str {
            "altclip-bias-act"
        }

        fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
            let data = contiguous_mut(storage, layout, self.name())?;
            let cols = match &self.bias {
                Some(b) => {
                    if b.is_empty() || !data.len().is_multiple_of(b.len()) {
                        candle_core::bail!("{}: bias width does not divide the data", self.name());
                    }
                    b.len()
                }
                None => 1,
            };
            let chunk = MIN_CHUNK.div_ceil(cols).max(1) * cols;
            let bias = self.bias.as_deref();
            data.par_chunks_mut(chunk)
                .for_each(|c| bias_act_slice(c, bias, self.act));
            Ok(())
        }
    }

    /// In place over the last dimension: `x ← softmax(scale·x + mask)`, with `mask` (rows of `keys` additive values)
    /// chosen per `rows_per_mask` consecutive rows (so a (batch, 1, 1, keys) mask serves (batch, heads, q, keys)).
    pub struct ScaledMaskedSoftmax {
        pub scale: f32,
        pub mask: Option<Arc<[f32]>>,
        pub rows_per_mask: usize,
    }

    #[inline(always)]
    fn softmax_row(row: &mut [f32], scale: f32, mask: Option<&[f32]>) {
        const L: usize = 16;
        match mask {
            Some(m) => row.iter_mut().zip(m).for_each(|(v, m)| *v = *v * scale + m),
            None => row.iter_mut().for_each(|v| *v *= scale),
        }
        let mut acc = [f32::NEG_INFINITY; L];
        let mut chunks = row.chunks_exact(L);
        for c in &mut chunks {
            for i in 0..L {
                acc[i] = acc[i].max(c[i]);
            }
        }
        let mut max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        max = acc.iter().fold(max, |a, &b| a.max(b));
        row.iter_mut().for_each(|v| *v = exp(*v - max));
        let mut acc = [0f32; L];
        let mut chunks = row.chunks_exact(L);
        for c in &mut chunks {
            for i in 0..L {
                acc[i] += c[i];
            }
        }
        let sum = acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }

    fn softmax_rows(data: &mut [f32], keys: usize, first_row: usize, op: &ScaledMaskedSoftmax) {
        dispatch!(k(data: &mut [f32], keys: usize, first_row: usize, op: &ScaledMaskedSoftmax) {
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

    /// Layer norm over the last dimension (two-pass variance), optionally of `x + residual`; f32 in and out.
    pub struct LayerNormOp {
        pub weight: Arc<[f32]>,
        pub bias: Arc<[f32]>,
        pub eps: f32,
    }

    #[inline(always)]
    fn lane_sum(row: &[f32]) -> f32 {
        const L: usize = 16;
        let mut acc = [0f32; L];
        let mut chunks = row.chunks_exact(L);
        for c in &mut chunks {
            for i in 0..L {
                acc[i] += c[i];
            }
        }
        acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
    }

    #[inline(always)]
    fn lane_sq_dev(row: &[f32], mean: f32) -> f32 {
        const L: usize = 16;
        let mut acc = [0f32; L];
        let mut chunks = row.chunks_exact(L);
        for c in &mut chunks {
            for i in 0..L {
                let d = c[i] - mean;
                acc[i] += d * d;
            }
        }
        acc.iter().sum::<f32>() + chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()
    }

    fn norm_rows(dst: &mut [f32], src: &[f32], residual: Option<&[f32]>, op: &LayerNormOp) {
        dispatch!(k(dst: &mut [f32], src: &[f32], residual: Option<&[f32]>, op: &LayerNormOp) {
            let n = op.weight.len();
            match residual {
                Some(r) => dst.iter_mut().zip(src.iter().zip(r)).for_each(|(d, (a, b))| *d = a + b),
                None => dst.copy_from_slice(src),
            }
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
            let mut dst = vec![0f32; x.len()];
            let rows_per_chunk = MIN_CHUNK.div_ceil(n).max(1);
            let step = rows_per_chunk * n;
            dst.par_chunks_mut(step).enumerate().for_each(|(c, d)| {
                let s = &x[c * step..c * step + d.len()];
                let r = residual.map(|r| &r[c * step..c * step + d.len()]);
                norm_rows(d, s, r, self);
            });
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
        use super::*;

        #[test]
        fn fast_exp_and_gelu_match_libm() {
            let mut worst_exp = 0f64;
            let mut worst_gelu = 0f64;
            let mut worst_quick = 0f64;
            for i in -200_000..=200_000 {
                let x = i as f32 * 1e-4; // [-20, 20]
                let e = (x as f64).exp();
                let rel = ((exp(x) as f64) - e).abs() / e.max(f64::MIN_POSITIVE);
                if e > 1e-37 {
                    worst_exp = worst_exp.max(rel);
                }
                let g = 0.5 * x as f64 * (1.0 + candle_core::cpu::erf::erf_f64(x as f64 / std::f64::consts::SQRT_2));
                worst_gelu = worst_gelu.max((act(Act::GeluErf, x) as f64 - g).abs() / (1.0 + g.abs()));
                let q = x as f64 / (1.0 + (-1.702 * x as f64).exp());
                worst_quick = worst_quick.max((act(Act::QuickGelu, x) as f64 - q).abs() / (1.0 + q.abs()));
            }
            assert!(worst_exp < 5e-7, "exp rel err {worst_exp:e}");
            // f32 cancellation in 1 + erf near erf = −1 (torch's f32 gelu has the same): ≤ 1e-6 absolute.
            assert!(worst_gelu < 1.5e-6, "gelu err {worst_gelu:e}");
            assert!(worst_quick < 5e-7, "quick_gelu err {worst_quick:e}");
            assert_eq!(exp(-1e30), 0.0);
            assert_eq!(exp(f32::MIN), 0.0);
            assert!(exp(1e30).is_finite());
        }
    }
}
