//! `y ← act(y + bias)` in place over a GEMM's output (bias over the last dimension), or `y ← act(y)` alone; and
//! the GEMMs' epilogue, which adds a residual connection after them.

use std::sync::Arc;

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::math::avx512;
use super::math::{gelu_erf_with, quick_gelu_with};
use super::{apply_in_place, contiguous_mut, with_host_f32, Isa, Param, MIN_CHUNK};
use crate::config::Activation;
use crate::error::Result;
use crate::kernels::{self, Fresh, Kernels};

/// The activations with a fused form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Act {
    None,
    GeluErf,
    QuickGelu,
}

impl Act {
    /// The fused form of `act`, `None` where there is none.
    pub(super) fn of(act: Option<Activation>) -> Option<Act> {
        match act {
            None => Some(Act::None),
            Some(Activation::Gelu) => Some(Act::GeluErf),
            Some(Activation::QuickGelu) => Some(Act::QuickGelu),
            Some(Activation::GeluTanh | Activation::Relu | Activation::Silu) => None,
        }
    }
}

/// The fused `y ← act(y + bias)`, prepared by [`try_bias_act`] for one shape of `y`.
#[derive(Debug)]
pub(crate) struct BiasAct {
    bias: Option<Arc<[f32]>>,
    act: Act,
    shape: Shape,
    isa: Isa,
}

/// The fused kernel for `act(y + bias)` on a `y` shaped like `y`, or `None` where it does not apply: the generic
/// path forced ([`crate::kernels::Kernels`]), `y` not on the CPU in f32, a bias without a host copy or of another
/// width than `y`'s last dimension, an activation without a fused form, or nothing to do (no bias, no activation).
/// Contiguity is the [`Fresh`] tensor's.
pub(crate) fn try_bias_act(y: &Tensor, bias: Option<&Param>, act: Option<Activation>) -> Result<Option<BiasAct>> {
    if kernels::selected()? == Kernels::Generic {
        return Ok(None);
    }
    Ok(prepare(y, bias, act))
}

/// [`try_bias_act`]'s eligibility test and preparation.
fn prepare(y: &Tensor, bias: Option<&Param>, act: Option<Activation>) -> Option<BiasAct> {
    let act = Act::of(act)?;
    if !y.device().is_cpu() || y.dtype() != DType::F32 {
        return None;
    }
    let bias = match bias {
        None => None,
        Some(b) => {
            let host = b.host.as_ref()?;
            if y.dims().last() != Some(&host.len()) {
                return None;
            }
            Some(host.clone())
        }
    };
    if bias.is_none() && act == Act::None {
        return None;
    }
    Some(BiasAct {
        bias,
        act,
        shape: y.shape().clone(),
        isa: Isa::best(),
    })
}

impl BiasAct {
    /// Runs the kernel on `y`, in place; `y` must have the shape the kernel was prepared for.
    pub(crate) fn apply(self, y: Fresh) -> Result<Tensor> {
        apply_in_place(&self, &self.shape, y)
    }
}

/// What each finished tile of a projection's GEMM gets: `act(y + bias) + residual`.
#[derive(Clone, Copy)]
pub(super) struct Epilogue<'a> {
    pub(super) bias: Option<&'a [f32]>,
    pub(super) act: Act,
    /// A residual connection's (rows, out) values, added last (the pre-LN layers' `x + attention(…)`).
    pub(super) residual: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    /// Neither bias nor activation nor residual.
    #[cfg(test)]
    pub(super) const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        act: Act::None,
        residual: None,
    };

    /// Applies to `values`, output row `row`'s columns `col .. col + values.len()` of an output `width` wide; the
    /// activation's multiply-adds fused where `FMA` (code compiled with FMA only).
    #[inline(always)]
    pub(super) fn apply<const FMA: bool>(&self, values: &mut [f32], (row, col): (usize, usize), width: usize) {
        bias_act_rows::<FMA>(values, self.bias.map(|b| &b[col..col + values.len()]), self.act);
        if let Some(r) = self.residual {
            for (v, r) in values.iter_mut().zip(&r[row * width + col..]) {
                *v += r;
            }
        }
    }

    /// [`Epilogue::apply`]`::<true>` on the 16 values `y` of output row `row`, columns `col .. col + 16`, of an
    /// output `width` wide, in AVX-512 registers: bias, activation (`math::avx512`), residual, each value bit for
    /// bit as the scalar form makes it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn apply_vector(
        &self,
        y: std::arch::x86_64::__m512,
        (row, col): (usize, usize),
        width: usize,
    ) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::{_mm512_add_ps, _mm512_loadu_ps};
        const LANES: usize = 16;
        let mut y = y;
        if let Some(b) = self.bias {
            let b = &b[col..col + LANES];
            // SAFETY: `b` is 16 values, the 64 bytes the load reads.
            y = _mm512_add_ps(y, unsafe { _mm512_loadu_ps(b.as_ptr()) });
        }
        y = match self.act {
            Act::None => y,
            Act::GeluErf => avx512::gelu_erf(y),
            Act::QuickGelu => avx512::quick_gelu(y),
        };
        if let Some(r) = self.residual {
            let at = row * width + col;
            let r = &r[at..at + LANES];
            // SAFETY: `r` is 16 values.
            y = _mm512_add_ps(y, unsafe { _mm512_loadu_ps(r.as_ptr()) });
        }
        y
    }

    /// An error naming `op` unless the residual, if any, has the (rows, width) output's shape: what
    /// [`Epilogue::apply`]'s reads need.
    pub(super) fn check_fits(&self, op: &str, (rows, width): (usize, usize)) -> candle_core::Result<()> {
        match self.residual {
            Some(r) if r.len() != rows * width => {
                candle_core::bail!("{op}: residual not of the output's shape ({rows}, {width})")
            }
            _ => Ok(()),
        }
    }
}

