//! The XLM-RoBERTa tokenizer used by AltCLIP, matching transformers' `XLMRobertaTokenizer` (v5, tokenizers
//! backend) token for token.
//!
//! The tokenizer is always the one `XLMRobertaTokenizer.__init__` builds:
//!
//! ```text
//! vocab        <s>=0 <pad>=1 </s>=2 <unk>=3, then the SentencePiece pieces from id 3 on (sp id + 1), <mask> last
//! model        Unigram(vocab, unk_id = 3, byte_fallback = false)
//! normalizer   Precompiled(precompiled_charsmap)            (none when the model has no charsmap)
//! pre-tokenize WhitespaceSplit, then Metaspace("▁", prepend_scheme = "always" | "never" (add_prefix_space), split)
//! post-process <s> $A </s>      (pairs: <s> $A </s> </s> $B </s>)
//! added tokens added_tokens_decoder, then bos/eos/unk/sep/pad/cls/mask, then extra special tokens
//! ```
//!
//! It is built either from a SentencePiece model (`sentencepiece.bpe.model`, what BAAI/AltCLIP-m9 ships; read
//! by the pure-Rust [`super::sentencepiece`] reader) or from a `tokenizer.json`, whose Unigram vocabulary and
//! `precompiled_charsmap` are taken and rebuilt into the pipeline above, as transformers does for this class.
//! [`TextProcessor::from_tokenizer_json_as_is`] uses a `tokenizer.json` verbatim instead.
//!
//! ```no_run
//! use altclip::processor::text::{Padding, TextProcessor};
//! use candle_core::Device;
//!
//! # fn main() -> altclip::Result<()> {
//! let tok = TextProcessor::from_dir("path/to/AltCLIP")?;
//! let batch = tok.encode(&["a photo of a cat", "一张猫的照片"], Padding::Longest, &Device::Cpu)?;
//! println!("{}", batch.input_ids);
//! # Ok(())
//! # }
//! ```

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
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
use tokenizers::{AddedToken, PostProcessor, Tokenizer, TruncationDirection};

use super::sentencepiece::{validate_precompiled_charsmap, PieceType, SentencePieceModel};
use crate::error::{Error, Result};
use crate::files::{CONFIG_FILE, SENTENCEPIECE_FILE, SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE};

/// Largest `tokenizer.json` / config file accepted (XLM-R's tokenizer.json is about 17 MB).
const MAX_JSON_BYTES: u64 = 1024 * 1024 * 1024;

/// `model_max_length` values at or above this mean "no limit" (transformers writes `int(1e30)`).
const UNBOUNDED_LENGTH: f64 = 1e15;

/// How a batch is padded into a rectangular `(batch, seq)` tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Padding {
    /// Pad every sequence to the longest one in the batch (transformers' `padding="longest"`).
    #[default]
    Longest,
    /// Pad every sequence to exactly this many tokens (transformers' `padding="max_length"`); longer sequences
    /// are truncated to it, whatever the [`Truncation`] setting.
    MaxLength(usize),
}

/// How long sequences are truncated (the special tokens `<s>` and `</s>` are always kept).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Truncation {
    /// The smaller of `model_max_length` (tokenizer config) and `max_position_embeddings − 2` (when known,
    /// e.g. 514 → 512); no truncation if neither is known.
    #[default]
    Auto,
    /// Truncate to this many tokens, special tokens included.
    MaxLength(usize),
    /// Never truncate.
    Disabled,
}

/// Which end of a sequence padding or truncation applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Side {
    /// The end of the sequence (XLM-R's default).
    #[default]
    Right,
    /// The start of the sequence.
    Left,
}

/// A special or added token, with the matching options of a tokenizers `AddedToken`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecialToken {
    /// The token's text, e.g. `<mask>`.
    pub content: String,
    /// Only match whole words.
    pub single_word: bool,
    /// Absorb whitespace on the left.
    pub lstrip: bool,
    /// Absorb whitespace on the right.
    pub rstrip: bool,
    /// Match against the normalized text instead of the raw text.
    pub normalized: bool,
    /// Whether it is a special token (skipped when decoding with `skip_special_tokens`).
    pub special: bool,
}

