//! Building the `tokenizers` pipeline of `XLMRobertaTokenizer` (see the [module docs](super)) from a SentencePiece
//! model or a `tokenizer.json`, and checking the `precompiled_charsmap` blobs either carries before `tokenizers`
//! reads them.

use std::path::{Path, PathBuf};

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::Value;
use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
use tokenizers::models::unigram::Unigram;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::{NormalizerWrapper, Precompiled};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::config::{SpecialToken, TokenizerConfig, MAX_JSON_BYTES};
use crate::error::{Error, Result};
use crate::files::{SENTENCEPIECE_FILE, TOKENIZER_FILE};
use crate::processor::read_bounded;
use crate::processor::sentencepiece::{validate_precompiled_charsmap, PieceType, SentencePieceModel};

/// Standard base64, padding optional, as `spm_precompiled` (base64 0.13's `decode`) reads `precompiled_charsmap`.
const CHARSMAP_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The path of the first existing tokenizer file in `dir` (`tokenizer.json`, then `sentencepiece.bpe.model`).
pub fn find_tokenizer_file(dir: impl AsRef<Path>) -> Option<PathBuf> {
    let dir = dir.as_ref();
    [TOKENIZER_FILE, SENTENCEPIECE_FILE]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Shortens an error message that may quote a whole file (serde errors quote the offending value).
fn shorten_message(mut reason: String) -> String {
    const MAX: usize = 400;
    if reason.len() > MAX {
        let mut cut = MAX;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push_str(" […]");
    }
    reason
}

/// The XLM-R pipeline around a SentencePiece model, as transformers' `XLMRobertaConverter` builds it.
pub(super) fn from_sentencepiece_model(model: &SentencePieceModel, config: &TokenizerConfig) -> Result<Tokenizer> {
    if model.pieces.len() < 3 {
        return Err(Error::tokenizer(
            "sentencepiece model",
            format!("has {} pieces; XLM-R needs at least <unk> <s> </s>", model.pieces.len()),
        ));
    }
    let charsmap = &model.normalizer_spec.precompiled_charsmap;
    let normalizer = if charsmap.is_empty() {
        None
    } else {
        validate_precompiled_charsmap(charsmap).map_err(|r| Error::tokenizer("sentencepiece model", r))?;
        let precompiled = Precompiled::from(charsmap)
            .map_err(|e| Error::tokenizer("sentencepiece model", format!("precompiled_charsmap: {e}")))?;
        Some(precompiled)
    };
    // transformers' SentencePieceExtractor: control and user-defined pieces become extra special tokens.
    let spm_extra: Vec<SpecialToken> = model
        .pieces
        .iter()
        .filter(|p| matches!(p.kind, PieceType::Control | PieceType::UserDefined))
        .map(|p| SpecialToken {
            special: p.kind == PieceType::Control,
            ..SpecialToken::new(p.piece.clone())
        })
        .collect();
    build_xlmr(sentencepiece_vocab(model, config), normalizer, config, &spm_extra)
}

/// The fairseq specials `<s> <pad> </s> <unk>` in place of the first three pieces, then `<mask>` last.
fn sentencepiece_vocab(model: &SentencePieceModel, config: &TokenizerConfig) -> Vec<(String, f64)> {
    let mut vocab = Vec::with_capacity(model.pieces.len() + 2);
    for t in [
        &config.bos_token,
        &config.pad_token,
        &config.eos_token,
        &config.unk_token,
    ] {
        vocab.push((t.content.clone(), 0.0));
    }
    vocab.extend(model.pieces[3..].iter().map(|p| (p.piece.clone(), f64::from(p.score))));
    vocab.push((config.mask_token.content.clone(), 0.0));
    vocab
}

/// A `tokenizer.json` rebuilt as transformers does (Unigram vocabulary and `precompiled_charsmap` kept), or used
/// as it is when its model is not Unigram. Takes the file's `added_tokens` into `config` when it has none.
pub(super) fn from_tokenizer_json(path: &Path, config: &mut TokenizerConfig) -> Result<Tokenizer> {
    let what = path.display().to_string();
    let loaded = load_tokenizer_json(path)?;
    if config.added_tokens.is_none() {
        let mut added: Vec<(u32, SpecialToken)> = loaded
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (id, SpecialToken::from_added(t)))
            .collect();
        added.sort_by_key(|(id, _)| *id);
        config.added_tokens = Some(added);
    }
    let vocab: Vec<(String, f64)> = match loaded.get_model() {
        ModelWrapper::Unigram(u) => u.iter().cloned().collect(),
        _ => return Ok(loaded),
    };
    let normalizer = match loaded.get_normalizer() {
        Some(n) => first_precompiled(n).map_err(|r| Error::tokenizer(&what, shorten_message(r)))?,
        None => None,
    };
    build_xlmr(vocab, normalizer, config, &[]).map_err(|e| e.naming(&what))
}

/// A `tokenizer.json` used verbatim, plus the named special tokens of `config` it lacks.
pub(super) fn from_tokenizer_json_as_is(path: &Path, config: &TokenizerConfig) -> Result<Tokenizer> {
    let mut tokenizer = load_tokenizer_json(path)?;
    let present: Vec<String> = tokenizer
        .get_added_tokens_decoder()
        .values()
        .map(|t| t.content.clone())
        .collect();
    let missing: Vec<AddedToken> = config
        .tokens_to_add(&[])
        .iter()
        .filter(|t| !present.contains(&t.content))
        .map(SpecialToken::to_added)
        .collect();
    tokenizer
        .add_tokens(missing)
        .map_err(|e| Error::tokenizer("added tokens", e.to_string()))?;
    Ok(tokenizer)
}

