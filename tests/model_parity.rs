//! Parity with transformers on the tiny random AltCLIP fixtures (`scripts/make_model_fixtures.py`).
//!
//! f32 outputs are compared at ≤ 1e-5 absolute; f16 at ≤ 2e-2 and bf16 at ≤ 6e-2 on normalised embeddings and
//! logits (transformers' own half-precision CPU run is the reference, so both sides round differently).
//!
//! Models run on `ALTCLIP_TEST_DEVICE` (`common::device`, default `cpu`); `.ci/run` runs this file a second time
//! with `ALTCLIP_KERNELS=generic`, through the candle ops every non-CPU device runs, at the same tolerances.

mod common;

use altclip::{AltClipModel, AltClipTextModel, AltClipVisionModel, ForwardOptions};
use candle_core::{DType, Tensor};
use common::{assert_close, device, expected, fixture, get, input};

/// f32 parity with transformers. Holds on every ISA: the differences are f32 round-off of GEMM sums (blocking and
/// kernels differ per CPU, in candle's `gemm` as in PyTorch's), measured ≤ 1.7e-6 on AMD Zen 3 (AVX2) and on an
/// AVX-512 Xeon: ≥ 6× headroom, where a real bug (a wrong mask, position or norm) moves outputs by ≥ 1e-2.
const TOL: f32 = 1e-5;

fn load(layout: &str, dtype: DType) -> AltClipModel {
    AltClipModel::from_dir(fixture(&format!("tiny/{layout}")), dtype, &device())
        .unwrap_or_else(|e| panic!("loading {layout}: {e}"))
}

fn check_forward(layout: &str) {
    let e = expected();
    let model = load(layout, DType::F32);
    let ids = input(&e, "input_ids");
    let mask = input(&e, "attention_mask");
    let pixels = input(&e, "pixel_values");
    let opts = ForwardOptions {
        return_loss: true,
        output_hidden_states: true,
        ..Default::default()
    };
    let out = model.forward(&ids, &pixels, Some(&mask), opts).unwrap();
    let tag = |s: &str| format!("{layout}/{s}");
    assert_close(
        &tag("logits_per_image"),
        &out.logits_per_image,
        &get(&e, "logits_per_image"),
        TOL,
    );
    assert_close(
        &tag("logits_per_text"),
        &out.logits_per_text,
        &get(&e, "logits_per_text"),
        TOL,
    );
    assert_close(&tag("text_embeds"), &out.text_embeds, &get(&e, "text_embeds"), TOL);
    assert_close(&tag("image_embeds"), &out.image_embeds, &get(&e, "image_embeds"), TOL);
    let loss = out.loss.unwrap().reshape(1).unwrap();
    assert_close(&tag("loss"), &loss, &get(&e, "loss"), TOL);
    let text = &out.text_model_output;
    assert_close(
        &tag("text_last_hidden_state"),
        &text.last_hidden_state,
        &get(&e, "text_last_hidden_state"),
        TOL,
    );
    assert_close(
        &tag("text_pooler_output"),
        &text.pooler_output,
        &get(&e, "text_pooler_output"),
        TOL,
    );
    let hs = text.hidden_states.as_ref().unwrap();
    assert_eq!(hs.len(), 4);
    for (i, h) in hs.iter().enumerate() {
        assert_close(
            &tag(&format!("text_hidden_states.{i}")),
            h,
            &get(&e, &format!("text_hidden_states.{i}")),
            TOL,
        );
    }
    let vision = &out.vision_model_output;
    assert_close(
        &tag("vision_last_hidden_state"),
        &vision.last_hidden_state,
        &get(&e, "vision_last_hidden_state"),
        TOL,
    );
    assert_close(
        &tag("vision_pooler_output"),
        &vision.pooler_output,
        &get(&e, "vision_pooler_output"),
        TOL,
    );
    let hs = vision.hidden_states.as_ref().unwrap();
    assert_eq!(hs.len(), 4);
    for (i, h) in hs.iter().enumerate() {
        let name = format!("vision_hidden_states.{i}");
        assert_close(&tag(&name), h, &get(&e, &name), TOL);
    }
    let tf = model.get_text_features(&ids, Some(&mask)).unwrap();
    assert_close(&tag("text_features"), &tf, &get(&e, "text_features"), TOL);
    let imf = model.get_image_features(&pixels, false).unwrap();
    assert_close(&tag("image_features"), &imf, &get(&e, "image_features"), TOL);
    // The towers' pooled-only runs (their last layer for token 0 alone, as the features above run them): against
    // transformers, and against the whole runs' pooler outputs, whose token-0 arithmetic is the same.
    let text_pooled = model.text_model().unwrap().pooled_output(&ids, Some(&mask)).unwrap();
    assert_close(
        &tag("text pooled_output"),
        &text_pooled,
        &get(&e, "text_pooler_output"),
        TOL,
    );
    assert_close(
        &tag("text pooled_output vs forward"),
        &text_pooled,
        &text.pooler_output,
        1e-6,
    );
    let vision_pooled = model.vision_model().unwrap().pooled_output(&pixels, false).unwrap();
    assert_close(
        &tag("vision pooled_output"),
        &vision_pooled,
        &get(&e, "vision_pooler_output"),
        TOL,
    );
    assert_close(
        &tag("vision pooled_output vs forward"),
        &vision_pooled,
        &vision.pooler_output,
        1e-6,
    );
}

