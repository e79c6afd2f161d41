//! Bad inputs and bad checkpoints: each is a typed error naming what was wrong, never a panic.

mod common;

use std::path::Path;

use altclip::{AltClipConfig, AltClipModel, Error, ForwardOptions};
use candle_core::{DType, Device, Tensor};
use common::{device, fixture};

fn model() -> AltClipModel {
    AltClipModel::from_dir(fixture("tiny/st"), DType::F32, &device()).unwrap()
}

fn copy_config(to: &Path) {
    std::fs::copy(fixture("tiny/st/config.json"), to.join("config.json")).unwrap();
}

#[test]
fn out_of_vocabulary_ids_are_rejected() {
    let ids = Tensor::new(&[[0u32, 123, 2]], &device()).unwrap();
    match model().get_text_features(&ids, None).unwrap_err() {
        Error::TokenOutOfRange { id, vocab_size } => assert_eq!((id, vocab_size), (123, 123)),
        other => panic!("unexpected {other}"),
    }
    let ids = Tensor::new(&[[0i64, -5, 2]], &device()).unwrap();
    assert!(matches!(
        model().get_text_features(&ids, None).unwrap_err(),
        Error::TokenOutOfRange { id: -5, .. }
    ));
}

fn bad_input(err: Error) -> (&'static str, String) {
    match err {
        Error::BadInput { input, reason } => (input, reason),
        other => panic!("expected BadInput, got {other}"),
    }
}

#[test]
fn malformed_text_inputs_are_rejected() {
    let m = model();
    let dev = device();
    let (input, _) = bad_input(
        m.get_text_features(&Tensor::new(&[0u32, 5, 2], &dev).unwrap(), None)
            .unwrap_err(),
    );
    assert_eq!(input, "input_ids");
    let floats = Tensor::new(&[[0f32, 5., 2.]], &dev).unwrap();
    let (input, reason) = bad_input(m.get_text_features(&floats, None).unwrap_err());
    assert_eq!(input, "input_ids");
    assert!(reason.contains("F32"), "{reason}");
    let ids = Tensor::new(&[[0u32, 5, 2]], &dev).unwrap();
    let mask = Tensor::new(&[[1u32, 1]], &dev).unwrap();
    let (input, reason) = bad_input(m.get_text_features(&ids, Some(&mask)).unwrap_err());
    assert_eq!(input, "attention_mask");
    assert!(reason.contains("[1, 2]") && reason.contains("[1, 3]"), "{reason}");
    // Longer than the position table allows (40 positions, pad 1 → 38 tokens).
    let long = Tensor::zeros((1, 39), DType::U32, &dev).unwrap();
    let (_, reason) = bad_input(m.get_text_features(&long, None).unwrap_err());
    assert!(reason.contains("39"), "{reason}");
    let empty = Tensor::zeros((0, 3), DType::U32, &dev).unwrap();
    bad_input(m.get_text_features(&empty, None).unwrap_err());
}

#[test]
fn malformed_pixel_values_are_rejected() {
    let m = model();
    let dev = device();
    let rank3 = Tensor::zeros((3, 30, 30), DType::F32, &dev).unwrap();
    assert_eq!(
        bad_input(m.get_image_features(&rank3, false).unwrap_err()).0,
        "pixel_values"
    );
    let ints = Tensor::zeros((1, 3, 30, 30), DType::U8, &dev).unwrap();
    assert_eq!(
        bad_input(m.get_image_features(&ints, false).unwrap_err()).0,
        "pixel_values"
    );
    let four_channels = Tensor::zeros((1, 4, 30, 30), DType::F32, &dev).unwrap();
    assert_eq!(
        bad_input(m.get_image_features(&four_channels, false).unwrap_err()).0,
        "pixel_values"
    );
    let tiny = Tensor::zeros((1, 3, 5, 30), DType::F32, &dev).unwrap();
    assert_eq!(
        bad_input(m.get_image_features(&tiny, true).unwrap_err()).0,
        "pixel_values"
    );
    let ids = Tensor::new(&[[0u32, 5, 2], [0, 6, 2]], &dev).unwrap();
    let one_image = Tensor::zeros((1, 3, 30, 30), DType::F32, &dev).unwrap();
    let opts = ForwardOptions {
        return_loss: true,
        ..Default::default()
    };
    assert_eq!(
        bad_input(m.forward(&ids, &one_image, None, opts).unwrap_err()).0,
        "return_loss"
    );
}

#[test]
fn directory_without_weights_is_named() {
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path());
    match AltClipModel::from_dir(dir.path(), DType::F32, &device()).unwrap_err() {
        Error::NoWeights { dir: d } => assert_eq!(d, dir.path()),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn truncated_safetensors_is_a_weight_file_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path());
    let bytes = std::fs::read(fixture("tiny/st/model.safetensors")).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    match AltClipModel::from_dir(dir.path(), DType::F32, &device()).unwrap_err() {
        Error::WeightFile { path, .. } => assert!(path.ends_with("model.safetensors")),
        other => panic!("unexpected {other}"),
    }
    // Zero bytes, and a text file.
    for content in [&b""[..], b"this is not a checkpoint"] {
        std::fs::write(dir.path().join("model.safetensors"), content).unwrap();
        assert!(matches!(
            AltClipModel::from_dir(dir.path(), DType::F32, &device()).unwrap_err(),
            Error::WeightFile { .. }
        ));
    }
}

