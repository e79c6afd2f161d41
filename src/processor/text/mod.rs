//! The XLM-RoBERTa tokenizer used by AltCLIP, matching transformers' `XLMRobertaTokenizer` (v5, tokenizers
//! backend) token for token. `config` reads `tokenizer_config.json` / `special_tokens_map.json`, `build`
//! assembles the `tokenizers` pipeline; this file holds [`TextProcessor`] (encoding, truncation, padding).
//! Callers (the pipeline, users who only need token ids) use the items here.
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

mod build;
mod config;

use std::panic::AssertUnwindSafe;
use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{PostProcessor, Tokenizer, TruncationDirection};

use super::sentencepiece::SentencePieceModel;
use crate::config::{tower_config_from_dir, AltClipTextConfig};
use crate::error::{Error, Result};
use crate::files::{CONFIG_FILE, SENTENCEPIECE_FILE, TOKENIZER_FILE};

pub use build::find_tokenizer_file;
pub use config::{Side, SpecialToken, TokenizerConfig};

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
    /// The smaller of `model_max_length` (tokenizer config) and the longest sequence the text model's positions
    /// allow (when known: [`AltClipTextConfig::max_sequence_length`], 514 − 2 = 512 for AltCLIP); no truncation
    /// if neither is known.
    #[default]
    Auto,
    /// Truncate to this many tokens, special tokens included.
    MaxLength(usize),
    /// Never truncate.
    Disabled,
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
    /// The longest sequence (special tokens included) the text model's position table allows, when known.
    position_limit: Option<usize>,
}

impl TextProcessor {
    /// Loads the tokenizer of a model directory: `tokenizer.json` if present, otherwise
    /// `sentencepiece.bpe.model`; plus `tokenizer_config.json` / `special_tokens_map.json` when present, and
    /// the text config of `config.json` when present (parsed as the model parses it, legacy `text_config_dict`
    /// included), whose position table caps the default truncation.
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
            return Err(Error::tokenizer(
                dir.display().to_string(),
                format!("no tokenizer in the directory: expected {TOKENIZER_FILE} or {SENTENCEPIECE_FILE}"),
            ));
        };
        if !dir.join(CONFIG_FILE).is_file() {
            return Ok(processor);
        }
        let text_config = tower_config_from_dir(dir, |c| c.text_config, AltClipTextConfig::validate)?;
        Ok(processor.with_text_config(&text_config))
    }

    /// Builds the tokenizer from a SentencePiece model file (`sentencepiece.bpe.model`), as transformers'
    /// `XLMRobertaTokenizer` does when a checkpoint ships no `tokenizer.json` (e.g. BAAI/AltCLIP-m9).
    pub fn from_sentencepiece(path: impl AsRef<Path>, config: TokenizerConfig) -> Result<Self> {
        let path = path.as_ref();
        let model = SentencePieceModel::from_file(path)?;
        Self::from_sentencepiece_model(&model, config).map_err(|e| e.naming(&path.display().to_string()))
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
        let tokenizer = build::from_sentencepiece_model(model, &config)?;
        Self::new(tokenizer, config)
    }

    /// Loads a `tokenizer.json` the way transformers' `XLMRobertaTokenizer` does: its Unigram vocabulary and
    /// `precompiled_charsmap` are kept and the pipeline described in the [module docs](self) is rebuilt around
    /// them (the file's own normalizer chain, pre-tokenizer and post-processor are not used; its `added_tokens`
    /// are, unless the config has an `added_tokens_decoder`). A `tokenizer.json`
    /// whose model is not Unigram is used as it is.
    pub fn from_tokenizer_json(path: impl AsRef<Path>, mut config: TokenizerConfig) -> Result<Self> {
        let tokenizer = build::from_tokenizer_json(path.as_ref(), &mut config)?;
        Self::new(tokenizer, config)
    }

    /// Loads a `tokenizer.json` and uses its pipeline verbatim (normalizer, pre-tokenizer, model,
    /// post-processor and added tokens), as the `tokenizers` library would. Only the named special tokens of
    /// `config` missing from its added tokens are added.
    pub fn from_tokenizer_json_as_is(path: impl AsRef<Path>, config: TokenizerConfig) -> Result<Self> {
        let tokenizer = build::from_tokenizer_json_as_is(path.as_ref(), &config)?;
        Self::new(tokenizer, config)
    }

    fn new(mut tokenizer: Tokenizer, config: TokenizerConfig) -> Result<Self> {
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::tokenizer("tokenizer", e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer.set_encode_special_tokens(config.split_special_tokens);
        let pad_id = tokenizer.token_to_id(&config.pad_token.content).ok_or_else(|| {
            Error::tokenizer(
                "pad_token",
                format!("{:?} is not in the vocabulary", config.pad_token.content),
            )
        })?;
        Ok(Self {
            tokenizer,
            config,
            pad_id,
            truncation: Truncation::Auto,
            position_limit: None,
        })
    }

    /// Caps the default truncation at the longest sequence `text_config`'s position table allows
    /// ([`AltClipTextConfig::max_sequence_length`]: 512 for AltCLIP), the limit the text model checks.
    pub fn with_text_config(mut self, text_config: &AltClipTextConfig) -> Self {
        self.position_limit = Some(text_config.max_sequence_length());
        self
    }

    /// Sets the text model's `max_position_embeddings` (514 for AltCLIP), which caps the default
    /// truncation at `max_position_embeddings − 2` tokens (XLM-R positions start after the padding index 1).
    /// [`Self::with_text_config`] does the same from a parsed config.
    pub fn with_max_position_embeddings(mut self, max_position_embeddings: usize) -> Result<Self> {
        if max_position_embeddings < 3 {
            return Err(Error::config(
                "max_position_embeddings",
                format!("{max_position_embeddings} leaves no room for tokens (XLM-R needs more than 2)"),
            ));
        }
        self.position_limit = Some(max_position_embeddings - 2);
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
                let positions = self.position_limit;
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
            Error::tokenizer(
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
            Ok(Err(e)) => Err(Error::tokenizer("encode", e.to_string())),
            Err(_) => Err(Error::tokenizer(
                "encode",
                "the tokenizers library panicked on this input",
            )),
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
            .map_err(|e| Error::tokenizer("decode", e.to_string()))
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