#[test]
fn safetensors_layout_matches_transformers() {
    check_forward("st");
}

#[test]
fn sharded_safetensors_layout_matches_transformers() {
    check_forward("sharded");
}

#[test]
fn hub_pytorch_bin_with_legacy_config_matches_transformers() {
    check_forward("hub_bin");
}

#[test]
fn interpolated_position_embeddings_match_torch_bicubic() {
    let e = expected();
    let model = load("st", DType::F32);
    let pixels = input(&e, "pixel_values_interp");
    assert_eq!(pixels.dims(), [2, 3, 44, 32]);
    let out = model.vision_model().unwrap().forward(&pixels, true, false).unwrap();
    assert_close(
        "interp_last_hidden_state",
        &out.last_hidden_state,
        &get(&e, "interp_last_hidden_state"),
        TOL,
    );
    let f = model.get_image_features(&pixels, true).unwrap();
    assert_close("interp_image_features", &f, &get(&e, "interp_image_features"), TOL);
}

#[test]
fn wrong_image_size_without_interpolation_is_a_typed_error() {
    let e = expected();
    let model = load("st", DType::F32);
    let err = model
        .get_image_features(&input(&e, "pixel_values_interp"), false)
        .unwrap_err();
    match err {
        altclip::Error::ImageSize { expected, got_h, got_w } => assert_eq!((expected, got_h, got_w), (30, 44, 32)),
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn standalone_towers_load_from_their_own_and_full_checkpoints() {
    let e = expected();
    let ids = input(&e, "input_ids");
    let mask = input(&e, "attention_mask");
    let pixels = input(&e, "pixel_values");
    for dir in ["tiny/text_only", "tiny/st", "tiny/hub_bin"] {
        let text = AltClipTextModel::from_dir(fixture(dir), DType::F32, &device()).unwrap();
        let out = text.forward(&ids, Some(&mask), false).unwrap();
        assert_close(
            &format!("{dir} text last_hidden_state"),
            &out.last_hidden_state,
            &get(&e, "text_last_hidden_state"),
            TOL,
        );
        assert!(out.hidden_states.is_none());
    }
    for dir in ["tiny/vision_only", "tiny/st", "tiny/hub_bin"] {
        let vision = AltClipVisionModel::from_dir(fixture(dir), DType::F32, &device()).unwrap();
        let out = vision.forward(&pixels, false, false).unwrap();
        assert_close(
            &format!("{dir} vision pooler_output"),
            &out.pooler_output,
            &get(&e, "vision_pooler_output"),
            TOL,
        );
    }
}

#[test]
fn half_precision_runs_match_transformers_half_runs() {
    let e = expected();
    let ids = input(&e, "input_ids");
    let mask = input(&e, "attention_mask");
    // Against torch's own half-precision runs; differences are half-precision rounding of intermediate results
    // (f16 ulp 2⁻¹¹, bf16 ulp 2⁻⁸ relative). Measured on AMD Zen 3 and on an AVX-512 Xeon alike: f16 4.9e-4 on
    // the embeddings and 6.5e-3 on the logits (|logits| < 15), bf16 3.9e-3 (one ulp) and 4.7e-2 (three ulps at
    // their magnitude). candle's CPU half GEMMs accumulate in f32 and round once, so the ISA's summation order
    // moves a result by far less than a half ulp; the bounds leave ≥ 3× (f16) and one more bf16 ulp.
    for (dtype, tag, tol) in [(DType::F16, "f16", 2e-2f32), (DType::BF16, "bf16", 6e-2)] {
        let model = load("st", dtype);
        let pixels = input(&e, "pixel_values").to_dtype(dtype).unwrap();
        let out = model
            .forward(&ids, &pixels, Some(&mask), ForwardOptions::default())
            .unwrap();
        assert_eq!(out.text_embeds.dtype(), dtype);
        for name in ["text_embeds", "image_embeds", "logits_per_image"] {
            let got = match name {
                "text_embeds" => &out.text_embeds,
                "image_embeds" => &out.image_embeds,
                _ => &out.logits_per_image,
            };
            assert_close(
                &format!("{tag}/{name} vs torch {tag}"),
                got,
                &get(&e, &format!("{tag}.{name}")),
                tol,
            );
        }
    }
}

#[test]
fn padding_side_does_not_change_position_ids() {
    // Position ids count real tokens only, so the same tokens left- or right-padded give the same token states
    // (the pooled output differs: it is whatever stands at index 0).
    let model = load("st", DType::F32);
    let dev = device();
    let left = Tensor::new(&[[1u32, 1, 0, 8, 121, 2]], &dev).unwrap();
    let left_mask = Tensor::new(&[[0u32, 0, 1, 1, 1, 1]], &dev).unwrap();
    let right = Tensor::new(&[[0u32, 8, 121, 2, 1, 1]], &dev).unwrap();
    let right_mask = Tensor::new(&[[1u32, 1, 1, 1, 0, 0]], &dev).unwrap();
    let text = model.text_model().unwrap();
    let a = text.forward(&left, Some(&left_mask), false).unwrap().last_hidden_state;
    let b = text
        .forward(&right, Some(&right_mask), false)
        .unwrap()
        .last_hidden_state;
    let a = a.narrow(1, 2, 4).unwrap();
    let b = b.narrow(1, 0, 4).unwrap();
    assert_close("left vs right padding, real tokens", &a, &b, 1e-5);
}
