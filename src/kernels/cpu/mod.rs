//! CPU kernels: the projections' f32 GEMM (the crate's own, over weights packed at load, f32 or int8 codes),
//! dynamic-int8 GEMM (AMX tiles where granted, else AVX-512 VNNI, both the crate's own, else weight-only on the f32
//! kernel where the integer dot product is slow, else `rten-gemm`), whose epilogue adds bias, activation and a
//! residual; attention (scores, softmax and context per head, in one pass over the projection's rows), and the
//! elementwise work around them — bias + activation, layer norm — each one parallel (rayon) pass written so that
//! LLVM vectorises it, compiled for AVX-512 / AVX2+FMA / baseline and picked at run time ([`Isa`],
//! `dispatch!`). Called only by `crate::nn`, through the `try_…` functions and types re-exported here.

use std::sync::Arc;

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Shape, Tensor};

use crate::error::Result;
use crate::kernels::Fresh;

/// Runs `$body` compiled for `$isa`'s instruction set: AVX-512F, AVX2+FMA or the baseline target.
macro_rules! dispatch {
    ($isa:expr, ( $($arg:ident : $ty:ty),* ) $body:block) => {
        dispatch!($isa, ( $($arg : $ty),* ) -> () $body)
    };
    ($isa:expr, ( $($arg:ident : $ty:ty),* ) -> $ret:ty $body:block) => {{
        #[inline(always)]
        fn generic($($arg: $ty),*) -> $ret $body
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn v4($($arg: $ty),*) -> $ret { generic($($arg),*) }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn v3($($arg: $ty),*) -> $ret { generic($($arg),*) }
            match $crate::kernels::cpu::Isa::level($isa) {
                // SAFETY: an `Isa` is only made for a level the CPU supports (see `Isa::new`), here AVX-512F + AVX2
                // + FMA, the features v4 was compiled for.
                $crate::kernels::cpu::Level::Avx512 => unsafe { v4($($arg),*) },
                // SAFETY: as above, for v3 and AVX2 + FMA.
                $crate::kernels::cpu::Level::Avx2Fma => unsafe { v3($($arg),*) },
                $crate::kernels::cpu::Level::Baseline => generic($($arg),*),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $isa;
            generic($($arg),*)
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod amx;
mod attention;
mod bias_act;
mod int8;
mod layer_norm;
mod math;
mod memory;
mod packed;
mod transpose;
#[cfg(target_arch = "x86_64")]
mod vnni;

pub(crate) use attention::try_attention;
pub(crate) use bias_act::{bias_then_act, plus_residual, try_bias_act};
pub(crate) use int8::Int8Weight;
pub(crate) use isa::{Isa, Level};
pub(crate) use layer_norm::try_layer_norm;
pub(crate) use memory::{retain_freed_memory, weight_buffer};
pub(crate) use packed::PackedWeight;

/// Whether the CPU has AVX-512 VNNI, where candle's GGML quantized kernels are fast.
pub(crate) fn has_vnni512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Elements handed to one rayon task: enough work to amortise the task, enough tasks to balance.
const MIN_CHUNK: usize = 16 * 1024;

mod isa {
    /// An instruction set the kernels are compiled for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Level {
        /// AVX-512F (with AVX2 and FMA).
        Avx512,
        /// AVX2 and FMA.
        Avx2Fma,
        /// The compilation target's baseline.
        Baseline,
    }

    impl Level {
        /// Every level, best first.
        pub(crate) const ALL: [Level; 3] = [Level::Avx512, Level::Avx2Fma, Level::Baseline];

        fn supported(self) -> bool {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                match self {
                    Level::Avx512 => has!("avx512f") && has!("avx2") && has!("fma"),
                    Level::Avx2Fma => has!("avx2") && has!("fma"),
                    Level::Baseline => true,
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                self == Level::Baseline
            }
        }
    }

    /// A [`Level`] the running CPU supports: what `dispatch!`'s `unsafe` calls rest on, so it is only made (in
    /// this module) by [`Isa::new`], which asks the CPU.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Isa(Level);

    impl Isa {
        /// `level`, where the CPU supports it.
        pub(crate) fn new(level: Level) -> Option<Self> {
            level.supported().then_some(Self(level))
        }

        /// The best level the CPU supports.
        pub(crate) fn best() -> Self {
            Level::ALL
                .into_iter()
                .find_map(Self::new)
                .unwrap_or(Self(Level::Baseline))
        }

        /// Which level this is.
        pub(crate) fn level(self) -> Level {
            self.0
        }

        /// Whether this level's code has FMA, so that `mul_add` is one instruction (at the baseline it is a call
        /// to libm's `fmaf`).
        pub(crate) fn has_fma(self) -> bool {
            self.0 != Level::Baseline
        }
    }
}

/// A layer's parameter tensor with, when it lives on the CPU in f32, a host copy for the kernels.
#[derive(Debug, Clone)]
pub(crate) struct Param {
    tensor: Tensor,
    host: Option<Arc<[f32]>>,
}

impl Param {
    /// Wraps `tensor`, copying it to a host slice when it lives on the CPU in f32.
    pub(crate) fn new(tensor: Tensor) -> Result<Self> {
        let host = if tensor.device().is_cpu() && tensor.dtype() == DType::F32 {
            Some(Arc::from(tensor.flatten_all()?.to_vec1::<f32>()?))
        } else {
            None
        };
        Ok(Self { tensor, host })
    }

    /// The tensor, for the generic path.
    pub(crate) fn tensor(&self) -> &Tensor {
        &self.tensor
    }
}

/// Runs the in-place `op`, prepared for `prepared`, on `y`; errors unless `y` has that shape.
fn apply_in_place(op: &impl InplaceOp1, prepared: &Shape, y: Fresh) -> Result<Tensor> {
    let y = y.into_tensor();
    if y.shape() != prepared {
        let msg = format!(
            "{}: prepared for shape {prepared:?}, applied to {:?}",
            op.name(),
            y.shape()
        );
        return Err(candle_core::Error::Msg(msg).into());
    }
    y.inplace_op1(op)?;
    Ok(y)
}

fn contiguous_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 only");
    };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&mut data[a..b]),
        None => candle_core::bail!("{op}: contiguous input only"),
    }
}