/// Loads a `tokenizer.json` and validates every `precompiled_charsmap` in its normalizer.
fn load_tokenizer_json(path: &Path) -> Result<Tokenizer> {
    let what = path.display().to_string();
    let bytes = read_bounded(path, MAX_JSON_BYTES)?;
    let tokenizer =
        Tokenizer::from_bytes(&bytes).map_err(|e| Error::tokenizer(&what, shorten_message(e.to_string())))?;
    if let Some(normalizer) = tokenizer.get_normalizer() {
        let value = serde_json::to_value(normalizer).map_err(|e| Error::tokenizer(&what, e.to_string()))?;
        let mut blobs = Vec::new();
        collect_charsmaps(&value, &mut blobs);
        for blob in blobs {
            let bytes = CHARSMAP_BASE64
                .decode(blob)
                .map_err(|e| Error::tokenizer(&what, format!("precompiled_charsmap is not base64: {e}")))?;
            validate_precompiled_charsmap(&bytes).map_err(|r| Error::tokenizer(&what, r))?;
        }
    }
    Ok(tokenizer)
}

/// The first `Precompiled` normalizer, at the top level or directly inside a `Sequence` (where transformers
/// looks for `precompiled_charsmap`). An empty charsmap counts as none.
fn first_precompiled(normalizer: &NormalizerWrapper) -> std::result::Result<Option<Precompiled>, String> {
    let value = serde_json::to_value(normalizer).map_err(|e| e.to_string())?;
    let candidates: Vec<&Value> = match value.get("type").and_then(Value::as_str) {
        Some("Sequence") => value
            .get("normalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => vec![&value],
    };
    for candidate in candidates {
        if candidate.get("type").and_then(Value::as_str) != Some("Precompiled") {
            continue;
        }
        if candidate.get("precompiled_charsmap").and_then(Value::as_str) == Some("") {
            return Ok(None);
        }
        // `Precompiled` deserializes its base64 from a borrowed string, so go through text.
        let p: Precompiled = serde_json::from_str(&candidate.to_string()).map_err(|e| e.to_string())?;
        return Ok(Some(p));
    }
    Ok(None)
}

fn collect_charsmaps<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("precompiled_charsmap", Value::String(s)) => out.push(s),
                    _ => collect_charsmaps(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_charsmaps(v, out)),
        _ => {}
    }
}

/// Assembles `XLMRobertaTokenizer`'s pipeline around a Unigram vocabulary.
fn build_xlmr(
    vocab: Vec<(String, f64)>,
    normalizer: Option<Precompiled>,
    config: &TokenizerConfig,
    fallback_extra: &[SpecialToken],
) -> Result<Tokenizer> {
    let n = vocab.len();
    let model = Unigram::from(vocab, Some(3), false)
        .map_err(|e| Error::tokenizer("unigram model", format!("{e} ({n} entries, unk_id 3)")))?;
    let mut tokenizer = Tokenizer::new(model);
    if let Some(normalizer) = normalizer {
        tokenizer
            .with_normalizer(Some(normalizer))
            .map_err(|e| Error::tokenizer("normalizer", e.to_string()))?;
    }
    let scheme = if config.add_prefix_space {
        PrependScheme::Always
    } else {
        PrependScheme::Never
    };
    tokenizer.with_pre_tokenizer(Some(PreSequence::new(vec![
        PreTokenizerWrapper::WhitespaceSplit(WhitespaceSplit),
        PreTokenizerWrapper::Metaspace(Metaspace::new('▁', scheme, true)),
    ])));
    tokenizer.with_decoder(Some(MetaspaceDecoder::new('▁', scheme, true)));
    let added: Vec<AddedToken> = config
        .tokens_to_add(fallback_extra)
        .iter()
        .map(SpecialToken::to_added)
        .collect();
    tokenizer
        .add_tokens(added)
        .map_err(|e| Error::tokenizer("added tokens", e.to_string()))?;
    let template = xlmr_template(&tokenizer, config)?;
    tokenizer.with_post_processor(Some(template));
    Ok(tokenizer)
}

/// `<s> $A </s>` (pairs: `<s> $A </s> </s> $B </s>`), with the ids `tokenizer` gives bos and eos.
fn xlmr_template(tokenizer: &Tokenizer, config: &TokenizerConfig) -> Result<TemplateProcessing> {
    let bos = config.bos_token.content.as_str();
    let eos = config.eos_token.content.as_str();
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .ok_or_else(|| Error::tokenizer("post-processor", format!("{t:?} is not in the vocabulary")))
    };
    let (bos_id, eos_id) = (id(bos)?, id(eos)?);
    TemplateProcessing::builder()
        .try_single(vec![bos.to_string(), "$A".into(), eos.to_string()])
        .and_then(|b| {
            b.try_pair(vec![
                bos.to_string(),
                "$A".into(),
                eos.to_string(),
                eos.to_string(),
                "$B".into(),
                eos.to_string(),
            ])
        })
        .map_err(|e| Error::tokenizer("post-processor", e))?
        .special_tokens(vec![(bos.to_string(), bos_id), (eos.to_string(), eos_id)])
        .build()
        .map_err(|e| Error::tokenizer("post-processor", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrip() {
        assert_eq!(CHARSMAP_BASE64.decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(CHARSMAP_BASE64.decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(CHARSMAP_BASE64.decode("").unwrap(), b"");
        assert!(CHARSMAP_BASE64.decode("a$").is_err());
    }
}
