//! `tokenizer_config.json` and `special_tokens_map.json`: the serde `RawTokenizerConfig` (every field optional)
//! resolved over XLM-R's defaults into [`TokenizerConfig`], as transformers' `PreTrainedTokenizerBase` reads them.

use std::path::Path;

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokenizers::AddedToken;

use crate::error::{Error, Result};
use crate::files::{SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE};
use crate::processor::read_bounded;

/// Largest `tokenizer.json` / config file accepted (XLM-R's tokenizer.json is about 17 MB).
pub(super) const MAX_JSON_BYTES: u64 = 1024 * 1024 * 1024;

/// `model_max_length` values at or above this mean "no limit" (transformers writes `int(1e30)`).
const UNBOUNDED_LENGTH: f64 = 1e15;

/// Which end of a sequence padding or truncation applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
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

    pub(super) fn to_added(&self) -> AddedToken {
        AddedToken {
            content: self.content.clone(),
            single_word: self.single_word,
            lstrip: self.lstrip,
            rstrip: self.rstrip,
            normalized: self.normalized,
            special: self.special,
        }
    }

    pub(super) fn from_added(t: AddedToken) -> Self {
        Self {
            content: t.content,
            single_word: t.single_word,
            lstrip: t.lstrip,
            rstrip: t.rstrip,
            normalized: t.normalized,
            special: t.special,
        }
    }

    /// Parses a token written as a string or as an `AddedToken` dict (`{"content": ..., "lstrip": ...}`).
    /// `named` marks the bos/eos/... tokens, which transformers always flags as special; entries of
    /// `special_tokens_map.json` are built with `special=True` (so `normalized` defaults to false).
    fn from_json(value: &Value, named: bool, source: Source, what: &str) -> Result<Option<Self>> {
        match value {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(Self::new(s.clone()))),
            Value::Object(map) => {
                let content = map
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::config(what, "an AddedToken object needs a string `content`"))?;
                let flag = |k: &str| map.get(k).and_then(Value::as_bool);
                let special = source == Source::SpecialTokensMap || flag("special").unwrap_or(false);
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
    /// [`super::TextProcessor::from_tokenizer_json`] takes the `added_tokens` of `tokenizer.json` (as transformers does).
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

/// Where a document's tokens come from; `special_tokens_map.json` entries are built with `special=True`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    TokenizerConfig,
    SpecialTokensMap,
}

/// The on-disk form of `tokenizer_config.json` / `special_tokens_map.json`. Token fields stay JSON (a string or
/// an `AddedToken` dict); an explicit `null` is kept (`Some(Value::Null)`), as it means "no such token".
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawTokenizerConfig {
    #[serde(default, deserialize_with = "present")]
    model_max_length: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    bos_token: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    eos_token: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    unk_token: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    sep_token: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pad_token: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    cls_token: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    mask_token: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    added_tokens_decoder: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    extra_special_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    additional_special_tokens: Option<Value>,
    #[serde(default)]
    add_prefix_space: Option<bool>,
    #[serde(default)]
    split_special_tokens: Option<bool>,
    #[serde(default)]
    padding_side: Option<Side>,
    #[serde(default)]
    truncation_side: Option<Side>,
}

/// A field that is present, `null` included (serde's `Option` would read `null` as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl RawTokenizerConfig {
    /// Parses one document; `what` names it in errors. Anything but a JSON object is refused (serde would
    /// otherwise read a list as the struct's fields in order).
    fn from_slice(bytes: &[u8], what: &str) -> Result<Self> {
        let json = |source| Error::Json {
            what: what.to_string(),
            source,
        };
        let value: Value = serde_json::from_slice(bytes).map_err(json)?;
        if !value.is_object() {
            return Err(Error::config(what, "expected a JSON object"));
        }
        serde_json::from_value(value).map_err(json)
    }

    fn from_file(path: &Path) -> Result<Self> {
        Self::from_slice(&read_bounded(path, MAX_JSON_BYTES)?, &path.display().to_string())
    }
}

impl TryFrom<RawTokenizerConfig> for TokenizerConfig {
    type Error = Error;

