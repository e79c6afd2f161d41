//! Fused kernels behind the layers of [`crate::nn`], one folder per device (`cpu` today; `cuda` to come), and the
//! [`Fresh`] tensor the in-place ones write into. Only `crate::nn` calls in here, each kernel through one `try_…`
//! entry point that returns `None` where the kernel does not apply. `unsafe` lives only under this folder.
//!
//! `ALTCLIP_KERNELS=generic` (read once per process) makes every `try_…` decline, so that the CPU runs the generic
//! candle ops every other device runs, and the parity tests prove that math too (`.ci/run` runs them both ways).

pub(crate) mod cpu;
mod selection;

#[cfg(test)]
pub(crate) use selection::testing;
pub(crate) use selection::{selected, Kernels};

use candle_core::quantized::QMatMul;
use candle_core::{DType, Module, Tensor};

use crate::error::Result;

/// A contiguous tensor in storage that nothing else holds, so that an in-place kernel may overwrite it: the
/// in-place kernels take one by value. It can only be made here, by an op that writes new storage (a matmul, a
/// quantized matmul, a copy); don't clone the tensor out of [`Fresh::as_tensor`] and keep it.
#[derive(Debug)]
pub(crate) struct Fresh(Tensor);

impl Fresh {
    /// `a · b`: candle's matmul writes its product into new contiguous storage.
    pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Self> {
        Ok(Self(a.matmul(b)?))
    }

    /// `x Wᵀ` for a quantized weight `q` and `x` (rows, in), in `x`'s dtype. The quantized matmul runs in f32 and
    /// writes new storage; converting back to `x`'s dtype either keeps that sole handle or writes new storage again.
    pub(crate) fn qmatmul(q: &QMatMul, x: &Tensor) -> Result<Self> {
        let y = q.forward(&x.to_dtype(DType::F32)?.contiguous()?)?;
        Ok(Self(y.to_dtype(x.dtype())?))
    }

    /// The output of one of this folder's CPU ops (`apply_op1_no_bwd`), which always writes new contiguous storage.
    pub(crate) fn custom(t: Tensor) -> Self {
        Self(t)
    }

    /// A copy of `t` in new contiguous storage (also when `t` is contiguous already).
    pub(crate) fn copy(t: &Tensor) -> Result<Self> {
        Ok(Self(t.force_contiguous()?))
    }

    /// The tensor, to read (shape, dtype, device).
    pub(crate) fn as_tensor(&self) -> &Tensor {
        &self.0
    }

    /// The tensor, giving up the right to update it in place.
    pub(crate) fn into_tensor(self) -> Tensor {
        self.0
    }
}
