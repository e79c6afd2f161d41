//! Shared helpers for the parity tests: fixture paths, expected tensors and comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The inputs and transformers' outputs recorded by `scripts/make_model_fixtures.py`.
pub fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("tiny/expected.safetensors"), &Device::Cpu)
        .expect("tests/fixtures/tiny/expected.safetensors (run scripts/make_model_fixtures.py)")
}

/// Looks up one recorded tensor.
pub fn get(e: &HashMap<String, Tensor>, name: &str) -> Tensor {
    e.get(name)
        .unwrap_or_else(|| panic!("fixture tensor {name} missing"))
        .clone()
}

/// max |a − b| over all elements, after checking the shapes agree.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let b = b
        .to_dtype(DType::F32)
        .unwrap()
        .to_device(a.device())
        .unwrap()
        .flatten_all()
        .unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts `max |a − b| ≤ tol`, printing the measured value (`cargo test -- --nocapture` shows it).
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let d = max_abs_diff(got, want);
    eprintln!("max|Δ| {what:<40} {d:.3e} (tol {tol:.0e})");
    assert!(d <= tol, "{what}: max |Δ| = {d:e} > {tol:e}");
    // A comparison against zeros would pass trivially: make sure the reference is not degenerate.
    let scale = want
        .to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap();
    assert!(
        scale.to_scalar::<f32>().unwrap() > 1e-3,
        "{what}: reference is all ~zero"
    );
}
