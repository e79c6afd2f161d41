//! `y = x Wᵀ + b`, with the weight as loaded, packed for the CPU's f32 kernel, in dynamic int8 or in a GGML block
//! format.

use candle_core::quantized::{QMatMul, QTensor};
use std::sync::Arc;

use candle_core::{DType, Tensor, D};

use crate::config::Activation;
use crate::error::{Error, Result};
use crate::kernels::cpu::{self, Int8Weight, PackedWeight, Param};
use crate::kernels::Fresh;
use crate::options::Quantization;
use crate::weights::CheckpointView;

/// A projection's (out, in) weight: as loaded, packed at load for the CPU's f32 kernel, or quantized by
/// [`Linear::quantize`].
#[derive(Debug, Clone)]
enum ProjectionWeight {
    Dense(Tensor),
    Packed(Arc<PackedWeight>),
    Quantized(QMatMul),
    Int8(Arc<Int8Weight>),
}

impl ProjectionWeight {
    /// The (out, in) weight `weight` under `view`: packed as it is read where the CPU's packed kernel is the one to
    /// use ([`PackedWeight::try_read`]), else as loaded. Also under a quantizing view: its layers are quantized from
    /// the packed weight, so that quantizing while loading and after loading give the same model, projections
    /// outside the encoder layers included.
    fn load(view: &CheckpointView, out_dim: usize, in_dim: usize) -> Result<Self> {
        Ok(match PackedWeight::try_read(&[view], "weight", (out_dim, in_dim))? {
            Some(packed) => Self::Packed(Arc::new(packed)),
            None => Self::Dense(view.get((out_dim, in_dim), "weight")?),
        })
    }

    /// The (out, in) weight as a tensor, where it is dense or packed.
    fn dense(&self) -> Result<Option<Tensor>> {
        Ok(match self {
            Self::Dense(t) => Some(t.clone()),
            Self::Packed(p) => Some(p.to_tensor()?),
            Self::Quantized(_) | Self::Int8(_) => None,
        })
    }

    /// (out, in), in any form.
    fn dims(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Self::Dense(t) | Self::Quantized(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.dims2()?,
            Self::Quantized(QMatMul::QTensor(q)) => q.shape().dims2()?,
            Self::Packed(w) => (w.out_dim(), w.in_dim()),
            Self::Int8(w) => (w.out_dim(), w.in_dim()),
        })
    }

    /// `x Wᵀ` for `x` (rows, in), in `x`'s dtype (a packed weight takes [`Linear::forward_act`]'s own path).
    fn matmul(&self, x: &Tensor) -> Result<Fresh> {
        match self {
            Self::Packed(w) => Ok(Fresh::custom(w.forward(x, (None, None, None))?)),
            Self::Dense(w) => Fresh::matmul(x, &w.t()?),
            // candle's quantized matmul quantizes the activations to 8 bits per row, then integer dot products.
            Self::Quantized(q) => Fresh::qmatmul(q, x),
            Self::Int8(w) => Ok(Fresh::custom(w.forward(x, (None, None, None))?)),
        }
    }
}

/// `y = x Wᵀ + b` over the last dimension, for inputs of any rank.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: ProjectionWeight,
    bias: Option<Param>,
}

impl Linear {
    /// Loads `weight` (out, in) and `bias` (out) under `w`'s prefix.
    pub(crate) fn load(w: &CheckpointView, in_dim: usize, out_dim: usize) -> Result<Self> {
        let bias = Param::new(w.get(out_dim, "bias")?)?;
        Ok(Self {
            weight: ProjectionWeight::load(w, out_dim, in_dim)?,
            bias: Some(bias),
        })
    }