impl SpecialToken {
    /// A special token as transformers creates it from a plain string: not normalized, no stripping.
    pub fn new(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: true,
        }
    }

    fn to_added(&self) -> AddedToken {
        AddedToken {
            content: self.content.clone(),
            single_word: self.single_word,
            lstrip: self.lstrip,
            rstrip: self.rstrip,
            normalized: self.normalized,
            special: self.special,
        }
    }

    /// Parses a token written as a string or as an `AddedToken` dict (`{"content": ..., "lstrip": ...}`).
    /// `named` marks the bos/eos/... tokens, which transformers always flags as special; `from_map` marks
    /// `special_tokens_map.json` entries, which transformers builds with `special=True` (so `normalized`
    /// defaults to false).
    fn from_json(value: &Value, named: bool, from_map: bool, what: &str) -> Result<Option<Self>> {
        match value {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(Self::new(s.clone()))),
            Value::Object(map) => {
                let content = map
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::config(what, "an AddedToken object needs a string `content`"))?;
                let flag = |k: &str| map.get(k).and_then(Value::as_bool);
                let special = from_map || flag("special").unwrap_or(false);
                Ok(Some(Self {
                    content: content.to_string(),
                    single_word: flag("single_word").unwrap_or(false),
                    lstrip: flag("lstrip").unwrap_or(false),
                    rstrip: flag("rstrip").unwrap_or(false),
                    normalized: flag("normalized").unwrap_or(!special),
                    special: special || named,
                }))
            }
            other => Err(Error::config(
                what,
                format!("expected a string or an AddedToken object, found {other}"),
            )),
        }
    }
}