/// Runs `f` on `t`'s values read in place (copied first only where `t` is not contiguous), or returns `None`
/// where `t` is not f32 on the CPU.
pub(crate) fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<Option<R>> {
    if t.dtype() != DType::F32 {
        return Ok(None);
    }
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(storage) = &*storage else {
        return Ok(None);
    };
    Ok(Some(f(contiguous(storage, layout, "reading f32 values")?)))
}

/// `dst[..n] ← src[..n]` for `n ≤ W`: where `n` is `W`, a copy of constant length, which compiles to a few
/// vector moves instead of a call to `memmove` (0.8 % of int8 text 32 × 16's samples in the attention kernel's
/// 64-value copies, Zen 4).
#[inline(always)]
fn copy_up_to<const W: usize>(dst: &mut [f32], src: &[f32], n: usize) {
    if n == W {
        dst[..W].copy_from_slice(&src[..W]);
    } else {
        dst[..n].copy_from_slice(&src[..n]);
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

/// Helpers for the kernels' tests and the layers' fused-vs-generic tests.
#[cfg(test)]
pub(crate) mod testing {
    use candle_core::{DType, Device, Shape, Tensor};

    use super::{Isa, Level};

    /// Deterministic values of `shape`: `amplitude · sin(0.37·i + phase) + offset`.
    pub(crate) fn wave(shape: impl Into<Shape>, amplitude: f64, phase: f64, offset: f64) -> Tensor {
        let shape = shape.into();
        let n = shape.elem_count() as u32;
        let i = Tensor::arange(0u32, n, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let x = i.affine(0.37, phase).unwrap().sin().unwrap();
        x.affine(amplitude, offset).unwrap().reshape(shape).unwrap()
    }

    /// The tensor's values, flattened, as f32.
    pub(crate) fn values(t: &Tensor) -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Asserts `|a − b| ≤ tol · (1 + |b|)` elementwise (and equal shapes).
    pub(crate) fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
        assert_eq!(a.dims(), b.dims(), "{what}: shapes");
        let worst = values(a)
            .iter()
            .zip(values(b))
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0f32, f32::max);
        assert!(worst <= tol, "{what}: worst error {worst:e} over {tol:e}");
    }

    /// Runs `f` for every instruction set the CPU supports, printing the ones it skips.
    pub(crate) fn for_each_isa(what: &str, mut f: impl FnMut(Isa)) {
        for level in Level::ALL {
            match Isa::new(level) {
                Some(isa) => f(isa),
                None => println!("{what}: skipped {level:?}, which this CPU does not support"),
            }
        }
    }

    /// The bits of `t`'s values, to compare two runs exactly.
    pub(crate) fn bits(t: &Tensor) -> Vec<u32> {
        bits_of(&values(t))
    }

    /// The bits of `values`, to compare two runs exactly.
    pub(crate) fn bits_of(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::wave;
    use super::*;
    use crate::config::Activation;
    use crate::kernels::testing::with_kernels;
    use crate::kernels::Kernels;

    /// Which of the kernels accept inputs they all fit, under `kernels`.
    fn accepted(kernels: Kernels) -> [bool; 3] {
        let y = wave((3, 8), 2.0, 0.0, 0.0);
        let (w, b) = (
            Param::new(wave(8, 0.3, 0.2, 1.0)).unwrap(),
            Param::new(wave(8, 0.2, 0.9, 0.0)).unwrap(),
        );
        let qkv = wave((2, 5, 12), 2.0, 0.0, 0.0);
        let mask = wave((2, 1, 1, 5), 1.0, 0.0, 0.0);
        with_kernels(kernels, || {
            [
                try_bias_act(&y, Some(&b), Some(Activation::Gelu)).unwrap().is_some(),
                try_attention(&qkv, 2, 0.5, Some(&mask), 5).unwrap().is_some(),
                try_layer_norm(&y, Some(&y), &w, &b, 1e-5).unwrap().is_some(),
            ]
        })
    }

    #[test]
    fn the_generic_switch_makes_every_try_decline() {
        assert_eq!(
            accepted(Kernels::Fused),
            [true; 3],
            "bias_act, attention, layer_norm take these inputs"
        );
        assert_eq!(
            accepted(Kernels::Generic),
            [false; 3],
            "bias_act, attention, layer_norm decline"
        );
    }
}