    /// Loads a bias-free projection (`weight` only).
    pub(crate) fn load_no_bias(w: &CheckpointView, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: ProjectionWeight::load(w, out_dim, in_dim)?,
            bias: None,
        })
    }

    /// Loads the projections under `parts` (each a `weight` (out, in) and a `bias` (out)) as one, rows stacked in
    /// order (q, k, v): read straight into one packed weight where the packed kernel serves them
    /// ([`PackedWeight::try_read`]), else loaded one by one and [`fuse`](Self::fuse)d.
    pub(crate) fn load_stacked(parts: &[&CheckpointView], in_dim: usize, out_dim: usize) -> Result<Self> {
        let biases: Vec<Tensor> = parts.iter().map(|w| w.get(out_dim, "bias")).collect::<Result<_>>()?;
        match PackedWeight::try_read(parts, "weight", (out_dim, in_dim))? {
            Some(packed) => Ok(Self {
                weight: ProjectionWeight::Packed(Arc::new(packed)),
                bias: Some(Param::new(Tensor::cat(&biases, 0)?)?),
            }),
            None => {
                let loaded: Vec<Linear> = parts
                    .iter()
                    .zip(biases)
                    .map(|(w, bias)| {
                        Ok(Self {
                            weight: ProjectionWeight::load(w, out_dim, in_dim)?,
                            bias: Some(Param::new(bias)?),
                        })
                    })
                    .collect::<Result<_>>()?;
                Self::fuse(&loaded)
            }
        }
    }

    /// Concatenates several projections of the same input into one (rows stacked in order). Only before
    /// quantization.
    pub(crate) fn fuse(parts: &[Linear]) -> Result<Self> {
        let biases: Option<Vec<&Tensor>> = parts.iter().map(|p| p.bias.as_ref().map(Param::tensor)).collect();
        let bias = biases.map(|b| Tensor::cat(&b, 0)).transpose()?;
        let packed: Option<Vec<&PackedWeight>> = parts
            .iter()
            .map(|p| match &p.weight {
                ProjectionWeight::Packed(w) => Some(&**w),
                _ => None,
            })
            .collect();
        let weight = match packed {
            Some(packed) => ProjectionWeight::Packed(Arc::new(PackedWeight::concat(&packed)?)),
            None => {
                let weights = parts
                    .iter()
                    .map(|p| {
                        p.weight.dense()?.ok_or_else(|| {
                            Error::invalid_argument(
                                "parts",
                                "quantized projections cannot be fused; fuse first, then quantize",
                            )
                        })
                    })
                    .collect::<Result<Vec<Tensor>>>()?;
                ProjectionWeight::Dense(Tensor::cat(&weights, 0)?)
            }
        };
        Ok(Self {
            weight,
            bias: bias.map(Param::new).transpose()?,
        })
    }

    /// Output width.
    pub(crate) fn out_dim(&self) -> Result<usize> {
        Ok(self.weight.dims()?.0)
    }

    /// Replaces the weight by its `quantization` (see [`Quantization`]), used by every later forward; the bias stays
    /// as loaded. Returns `false` and changes nothing when the layer is quantized already, or when the input width
    /// is not a multiple of a GGML format's block size (32 for Q8_0/Q4_0, 256 for the k-quants). Int8 takes an f32
    /// weight on the CPU only.
    pub(crate) fn quantize(&mut self, quantization: Quantization) -> Result<bool> {
        let Some(weight) = self.weight.dense()? else {
            return Ok(false);
        };
        let weight = &weight;
        self.weight = match quantization {
            Quantization::Int8 => ProjectionWeight::Int8(Arc::new(Int8Weight::quantize(weight)?)),
            Quantization::Ggml(dtype) => {
                if !weight.dims2()?.1.is_multiple_of(dtype.block_size()) {
                    return Ok(false);
                }
                let q = QTensor::quantize(&weight.to_dtype(DType::F32)?, dtype)?;
                ProjectionWeight::Quantized(QMatMul::from_qtensor(q)?)
            }
        };
        Ok(true)
    }

    /// Quantizes each of `layers` (see [`Linear::quantize`]); returns how many were.
    pub(crate) fn quantize_all<'a>(
        layers: impl IntoIterator<Item = &'a mut Linear>,
        quantization: Quantization,
    ) -> Result<usize> {
        layers
            .into_iter()
            .map(|l| Ok(usize::from(l.quantize(quantization)?)))
            .sum()
    }

    /// Applies the layer.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, None)
    }

    /// Applies the layer then `act`; on the CPU in f32, bias and activation are one in-place pass over the GEMM's
    /// output.
    pub(crate) fn forward_act(&self, x: &Tensor, act: Option<Activation>) -> Result<Tensor> {
        self.forward_with(x, act, None)
    }

    /// `forward(x) + residual` (`residual` shaped as the output): a residual connection, the add fused into the
    /// GEMM's epilogue on the CPU in f32.
    pub(crate) fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.forward_with(x, None, Some(residual))
    }

    fn forward_with(&self, x: &Tensor, act: Option<Activation>, residual: Option<&Tensor>) -> Result<Tensor> {
        let in_width = x.dim(D::Minus1)?;
        let lead = &x.dims()[..x.rank() - 1];
        let mut out_dims = lead.to_vec();
        out_dims.push(self.out_dim()?);
        let rows = lead.iter().product::<usize>();
        let x = x.reshape((rows, in_width))?;
        let residual = residual.map(|r| r.reshape((rows, ()))).transpose()?;
        let parts = (self.bias.as_ref(), act, residual.as_ref());
        let fused = match &self.weight {
            ProjectionWeight::Packed(w) => Some(w.forward(&x, parts)?),
            ProjectionWeight::Int8(w) => Some(w.forward(&x, parts)?),
            ProjectionWeight::Dense(_) | ProjectionWeight::Quantized(_) => None,
        };
        if let Some(y) = fused {
            return Ok(y.reshape(out_dims)?);
        }
        let y = self.weight.matmul(&x)?;
        let y = match cpu::try_bias_act(y.as_tensor(), self.bias.as_ref(), act)? {
            Some(kernel) => kernel.apply(y)?,
            None => cpu::bias_then_act(y.into_tensor(), self.bias.as_ref(), act)?,
        };
        Ok(cpu::plus_residual(y, residual.as_ref())?.reshape(out_dims)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::testing::{assert_close, bits, wave};
    use crate::kernels::testing::with_kernels;
    use crate::kernels::Kernels;
    use candle_core::quantized::GgmlDType;

    fn linear(rows_out: usize, cols_in: usize) -> Linear {
        Linear {
            weight: ProjectionWeight::Dense(wave((rows_out, cols_in), 0.2, 0.3, 0.0)),
            bias: Some(Param::new(wave(rows_out, 0.5, 1.1, 0.1)).unwrap()),
        }
    }

    #[test]
    fn fused_bias_and_activation_match_the_generic_path() {
        for (lead, cols_in, cols_out) in [(vec![1], 3, 5), (vec![7], 64, 48), (vec![2, 17], 16, 130)] {
            let layer = linear(cols_out, cols_in);
            let mut dims = lead.clone();
            dims.push(cols_in);
            let x = wave(dims, 2.0, 0.0, 0.0);
            let x2 = x.reshape(((), cols_in)).unwrap();
            // The fused GELU's tolerance is `fast_exp_and_gelu_match_libm`'s; a bias alone is the same f32 add.
            for (act, tol) in [
                (None, 0.0),
                (Some(Activation::Gelu), 1.5e-6),
                (Some(Activation::QuickGelu), 1e-6),
            ] {
                // Generic bias + activation (candle ops) over a given product.
                let generic_over = |y: Fresh| {
                    assert!(cpu::try_bias_act(y.as_tensor(), layer.bias.as_ref(), act)
                        .unwrap()
                        .is_some());
                    let biased = y
                        .into_tensor()
                        .broadcast_add(layer.bias.as_ref().unwrap().tensor())
                        .unwrap();
                    let y = match act {
                        Some(act) => act.forward_generic(&biased).unwrap(),
                        None => biased,
                    };
                    let mut out = lead.clone();
                    out.push(cols_out);
                    y.reshape(out).unwrap()
                };
                // The fused layer (candle's product, fused epilogue) against the generic epilogue over the same
                // product.
                let fused = layer.forward_act(&x, act).unwrap();
                let want = generic_over(layer.weight.matmul(&x2).unwrap());
                assert_close(&format!("{act:?} {lead:?}"), &fused, &want, tol);
                // With the generic path forced, the layer runs exactly the candle ops: candle's matmul, then those.
                let generic = generic_over(with_kernels(Kernels::Generic, || layer.weight.matmul(&x2).unwrap()));
                let forced = with_kernels(Kernels::Generic, || layer.forward_act(&x, act).unwrap());
                assert_eq!(bits(&forced), bits(&generic), "{act:?} {lead:?} forced generic");
                // The two GEMMs agree to f32 rounding.
                assert_close(&format!("{act:?} {lead:?} GEMMs"), &fused, &generic, 2e-6);
            }
        }
    }

    /// `layer` with its weight packed.
    fn packed(layer: &Linear) -> Linear {
        let ProjectionWeight::Dense(w) = &layer.weight else {
            panic!("a dense layer")
        };
        Linear {
            weight: ProjectionWeight::Packed(Arc::new(PackedWeight::pack_for_tests(w))),
            bias: layer.bias.clone(),
        }
    }

    #[test]
    fn a_packed_weight_gives_the_dense_layers_outputs() {
        for (lead, cols_in, cols_out) in [(vec![1], 3, 5), (vec![7], 64, 48), (vec![2, 17], 300, 130)] {
            let dense = linear(cols_out, cols_in);
            let mut dims = lead.clone();
            dims.push(cols_in);
            let x = wave(dims, 2.0, 0.0, 0.0);
            let no_bias = Linear {
                bias: None,
                ..dense.clone()
            };
            // GELU tanh and ReLU have no fused form: the packed layer applies them after its product.
            for act in [
                None,
                Some(Activation::Gelu),
                Some(Activation::QuickGelu),
                Some(Activation::GeluTanh),
                Some(Activation::Relu),
            ] {
                for layer in [&dense, &no_bias] {
                    let want = layer.forward_act(&x, act).unwrap();
                    let got = packed(layer).forward_act(&x, act).unwrap();
                    let what = format!("{act:?} {lead:?} bias {}", layer.bias.is_some());
                    assert_close(&what, &got, &want, 2e-6);
                }
            }
            // A residual connection: added in the packed GEMM's epilogue, after candle's product on a dense weight;
            // and by candle's ops where the generic path is forced.
            let mut out_dims = lead.clone();
            out_dims.push(cols_out);
            let residual = wave(out_dims, 3.0, 0.7, 1.0);
            let want = (dense.forward(&x).unwrap() + &residual).unwrap();
            assert_eq!(
                bits(&dense.forward_residual(&x, &residual).unwrap()),
                bits(&want),
                "dense {lead:?}"
            );
            let got = packed(&dense).forward_residual(&x, &residual).unwrap();
            assert_close(&format!("residual {lead:?}"), &got, &want, 2e-6);
            let unfused = (packed(&dense).forward(&x).unwrap() + &residual).unwrap();
            assert_eq!(bits(&got), bits(&unfused), "packed {lead:?}");
            let forced = with_kernels(Kernels::Generic, || {
                let want = (dense.forward(&x).unwrap() + &residual).unwrap();
                (dense.forward_residual(&x, &residual).unwrap(), want)
            });
            assert_eq!(bits(&forced.0), bits(&forced.1), "forced generic {lead:?}");
            let mut wider = lead.clone();
            wider.push(cols_out + 1);
            let wrong = wave(wider, 1.0, 0.0, 0.0);
            assert!(dense.forward_residual(&x, &wrong).is_err(), "dense, residual too wide");
            assert!(
                packed(&dense).forward_residual(&x, &wrong).is_err(),
                "packed, residual too wide"
            );
            // Stacked packed weights (panels concatenated, or repacked off a panel boundary) give the dense stack.
            let other = linear(32, cols_in);
            let want = Linear::fuse(&[dense.clone(), other.clone()])
                .unwrap()
                .forward(&x)
                .unwrap();
            let got = Linear::fuse(&[packed(&dense), packed(&other)]).unwrap();
            assert!(matches!(got.weight, ProjectionWeight::Packed(_)));
            assert_close(&format!("fused {lead:?}"), &got.forward(&x).unwrap(), &want, 2e-6);
            // Quantizing a packed weight quantizes the weight it holds.
            let (mut q_dense, mut q_packed) = (dense.clone(), packed(&dense));
            assert!(q_dense.quantize(Quantization::Int8).unwrap() && q_packed.quantize(Quantization::Int8).unwrap());
            assert_eq!(
                bits(&q_packed.forward(&x).unwrap()),
                bits(&q_dense.forward(&x).unwrap())
            );
        }
    }

    #[test]
    fn quantize_keeps_the_dims_and_out_dim_reads_them() {
        for q in [Quantization::Ggml(GgmlDType::Q8_0), Quantization::Int8] {
            let mut layer = linear(8, 64);
            assert!(layer.quantize(q).unwrap(), "{q:?}");
            assert_eq!(layer.out_dim().unwrap(), 8);
            assert_eq!(layer.weight.dims().unwrap(), (8, 64));
            assert!(!layer.quantize(q).unwrap(), "{q:?} twice");
        }
        assert!(
            !linear(8, 48).quantize(Quantization::Ggml(GgmlDType::Q4K)).unwrap(),
            "48 is not a multiple of 256"
        );
        let mut half = linear(8, 64);
        half.weight = ProjectionWeight::Dense(wave((8, 64), 0.2, 0.3, 0.0).to_dtype(DType::F16).unwrap());
        assert!(matches!(
            half.quantize(Quantization::Int8),
            Err(Error::InvalidArgument {
                argument: "quantization",
                ..
            })
        ));
    }
}
