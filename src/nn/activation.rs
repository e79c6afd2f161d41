//! `impl Activation::forward`: the activations of transformers' `ACT2FN`, elementwise.

use candle_core::Tensor;

use crate::config::Activation;
use crate::error::Result;
use crate::kernels::{cpu, Fresh};

impl Activation {
    /// Applies the activation elementwise.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match cpu::try_bias_act(x, None, Some(*self))? {
            Some(kernel) => kernel.apply(Fresh::copy(x)?),
            None => self.forward_generic(x),
        }
    }

    /// The activation in candle ops, as every device but the CPU (in f32) runs it.
    pub(super) fn forward_generic(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Gelu => x.gelu_erf()?,
            Activation::GeluTanh => x.gelu()?,
            Activation::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            Activation::Relu => x.relu()?,
            Activation::Silu => candle_nn::ops::silu(x)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::testing::{assert_close, wave};

    #[test]
    fn fused_activations_match_the_generic_path() {
        for dims in [vec![7], vec![3, 64], vec![2, 50, 130]] {
            let x = wave(dims.clone(), 6.0, 0.2, 0.0);
            // The fused GELU's tolerance is `fast_exp_and_gelu_match_libm`'s (f32 cancellation in 1 + erf).
            for (act, tol) in [(Activation::Gelu, 1.5e-6), (Activation::QuickGelu, 1e-6)] {
                assert!(cpu::try_bias_act(&x, None, Some(act)).unwrap().is_some());
                let fused = act.forward(&x).unwrap();
                assert_close(
                    &format!("{act:?} {dims:?}"),
                    &fused,
                    &act.forward_generic(&x).unwrap(),
                    tol,
                );
            }
        }
    }

    #[test]
    fn forward_leaves_its_input_alone() {
        let x = wave((4, 16), 3.0, 0.0, 0.0);
        let before = crate::kernels::cpu::testing::bits(&x);
        Activation::Gelu.forward(&x).unwrap();
        assert_eq!(crate::kernels::cpu::testing::bits(&x), before);
    }
}