/// A projection's bias, activation and residual as its GEMM's epilogue applies them: all where bias and activation
/// have a fused form (GELU erf, quick_gelu, none; a bias with a host copy as wide as the output) and the residual
/// is f32 on the CPU in the output's shape, else none, and [`Fused::run`] applies them after the product by
/// candle's ops.
pub(super) struct Fused {
    bias: Option<Arc<[f32]>>,
    act: Act,
    complete: bool,
}

impl Fused {
    /// `act(x Wᵀ + bias) + residual` for `x` (rows, in), where `product` runs the GEMM with the epilogue it is
    /// given on `x`'s f32 values; `width` is the output's.
    pub(super) fn run(
        x: &Tensor,
        (bias, act, residual): (Option<&Param>, Option<Activation>, Option<&Tensor>),
        width: usize,
        product: impl Fn(&Tensor, Epilogue) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let fused = Self::of(bias, act, width);
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let rows = x.dim(0)?;
        let fitting = residual.filter(|r| fused.complete && r.dims() == [rows, width]);
        if let Some(r) = fitting {
            let fused_run = with_host_f32(r, |r| product(&x, fused.epilogue(Some(r))))?;
            if let Some(y) = fused_run {
                return y;
            }
        }
        plus_residual(fused.finish(product(&x, fused.epilogue(None))?, bias, act)?, residual)
    }

    /// The epilogue for `act(y + bias)` on an output `width` wide.
    fn of(bias: Option<&Param>, act: Option<Activation>, width: usize) -> Self {
        let bias_fits = |b: &Param| b.host.as_ref().is_some_and(|h| h.len() == width);
        match Act::of(act).filter(|_| bias.is_none_or(bias_fits)) {
            Some(act) => Self {
                bias: bias.and_then(|b| b.host.clone()),
                act,
                complete: true,
            },
            None => Self {
                bias: None,
                act: Act::None,
                complete: false,
            },
        }
    }

    /// What the GEMM applies to each finished tile, with `residual` (taken only where bias and activation are).
    fn epilogue<'a>(&'a self, residual: Option<&'a [f32]>) -> Epilogue<'a> {
        Epilogue {
            bias: self.bias.as_deref(),
            act: self.act,
            residual: residual.filter(|_| self.complete),
        }
    }

    /// `y`, the GEMM's output, with what its epilogue did not apply of `bias` and `act` (the ones given to
    /// [`Fused::of`]).
    fn finish(&self, y: Tensor, bias: Option<&Param>, act: Option<Activation>) -> Result<Tensor> {
        if self.complete {
            return Ok(y);
        }
        bias_then_act(y, bias, act)
    }
}

/// `y + residual` by candle's ops (`y` alone without one): a residual no GEMM epilogue took.
pub(crate) fn plus_residual(y: Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
    Ok(match residual {
        Some(r) => (y + r)?,
        None => y,
    })
}

/// `act(y + bias)` by candle's ops, on any device and dtype: what no fused kernel took.
pub(crate) fn bias_then_act(y: Tensor, bias: Option<&Param>, act: Option<Activation>) -> Result<Tensor> {
    let y = match bias {
        Some(b) => y.broadcast_add(b.tensor())?,
        None => y,
    };
    match act {
        Some(act) => act.forward(&y),
        None => Ok(y),
    }
}

#[inline(always)]
pub(super) fn bias_act_rows<const FMA: bool>(data: &mut [f32], bias: Option<&[f32]>, a: Act) {
    match (bias, a) {
        (Some(b), Act::None) => data.chunks_exact_mut(b.len()).for_each(|row| {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }),
        (Some(b), Act::GeluErf) => data.chunks_exact_mut(b.len()).for_each(|row| {
            row.iter_mut()
                .zip(b)
                .for_each(|(v, b)| *v = gelu_erf_with::<FMA>(*v + b));
        }),
        (Some(b), Act::QuickGelu) => data.chunks_exact_mut(b.len()).for_each(|row| {
            row.iter_mut()
                .zip(b)
                .for_each(|(v, b)| *v = quick_gelu_with::<FMA>(*v + b));
        }),
        (None, Act::None) => {}
        (None, Act::GeluErf) => data.iter_mut().for_each(|v| *v = gelu_erf_with::<FMA>(*v)),
        (None, Act::QuickGelu) => data.iter_mut().for_each(|v| *v = quick_gelu_with::<FMA>(*v)),
    }
}