    /// XLM-R's defaults overridden by the document's fields.
    fn try_from(raw: RawTokenizerConfig) -> Result<Self> {
        Self::default().overridden(raw, Source::TokenizerConfig)
    }
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json` and `special_tokens_map.json` from `dir`; both are optional (missing
    /// ones leave the defaults). As in transformers, `special_tokens_map.json` is only read when the config
    /// has no `added_tokens_decoder` (legacy layout), and then its tokens override the config's.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join(TOKENIZER_CONFIG_FILE);
        let mut config = if path.is_file() {
            Self::from_file(&path)?
        } else {
            Self::default()
        };
        let path = dir.join(SPECIAL_TOKENS_MAP_FILE);
        if config.added_tokens.is_none() && path.is_file() {
            let raw = RawTokenizerConfig::from_file(&path)?;
            config = config
                .overridden(raw, Source::SpecialTokensMap)
                .map_err(|e| e.naming(&path.display().to_string()))?;
        }
        Ok(config)
    }

    /// Reads one `tokenizer_config.json`-style file over the defaults.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::try_from(RawTokenizerConfig::from_file(path)?).map_err(|e| e.naming(&path.display().to_string()))
    }

    /// Parses a `tokenizer_config.json` document over the defaults.
    pub fn from_json_str(json: &str) -> Result<Self> {
        const WHAT: &str = "tokenizer config";
        Self::try_from(RawTokenizerConfig::from_slice(json.as_bytes(), WHAT)?).map_err(|e| e.naming(WHAT))
    }

    /// `self` with every field `raw` has replaced.
    fn overridden(mut self, raw: RawTokenizerConfig, source: Source) -> Result<Self> {
        if let Some(v) = &raw.model_max_length {
            self.model_max_length = parse_max_length(v, "model_max_length")?;
        }
        self.override_special_tokens(&raw, source)?;
        if let Some(v) = &raw.added_tokens_decoder {
            self.added_tokens = Some(parse_added_tokens_decoder(v)?);
        }
        if let Some(tokens) = parse_extra_special_tokens(&raw, source)? {
            self.extra_special_tokens = Some(tokens);
        }
        self.add_prefix_space = raw.add_prefix_space.unwrap_or(self.add_prefix_space);
        self.split_special_tokens = raw.split_special_tokens.unwrap_or(self.split_special_tokens);
        self.padding_side = raw.padding_side.unwrap_or(self.padding_side);
        self.truncation_side = raw.truncation_side.unwrap_or(self.truncation_side);
        Ok(self)
    }

    /// The named tokens: bos/eos/unk/pad/mask must be tokens; sep and cls may be `null` (none).
    fn override_special_tokens(&mut self, raw: &RawTokenizerConfig, source: Source) -> Result<()> {
        let required: [(&str, &Option<Value>, &mut SpecialToken); 5] = [
            ("bos_token", &raw.bos_token, &mut self.bos_token),
            ("eos_token", &raw.eos_token, &mut self.eos_token),
            ("unk_token", &raw.unk_token, &mut self.unk_token),
            ("pad_token", &raw.pad_token, &mut self.pad_token),
            ("mask_token", &raw.mask_token, &mut self.mask_token),
        ];
        for (key, value, slot) in required {
            if let Some(v) = value {
                *slot = SpecialToken::from_json(v, true, source, key)?
                    .ok_or_else(|| Error::config(key, "must not be null for XLM-R"))?;
            }
        }
        let optional = [
            ("sep_token", &raw.sep_token, &mut self.sep_token),
            ("cls_token", &raw.cls_token, &mut self.cls_token),
        ];
        for (key, value, slot) in optional {
            if let Some(v) = value {
                *slot = SpecialToken::from_json(v, true, source, key)?;
            }
        }
        Ok(())
    }

    /// The added tokens in the order transformers adds them: `added_tokens_decoder`, the named special
    /// tokens, then the extra special tokens (or `fallback_extra` when the config has none); first wins.
    pub(super) fn tokens_to_add(&self, fallback_extra: &[SpecialToken]) -> Vec<SpecialToken> {
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

/// `added_tokens_decoder`: `{"id": AddedToken, ...}`, sorted by id.
fn parse_added_tokens_decoder(v: &Value) -> Result<Vec<(u32, SpecialToken)>> {
    let obj = v
        .as_object()
        .ok_or_else(|| Error::config("added_tokens_decoder", "expected an object"))?;
    let mut added = Vec::with_capacity(obj.len());
    for (id, token) in obj {
        let what = format!("added_tokens_decoder.{id}");
        let id: u32 = id
            .parse()
            .map_err(|_| Error::config(what.clone(), "the key is not a token id"))?;
        if let Some(token) = SpecialToken::from_json(token, false, Source::TokenizerConfig, &what)? {
            added.push((id, token));
        }
    }
    added.sort_by_key(|(id, _)| *id);
    Ok(added)
}

/// `extra_special_tokens` (a list, or transformers 5's dict), or the older `additional_special_tokens` when the
/// former is absent or empty; `None` when the document has neither.
fn parse_extra_special_tokens(raw: &RawTokenizerConfig, source: Source) -> Result<Option<Vec<SpecialToken>>> {
    let extra = match (&raw.extra_special_tokens, &raw.additional_special_tokens) {
        (Some(v), _) if !is_empty_json(v) => ("extra_special_tokens", v),
        (_, Some(v)) => ("additional_special_tokens", v),
        (Some(v), None) => ("extra_special_tokens", v),
        (None, None) => return Ok(None),
    };
    let (key, v) = extra;
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) => o.values().collect(),
        Value::Null => Vec::new(),
        _ => return Err(Error::config(key, "expected a list or an object")),
    };
    let mut tokens = Vec::with_capacity(items.len());
    for item in items {
        if let Some(t) = SpecialToken::from_json(item, true, source, key)? {
            tokens.push(t);
        }
    }
    Ok(Some(tokens))
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

#[cfg(test)]
mod tests {
    use super::*;

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
