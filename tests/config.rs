//! Config parsing against what transformers parses from the same `config.json` variants
//! (`tests/fixtures/configs/*.expected.json`, written by `scripts/make_model_fixtures.py`), and validation errors.

mod common;

use altclip::{AltClipConfig, Error};
use common::fixture;
use serde_json::Value;

fn parsed_subset(cfg: &AltClipConfig, expected: &Value) -> Value {
    let ours = serde_json::json!({
        "projection_dim": cfg.projection_dim,
        "logit_scale_init_value": cfg.logit_scale_init_value,
        "text_config": serde_json::to_value(&cfg.text_config).unwrap(),
        "vision_config": serde_json::to_value(&cfg.vision_config).unwrap(),
    });
    // Keep only the keys transformers recorded.
    let mut out = serde_json::Map::new();
    for (k, v) in expected.as_object().unwrap() {
        let mine = &ours[k];
        if let Value::Object(sub) = v {
            let picked: serde_json::Map<_, _> = sub.keys().map(|sk| (sk.clone(), mine[sk].clone())).collect();
            out.insert(k.clone(), Value::Object(picked));
        } else {
            out.insert(k.clone(), mine.clone());
        }
    }
    Value::Object(out)
}

#[test]
fn config_variants_parse_like_transformers() {
    for name in ["defaults", "dict_only", "both_dict_wins", "m18_like"] {
        let cfg = AltClipConfig::from_file(fixture(&format!("configs/{name}.json"))).unwrap();
        let text = std::fs::read_to_string(fixture(&format!("configs/{name}.expected.json"))).unwrap();
        let expected: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed_subset(&cfg, &expected), expected, "variant {name}");
    }
}

#[test]
fn legacy_dict_wins_and_extra_keys_are_ignored() {
    let cfg = AltClipConfig::from_file(fixture("tiny/hub_bin/config.json")).unwrap();
    assert_eq!(cfg.text_config.hidden_size, 48);
    assert_eq!(cfg.vision_config.patch_size, 6);
    assert_eq!(cfg.vision_config.hidden_size, 36);
    assert_eq!(cfg.projection_dim, 24);
}

#[test]
fn baai_preset_describes_the_vit_l14_checkpoint() {
    let c = AltClipConfig::baai_altclip();
    c.validate().unwrap();
    let v = &c.vision_config;
    assert_eq!(
        (v.hidden_size, v.num_hidden_layers, v.num_attention_heads),
        (1024, 24, 16)
    );
    assert_eq!(
        (v.patch_size, v.image_size, v.hidden_act.as_str()),
        (14, 224, "quick_gelu")
    );
    assert_eq!(v.num_positions(), 257);
    let t = &c.text_config;
    assert_eq!(
        (t.hidden_size, t.num_hidden_layers, t.num_attention_heads),
        (1024, 24, 16)
    );
    assert_eq!(
        (t.intermediate_size, t.vocab_size, t.max_position_embeddings),
        (4096, 250002, 514)
    );
    assert_eq!((t.pad_token_id, t.hidden_act.as_str(), t.project_dim), (1, "gelu", 768));
    assert_eq!(t.max_sequence_length(), 512);
    assert_eq!(c.projection_dim, 768);
    assert!((c.logit_scale_init_value - 2.6592).abs() < 1e-12);
}

fn config_error(json: &str) -> Error {
    AltClipConfig::from_json_str(json).unwrap_err()
}

fn assert_invalid(json: &str, field: &str) {
    match config_error(json) {
        Error::InvalidConfig { field: f, reason } => {
            assert_eq!(f, field, "reason: {reason}");
        }
        other => panic!("expected InvalidConfig for {field}, got {other}"),
    }
}

#[test]
fn invalid_configs_are_typed_errors() {
    assert_invalid(
        r#"{"text_config": {"hidden_size": 100, "num_attention_heads": 16}}"#,
        "text_config.hidden_size",
    );
    assert_invalid(
        r#"{"vision_config": {"hidden_size": 10, "num_attention_heads": 3}}"#,
        "vision_config.hidden_size",
    );
    assert_invalid(
        r#"{"vision_config": {"num_attention_heads": 0}}"#,
        "vision_config.num_attention_heads",
    );
    assert_invalid(r#"{"text_config": {"vocab_size": 0}}"#, "text_config.vocab_size");
    assert_invalid(r#"{"vision_config": {"patch_size": 0}}"#, "vision_config.patch_size");
    assert_invalid(
        r#"{"vision_config": {"image_size": 8, "patch_size": 14}}"#,
        "vision_config.image_size",
    );
    assert_invalid(
        r#"{"text_config": {"hidden_act": "swiglu_magic"}}"#,
        "text_config.hidden_act",
    );
    assert_invalid(
        r#"{"vision_config": {"hidden_act": "nope"}}"#,
        "vision_config.hidden_act",
    );
    assert_invalid(
        r#"{"text_config": {"layer_norm_eps": 0.0}}"#,
        "text_config.layer_norm_eps",
    );
    assert_invalid(r#"{"projection_dim": 0}"#, "projection_dim");
    assert_invalid(r#"{"projection_dim": 7.5}"#, "projection_dim");
    assert_invalid(
        r#"{"text_config": {"max_position_embeddings": 2}}"#,
        "text_config.max_position_embeddings",
    );
    assert_invalid(r#"[1, 2]"#, "config.json");
    // Negative and mistyped sizes fail in JSON decoding, naming the section.
    for json in [
        r#"{"text_config": {"hidden_size": -4}}"#,
        r#"{"vision_config": {"patch_size": "14"}}"#,
        r#"{"text_config": "#,
    ] {
        match config_error(json) {
            Error::Json { what, .. } => assert!(what.starts_with("config.json"), "{what}"),
            other => panic!("expected Json error for {json}, got {other}"),
        }
    }
}

#[test]
fn missing_config_file_names_the_path() {
    let err = AltClipConfig::from_file(fixture("does-not-exist/config.json")).unwrap_err();
    match err {
        Error::Io { path, .. } => assert!(path.ends_with("does-not-exist/config.json")),
        other => panic!("unexpected {other}"),
    }
}
