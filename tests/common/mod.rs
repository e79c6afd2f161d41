//! Shared helpers for the parity tests: the device they run on, fixture paths, expected tensors and comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use altclip::LoadOptions;
use candle_core::{DType, Device, Tensor};

/// The device the model tests run on: `ALTCLIP_TEST_DEVICE` (`cpu` when unset; `cuda:0`, `metal`, … as
/// `altclip::options::parse_device` reads them), made once so that every tensor of a test binary is on the same
/// device (two `Device::new_cuda(0)` calls make two devices whose tensors don't mix).
pub fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let spec = std::env::var("ALTCLIP_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
            let device =
                altclip::options::parse_device(&spec).unwrap_or_else(|e| panic!("ALTCLIP_TEST_DEVICE={spec:?}: {e}"));
            eprintln!("test device: {device:?}");
            device
        })
        .clone()
}

/// Load options for the test device (default dtype, no quantization).
pub fn load_options() -> LoadOptions {
    LoadOptions::default().with_device(device())
}

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

/// Looks up one recorded tensor (on the CPU, where the fixtures are loaded: references stay there).
pub fn get(e: &HashMap<String, Tensor>, name: &str) -> Tensor {
    e.get(name)
        .unwrap_or_else(|| panic!("fixture tensor {name} missing"))
        .clone()
}

/// Looks up one recorded model input, moved to the test [`device`].
pub fn input(e: &HashMap<String, Tensor>, name: &str) -> Tensor {
    get(e, name).to_device(&device()).unwrap()
}

/// `t` in f32 on the CPU, flattened, where the comparisons run.
fn on_cpu(t: &Tensor) -> Tensor {
    t.to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
}

/// max |a − b| over all elements (compared on the CPU, wherever they were computed), after checking the shapes agree.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let (a, b) = (on_cpu(a), on_cpu(b));
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
    let scale = on_cpu(want).abs().unwrap().max(0).unwrap();
    assert!(
        scale.to_scalar::<f32>().unwrap() > 1e-3,
        "{what}: reference is all ~zero"
    );
}

/// `argument: reason` of an `Error::InvalidArgument`; anything else fails the test.
pub fn invalid<T: std::fmt::Debug>(r: altclip::Result<T>) -> String {
    match r {
        Err(altclip::Error::InvalidArgument { argument, reason }) => format!("{argument}: {reason}"),
        other => panic!("{other:?}"),
    }
}
