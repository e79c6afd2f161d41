//! Token parity with transformers' `XLMRobertaTokenizer` (fixtures from `scripts/make_tokenizer_fixtures.py`),
//! padding / truncation behaviour and bad inputs.

use std::path::{Path, PathBuf};

use altclip::processor::sentencepiece::SentencePieceModel;
use altclip::processor::text::{Padding, TextProcessor, TokenizerConfig, Truncation};
use altclip::{AltClip, AltClipConfig, Error, LoadOptions};
use candle_core::{DType, Device};
use serde_json::Value;

fn dir(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer")
        .join(rel)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(dir("expected.json")).expect("run scripts/make_tokenizer_fixtures.py");
    serde_json::from_str(&text).unwrap()
}

fn strings(e: &Value, key: &str) -> Vec<String> {
    e[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn long_text(e: &Value) -> String {
    strings(e, "strings").concat().repeat(40).chars().take(20_000).collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("altclip-tok-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tokenizers under test: (label, processor, key in expected.json).
fn processors() -> Vec<(&'static str, TextProcessor, &'static str)> {
    let short = TokenizerConfig::from_file(dir("short/tokenizer_config.json")).unwrap();
    let sp_model = dir("sp_only/sentencepiece.bpe.model");
    let json = dir("with_json/tokenizer.json");
    vec![
        ("sp_only", TextProcessor::from_dir(dir("sp_only")).unwrap(), "sp_only"),
        (
            "with_json",
            TextProcessor::from_dir(dir("with_json")).unwrap(),
            "with_json",
        ),
        (
            "with_json as-is",
            TextProcessor::from_tokenizer_json_as_is(&json, TokenizerConfig::from_dir(dir("with_json")).unwrap())
                .unwrap(),
            "with_json",
        ),
        (
            "sp_only short",
            TextProcessor::from_sentencepiece(&sp_model, short.clone()).unwrap(),
            "short",
        ),
        (
            "with_json short",
            TextProcessor::from_tokenizer_json(&json, short.clone()).unwrap(),
            "short",
        ),
        (
            "with_json as-is short",
            TextProcessor::from_tokenizer_json_as_is(&json, short).unwrap(),
            "short",
        ),
    ]
}

#[test]
fn token_ids_match_transformers_on_every_string() {
    let e = expected();
    let texts = strings(&e, "strings");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for (label, tok, key) in processors() {
        let want = ids(&e[key]["single"]);
        let got = tok.encode_unpadded(&refs, None).unwrap();
        let mut same = 0;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if g == w {
                same += 1;
            } else {
                eprintln!("{label}: {:?}\n  rust   {g:?}\n  python {w:?}", texts[i]);
            }
        }
        println!("{label}: {same}/{} strings identical (untruncated)", texts.len());
        assert_eq!(same, texts.len(), "{label}");

        // Default truncation (model_max_length), one text at a time and as one batch.
        let want = ids(&e[key]["single_truncated"]);
        for (t, w) in refs.iter().zip(&want) {
            let got = tok.encode_ids(&[t], Padding::Longest).unwrap();
            assert_eq!(&got.input_ids[0], w, "{label}: {t:?}");
            assert!(got.attention_mask[0].iter().all(|&m| m == 1));
        }
        let batch = tok.encode(&refs, Padding::Longest, &Device::Cpu).unwrap();
        assert_eq!(batch.ids, want, "{label}");
    }
}

#[test]
fn long_text_is_truncated_like_transformers() {
    let e = expected();
    let text = long_text(&e);
    assert_eq!(text.chars().count(), 20_000);
    for (label, tok, key) in processors() {
        let want: Vec<u32> = serde_json::from_value(e[key]["long_truncated"].clone()).unwrap();
        let got = tok.encode_ids(&[&text], Padding::Longest).unwrap();
        assert_eq!(got.input_ids[0], want, "{label}");
        assert_eq!(got.input_ids[0].len(), tok.max_length().unwrap(), "{label}");
        assert_eq!(*got.input_ids[0].last().unwrap(), 2, "{label}: ends with </s>");
    }
}

#[test]
fn batch_padding_and_truncation_match_transformers() {
    let e = expected();
    let all = strings(&e, "strings");
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    for (label, tok, key) in processors() {
        let batch = strings(&e[key], "batch_strings");
        let batch: Vec<&str> = batch.iter().map(String::as_str).collect();

        let got = tok.encode_ids(&batch, Padding::Longest).unwrap();
        assert_eq!(
            got.input_ids,
            ids(&e[key]["batch_longest"]["input_ids"]),
            "{label} longest"
        );
        assert_eq!(
            got.attention_mask,
            ids(&e[key]["batch_longest"]["attention_mask"]),
            "{label} longest"
        );

        let got = tok.encode_ids(&batch, Padding::MaxLength(24)).unwrap();
        assert_eq!(
            got.input_ids,
            ids(&e[key]["batch_max_length_24"]["input_ids"]),
            "{label} max_length"
        );
        assert_eq!(
            got.attention_mask,
            ids(&e[key]["batch_max_length_24"]["attention_mask"]),
            "{label} max_length"
        );

        let t10 = tok.clone().with_truncation(Truncation::MaxLength(10)).unwrap();
        let got = t10.encode_ids(&all, Padding::Longest).unwrap();
        assert_eq!(
            got.input_ids,
            ids(&e[key]["all_truncate_10"]["input_ids"]),
            "{label} truncate 10"
        );
        assert_eq!(
            got.attention_mask,
            ids(&e[key]["all_truncate_10"]["attention_mask"]),
            "{label} truncate 10"
        );
    }
}

#[test]
fn tensors_and_options() {
    let e = expected();
    let tok = TextProcessor::from_dir(dir("sp_only")).unwrap();
    assert_eq!(tok.pad_token_id(), 1);
    assert_eq!(
        tok.token_to_id("<mask>"),
        Some(e["vocab_size"].as_u64().unwrap() as u32 - 1)
    );
    assert_eq!(tok.vocab_size() as u64, e["vocab_size"].as_u64().unwrap());
    assert_eq!(tok.max_length(), Some(512));
    let batch_strings = strings(&e["sp_only"], "batch_strings");
    let refs: Vec<&str> = batch_strings.iter().map(String::as_str).collect();
    let batch = tok.encode(&refs, Padding::Longest, &Device::Cpu).unwrap();
    let want = ids(&e["sp_only"]["batch_longest"]["input_ids"]);
    assert_eq!(batch.input_ids.dims(), &[want.len(), want[0].len()]);
    assert_eq!(batch.input_ids.dtype(), DType::U32);
    assert_eq!(batch.attention_mask.dtype(), DType::U32);
    assert_eq!(batch.input_ids.to_vec2::<u32>().unwrap(), want);
    assert_eq!(
        batch.attention_mask.to_vec2::<u32>().unwrap(),
        ids(&e["sp_only"]["batch_longest"]["attention_mask"])
    );

    // max_position_embeddings − 2 caps the default truncation: 12 → 10 tokens.
    let all = strings(&e, "strings");
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let capped = tok.clone().with_max_position_embeddings(12).unwrap();
    assert_eq!(capped.max_length(), Some(10));
    assert_eq!(
        capped.encode_ids(&all, Padding::Longest).unwrap().input_ids,
        ids(&e["sp_only"]["all_truncate_10"]["input_ids"])
    );
    assert!(tok.clone().with_max_position_embeddings(2).is_err());

    // A config.json next to the tokenizer supplies max_position_embeddings, read as the model reads it (a legacy
    // `text_config_dict` included).
    for config in [
        r#"{"text_config": {"max_position_embeddings": 18}}"#,
        r#"{"text_config_dict": {"max_position_embeddings": 18}}"#,
    ] {
        let d = temp_dir("mpe");
        std::fs::copy(
            dir("sp_only/sentencepiece.bpe.model"),
            d.join("sentencepiece.bpe.model"),
        )
        .unwrap();
        std::fs::write(d.join("config.json"), config).unwrap();
        assert_eq!(TextProcessor::from_dir(&d).unwrap().max_length(), Some(16), "{config}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    // Disabled truncation keeps everything; MaxLength padding still truncates to its width.
    let long = long_text(&e);
    let free = tok.clone().with_truncation(Truncation::Disabled).unwrap();
    assert_eq!(free.max_length(), None);
    let n = free.encode_unpadded(&[&long], None).unwrap()[0].len();
    assert!(n > 512);
    let got = free.encode_ids(&[&long, "a"], Padding::MaxLength(7)).unwrap();
    assert!(got.input_ids.iter().all(|r| r.len() == 7));
    assert_eq!(got.input_ids[0][6], 2);
    assert_eq!(
        got.attention_mask[1],
        vec![1, 1, 1, 1, 0, 0, 0].into_iter().take(7).collect::<Vec<_>>()[..]
            .iter()
            .map(|_| 0)
            .enumerate()
            .map(|(i, _)| u32::from(i < got.input_ids[1].iter().filter(|&&x| x != 1).count()))
            .collect::<Vec<_>>()
    );

    // Empty batch, too-small lengths.
    let empty = tok.encode(&[], Padding::Longest, &Device::Cpu).unwrap();
    assert_eq!(empty.input_ids.dims(), &[0, 0]);
    assert!(matches!(
        tok.encode_ids(&["a"], Padding::MaxLength(1)),
        Err(Error::Tokenizer { .. })
    ));
    assert!(tok.encode_ids(&["a"], Padding::MaxLength(0)).is_err());
    assert!(tok.clone().with_truncation(Truncation::MaxLength(1)).is_err());
    assert_eq!(
        tok.encode_ids(&["a b c"], Padding::MaxLength(2)).unwrap().input_ids,
        vec![vec![0, 2]]
    );

    // Decoding round-trips plain text.
    let ids = tok.encode_unpadded(&["a photo of a cat"], None).unwrap();
    assert_eq!(tok.decode(&ids[0], true).unwrap(), "a photo of a cat");
}

#[test]
fn left_padding_and_truncation_sides() {
    let mut config = TokenizerConfig::from_dir(dir("sp_only")).unwrap();
    config.padding_side = altclip::processor::text::Side::Left;
    config.truncation_side = altclip::processor::text::Side::Left;
    let tok = TextProcessor::from_sentencepiece(dir("sp_only/sentencepiece.bpe.model"), config).unwrap();
    let right = TextProcessor::from_dir(dir("sp_only")).unwrap();
    let a = right.encode_unpadded(&["a photo of a cat"], None).unwrap().remove(0);
    let got = tok.encode_ids(&["a photo of a cat", "a"], Padding::Longest).unwrap();
    assert_eq!(got.input_ids[0], a);
    let b = &got.input_ids[1];
    assert_eq!(b[..a.len() - 3], vec![1; a.len() - 3][..]);
    assert_eq!(got.attention_mask[1][0], 0);
    let t = tok.encode_ids(&["a photo of a cat"], Padding::MaxLength(4)).unwrap();
    assert_eq!(
        t.input_ids[0],
        [&[0u32][..], &a[a.len() - 3..a.len() - 1], &[2]].concat()
    );
}

#[test]
fn hostile_texts_never_panic() {
    let tok = TextProcessor::from_dir(dir("sp_only")).unwrap();
    let all_scalars: String = (0u32..0x11_0000).step_by(37).filter_map(char::from_u32).collect();
    let controls: String = (0u8..0x20).map(char::from).collect();
    let combining = "e".to_string() + &"\u{0301}".repeat(5000);
    let zwj = "👩‍".repeat(3000);
    let texts = [
        "",
        " ",
        "\t\n\r\u{000b}\u{000c}",
        "\u{3000}\u{00a0}\u{2028}\u{2029}",
        &controls,
        &all_scalars,
        &combining,
        &zwj,
        &"a".repeat(20_000),
        &" ".repeat(20_000),
        &"<mask>".repeat(2000),
        "\u{feff}\u{fffe}\u{ffff}\u{10ffff}",
    ];
    let out = tok.encode(&texts, Padding::Longest, &Device::Cpu).unwrap();
    assert_eq!(out.input_ids.dims()[0], texts.len());
    for row in &out.ids {
        assert!(row.len() <= 512);
        assert_eq!((row[0], *row.last().unwrap()), (0, 2));
    }
    assert_eq!(out.ids[0], vec![0, 2], "empty text");
    assert_eq!(out.ids[1], vec![0, 2], "whitespace-only text");
    assert_eq!(out.ids[9], vec![0, 2], "20,000 spaces");
    assert_eq!(out.ids[8].len(), 512, "20,000 chars truncated to 512");
}

#[test]
fn missing_tokenizer_files_name_the_directory() {
    let d = temp_dir("empty");
    match TextProcessor::from_dir(&d) {
        Err(Error::Tokenizer { what, reason }) => {
            assert!(what.contains(d.to_str().unwrap()), "{what}");
            assert!(reason.contains("tokenizer.json"), "{reason}");
        }
        other => panic!("expected Error::Tokenizer, got {other:?}"),
    }
    std::fs::remove_dir_all(&d).unwrap();
    let missing = Path::new("/definitely/not/here");
    match TextProcessor::from_dir(missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(matches!(
        TextProcessor::from_sentencepiece(missing.join("x.model"), TokenizerConfig::default()),
        Err(Error::Io { .. })
    ));
}

#[test]
fn garbage_tokenizer_files_give_typed_errors() {
    let d = temp_dir("garbage");
    let sp = d.join("sentencepiece.bpe.model");
    for garbage in [
        &b""[..],
        b"not a sentencepiece model at all",
        &[0xff; 64],
        &[0x0a, 0x80],
    ] {
        std::fs::write(&sp, garbage).unwrap();
        match TextProcessor::from_dir(&d) {
            Err(Error::Tokenizer { what, .. }) => assert!(what.contains("sentencepiece.bpe.model"), "{what}"),
            other => panic!("expected Error::Tokenizer, got {other:?}"),
        }
    }
    std::fs::remove_file(&sp).unwrap();
    std::fs::write(d.join("tokenizer.json"), "{\"model\": 3}").unwrap();
    assert!(matches!(TextProcessor::from_dir(&d), Err(Error::Tokenizer { .. })));
    std::fs::write(d.join("tokenizer_config.json"), "{not json").unwrap();
    assert!(matches!(TextProcessor::from_dir(&d), Err(Error::Json { .. })));
    std::fs::remove_dir_all(&d).unwrap();
}

/// Truncations and byte corruptions of the real model either fail to load with a typed error or load and
/// encode without panicking.
#[test]
fn corrupted_sentencepiece_models_never_panic() {
    let bytes = std::fs::read(dir("sp_only/sentencepiece.bpe.model")).unwrap();
    let model = SentencePieceModel::from_bytes(&bytes).unwrap();
    assert_eq!(model.normalizer_spec.name, "nmt_nfkc");
    assert!(model.normalizer_spec.add_dummy_prefix && model.normalizer_spec.remove_extra_whitespaces);
    assert!(!model.normalizer_spec.precompiled_charsmap.is_empty());
    assert_eq!(model.pieces.len() as u64, expected()["sp_piece_size"].as_u64().unwrap());
    assert_eq!(model.trainer_spec.unk_id, 0);
    assert_eq!(model.pieces[1].piece, "<s>");

    let texts = ["a photo of a cat", "一张猫的照片 ＡＢＣ ①", "ﬁ café  \t x", ""];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rand = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut loaded, mut failed) = (0, 0);
    for round in 0..300 {
        let mut b = bytes.clone();
        if round % 3 == 0 {
            b.truncate(rand() as usize % bytes.len());
        } else {
            for _ in 0..1 + round % 8 {
                let i = rand() as usize % b.len();
                b[i] = rand() as u8;
            }
        }
        match TextProcessor::from_sentencepiece_bytes(&b, TokenizerConfig::default()) {
            Ok(tok) => {
                loaded += 1;
                // A model that loads must encode: the charsmap validation rules out out-of-bounds reads.
                tok.encode(&texts, Padding::Longest, &Device::Cpu).unwrap();
            }
            Err(Error::Tokenizer { .. }) => failed += 1,
            Err(other) => panic!("unexpected error kind: {other:?}"),
        }
    }
    println!("corrupted models: {loaded} loaded, {failed} rejected");
}

/// An older hub-style `tokenizer.json` (Precompiled + `Replace(" {2,}", " ")`, a lone Metaspace
/// pre-tokenizer, as in xlm-roberta-large) is rebuilt like transformers v5 does, so it encodes exactly like
/// `with_json/` (the fixture script asserts the same in transformers); used as-is it would not.
#[test]
fn legacy_hub_tokenizer_json_is_rebuilt_like_transformers() {
    let e = expected();
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir("with_json/tokenizer.json")).unwrap()).unwrap();
    let precompiled = doc["normalizer"].clone();
    doc["normalizer"] = serde_json::json!({
        "type": "Sequence",
        "normalizers": [precompiled, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}],
    });
    let metaspace = serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}", "add_prefix_space": true});
    doc["pre_tokenizer"] = metaspace.clone();
    doc["decoder"] = metaspace;
    let d = temp_dir("legacy");
    std::fs::write(d.join("tokenizer.json"), doc.to_string()).unwrap();
    std::fs::copy(dir("with_json/tokenizer_config.json"), d.join("tokenizer_config.json")).unwrap();

    let texts = strings(&e, "strings");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want = ids(&e["with_json"]["single"]);
    let rebuilt = TextProcessor::from_dir(&d).unwrap();
    assert_eq!(rebuilt.encode_unpadded(&refs, None).unwrap(), want);

    let config = TokenizerConfig::from_dir(&d).unwrap();
    let as_is = TextProcessor::from_tokenizer_json_as_is(d.join("tokenizer.json"), config).unwrap();
    let got = as_is.encode_unpadded(&refs, None).unwrap();
    let differ = got.iter().zip(&want).filter(|(g, w)| g != w).count();
    println!("legacy tokenizer.json as-is differs on {differ}/{} strings", refs.len());
    assert!(differ > 0);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A checkpoint whose `config.json` carries only the legacy `text_config_dict` (older hub files): the processor
/// takes its limit from the parsed `AltClipConfig`, so a text longer than the model's positions is truncated and
/// embeds exactly as with the same checkpoint written with `text_config` (the forward used to fail with
/// "sequence length N exceeds the … positions").
#[test]
fn legacy_text_config_dict_limits_truncation() {
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_full");
    let d = temp_dir("text-config-dict");
    for f in [
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(tiny.join(f), d.join(f)).unwrap();
    }
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(tiny.join("config.json")).unwrap()).unwrap();
    let obj = config.as_object_mut().unwrap();
    let text_config = obj.remove("text_config").unwrap();
    obj.insert("text_config_dict".into(), text_config);
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();

    let parsed = AltClipConfig::from_file(d.join("config.json")).unwrap();
    let limit = parsed.text_config.max_sequence_length();
    assert_eq!(limit, 38, "tiny_full: max_position_embeddings 40, pad_token_id 1");
    let tok = TextProcessor::from_dir(&d).unwrap();
    assert_eq!(tok.max_length(), Some(limit));
    let long = long_text(&expected());
    let ids = tok.encode_unpadded(&[&long], tok.max_length()).unwrap();
    assert_eq!(ids[0].len(), limit);
    assert_eq!((ids[0][0], ids[0][limit - 1]), (0, 2));

    let texts = [long.as_str(), "a photo of a cat"];
    let legacy = AltClip::from_dir(&d, &LoadOptions::default()).unwrap();
    let got = legacy.embed_texts(&texts).unwrap().to_vec2::<f32>().unwrap();
    let modern = AltClip::from_dir(&tiny, &LoadOptions::default()).unwrap();
    let want = modern.embed_texts(&texts).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(got, want);
    std::fs::remove_dir_all(&d).unwrap();
}