#[test]
fn pytorch_bin_that_is_not_a_pickle_is_a_weight_file_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path());
    std::fs::write(dir.path().join("pytorch_model.bin"), b"PK\x03\x04 garbage, not a zip").unwrap();
    match AltClipModel::from_dir(dir.path(), DType::F32, &device()).unwrap_err() {
        Error::WeightFile { path, reason } => {
            assert!(path.ends_with("pytorch_model.bin"));
            assert!(reason.contains("PyTorch"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }
}

/// Writes the fixture's tensors, altered by `edit`, as a safetensors checkpoint in `dir`.
fn write_edited(dir: &Path, edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>)) {
    let mut tensors = candle_core::safetensors::load(fixture("tiny/st/model.safetensors"), &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    copy_config(dir);
}

/// A missing layer tensor is named in both layer-naming schemes, since the loader looked for both.
#[test]
fn a_missing_layer_tensor_is_named_in_both_schemes() {
    let dir = tempfile::tempdir().unwrap();
    // The fixture is written by transformers 5 (`encoder.layer.N`); the model asks for the hub's name first.
    let stored = "vision_model.encoder.layer.1.mlp.fc1.weight";
    write_edited(dir.path(), |t| {
        assert!(t.remove(stored).is_some(), "the fixture holds {stored}");
    });
    let model = AltClipModel::from_dir(dir.path(), DType::F32, &device()).unwrap();
    let err = model.load_towers().unwrap_err();
    let hub = "vision_model.encoder.layers.1.mlp.fc1.weight";
    assert!(matches!(&err, Error::MissingTensor { name } if name == hub), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("tensor `{hub}` is missing from the checkpoint (nor as `{stored}`)")
    );
}

/// A tower's tensors are read when it loads, on first use or with `load_towers`: a bad one is reported there,
/// naming the tensor, and the other tower still works.
#[test]
fn wrong_shape_missing_tensor_and_wrong_dtype_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let name = "vision_model.encoder.layer.1.mlp.fc1.weight";
    write_edited(dir.path(), |t| {
        t.insert(name.into(), Tensor::zeros((60, 35), DType::F32, &Device::Cpu).unwrap());
    });
    let model = AltClipModel::from_dir(dir.path(), DType::F32, &device()).unwrap();
    let pixels = Tensor::zeros((1, 3, 30, 30), DType::F32, &device()).unwrap();
    for err in [
        model.load_towers().unwrap_err(),
        model.get_image_features(&pixels, false).unwrap_err(),
    ] {
        match err {
            Error::TensorShape { name: n, expected, got } => {
                assert_eq!(n, name);
                assert_eq!((expected, got), (vec![60, 36], vec![60, 35]));
            }
            other => panic!("unexpected {other}"),
        }
    }
    let ids = Tensor::new(&[[0u32, 5, 2]], &device()).unwrap();
    let text = model.get_text_features(&ids, None).unwrap();
    assert_eq!(text.dims(), [1, 24]);
    assert!(text.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);

    let name = "text_model.pre_LN.bias";
    write_edited(dir.path(), |t| {
        t.remove(name);
    });
    let model = AltClipModel::from_dir(dir.path(), DType::F32, &device()).unwrap();
    match model.get_text_features(&ids, None).unwrap_err() {
        Error::MissingTensor { name: n } => assert_eq!(n, name),
        other => panic!("unexpected {other}"),
    }
    assert_eq!(
        model.get_text_features(&ids, None).unwrap_err().to_string(),
        format!("tensor `{name}` is missing from the checkpoint"),
        "a name outside the layers has no other scheme to name"
    );
    model.get_image_features(&pixels, false).unwrap();

    // What every call needs is read when the model is built.
    write_edited(dir.path(), |t| {
        t.insert("logit_scale".into(), Tensor::new(3u32, &Device::Cpu).unwrap());
    });
    match AltClipModel::from_dir(dir.path(), DType::F32, &device()).unwrap_err() {
        Error::TensorDType { name, dtype } => assert_eq!((name.as_str(), dtype), ("logit_scale", DType::U32)),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn config_that_disagrees_with_the_weights_is_a_shape_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny/st/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg = AltClipConfig::from_file(fixture("tiny/st/config.json")).unwrap();
    cfg.projection_dim = 32;
    let w = altclip::CheckpointView::from_dir(dir.path(), DType::F32, &device()).unwrap();
    match AltClipModel::new(&cfg, &w).unwrap_err() {
        Error::TensorShape { name, expected, got } => {
            assert_eq!(name, "text_projection.weight");
            assert_eq!((expected, got), (vec![32, 40], vec![24, 40]));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn f16_weights_keep_norm_parameters_in_f32_and_run() {
    let m = AltClipModel::from_dir(fixture("tiny/st"), DType::F16, &device()).unwrap();
    assert_eq!(m.dtype(), DType::F16);
    let ids = Tensor::new(&[[0u32, 17, 45, 2]], &device()).unwrap();
    let f = m.get_text_features(&ids, None).unwrap();
    assert_eq!(f.dtype(), DType::F16);
    let values: Vec<f32> = f
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(values.iter().all(|v| v.is_finite()) && values.iter().any(|v| v.abs() > 1e-3));
}
