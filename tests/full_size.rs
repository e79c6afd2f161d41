//! Full-size parity (BAAI/AltCLIP config, random weights) against transformers, ≤ 1e-4.
//!
//! Too big for CI (3.5 GB checkpoint), hence `#[ignore]`. To run:
//!
//! ```sh
//! python scripts/full_size_parity.py /tmp/altclip-full
//! ALTCLIP_FULL_DIR=/tmp/altclip-full cargo test --release --test full_size -- --ignored --nocapture
//! ```

mod common;

use altclip::{AltClipModel, ForwardOptions};
use candle_core::{DType, Device};
use common::{assert_close, device, get, input};

#[test]
#[ignore = "needs the 3.5 GB checkpoint from scripts/full_size_parity.py (set ALTCLIP_FULL_DIR)"]
fn full_size_random_checkpoint_matches_transformers() {
    let dir = std::env::var("ALTCLIP_FULL_DIR").expect("set ALTCLIP_FULL_DIR to the directory written by the script");
    let dir = std::path::PathBuf::from(dir);
    let e = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let model = AltClipModel::from_dir(&dir, DType::F32, &device()).unwrap();
    let ids = input(&e, "input_ids");
    let mask = input(&e, "attention_mask");
    let pixels = input(&e, "pixel_values");
    let out = model
        .forward(&ids, &pixels, Some(&mask), ForwardOptions::default())
        .unwrap();
    let tol = 1e-4;
    assert_close(
        "full/logits_per_image",
        &out.logits_per_image,
        &get(&e, "logits_per_image"),
        tol,
    );
    assert_close("full/text_embeds", &out.text_embeds, &get(&e, "text_embeds"), tol);
    assert_close("full/image_embeds", &out.image_embeds, &get(&e, "image_embeds"), tol);
    let t = &out.text_model_output.last_hidden_state;
    assert_close(
        "full/text_last_hidden_state",
        t,
        &get(&e, "text_last_hidden_state"),
        tol,
    );
    let v = &out.vision_model_output.last_hidden_state;
    assert_close(
        "full/vision_last_hidden_state",
        v,
        &get(&e, "vision_last_hidden_state"),
        tol,
    );
    let tf = model.get_text_features(&ids, Some(&mask)).unwrap();
    assert_close("full/text_features", &tf, &get(&e, "text_features"), tol);
    let imf = model.get_image_features(&pixels, false).unwrap();
    assert_close("full/image_features", &imf, &get(&e, "image_features"), tol);
}