/// The parts of `tokenizer_config.json` (and `special_tokens_map.json`) the tokenizer uses.
///
/// [`Default`] gives XLM-R's values: `<s> </s> </s> <s> <unk> <pad> <mask>`, no length limit,
/// `add_prefix_space = true`, right padding and truncation.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizerConfig {
    /// `model_max_length`; `None` when absent or "infinite" (transformers' `int(1e30)`).
    pub model_max_length: Option<usize>,
    /// `bos_token` (the first token of every sequence).
    pub bos_token: SpecialToken,
    /// `eos_token` (the last token of every sequence).
    pub eos_token: SpecialToken,
    /// `unk_token`.
    pub unk_token: SpecialToken,
    /// `sep_token`.
    pub sep_token: Option<SpecialToken>,
    /// `pad_token`; its id fills padded positions.
    pub pad_token: SpecialToken,
    /// `cls_token`.
    pub cls_token: Option<SpecialToken>,
    /// `mask_token`.
    pub mask_token: SpecialToken,
    /// `added_tokens_decoder`, sorted by id; `None` when the config has none, in which case
    /// [`TextProcessor::from_tokenizer_json`] takes the `added_tokens` of `tokenizer.json` (as transformers does).
    pub added_tokens: Option<Vec<(u32, SpecialToken)>>,
    /// `extra_special_tokens` (or the older `additional_special_tokens`); `None` when absent.
    pub extra_special_tokens: Option<Vec<SpecialToken>>,
    /// `add_prefix_space`: whether a `▁` is prepended to every word (Metaspace `prepend_scheme = "always"`).
    pub add_prefix_space: bool,
    /// `split_special_tokens`: whether special tokens in the text are tokenized like ordinary text.
    pub split_special_tokens: bool,
    /// `padding_side`.
    pub padding_side: Side,
    /// `truncation_side`.
    pub truncation_side: Side,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            model_max_length: None,
            bos_token: SpecialToken::new("<s>"),
            eos_token: SpecialToken::new("</s>"),
            unk_token: SpecialToken::new("<unk>"),
            sep_token: Some(SpecialToken::new("</s>")),
            pad_token: SpecialToken::new("<pad>"),
            cls_token: Some(SpecialToken::new("<s>")),
            mask_token: SpecialToken::new("<mask>"),
            added_tokens: None,
            extra_special_tokens: None,
            add_prefix_space: true,
            split_special_tokens: false,
            padding_side: Side::Right,
            truncation_side: Side::Right,
        }
    }
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json` and `special_tokens_map.json` from `dir`; both are optional (missing
    /// ones leave the defaults). As in transformers, `special_tokens_map.json` is only read when the config
    /// has no `added_tokens_decoder` (legacy layout), and then its tokens override the config's.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut config = Self::default();
        let path = dir.join(TOKENIZER_CONFIG_FILE);
        if path.is_file() {
            config.apply_json(&read_json(&path)?, &path.display().to_string(), false)?;
        }
        let path = dir.join(SPECIAL_TOKENS_MAP_FILE);
        if config.added_tokens.is_none() && path.is_file() {
            config.apply_json(&read_json(&path)?, &path.display().to_string(), true)?;
        }
        Ok(config)
    }

    /// Reads one `tokenizer_config.json`-style file over the defaults.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut config = Self::default();
        config.apply_json(&read_json(path)?, &path.display().to_string(), false)?;
        Ok(config)
    }

    /// Parses a `tokenizer_config.json` document over the defaults.
    pub fn from_json_str(json: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json).map_err(|source| Error::Json {
            what: "tokenizer config".into(),
            source,
        })?;
        let mut config = Self::default();
        config.apply_json(&value, "tokenizer config", false)?;
        Ok(config)
    }

    fn apply_json(&mut self, value: &Value, what: &str, from_map: bool) -> Result<()> {
        let map = value
            .as_object()
            .ok_or_else(|| Error::config(what, "expected a JSON object"))?;
        let field = |k: &str| format!("{what}: {k}");
        if let Some(v) = map.get("model_max_length") {
            self.model_max_length = parse_max_length(v, &field("model_max_length"))?;
        }
        let named: [(&str, &mut SpecialToken); 5] = [
            ("bos_token", &mut self.bos_token),
            ("eos_token", &mut self.eos_token),
            ("unk_token", &mut self.unk_token),
            ("pad_token", &mut self.pad_token),
            ("mask_token", &mut self.mask_token),
        ];
        for (key, slot) in named {
            if let Some(v) = map.get(key) {
                *slot = SpecialToken::from_json(v, true, from_map, &field(key))?
                    .ok_or_else(|| Error::config(field(key), "must not be null for XLM-R"))?;
            }
        }
        for (key, slot) in [("sep_token", &mut self.sep_token), ("cls_token", &mut self.cls_token)] {
            if let Some(v) = map.get(key) {
                *slot = SpecialToken::from_json(v, true, from_map, &field(key))?;
            }
        }
        if let Some(v) = map.get("added_tokens_decoder") {
            let obj = v
                .as_object()
                .ok_or_else(|| Error::config(field("added_tokens_decoder"), "expected an object"))?;
            let mut added = Vec::with_capacity(obj.len());
            for (id, token) in obj {
                let what = field(&format!("added_tokens_decoder.{id}"));
                let id: u32 = id
                    .parse()
                    .map_err(|_| Error::config(what.clone(), "the key is not a token id"))?;
                if let Some(token) = SpecialToken::from_json(token, false, false, &what)? {
                    added.push((id, token));
                }
            }
            added.sort_by_key(|(id, _)| *id);
            self.added_tokens = Some(added);
        }
        let extra = match (map.get("extra_special_tokens"), map.get("additional_special_tokens")) {
            (Some(v), _) if !is_empty_json(v) => Some(("extra_special_tokens", v)),
            (_, Some(v)) => Some(("additional_special_tokens", v)),
            (Some(v), None) => Some(("extra_special_tokens", v)),
            (None, None) => None,
        };
        if let Some((key, v)) = extra {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                Value::Object(o) => o.values().collect(),
                Value::Null => Vec::new(),
                _ => return Err(Error::config(field(key), "expected a list or an object")),
            };
            let mut tokens = Vec::with_capacity(items.len());
            for item in items {
                if let Some(t) = SpecialToken::from_json(item, true, from_map, &field(key))? {
                    tokens.push(t);
                }
            }
            self.extra_special_tokens = Some(tokens);
        }
        if let Some(v) = map.get("add_prefix_space") {
            self.add_prefix_space = v
                .as_bool()
                .ok_or_else(|| Error::config(field("add_prefix_space"), "expected a boolean"))?;
        }
        if let Some(v) = map.get("split_special_tokens") {
            self.split_special_tokens = v
                .as_bool()
                .ok_or_else(|| Error::config(field("split_special_tokens"), "expected a boolean"))?;
        }
        for (key, slot) in [
            ("padding_side", &mut self.padding_side),
            ("truncation_side", &mut self.truncation_side),
        ] {
            match map.get(key).map(|v| v.as_str()) {
                None => {}
                Some(Some("right")) => *slot = Side::Right,
                Some(Some("left")) => *slot = Side::Left,
                Some(_) => return Err(Error::config(field(key), "expected \"left\" or \"right\"")),
            }
        }
        Ok(())
    }

    /// The added tokens in the order transformers adds them: `added_tokens_decoder`, the named special
    /// tokens, then the extra special tokens (or `fallback_extra` when the config has none); first wins.
    fn tokens_to_add(&self, fallback_extra: &[SpecialToken]) -> Vec<SpecialToken> {
        let mut out: Vec<SpecialToken> = Vec::new();
        let mut push = |t: &SpecialToken| {
            if !t.content.is_empty() && !out.iter().any(|o| o.content == t.content) {
                out.push(t.clone());
            }
        };
        self.added_tokens.iter().flatten().for_each(|(_, t)| push(t));
        let named = [
            Some(&self.bos_token),
            Some(&self.eos_token),
            Some(&self.unk_token),
            self.sep_token.as_ref(),
            Some(&self.pad_token),
            self.cls_token.as_ref(),
            Some(&self.mask_token),
        ];
        named.into_iter().flatten().for_each(&mut push);
        match &self.extra_special_tokens {
            Some(extra) => extra.iter().for_each(&mut push),
            None => fallback_extra.iter().for_each(&mut push),
        }
        out
    }
}

fn is_empty_json(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn parse_max_length(v: &Value, what: &str) -> Result<Option<usize>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => {
            let f = n.as_f64().ok_or_else(|| Error::config(what, "not a number"))?;
            if f.is_nan() || f < 1.0 {
                return Err(Error::config(what, format!("must be at least 1, got {n}")));
            }
            if f >= UNBOUNDED_LENGTH {
                return Ok(None);
            }
            Ok(Some(f as usize))
        }
        other => Err(Error::config(what, format!("expected a number, found {other}"))),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = read_bounded(path)?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        what: path.display().to_string(),
        source,
    })
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_JSON_BYTES {
        return Err(tok_err(
            path.display().to_string(),
            format!(
                "file is {} bytes, more than the {MAX_JSON_BYTES}-byte limit",
                meta.len()
            ),
        ));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn tok_err(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Tokenizer {
        what: what.into(),
        reason: reason.into(),
    }
}

/// Token ids of a batch as plain vectors, padded to a common length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenIds {
    /// `(batch, seq)` token ids, padded with the pad token id.
    pub input_ids: Vec<Vec<u32>>,
    /// `(batch, seq)`: 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<Vec<u32>>,
}

/// A tokenized batch ready for [`crate::AltClipModel`].
#[derive(Clone, Debug)]
pub struct TextBatch {
    /// `(batch, seq)` `u32` token ids, padded with the pad token id.
    pub input_ids: Tensor,
    /// `(batch, seq)` `u32` mask: 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// The token ids of every text before padding (after truncation, `<s>` and `</s>` included).
    pub ids: Vec<Vec<u32>>,
}

/// AltCLIP's text preprocessor: the XLM-R tokenizer plus padding, truncation and tensor conversion.
///
/// Encoding a batch runs in parallel (rayon, through `tokenizers`; set `TOKENIZERS_PARALLELISM=false` to
/// disable). Any text is accepted; nothing in encoding panics (a panic inside `tokenizers` would be
/// reported as [`Error::Tokenizer`]).
#[derive(Clone, Debug)]
pub struct TextProcessor {
    tokenizer: Tokenizer,
    config: TokenizerConfig,
    pad_id: u32,
    truncation: Truncation,
    max_position_embeddings: Option<usize>,
}

impl TextProcessor {
    /// Loads the tokenizer of a model directory: `tokenizer.json` if present, otherwise
    /// `sentencepiece.bpe.model`; plus `tokenizer_config.json` / `special_tokens_map.json` when present, and
    /// `text_config.max_position_embeddings` from `config.json` when present (for the default truncation).
    ///
    /// A directory with neither tokenizer file gives [`Error::Tokenizer`] naming the directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer directory not found"),
            ));
        }
        let config = TokenizerConfig::from_dir(dir)?;
        let json = dir.join(TOKENIZER_FILE);
        let sp = dir.join(SENTENCEPIECE_FILE);
        let processor = if json.is_file() {
            Self::from_tokenizer_json(&json, config)?
        } else if sp.is_file() {
            Self::from_sentencepiece(&sp, config)?
        } else {
            return Err(tok_err(
                dir.display().to_string(),
                format!("no tokenizer in the directory: expected {TOKENIZER_FILE} or {SENTENCEPIECE_FILE}"),
            ));
        };
        let model_config = dir.join(CONFIG_FILE);
        if model_config.is_file() {
            let value = read_json(&model_config)?;
            let mpe = value
                .get("text_config")
                .and_then(|t| t.get("max_position_embeddings"))
                .or_else(|| value.get("max_position_embeddings"))
                .and_then(Value::as_u64);
            if let Some(mpe) = mpe {
                let mpe = usize::try_from(mpe)
                    .map_err(|_| Error::config("text_config.max_position_embeddings", "does not fit in usize"))?;
                return processor.with_max_position_embeddings(mpe);
            }
        }
        Ok(processor)
    }

    /// Builds the tokenizer from a SentencePiece model file (`sentencepiece.bpe.model`), as transformers'
    /// `XLMRobertaTokenizer` does when a checkpoint ships no `tokenizer.json` (e.g. BAAI/AltCLIP-m9).
    pub fn from_sentencepiece(path: impl AsRef<Path>, config: TokenizerConfig) -> Result<Self> {
        let path = path.as_ref();
        let model = SentencePieceModel::from_file(path)?;
        Self::from_sentencepiece_model(&model, config).map_err(|e| rename_tok_err(e, &path.display().to_string()))
    }

    /// Builds the tokenizer from the bytes of a SentencePiece model.
    pub fn from_sentencepiece_bytes(bytes: &[u8], config: TokenizerConfig) -> Result<Self> {
        let model = SentencePieceModel::from_bytes(bytes)?;
        Self::from_sentencepiece_model(&model, config)
    }

    /// Builds the tokenizer from a decoded SentencePiece model.
    ///
    /// As in transformers' `XLMRobertaConverter`, the first three pieces (`<unk> <s> </s>` in XLM-R) are
    /// replaced by the fairseq specials `<s> <pad> </s> <unk>` and `<mask>` is appended; the model's
    /// `add_dummy_prefix` / `remove_extra_whitespaces` flags are not used (the WhitespaceSplit + Metaspace
    /// pre-tokenizers stand in for them) and its `model_type` is ignored (always Unigram).
    pub fn from_sentencepiece_model(model: &SentencePieceModel, config: TokenizerConfig) -> Result<Self> {
        if model.pieces.len() < 3 {
            return Err(tok_err(
                "sentencepiece model",
                format!("has {} pieces; XLM-R needs at least <unk> <s> </s>", model.pieces.len()),
            ));
        }
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

        let charsmap = &model.normalizer_spec.precompiled_charsmap;
        let normalizer = if charsmap.is_empty() {
            None
        } else {
            validate_precompiled_charsmap(charsmap).map_err(|r| tok_err("sentencepiece model", r))?;
            Some(
                Precompiled::from(charsmap)
                    .map_err(|e| tok_err("sentencepiece model", format!("precompiled_charsmap: {e}")))?,
            )
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
        let tokenizer = build_xlmr(vocab, normalizer, &config, &spm_extra)?;
        Self::new(tokenizer, config)
    }

    /// Loads a `tokenizer.json` the way transformers' `XLMRobertaTokenizer` does: its Unigram vocabulary and
    /// `precompiled_charsmap` are kept and the pipeline described in the [module docs](self) is rebuilt around
    /// them (the file's own normalizer chain, pre-tokenizer and post-processor are not used; its `added_tokens`
    /// are, unless the config has an `added_tokens_decoder`). A `tokenizer.json`
    /// whose model is not Unigram is used as it is.
    pub fn from_tokenizer_json(path: impl AsRef<Path>, mut config: TokenizerConfig) -> Result<Self> {
        let path = path.as_ref();
        let what = path.display().to_string();
        let loaded = load_tokenizer_json(path)?;
        if config.added_tokens.is_none() {
            let mut added: Vec<(u32, SpecialToken)> = loaded
                .get_added_tokens_decoder()
                .into_iter()
                .map(|(id, t)| {
                    let token = SpecialToken {
                        content: t.content,
                        single_word: t.single_word,
                        lstrip: t.lstrip,
                        rstrip: t.rstrip,
                        normalized: t.normalized,
                        special: t.special,
                    };
                    (id, token)
                })
                .collect();
            added.sort_by_key(|(id, _)| *id);
            config.added_tokens = Some(added);
        }
        let vocab: Vec<(String, f64)> = match loaded.get_model() {
            ModelWrapper::Unigram(u) => u.iter().cloned().collect(),
            _ => return Self::new(loaded, config),
        };
        let normalizer = match loaded.get_normalizer() {
            Some(n) => first_precompiled(n).map_err(|r| tok_err(&what, clip(r)))?,
            None => None,
        };
        let tokenizer = build_xlmr(vocab, normalizer, &config, &[]).map_err(|e| rename_tok_err(e, &what))?;
        Self::new(tokenizer, config)
    }

    /// Loads a `tokenizer.json` and uses its pipeline verbatim (normalizer, pre-tokenizer, model,
    /// post-processor and added tokens), as the `tokenizers` library would. Only the named special tokens of
    /// `config` missing from its added tokens are added.
    pub fn from_tokenizer_json_as_is(path: impl AsRef<Path>, config: TokenizerConfig) -> Result<Self> {
        let mut tokenizer = load_tokenizer_json(path.as_ref())?;
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
            .map_err(|e| tok_err("added tokens", e.to_string()))?;
        Self::new(tokenizer, config)
    }

    fn new(mut tokenizer: Tokenizer, config: TokenizerConfig) -> Result<Self> {
        tokenizer
            .with_truncation(None)
            .map_err(|e| tok_err("tokenizer", e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer.set_encode_special_tokens(config.split_special_tokens);
        let pad_id = tokenizer.token_to_id(&config.pad_token.content).ok_or_else(|| {
            tok_err(
                "pad_token",
                format!("{:?} is not in the vocabulary", config.pad_token.content),
            )
        })?;
        Ok(Self {
            tokenizer,
            config,
            pad_id,
            truncation: Truncation::Auto,
            max_position_embeddings: None,
        })
    }

    /// Sets the text model's `max_position_embeddings` (514 for AltCLIP), which caps the default
    /// truncation at `max_position_embeddings − 2` tokens (XLM-R positions start after the padding index).
    pub fn with_max_position_embeddings(mut self, max_position_embeddings: usize) -> Result<Self> {
        if max_position_embeddings < 3 {
            return Err(Error::config(
                "max_position_embeddings",
                format!("{max_position_embeddings} leaves no room for tokens (XLM-R needs more than 2)"),
            ));
        }
        self.max_position_embeddings = Some(max_position_embeddings);
        Ok(self)
    }

    /// Sets how long sequences are truncated (default [`Truncation::Auto`]).
    pub fn with_truncation(mut self, truncation: Truncation) -> Result<Self> {
        if let Truncation::MaxLength(n) = truncation {
            self.check_room(n)?;
        }
        self.truncation = truncation;
        Ok(self)
    }

    /// The truncation length used with [`Padding::Longest`] (special tokens included); `None` if unlimited.
    pub fn max_length(&self) -> Option<usize> {
        match self.truncation {
            Truncation::Disabled => None,
            Truncation::MaxLength(n) => Some(n),
            Truncation::Auto => {
                let positions = self.max_position_embeddings.map(|m| m.saturating_sub(2));
                match (self.config.model_max_length, positions) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// The id used for padding (`<pad>` = 1 for XLM-R).
    pub fn pad_token_id(&self) -> u32 {
        self.pad_id
    }

    /// The id of a token, if it is in the vocabulary or an added token.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The tokenizer configuration in use.
    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// The underlying `tokenizers` tokenizer (truncation and padding disabled; this type applies them).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn added_tokens(&self) -> usize {
        self.tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false))
    }

    fn check_room(&self, n: usize) -> Result<usize> {
        let added = self.added_tokens();
        n.checked_sub(added).filter(|_| n > 0).ok_or_else(|| {
            tok_err(
                "truncation",
                format!("max_length {n} is shorter than the {added} special tokens added to every sequence"),
            )
        })
    }

    /// Tokenizes `texts` without padding: `<s> … </s>` ids per text, truncated to `max_length` tokens (special
    /// tokens included) when given.
    pub fn encode_unpadded(&self, texts: &[&str], max_length: Option<usize>) -> Result<Vec<Vec<u32>>> {
        let room = max_length.map(|n| self.check_room(n)).transpose()?;
        let direction = match self.config.truncation_side {
            Side::Right => TruncationDirection::Right,
            Side::Left => TruncationDirection::Left,
        };
        let tokenizer = &self.tokenizer;
        let run = || -> tokenizers::Result<Vec<Vec<u32>>> {
            let encodings = tokenizer.encode_batch(texts.to_vec(), false)?;
            encodings
                .into_iter()
                .map(|mut encoding| {
                    if let Some(room) = room {
                        encoding.truncate(room, 0, direction);
                    }
                    Ok(tokenizer.post_process(encoding, None, true)?.get_ids().to_vec())
                })
                .collect()
        };
        match std::panic::catch_unwind(AssertUnwindSafe(run)) {
            Ok(Ok(ids)) => Ok(ids),
            Ok(Err(e)) => Err(tok_err("encode", e.to_string())),
            Err(_) => Err(tok_err("encode", "the tokenizers library panicked on this input")),
        }
    }

    /// Tokenizes, truncates and pads `texts` into plain `(batch, seq)` vectors.
    pub fn encode_ids(&self, texts: &[&str], padding: Padding) -> Result<TokenIds> {
        let (ids, width) = self.encode_with_width(texts, padding)?;
        Ok(self.pad(&ids, width))
    }

    /// Tokenizes, truncates and pads `texts` into `(batch, seq)` `u32` tensors on `device`.
    ///
    /// Truncation follows [`Self::max_length`] (and [`Padding::MaxLength`]); padding uses the pad token id
    /// and a 0 attention mask, on the config's `padding_side` (right for XLM-R).
    pub fn encode(&self, texts: &[&str], padding: Padding, device: &Device) -> Result<TextBatch> {
        let (ids, width) = self.encode_with_width(texts, padding)?;
        let padded = self.pad(&ids, width);
        let shape = (ids.len(), width);
        let input_ids = Tensor::from_vec(padded.input_ids.concat(), shape, device)?;
        let attention_mask = Tensor::from_vec(padded.attention_mask.concat(), shape, device)?;
        Ok(TextBatch {
            input_ids,
            attention_mask,
            ids,
        })
    }

    /// Decodes ids back to text (Metaspace decoding), optionally dropping special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| tok_err("decode", e.to_string()))
    }

    fn encode_with_width(&self, texts: &[&str], padding: Padding) -> Result<(Vec<Vec<u32>>, usize)> {
        let limit = match padding {
            Padding::Longest => self.max_length(),
            Padding::MaxLength(n) => Some(self.max_length().map_or(n, |m| m.min(n))),
        };
        let ids = self.encode_unpadded(texts, limit)?;
        let width = match padding {
            Padding::Longest => ids.iter().map(Vec::len).max().unwrap_or(0),
            Padding::MaxLength(n) => n,
        };
        Ok((ids, width))
    }

    fn pad(&self, ids: &[Vec<u32>], width: usize) -> TokenIds {
        let mut input_ids = Vec::with_capacity(ids.len());
        let mut attention_mask = Vec::with_capacity(ids.len());
        for row in ids {
            let n = row.len().min(width);
            let pad = width - n;
            let (mut r, mut m) = (Vec::with_capacity(width), Vec::with_capacity(width));
            if self.config.padding_side == Side::Left {
                r.resize(pad, self.pad_id);
                m.resize(pad, 0);
            }
            r.extend_from_slice(&row[..n]);
            m.resize(m.len() + n, 1);
            if self.config.padding_side == Side::Right {
                r.resize(width, self.pad_id);
                m.resize(width, 0);
            }
            input_ids.push(r);
            attention_mask.push(m);
        }
        TokenIds {
            input_ids,
            attention_mask,
        }
    }
}

/// Shortens an error message that may quote a whole file (serde errors quote the offending value).
fn clip(mut reason: String) -> String {
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

fn rename_tok_err(e: Error, what: &str) -> Error {
    match e {
        Error::Tokenizer { reason, what: inner } => tok_err(what, format!("{inner}: {reason}")),
        other => other,
    }
}

fn load_tokenizer_json(path: &Path) -> Result<Tokenizer> {
    let what = path.display().to_string();
    let bytes = read_bounded(path)?;
    let tokenizer = Tokenizer::from_bytes(&bytes).map_err(|e| tok_err(&what, clip(e.to_string())))?;
    if let Some(normalizer) = tokenizer.get_normalizer() {
        let value = serde_json::to_value(normalizer).map_err(|e| tok_err(&what, e.to_string()))?;
        let mut blobs = Vec::new();
        collect_charsmaps(&value, &mut blobs);
        for blob in blobs {
            let bytes = base64_decode(blob).ok_or_else(|| tok_err(&what, "precompiled_charsmap is not base64"))?;
            validate_precompiled_charsmap(&bytes).map_err(|r| tok_err(&what, r))?;
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

/// Standard base64 (with or without `=` padding).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
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
        .map_err(|e| tok_err("unigram model", format!("{e} ({n} entries, unk_id 3)")))?;
    let mut tokenizer = Tokenizer::new(model);
    if let Some(normalizer) = normalizer {
        tokenizer
            .with_normalizer(Some(normalizer))
            .map_err(|e| tok_err("normalizer", e.to_string()))?;
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
        .map_err(|e| tok_err("added tokens", e.to_string()))?;

    let bos = config.bos_token.content.as_str();
    let eos = config.eos_token.content.as_str();
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .ok_or_else(|| tok_err("post-processor", format!("{t:?} is not in the vocabulary")))
    };
    let (bos_id, eos_id) = (id(bos)?, id(eos)?);
    let template = TemplateProcessing::builder()
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
        .map_err(|e| tok_err("post-processor", e))?
        .special_tokens(vec![(bos.to_string(), bos_id), (eos.to_string(), eos_id)])
        .build()
        .map_err(|e| tok_err("post-processor", e.to_string()))?;
    tokenizer.with_post_processor(Some(template));
    Ok(tokenizer)
}

/// The path of the first existing tokenizer file in `dir` (`tokenizer.json`, then `sentencepiece.bpe.model`).
pub fn find_tokenizer_file(dir: impl AsRef<Path>) -> Option<PathBuf> {
    let dir = dir.as_ref();
    [TOKENIZER_FILE, SENTENCEPIECE_FILE]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrip() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a$").is_none());
    }

    #[test]
    fn config_parsing() {
        let c = TokenizerConfig::from_json_str(
            r#"{"model_max_length": 1e30, "pad_token": {"content": "<pad>", "__type": "AddedToken"},
                "mask_token": {"content": "<mask>", "lstrip": true, "normalized": true},
                "added_tokens_decoder": {"5": {"content": "<x>", "special": false}},
                "padding_side": "left"}"#,
        )
        .unwrap();
        assert_eq!(c.model_max_length, None);
        assert!(c.pad_token.special && c.pad_token.normalized);
        assert!(c.mask_token.lstrip);
        let added = c.added_tokens.as_ref().unwrap();
        assert_eq!(added[0].0, 5);
        assert!(added[0].1.normalized);
        assert_eq!(c.padding_side, Side::Left);
        assert!(TokenizerConfig::from_json_str(r#"{"model_max_length": -3}"#).is_err());
        assert!(TokenizerConfig::from_json_str(r#"[1]"#).is_err());
        assert!(TokenizerConfig::from_json_str(r#"{"bos_token": 3}"#).is_err());
    }
}