fn bias_act_slice(isa: Isa, data: &mut [f32], bias: Option<&[f32]>, a: Act) {
    let fma = isa.has_fma();
    dispatch!(isa, (data: &mut [f32], bias: Option<&[f32]>, a: Act, fma: bool) {
        if fma {
            bias_act_rows::<true>(data, bias, a)
        } else {
            bias_act_rows::<false>(data, bias, a)
        }
    })
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
            .for_each(|c| bias_act_slice(self.isa, c, bias, self.act));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::kernels::cpu::math::{gelu_erf, quick_gelu};
    use crate::kernels::cpu::testing::{bits, bits_of, for_each_isa, values, wave};

    fn bias(n: usize) -> Param {
        Param::new(wave(n, 0.5, 1.0, 0.1)).unwrap()
    }

    #[test]
    fn try_bias_act_takes_cpu_f32_and_declines_the_rest() {
        let y = wave((3, 8), 2.0, 0.0, 0.0);
        let b = bias(8);
        assert!(try_bias_act(&y, Some(&b), None).unwrap().is_some(), "bias alone");
        assert!(
            try_bias_act(&y, Some(&b), Some(Activation::Gelu)).unwrap().is_some(),
            "bias + gelu"
        );
        assert!(
            try_bias_act(&y, None, Some(Activation::QuickGelu)).unwrap().is_some(),
            "quick_gelu alone"
        );
        // A non-contiguous input is fine: the kernel runs on a `Fresh` copy, which is contiguous.
        assert!(
            try_bias_act(&y.t().unwrap(), None, Some(Activation::Gelu))
                .unwrap()
                .is_some(),
            "transposed"
        );
        assert!(try_bias_act(&y, None, None).unwrap().is_none(), "nothing to do");
        assert!(
            try_bias_act(&y, Some(&b), Some(Activation::Relu)).unwrap().is_none(),
            "no fused relu"
        );
        assert!(try_bias_act(&y, Some(&bias(5)), None).unwrap().is_none(), "bias width");
        let y16 = y.to_dtype(DType::F16).unwrap();
        assert!(
            try_bias_act(&y16, None, Some(Activation::Gelu)).unwrap().is_none(),
            "f16"
        );
        let b16 = Param::new(b.tensor().to_dtype(DType::F16).unwrap()).unwrap();
        assert!(
            try_bias_act(&y, Some(&b16), None).unwrap().is_none(),
            "bias without a host copy"
        );
    }

    #[test]
    fn apply_checks_the_prepared_shape() {
        let y = wave((3, 8), 2.0, 0.0, 0.0);
        let kernel = try_bias_act(&y, None, Some(Activation::Gelu)).unwrap().unwrap();
        let other = Fresh::copy(&Tensor::zeros((4, 8), DType::F32, &Device::Cpu).unwrap()).unwrap();
        assert!(kernel.apply(other).is_err());
    }

    #[test]
    fn every_instruction_set_matches_the_scalar_forms() {
        // Rust keeps IEEE semantics (no reassociation, no FMA contraction): every path gives the bits of the scalar
        // functions, the fused multiply-add forms where the level has FMA.
        for (rows, cols) in [(1, 7), (5, 64), (300, 130)] {
            let y = wave((rows, cols), 3.0, 0.3, 0.0);
            let b = bias(cols);
            let (ys, bs) = (values(&y), values(b.tensor()));
            for act in [None, Some(Activation::Gelu), Some(Activation::QuickGelu)] {
                for_each_isa("bias_act", |isa| {
                    let mut kernel = try_bias_act(&y, Some(&b), act).unwrap().unwrap();
                    kernel.isa = isa;
                    let got = kernel.apply(Fresh::copy(&y).unwrap()).unwrap();
                    let scalar = |v: f32| match (act, isa.has_fma()) {
                        (None, _) => v,
                        (Some(Activation::Gelu), fma) => {
                            if fma {
                                gelu_erf_with::<true>(v)
                            } else {
                                gelu_erf(v)
                            }
                        }
                        (_, fma) => {
                            if fma {
                                quick_gelu_with::<true>(v)
                            } else {
                                quick_gelu(v)
                            }
                        }
                    };
                    let want: Vec<f32> = ys.iter().enumerate().map(|(i, v)| scalar(v + bs[i % cols])).collect();
                    assert_eq!(bits(&got), bits_of(&want), "{isa:?} {act:?}");
                });
            }
        }
    }
}
