//! f32 GEMMs through `rten-gemm`, whose kernels are picked at run time (AVX-512F, AVX2+FMA, baseline): attention's
//! per-head products as one batched call, parallel over batch × heads, each head read in place from strided rows
//! ([`try_batched_matmul`]). The projections take the crate's own kernel over weights packed at load (`packed`):
//! rten's packs its weight operand per call, which cost it half the speed on the text tower's short inputs
//! (BENCHMARKS.md).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rten_gemm::{GemmExecutor, GemmInputA, GemmInputB, GemmUninitOptions};
use rten_tensor::NdTensorView;

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

/// Batched `a · b` (or `a · bᵀ`) over the leading dims of f32 CPU tensors whose last dim is contiguous —
/// attention's per-head products, as one parallel loop over batch × heads (candle's batched matmul runs them one
/// after another, each too small to keep the cores busy), each head's rows read where the projection wrote them
/// (any strides for the other dims: no copy into head-major order) — or `None` where it does not apply.
pub(crate) fn try_batched_matmul(a: &Tensor, b: &Tensor, rhs: Rhs) -> Result<Option<Fresh>> {
    let rows_in_place = |t: &Tensor| t.stride().last() == Some(&1);
    if !applies(a, b)? || a.rank() < 3 || a.rank() != b.rank() || !rows_in_place(a) || !rows_in_place(b) {
        return Ok(None);
    }
    Ok(Some(Fresh::custom(a.apply_op2_no_bwd(b, &BatchedMatMul(rhs))?)))
}

/// One operand's matrices: where each of the batch's starts in the storage, the row stride, rows × columns.
struct Matrices<'a> {
    data: &'a [f32],
    starts: Vec<usize>,
    row_stride: usize,
    dims: (usize, usize),
}

impl<'a> Matrices<'a> {
    /// The matrices of `layout` (last dim contiguous) over `storage`, in row-major order of the leading dims.
    fn of(storage: &'a CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<Self> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{op}: f32 only");
        };
        let (dims, stride) = (layout.dims(), layout.stride());
        let r = dims.len();
        if r < 2 || stride[r - 1] != 1 {
            candle_core::bail!("{op}: rows must be contiguous, not {dims:?} at strides {stride:?}");
        }
        let mut starts = vec![layout.start_offset()];
        for (&d, &st) in dims[..r - 2].iter().zip(&stride[..r - 2]) {
            starts = starts.iter().flat_map(|&s| (0..d).map(move |i| s + i * st)).collect();
        }
        Ok(Self {
            data,
            starts,
            row_stride: stride[r - 2],
            dims: (dims[r - 2], dims[r - 1]),
        })
    }

    /// Matrix `i`'s values, from its first to its last.
    fn matrix(&self, i: usize) -> candle_core::Result<&'a [f32]> {
        let (rows, cols) = self.dims;
        let len = if rows * cols == 0 {
            0
        } else {
            (rows - 1) * self.row_stride + cols
        };
        self.data
            .get(self.starts[i]..self.starts[i] + len)
            .ok_or_else(|| candle_core::Error::Msg("batched matmul: a matrix outside its storage".into()))
    }

    /// Matrix `i` as a view, transposed where `transposed`.
    fn view(&self, i: usize, transposed: bool) -> std::result::Result<NdTensorView<'a, f32, 2>, String> {
        let (rows, cols) = self.dims;
        let data = self.matrix(i).map_err(|e| e.to_string())?;
        let (shape, strides) = match transposed {
            false => ([rows, cols], [self.row_stride, 1]),
            true => ([cols, rows], [1, self.row_stride]),
        };
        NdTensorView::from_data_with_strides(shape, data, strides).map_err(|e| format!("{e:?}"))
    }
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
            Matrices::of(a_storage, a_layout, self.name())?,
            Matrices::of(b_storage, b_layout, self.name())?,
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
        let y = matmul(&a, &b, batch * m * n, self.0)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", self.name())))?;
        let mut dims = ad[..r - 2].to_vec();
        dims.extend([m, n]);
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

/// The products of `a`'s and `b`'s matrices, `len` values in all, into new storage, written once (no zero fill).
fn matmul(a: &Matrices, b: &Matrices, len: usize, rhs: Rhs) -> std::result::Result<Vec<f32>, String> {
    let lhs = (0..a.starts.len())
        .map(|i| Ok(GemmInputA::Unpacked(a.view(i, false)?)))
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let rhs = (0..b.starts.len())
        .map(|i| Ok(GemmInputB::Unpacked(b.view(i, rhs == Rhs::Transposed)?)))
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let mut y: Vec<f32> = Vec::with_capacity(len);
    let written = GemmExecutor::<f32>::new()
        .batched_gemm_uninit(
            &mut y.spare_capacity_mut()[..len],
            &lhs,
            &rhs,
            GemmUninitOptions::default(),
        )
        .map_err(|e| e.to_string())?
        .len();
    // SAFETY: `batched_gemm_uninit` returned the first `len` elements initialised (it errors otherwise), and the
    // capacity is `len`.
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
            "rows not contiguous"
        );
        assert!(
            try_batched_matmul(&a, &b, Rhs::Transposed).is_err(),
            "4 columns of a, 5 of b"
        );
        let other_batch = wave((3, 4, 5), 1.0, 0.0, 0.0);
        assert!(try_batched_matmul(&a, &other_batch, Rhs::AsIs).is_err());
    }

    #[test]
    fn heads_are_read_in_place_from_the_projections_rows() {
        // Attention's layout: (batch, seq, 3, heads, head_dim) rows, viewed as q, k, v of (batch, heads, seq,
        // head_dim) with a row pitch of 3 · heads · head_dim and an offset per part.
        let (b, s, h, d) = (2, 7, 3, 5);
        let qkv = wave((b, s, 3, h, d), 1.0, 0.37, 0.2).permute((2, 0, 3, 1, 4)).unwrap();
        let part = |i| qkv.narrow(0, i, 1).unwrap();
        let (q, k, v) = (part(0), part(1), part(2));
        assert!(!q.is_contiguous() && k.layout().start_offset() > 0, "views, not copies");
        let dense = |t: &Tensor| t.squeeze(0).unwrap().contiguous().unwrap();
        let scores = try_batched_matmul(&q, &k, Rhs::Transposed).unwrap().unwrap();
        let want = dense(&q).matmul(&dense(&k).t().unwrap()).unwrap();
        assert_close("q · kᵀ", &dense(scores.as_tensor()), &want, 2e-6);
        let ctx = try_batched_matmul(scores.as_tensor(), &v, Rhs::AsIs).unwrap().unwrap();
        assert_eq!(ctx.as_tensor().dims(), &[1, b, h, s, d]);
        let want = want.matmul(&dense(&v)).unwrap();
        assert_close("scores · v", &dense(ctx.as_tensor()), &want, 2e-5);
    }
}
