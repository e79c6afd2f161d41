//! Model configuration, mirroring transformers' `AltCLIPConfig`, `AltCLIPTextConfig` and `AltCLIPVisionConfig`.
//!
//! Values come from a checkpoint's `config.json`; a missing field takes transformers' default (which for the vision
//! tower describes a ViT-B/32, *not* the ViT-L/14 of `BAAI/AltCLIP`: always read the real config, or use
//! [`AltClipConfig::baai_altclip`]).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The activation functions a config may name (`hidden_act`), as in transformers' `ACT2FN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `"gelu"`: exact GELU, `x · Φ(x)` with the error function.
    Gelu,
    /// `"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_fast"`: the tanh approximation.
    GeluTanh,
    /// `"quick_gelu"`: `x · σ(1.702 x)`.
    QuickGelu,
    /// `"relu"`.
    Relu,
    /// `"silu"` / `"swish"`.
    Silu,
}

impl Activation {
    /// Parses a transformers activation name; `field` names the config field for the error.
    pub fn parse(name: &str, field: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "quick_gelu" => Activation::QuickGelu,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(Error::config(
                    field,
                    format!(
                        "unknown activation {other:?} (supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, \
                         quick_gelu, relu, silu, swish)"
                    ),
                ))
            }
        })
    }
}

/// The XLM-RoBERTa text tower's configuration (`AltCLIPTextConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AltClipTextConfig {
    /// Vocabulary size (250002 for XLM-R).
    pub vocab_size: usize,
    /// Width of the encoder.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Feed-forward activation name.
    pub hidden_act: String,
    /// Dropout (unused at inference; kept for round-tripping).
    pub hidden_dropout_prob: f64,
    /// Attention dropout (unused at inference).
    pub attention_probs_dropout_prob: f64,
    /// Size of the position-embedding table.
    pub max_position_embeddings: usize,
    /// Size of the token-type table (1 for XLM-R).
    pub type_vocab_size: usize,
    /// Initialiser scale (training only).
    pub initializer_range: f64,
    /// Initialiser factor (training only).
    pub initializer_factor: f64,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
    /// Padding token id; also the offset of position ids.
    pub pad_token_id: u32,
    /// Beginning-of-sequence id.
    pub bos_token_id: u32,
    /// End-of-sequence id.
    pub eos_token_id: u32,
    /// Output width of `transformation` (the text tower's projection before `text_projection`).
    pub project_dim: usize,
}

impl Default for AltClipTextConfig {
    /// transformers' `AltCLIPTextConfig()` defaults.
    fn default() -> Self {
        Self {
            vocab_size: 250002,
            hidden_size: 1024,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            intermediate_size: 4096,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.0,
            max_position_embeddings: 514,
            type_vocab_size: 1,
            initializer_range: 0.02,
            initializer_factor: 0.02,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            bos_token_id: 0,
            eos_token_id: 2,
            project_dim: 768,
        }
    }
}

/// The ViT vision tower's configuration (`AltCLIPVisionConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AltClipVisionConfig {
    /// Width of the encoder.
    pub hidden_size: usize,
    /// Width of the MLP block.
    pub intermediate_size: usize,
    /// Projection width recorded in the vision config (the model uses the top-level `projection_dim`).
    pub projection_dim: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Input channels (3).
    pub num_channels: usize,
    /// Side of the square input the position embeddings were trained for.
    pub image_size: usize,
    /// Side of a square patch.
    pub patch_size: usize,
    /// MLP activation name.
    pub hidden_act: String,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
    /// Attention dropout (unused at inference).
    pub attention_dropout: f64,
    /// Initialiser scale (training only).
    pub initializer_range: f64,
    /// Initialiser factor (training only).
    pub initializer_factor: f64,
}

impl Default for AltClipVisionConfig {
    /// transformers' `AltCLIPVisionConfig()` defaults (a ViT-B/32).
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            attention_dropout: 0.0,
            initializer_range: 0.02,
            initializer_factor: 1.0,
        }
    }
}

/// The whole model's configuration (`AltCLIPConfig`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AltClipConfig {
    /// Text tower.
    pub text_config: AltClipTextConfig,
    /// Vision tower.
    pub vision_config: AltClipVisionConfig,
    /// Width of the shared embedding space (768 for AltCLIP, 1024 for AltCLIP-m18).
    pub projection_dim: usize,
    /// Initial value of the learned `logit_scale` (the checkpoint's tensor is what is used).
    pub logit_scale_init_value: f64,
    /// Initialiser factor (training only).
    pub initializer_factor: f64,
}

