//! f32 GEMMs through `rten-gemm`, whose kernels are picked at run time (AVX-512F, AVX2+FMA, baseline): attention's
//! per-head products as one batched call, parallel over batch × heads ([`try_batched_matmul`]). The projections
//! take the crate's own kernel over weights packed at load (`packed`): rten's packs its weight operand per call,
//! which cost it half the speed on the text tower's short inputs (BENCHMARKS.md).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rten_gemm::{GemmExecutor, GemmInputA, GemmInputB, GemmUninitOptions};
use rten_tensor::NdTensorView;

use super::contiguous;
use crate::error::Result;
use crate::kernels::{self, Fresh, Kernels};

/// What the product needs: the fused kernels allowed, both operands f32 on the CPU.
fn applies(a: &Tensor, b: &Tensor) -> Result<bool> {
    Ok(kernels::selected()? == Kernels::Fused
        && a.device().is_cpu()
        && b.device().is_cpu()
        && a.dtype() == DType::F32
        && b.dtype() == DType::F32)
}

/// Whether `b`'s last two dims are to be read transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rhs {
    /// `a · b` for `b` (…, k, n).
    AsIs,
    /// `a · bᵀ` for `b` (…, n, k).
    Transposed,
}

/// Batched `a · b` (or `a · bᵀ`) over the leading dims of contiguous f32 CPU tensors — attention's per-head
/// products, as one parallel loop over batch × heads (candle's batched matmul runs them one after another, each
/// too small to keep the cores busy) — or `None` where it does not apply.
pub(crate) fn try_batched_matmul(a: &Tensor, b: &Tensor, rhs: Rhs) -> Result<Option<Fresh>> {
    if !applies(a, b)? || a.rank() < 3 || a.rank() != b.rank() || !a.is_contiguous() || !b.is_contiguous() {
        return Ok(None);
    }
    Ok(Some(Fresh::custom(a.apply_op2_no_bwd(b, &BatchedMatMul(rhs))?)))
}

/// The candle op behind [`try_batched_matmul`]: `a · b` or `a · bᵀ` over the leading dims.
struct BatchedMatMul(Rhs);

impl CustomOp2 for BatchedMatMul {
    fn name(&self) -> &'static str {
        "altclip-batched-matmul"
    }

    fn cpu_fwd(
        &self,
        a_storage: &CpuStorage,
        a_layout: &Layout,
        b_storage: &CpuStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (
            contiguous(a_storage, a_layout, self.name())?,
            contiguous(b_storage, b_layout, self.name())?,
        );
        let (ad, bd) = (a_layout.dims(), b_layout.dims());
        let r = ad.len();
        let (m, k) = (ad[r - 2], ad[r - 1]);
        let (kb, n) = match self.0 {
            Rhs::AsIs => (bd[r - 2], bd[r - 1]),
            Rhs::Transposed => (bd[r - 1], bd[r - 2]),
        };
        if ad[..r - 2] != bd[..r - 2] || k != kb {
            candle_core::bail!("{}: cannot multiply {ad:?} by {bd:?} ({:?})", self.name(), self.0);
        }
        let batch: usize = ad[..r - 2].iter().product();
        let y = matmul(a, b, batch, (m, k, n), self.0)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", self.name())))?;
        let mut dims = ad[..r - 2].to_vec();
        dims.extend([m, n]);
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

/// The `batch` products into new storage, written once (no zero fill).
fn matmul(
    a: &[f32],
    b: &[f32],
    batch: usize,
    (m, k, n): (usize, usize, usize),
    rhs: Rhs,
) -> std::result::Result<Vec<f32>, String> {
    let lhs = a
        .chunks_exact(m * k)
        .map(|a| GemmInputA::Unpacked(NdTensorView::from_data([m, k], a)))
        .collect::<Vec<_>>();
    let strides = match rhs {
        Rhs::AsIs => [n, 1],
        Rhs::Transposed => [1, k],
    };
    let rhs = b
        .chunks_exact(k * n)
        .map(|b| {
            Ok(GemmInputB::Unpacked(
                NdTensorView::from_data_with_strides([k, n], b, strides).map_err(|e| format!("{e:?}"))?,
            ))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let mut y: Vec<f32> = Vec::with_capacity(batch * m * n);
    let written = GemmExecutor::<f32>::new()
        .batched_gemm_uninit(
            &mut y.spare_capacity_mut()[..batch * m * n],
            &lhs,
            &rhs,
            GemmUninitOptions::default(),
        )
        .map_err(|e| e.to_string())?
        .len();
    // SAFETY: `batched_gemm_uninit` returned the first `batch · m · n` elements initialised (it errors otherwise),
    // and the capacity is that.
    unsafe { y.set_len(written) };
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::testing::{assert_close, wave};
    use crate::kernels::testing::with_kernels;

    #[test]
    fn batched_products_match_candles_batched_matmul() {
        for (lead, m, k, n) in [(vec![1, 1], 1, 1, 1), (vec![2, 3], 5, 7, 9), (vec![2, 16], 50, 64, 50)] {
            let dims = |r: usize, c: usize| [lead.clone(), vec![r, c]].concat();
            let a = wave(dims(m, k), 1.0, 0.3, 0.0);
            let b = wave(dims(k, n), 1.0, 0.7, 0.1);
            let bt = wave(dims(n, k), 1.0, 0.5, 0.0);
            let got = try_batched_matmul(&a, &b, Rhs::AsIs).unwrap().unwrap();
            assert_close(
                &format!("{lead:?} as is"),
                got.as_tensor(),
                &a.matmul(&b).unwrap(),
                2e-6,
            );
            let got = try_batched_matmul(&a, &bt, Rhs::Transposed).unwrap().unwrap();
            let want = a.matmul(&bt.t().unwrap()).unwrap();
            assert_close(&format!("{lead:?} transposed"), got.as_tensor(), &want, 2e-6);
        }
        let (a, b) = (wave((2, 3, 4), 1.0, 0.0, 0.0), wave((2, 4, 5), 1.0, 0.0, 0.0));
        assert!(with_kernels(Kernels::Generic, || try_batched_matmul(&a, &b, Rhs::AsIs).unwrap()).is_none());
        assert!(
            try_batched_matmul(&a, &b.t().unwrap(), Rhs::AsIs).unwrap().is_none(),
            "not contiguous"
        );
        assert!(
            try_batched_matmul(&a, &b, Rhs::Transposed).is_err(),
            "4 columns of a, 5 of b"
        );
        let other_batch = wave((3, 4, 5), 1.0, 0.0, 0.0);
        assert!(try_batched_matmul(&a, &other_batch, Rhs::AsIs).is_err());
    }
}