impl Default for AltClipConfig {
    fn default() -> Self {
        Self {
            text_config: AltClipTextConfig::default(),
            vision_config: AltClipVisionConfig::default(),
            projection_dim: 768,
            logit_scale_init_value: 2.6592,
            initializer_factor: 1.0,
        }
    }
}

/// Parses a sub-config, mapping serde errors to a message that names the section.
fn sub_config<T: for<'de> Deserialize<'de> + Default>(value: Option<Value>, what: &str) -> Result<T> {
    match value {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v).map_err(|source| Error::Json {
            what: what.into(),
            source,
        }),
    }
}

fn take(obj: &mut serde_json::Map<String, Value>, key: &str) -> Option<Value> {
    obj.remove(key).filter(|v| !v.is_null())
}

impl AltClipConfig {
    /// The configuration of the `BAAI/AltCLIP` checkpoint (ViT-L/14 + XLM-R large, projection 768).
    pub fn baai_altclip() -> Self {
        Self {
            text_config: AltClipTextConfig::default(),
            vision_config: AltClipVisionConfig {
                hidden_size: 1024,
                intermediate_size: 4096,
                projection_dim: 768,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                patch_size: 14,
                ..AltClipVisionConfig::default()
            },
            projection_dim: 768,
            logit_scale_init_value: 2.6592,
            initializer_factor: 1.0,
        }
    }

    /// Parses a `config.json` document and validates it.
    ///
    /// As in transformers' `AltCLIPConfig.__init__`, a legacy `text_config_dict` / `vision_config_dict` wins over
    /// `text_config` / `vision_config`: the dict, completed with defaults, replaces the section. Unknown keys are
    /// ignored.
    pub fn from_json_str(json: &str) -> Result<Self> {
        Self::from_json_named(json, crate::files::CONFIG_FILE)
    }

    fn from_json_named(json: &str, what: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json).map_err(|source| Error::Json {
            what: what.into(),
            source,
        })?;
        let Value::Object(mut obj) = value else {
            return Err(Error::config(what, "the top level is not a JSON object"));
        };
        let text = take(&mut obj, "text_config_dict").or_else(|| take(&mut obj, "text_config"));
        let vision = take(&mut obj, "vision_config_dict").or_else(|| take(&mut obj, "vision_config"));
        let defaults = Self::default();
        let number = |obj: &serde_json::Map<String, Value>, key: &str| -> Result<Option<f64>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| Error::config(key, format!("expected a number, got {v}"))),
            }
        };
        let projection_dim = match number(&obj, "projection_dim")? {
            None => defaults.projection_dim,
            Some(v) if v >= 0.0 && v.fract() == 0.0 => v as usize,
            Some(v) => {
                return Err(Error::config(
                    "projection_dim",
                    format!("expected a whole number, got {v}"),
                ))
            }
        };
        let cfg = Self {
            text_config: sub_config(text, &format!("{what}: text_config"))?,
            vision_config: sub_config(vision, &format!("{what}: vision_config"))?,
            projection_dim,
            logit_scale_init_value: number(&obj, "logit_scale_init_value")?.unwrap_or(defaults.logit_scale_init_value),
            initializer_factor: number(&obj, "initializer_factor")?.unwrap_or(defaults.initializer_factor),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a `config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_named(&text, &path.display().to_string())
    }

    /// Checks that the configuration describes a model that can be built.
    pub fn validate(&self) -> Result<()> {
        self.text_config.validate()?;
        self.vision_config.validate()?;
        positive("projection_dim", self.projection_dim)
    }
}

fn positive(field: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::config(field, "must be greater than zero"));
    }
    Ok(())
}

fn heads_divide(prefix: &str, hidden: usize, heads: usize) -> Result<()> {
    positive(&format!("{prefix}.hidden_size"), hidden)?;
    positive(&format!("{prefix}.num_attention_heads"), heads)?;
    if !hidden.is_multiple_of(heads) {
        return Err(Error::config(
            format!("{prefix}.hidden_size"),
            format!("{hidden} is not a multiple of num_attention_heads = {heads}"),
        ));
    }
    Ok(())
}

fn finite_eps(field: &str, eps: f64) -> Result<()> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::config(
            field,
            format!("must be a positive finite number, got {eps}"),
        ));
    }
    Ok(())
}

impl AltClipTextConfig {
    /// Checks sizes, heads, epsilon, activation and position-embedding type.
    pub fn validate(&self) -> Result<()> {
        let p = "text_config";
        heads_divide(p, self.hidden_size, self.num_attention_heads)?;
        positive("text_config.vocab_size", self.vocab_size)?;
        positive("text_config.intermediate_size", self.intermediate_size)?;
        positive("text_config.type_vocab_size", self.type_vocab_size)?;
        positive("text_config.project_dim", self.project_dim)?;
        finite_eps("text_config.layer_norm_eps", self.layer_norm_eps)?;
        self.activation()?;
        // Position ids run from pad_token_id + 1 upward: at least one real position must exist.
        if self.max_position_embeddings <= self.pad_token_id as usize + 1 {
            return Err(Error::config(
                "text_config.max_position_embeddings",
                format!(
                    "{} leaves no room for positions after pad_token_id = {}",
                    self.max_position_embeddings, self.pad_token_id
                ),
            ));
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return Err(Error::config(
                "text_config.pad_token_id",
                format!("{} is outside the vocabulary of {}", self.pad_token_id, self.vocab_size),
            ));
        }
        Ok(())
    }

    /// The parsed `hidden_act`.
    pub fn activation(&self) -> Result<Activation> {
        Activation::parse(&self.hidden_act, "text_config.hidden_act")
    }

    /// The longest sequence (with `<s>` and `</s>`) the position table allows: `max_position_embeddings − pad − 1`.
    pub fn max_sequence_length(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.pad_token_id as usize + 1)
    }
}

impl AltClipVisionConfig {
    /// Checks sizes, heads, patch grid, epsilon and activation.
    pub fn validate(&self) -> Result<()> {
        heads_divide("vision_config", self.hidden_size, self.num_attention_heads)?;
        positive("vision_config.intermediate_size", self.intermediate_size)?;
        positive("vision_config.num_channels", self.num_channels)?;
        positive("vision_config.patch_size", self.patch_size)?;
        positive("vision_config.image_size", self.image_size)?;
        if self.image_size < self.patch_size {
            return Err(Error::config(
                "vision_config.image_size",
                format!("{} is smaller than patch_size = {}", self.image_size, self.patch_size),
            ));
        }
        finite_eps("vision_config.layer_norm_eps", self.layer_norm_eps)?;
        self.activation()?;
        Ok(())
    }

    /// The parsed `hidden_act`.
    pub fn activation(&self) -> Result<Activation> {
        Activation::parse(&self.hidden_act, "vision_config.hidden_act")
    }

    /// Patches per side at the configured `image_size`.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patches plus the class token at the configured `image_size`.
    pub fn num_positions(&self) -> usize {
        self.grid_size() * self.grid_size() + 1
    }
}

/// Reads `dir/config.json` as a JSON value, returning it with its path.
fn read_config_value(dir: &Path) -> Result<(serde_json::Value, std::path::PathBuf)> {
    let path = dir.join(crate::files::CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let value = serde_json::from_str(&text).map_err(|source| Error::Json {
        what: path.display().to_string(),
        source,
    })?;
    Ok((value, path))
}

/// True for a full `AltCLIPConfig` (it carries tower sections), false for a single tower's config.
fn is_full_config(value: &serde_json::Value) -> bool {
    ["text_config", "text_config_dict", "vision_config", "vision_config_dict"]
        .iter()
        .any(|k| value.get(k).is_some_and(|v| !v.is_null()))
}

/// Reads one tower's configuration from `dir/config.json`: taken from a full AltCLIP config by `from_full`, or
/// parsed from the whole file when it is a tower-only config, then checked by `validate`.
pub(crate) fn tower_config_from_dir<T: for<'de> Deserialize<'de>>(
    dir: &Path,
    from_full: impl FnOnce(AltClipConfig) -> T,
    validate: impl FnOnce(&T) -> Result<()>,
) -> Result<T> {
    let (value, path) = read_config_value(dir)?;
    let cfg = if is_full_config(&value) {
        from_full(AltClipConfig::from_file(&path)?)
    } else {
        serde_json::from_value(value).map_err(|source| Error::Json {
            what: path.display().to_string(),
            source,
        })?
    };
    validate(&cfg)?;
    Ok(cfg)
}
